"""LeNet-5 on Fashion-MNIST: the three models of write-up 001.

The write-up trained LeNet-5 (conv 6 5x5 pad 2, max pool, conv 16 5x5, max
pool, fc 120, 84, 10; ReLU) on Fashion-MNIST normalised with (0.5, 0.5), lr
0.01 decayed by StepLR gamma 0.7 every epoch, 14 epochs, one run per model:

    model 1  SGD (no momentum), batch 100                          80%
    model 2  Adam + L2 (weight decay 1e-3), batch 256              90%
    model 3  model 2 + dropout 0.5 after fc1 and fc2               90%

It claimed Adam + L2 lifts accuracy from 80% to 90%, that model 2 overfits
(train loss well below test loss) and that dropout eases the overfitting
without raising accuracy. (A "model 4" with more conv filters did worse; its
code is not given: fashion_lenet5_tpe.py searches feature_maps instead.)
The three models are bundles of settings, not a product of keys, so the grid
runs over hpo.variants: config/variant names the model, and every other column
holds the value that model really used.
Question: over several seeds, do the 80% / 90% / 90% numbers and the
overfitting-without-dropout claim hold?
"""

from hpo import Study, variants

study = Study(
    name="fashion_lenet5",
    dataset="fashion_mnist",
    model="lenet5",
    space={
        **variants(
            model1={"optimizer": "sgd", "batch_size": 100, "weight_decay": 0.0, "dropout": 0.0},
            model2={"optimizer": "adam", "batch_size": 256, "weight_decay": 1e-3, "dropout": 0.0},
            model3={"optimizer": "adam", "batch_size": 256, "weight_decay": 1e-3, "dropout": 0.5},
        ),
        "lr": 0.01,
        "lr_gamma": 0.7,  # StepLR(step_size=1, gamma=0.7)
        "momentum": 0.0,
        "normalize": [0.5, 0.5],  # transforms.Normalize((0.5,), (0.5,))
    },
    epochs=14,
    seeds=3,
)
