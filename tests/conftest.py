"""Shared fixtures. Fake datasets are written in the REAL file formats, so the real readers run."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest



# ---------------------------------------------------------------- fake datasets

def write_idx(path, array, gz: bool = False) -> Path:
    """Write a uint8 array as an IDX file: 0x00 0x00, dtype code 0x08, ndim, big-endian dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_images(labels: np.ndarray, channels: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [N,C,size,size]: dim noise plus a bright horizontal bar whose row depends on the label
    (and, in colour, a label-dependent tint), so a small model can learn the classes."""
    x = rng.integers(0, 60, (len(labels), channels, size, size))
    for i, label in enumerate(labels):
        row = 3 + 2 * int(label)
        x[i, :, row:row + 3, 2:size - 2] = rng.integers(200, 256)
        if channels == 3:
            x[i, int(label) % 3] += 40
    return x.clip(0, 255).astype(np.uint8)


def _labels(n: int, rng) -> np.ndarray:
    return rng.permutation(np.arange(n) % 10).astype(np.uint8)  # balanced classes


def make_fake_datasets(root, n_train: int = 300, n_test: int = 100, seed: int = 0,
                       datasets=("mnist", "fashion_mnist", "cifar10")) -> Path:
    """Write tiny datasets into data dir `root` in the toolkit's layout and return `root`:
    mnist/ (gzipped IDX), fashion_mnist/ (raw IDX), cifar10/cifar-10-batches-py/ (5 data batches + test_batch)."""
    root, rng = Path(root), np.random.default_rng(seed)
    for name, gz in (("mnist", True), ("fashion_mnist", False)):
        if name not in datasets:
            continue
        sfx = ".gz" if gz else ""
        for prefix, n in (("train", n_train), ("t10k", n_test)):
            y = _labels(n, rng)
            write_idx(root / name / f"{prefix}-images-idx3-ubyte{sfx}", fake_images(y, 1, 28, rng)[:, 0], gz)
            write_idx(root / name / f"{prefix}-labels-idx1-ubyte{sfx}", y, gz)
    if "cifar10" in datasets:
        folder = root / "cifar10" / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        files = [(f"data_batch_{i}", n_train // 5) for i in range(1, 6)] + [("test_batch", n_test)]
        for fname, n in files:
            y = _labels(n, rng)
            batch = {b"batch_label": fname.encode(), b"labels": [int(v) for v in y],
                     b"data": fake_images(y, 3, 32, rng).reshape(n, 3072),
                     b"filenames": [f"{i}.png".encode() for i in range(n)]}
            (folder / fname).write_bytes(pickle.dumps(batch, protocol=2))  # CIFAR's own protocol
    return root


@pytest.fixture
def fake_data_dir(tmp_path) -> Path:
    """A data dir with tiny mnist, fashion_mnist and cifar10 (300 train / 100 test each)."""
    return make_fake_datasets(tmp_path / "data")


@pytest.fixture
def fake_mnist_dir(tmp_path) -> Path:
    """A data dir with tiny mnist (gzipped IDX) and fashion_mnist (raw IDX), 300 train / 100 test."""
    return make_fake_datasets(tmp_path / "data", datasets=("mnist", "fashion_mnist"))


@pytest.fixture
def fake_cifar10_dir(tmp_path) -> Path:
    """A data dir with a tiny cifar10: 5 data batches of 60 images and a test_batch of 100."""
    return make_fake_datasets(tmp_path / "data", datasets=("cifar10",))


# ---------------------------------------------------------------- Ray clusters (tests/ray_cluster.py)

@pytest.fixture(scope="module")
def two_nodes():
    """A head and a worker node of 1 CPU each on 127.0.0.1, in a child process (tests/ray_cluster.py)."""
    from ray_cluster import TwoNodes

    cluster = TwoNodes()
    try:
        cluster.wait_until_up()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def slow_data(tmp_path_factory) -> Path:
    """Fake MNIST big enough for about a second per epoch on one CPU: a node can die mid-trial."""
    return make_fake_datasets(tmp_path_factory.mktemp("data"), n_train=3000, n_test=300, datasets=("mnist",))
