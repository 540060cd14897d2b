"""VGG-11 on Fashion-MNIST at 224x224 (write-up 004): the heavy workload.

The write-up built VGG cfg A (64, M, 128, M, 256, 256, M, 512, 512, M, 512,
512, M) for 1 input channel with a 512*7*7 -> 4096 -> 4096 -> 10 classifier,
no BatchNorm and no dropout, resized Fashion-MNIST to 224x224 (Resize +
ToTensor: pixels in [0, 1], no normalisation), and trained it with Adam lr
0.001 and batch 4 (the most a 4 GB GPU held) for 3 epochs: about an hour per
epoch on a GTX 1050. It reported no accuracy at all.
Question: does this exact setting learn (VGG without BatchNorm under Adam 1e-3
often stays at chance), what does it reach in 3 epochs, and what does an epoch
cost? It is the workload where GPU packing (--gpus-per-trial 0.25), mixed
precision (--set amp=True) and a larger batch pay off; each of those changes
the write-up's setting, so they are --set overrides, not defaults.
"""

from hpo import Study

study = Study(
    name="fashion_vgg11",
    dataset="fashion_mnist",
    model="vgg",
    space={
        "cfg": "A",
        "batch_norm": False,  # the write-up's make_layers: conv + ReLU only
        "dropout": 0.0,  # its classifier has no dropout
        "resize": 224,
        "lr": 0.001,
        "batch_size": 4,
        "optimizer": "adam",
        "normalize": "none",  # Resize + ToTensor only
    },
    epochs=3,
    seeds=2,
)
