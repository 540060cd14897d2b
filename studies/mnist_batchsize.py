"""Batch size on MNIST with the PyTorch example network (write-up 003).

The write-up trained the PyTorch MNIST example (two convs, dropout, SGD lr 0.01,
momentum 0.5) with batch sizes 50, 100 and 200 for 10 epochs, one run each,
and reported ~98% test accuracy with the smaller batches ahead.
Question: does the ranking of batch sizes survive several seeds, or is it noise?
"""

from ray import tune

from hpo import Study

study = Study(
    name="mnist_batchsize",
    dataset="mnist",
    model="mnist_net",
    space={
        "batch_size": tune.grid_search([50, 100, 200]),
        "lr": 0.01,
        "momentum": 0.5,
        "optimizer": "sgd",
    },
    epochs=10,
    seeds=3,
)
