"""SGD momentum on MNIST with the PyTorch example network (write-up 003).

The write-up kept the example's momentum 0.5 (SGD lr 0.01, batch 64, 10 epochs)
and only discussed the usual values 0.5, 0.9, 0.95 and 0.99, claiming that
momentum "greatly speeds up convergence" compared with plain SGD. It ran none
of them.
Question: at lr 0.01 and 10 epochs, which of the four momentum values trains
fastest and ends best, over several seeds, and does 0.99 (an effective step
100x the learning rate) become unstable?
"""

from ray import tune

from hpo import Study

study = Study(
    name="mnist_momentum",
    dataset="mnist",
    model="mnist_net",
    space={
        "momentum": tune.grid_search([0.5, 0.9, 0.95, 0.99]),
        "lr": 0.01,
        "batch_size": 64,  # the example's default
        "optimizer": "sgd",
    },
    epochs=10,
    seeds=3,
)
