"""A LeNet-like CNN on CIFAR-10 (write-up 002, part 1.2).

The write-up trained conv 3->6 5x5, max pool, conv 6->16 5x5, max pool, fc 120,
84, 10 (ReLU) on CIFAR-10 normalised with (0.5, 0.5, 0.5), Adam lr 0.001,
batch 64, 10 epochs, no augmentation, one run, and reported about 63% test
accuracy ("still room for improvement").
Question: what does this net reach over several seeds, and where in the 10
epochs does validation accuracy peak (train loss keeps falling: does it overfit)?
"""

from hpo import Study

study = Study(
    name="cifar10_cnn",
    dataset="cifar10",
    model="cifar_cnn",
    space={
        "lr": 0.001,
        "batch_size": 64,
        "optimizer": "adam",
        "normalize": [0.5, 0.5],  # transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    },
    epochs=10,
    seeds=3,
)
