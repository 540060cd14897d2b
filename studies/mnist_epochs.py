"""Training length on MNIST with the PyTorch example network (write-up 003).

The write-up trained the PyTorch MNIST example (SGD lr 0.01, momentum 0.5,
batch 64) for 10, 20 and 100 epochs, one run each: ~98% test accuracy after 10
epochs, ~99% after more, "no obvious improvement" past 10 epochs because the
net has converged; at lr 0.001 it has not converged after 10 epochs and more
epochs help clearly.
Without a learning-rate schedule, epoch 10 of a 100-epoch run is exactly a
10-epoch run (same seed, same batches), so one 100-epoch trial per seed gives
all three lengths: read the learning curves at epochs 10, 20 and 100.
Question: how much do epochs 10 -> 20 -> 100 add at lr 0.01 and at lr 0.001,
over several seeds, and where does validation accuracy stop improving?
"""

from ray import tune

from hpo import Study

study = Study(
    name="mnist_epochs",
    dataset="mnist",
    model="mnist_net",
    space={
        "lr": tune.grid_search([0.01, 0.001]),
        "batch_size": 64,  # the logs' "[53760/60000]" = batch 840 x 64
        "momentum": 0.5,
        "optimizer": "sgd",
    },
    epochs=100,
    seeds=3,
)
