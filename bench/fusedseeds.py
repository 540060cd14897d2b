"""K seeds of one configuration trained as one fused model (hpo.fused, torch.func.vmap) or one after another
(each its own model and optimizer: a seed group without fusing, or K trials that take turns on a device).
LeNet-5 on Fashion-MNIST, batch 64, one training epoch per seed, interleaved, in this process:

    fused_seeds_speedup_K = samples/s fused / samples/s one after another   (above 1: fusing is faster)

for K = 1, 4, 8, 16 on the CPU (`--parts fusedseeds`) and on a GPU (part of `--parts gpu`, where the ones
after another replay their CUDA graphs).
"""

from __future__ import annotations

import time

from bench.common import fashion_data_dir, median, wait_until_quiet


def measure(device: str = "cpu", counts=(1, 4, 8, 16), repeats: int = 2, max_train: int = 8192,
            data_dir: str | None = None) -> dict:
    import torch

    from hpo import fused
    from hpo.study import RunSettings
    from hpo.trainable import Trial

    settings = RunSettings("fashion_mnist", "lenet5", epochs=1, data_dir=data_dir or fashion_data_dir(),
                           max_train=max_train, max_eval=1000)
    config = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "batch_size": 64}
    data = Trial(config, settings, device).data  # read once, as a seed group does
    result: dict = {"device": device, "repeats": repeats, "images": max_train, "model": "lenet5",
                    "batch_size": 64, "samples_per_s": {}}

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for k in counts:
        rates: dict[str, list[float]] = {"fused": [], "one_after_another": []}
        for _ in range(repeats):
            for way in rates:
                trials = [Trial({**config, "seed": s}, settings, device, data=data) for s in range(k)]
                wait_until_quiet()
                sync()
                start = time.perf_counter()
                if way == "fused":
                    fused.train_one_epoch(trials, graphed=device == "cuda")  # as a seed group on a GPU
                else:
                    for trial in trials:
                        trial.train_one_epoch()
                sync()
                rates[way].append(k * len(data.train) / (time.perf_counter() - start))
        result["samples_per_s"][str(k)] = {way: median(r) for way, r in rates.items()}
        result[f"fused_seeds_speedup_{k}"] = median(rates["fused"]) / median(rates["one_after_another"])
        print(f"  {k} seeds: fused {median(rates['fused']):,.0f} samples/s, one after another "
              f"{median(rates['one_after_another']):,.0f}: {result[f'fused_seeds_speedup_{k}']:.2f}x", flush=True)
    return result
