"""A fully connected net vs a CNN of the same size, with and without a pixel permutation (write-up 002).

The write-up trained FC2Layer (784 -> 8 -> 8 -> 10, 6,442 parameters) and a
small CNN (n_feature 6: conv5, maxpool, conv5, maxpool, fc 50, fc 10; 6,422
parameters) on MNIST with SGD lr 0.01, momentum 0.5, batch 64, for 1 epoch,
then again on images whose 784 pixels were shuffled by one fixed random
permutation. It claimed that with the same parameter count the CNN is clearly
better, and that the permutation leaves the FC net unaffected but makes the CNN
drop, because convolutions rely on neighbouring pixels. One run each.
Question: over several seeds, how large is the CNN's lead on plain images, is
the FC net really unchanged by the permutation, and how far does the CNN fall
(below the FC net?)? The `params` column gives both parameter counts.
"""

from ray import tune

from hpo import Study

study = Study(
    name="mnist_fc_vs_cnn",
    dataset="mnist",
    model="mnist_cnn",
    space={
        "model": tune.grid_search(["fc2", "mnist_cnn"]),  # fc2: n_hidden 8; mnist_cnn: n_feature 6
        "permute_pixels": tune.grid_search([False, True]),  # one fixed permutation, the same in every trial
        "lr": 0.01,
        "momentum": 0.5,
        "batch_size": 64,
        "optimizer": "sgd",
    },
    epochs=1,
    seeds=5,
)
