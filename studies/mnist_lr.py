"""Learning rate on MNIST with the PyTorch example network (write-up 003).

The write-up trained the PyTorch MNIST example (two convs, dropout, SGD with
momentum 0.5, batch 100, 10 epochs) with lr 0.001, 0.01 and 0.05, one run each.
It claimed lr 0.01 and 0.05 have both converged after 10 epochs and differ
little, while lr 0.001 has not converged and is clearly worse; 0.01 is "the
right learning rate". (Its logged loss for 0.05 is a copy of the 0.01 line, so
the 0.05 run was never really shown.)
Question: over several seeds, is 0.001 clearly behind after 10 epochs, and are
0.01 and 0.05 within noise of each other?
"""

from ray import tune

from hpo import Study

study = Study(
    name="mnist_lr",
    dataset="mnist",
    model="mnist_net",
    space={
        "lr": tune.grid_search([0.001, 0.01, 0.05]),
        "batch_size": 100,  # the write-up's lr=0.01 log line is its batch-size=100 line
        "momentum": 0.5,
        "optimizer": "sgd",
    },
    epochs=10,
    seeds=3,
)
