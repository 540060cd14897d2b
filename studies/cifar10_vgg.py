"""VGG-11 with BatchNorm on CIFAR-10 (write-up 002, part 1.3).

The write-up trained VGG cfg A (64, M, 128, M, 256, 256, M, 512, 512, M, 512,
512, M) with BatchNorm after every conv and one Linear(512, 10) classifier on
CIFAR-10 with random crop (pad 4) + horizontal flip, normalised with mean
(0.4914, 0.4822, 0.4465) and std (0.2023, 0.1994, 0.2010), Adam lr 0.001, batch
128, 10 epochs, one run, and reported about 84% test accuracy.
(The toolkit's crop pads by reflection, torchvision's RandomCrop(padding=4) by
zeros; everything else is as written.)
Question: what does this setting reach over several seeds, and how much do the
ten epochs vary from seed to seed?
"""

from hpo import Study

study = Study(
    name="cifar10_vgg",
    dataset="cifar10",
    model="vgg",
    space={
        "cfg": "A",
        "batch_norm": True,
        "lr": 0.001,
        "batch_size": 128,
        "optimizer": "adam",
        "augment": True,  # random crop (pad 4) + horizontal flip, on whole batches
        "normalize": [[0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]],
    },
    epochs=10,
    seeds=3,
)
