"""One epoch of the seeds' models on the CPU, in both memory layouts, side by side: training, val
evaluation, test evaluation and the checkpoint, timed apart (hpo.trainable.Trial, one thread: what a
1-CPU trial of hpo.run gets). `epoch_speedup_<model>` = the NCHW epoch / the channels-last epoch
(space key `channels_last`, default True on a CPU).

Each (model, layout) trial trains one epoch to warm up (allocator, caches, oneDNN's primitives), then
the epoch that is timed; the layouts alternate, medians over the repeats. Fashion-MNIST is the real
one where it is installed (as in the write-ups), else CIFAR-format and IDX files written here.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import FASHION_DEBIAN, fashion_data_dir, median

MODELS = {  # name in the figures: (dataset, model, model options)
    "lenet5": ("fashion_mnist", "lenet5", {}),
    "lenet5_fm16": ("fashion_mnist", "lenet5", {"feature_maps": 16}),
    "mnist_net": ("fashion_mnist", "mnist_net", {}),
    "cifar_cnn": ("cifar10", "cifar_cnn", {}),
}
CONFIG = {"lr": 0.01, "momentum": 0.9, "batch_size": 64}  # the write-ups' SGD


def write_cifar10(root: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """Random images in CIFAR-10's python format (5 data batches and test_batch): its files cannot be
    downloaded everywhere, and an epoch's time does not depend on what the pixels show."""
    rng, folder = np.random.default_rng(seed), root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in [(f"data_batch_{i}", n_train // 5) for i in range(1, 6)] + [("test_batch", n_test)]:
        batch = {b"labels": [int(v) for v in rng.integers(0, 10, n)],
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def write_fashion(root: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """Random images in Fashion-MNIST's IDX format, where the real one is not installed."""
    rng, folder = np.random.default_rng(seed), root / "fashion_mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes()))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">II", 0x801, n) + labels.tobytes()))


def epoch_parts(trial, folder: Path) -> dict:
    """Seconds of one epoch's training, val and test evaluation and checkpoint."""
    from hpo.checkpoints import save_state

    times = {}
    start = time.perf_counter()
    trial.train_one_epoch()
    trial.scheduler.step()
    times["train_s"] = time.perf_counter() - start
    for name, split in (("val_s", trial.data.val), ("test_s", trial.data.test)):
        start = time.perf_counter()
        trial.evaluate(split)
        times[name] = time.perf_counter() - start
    trial.epoch += 1
    start = time.perf_counter()
    save_state(trial.state(), folder)
    times["checkpoint_s"] = time.perf_counter() - start
    times["epoch_s"] = sum(times.values())
    return times


def measure(repeats: int = 2, max_train: int | None = None, max_eval: int | None = None,
            models=tuple(MODELS)) -> dict:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _measure(repeats, max_train, max_eval, models)
    finally:
        torch.set_num_threads(threads)


def _measure(repeats, max_train, max_eval, models) -> dict:
    from hpo.trainable import RunSettings, Trial

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_cifar10(tmp, n_train=max_train or 50000, n_test=max_eval or 10000)
        fashion = fashion_data_dir()  # None: hpo.data finds Debian's dataset-fashion-mnist by itself
        if fashion is None and not FASHION_DEBIAN.is_dir():
            write_fashion(tmp, n_train=(max_train or 50000) * 6 // 5, n_test=max_eval or 10000)
            fashion = str(tmp)
        results = {}
        for name in models:
            dataset, model, options = MODELS[name]
            data_dir = fashion if dataset == "fashion_mnist" else str(tmp)
            settings = RunSettings(dataset, model, 2, data_dir, max_train, max_eval)
            runs: dict[str, list[dict]] = {"channels_last": [], "nchw": []}
            for _ in range(repeats):
                for layout in runs:
                    trial = Trial({**CONFIG, **options, "channels_last": layout == "channels_last"}, settings,
                                  device="cpu")
                    assert trial.layout.startswith(layout), trial.layout
                    epoch_parts(trial, tmp)  # warm-up
                    runs[layout].append(epoch_parts(trial, tmp))
            parts = {layout: {k: median([r[k] for r in rs]) for k in rs[0]} for layout, rs in runs.items()}
            results[name] = {**parts, "train_images": len(trial.data.train), "data": data_dir or str(FASHION_DEBIAN),
                             "speedup": {k: parts["nchw"][k] / parts["channels_last"][k] for k in parts["nchw"]}}
            print(f"  {name}: epoch {parts['nchw']['epoch_s']:.2f} s NCHW, {parts['channels_last']['epoch_s']:.2f} s "
                  f"channels-last ({results[name]['speedup']['epoch_s']:.2f}x)", flush=True)
    return {"threads": 1, "repeats": repeats, "models": results,
            **{f"epoch_speedup_{name}": r["speedup"]["epoch_s"] for name, r in results.items()}}
