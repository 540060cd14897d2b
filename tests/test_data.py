import gzip
import os
import pickle
import shutil
from pathlib import Path

import filelock
import numpy as np
import pytest
import torch

from hpo import data
from hpo.data import DATASETS, Split, load_data, load_raw, pixel_permutation, read_cifar_batch, read_idx
from hpo.errors import HpoError
from conftest import make_fake_datasets, write_idx

REAL_DEBIAN_DIR = data.DEBIAN_DIR


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No $HPO_DATA_DIR, an empty ./data, no Debian datasets and no network, unless a test says otherwise."""
    monkeypatch.delenv("HPO_DATA_DIR", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "debian")

    def no_network(name, root):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(data, "_download", no_network)


def normalised(raw: torch.Tensor, name: str) -> torch.Tensor:
    info = DATASETS[name]
    mean, std = torch.tensor(info.mean).view(1, -1, 1, 1), torch.tensor(info.std).view(1, -1, 1, 1)
    return (raw.float() / 255 - mean) / std


# ---------------------------------------------------------------- readers

@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trips(tmp_path, gz):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    x = read_idx(write_idx(tmp_path / "images", images, gz))
    y = read_idx(write_idx(tmp_path / "labels", labels, gz))
    assert x.dtype == torch.uint8 and x.shape == (7, 28, 28)
    assert np.array_equal(x.numpy(), images) and np.array_equal(y.numpy(), labels)


@pytest.mark.parametrize("corrupt, message", [
    (lambda b: b[:-10], "expected 3152 bytes for an IDX array of shape \\(4, 28, 28\\), got 3142"),  # truncated
    (lambda b: b + b"x", "expected 3152 bytes"),
    (lambda b: b"\x08\x03" + b[2:], "bad magic number 0803"),
    (lambda b: b"\0\0\x0d" + b[3:], "data type code 0x0d"),
    (lambda b: b[:10], "header is truncated"),
    (lambda b: b"", "bad magic"),
])
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_rejects_bad_files_naming_them(tmp_path, corrupt, message, gz):
    good = write_idx(tmp_path / "good", np.zeros((4, 28, 28), np.uint8)).read_bytes()
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(corrupt(good)) if gz else corrupt(good))
    with pytest.raises(HpoError, match=message) as e:
        read_idx(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("corrupt", [lambda b: b[: len(b) // 2], lambda b: b[:12] + b"\xff" * 40])
def test_read_idx_rejects_broken_gzip(tmp_path, corrupt):
    path = write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(1000) % 10, gz=True)
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(HpoError, match="Cannot read .*t10k-labels-idx1-ubyte.gz"):
        read_idx(path)


def test_read_cifar_batch(fake_cifar10_dir):
    folder = fake_cifar10_dir / "cifar10" / "cifar-10-batches-py"
    x, y = read_cifar_batch(folder / "test_batch")
    assert x.dtype == torch.uint8 and x.shape == (100, 3, 32, 32)
    assert y.dtype == torch.int64 and sorted(y.tolist()) == sorted(list(range(10)) * 10)
    with open(folder / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    assert np.array_equal(x.reshape(100, -1).numpy(), raw[b"data"])


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("content, message", [
    (lambda b: b[: len(b) // 2], "not a CIFAR-10 python batch"),             # truncated
    (lambda b: b"garbage" * 100, "not a CIFAR-10 python batch"),
    (lambda b: pickle.dumps({b"labels": [1]}), "b'data' and b'labels'"),
    (lambda b: pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}), r"\[N, 3072\]"),
    (lambda b: pickle.dumps(Evil()), "refusing to load"),                   # a data file cannot run code
])
def test_read_cifar_batch_rejects_bad_files_naming_them(fake_cifar10_dir, tmp_path, content, message):
    good = (fake_cifar10_dir / "cifar10" / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    path = tmp_path / "data_batch_1"
    path.write_bytes(content(good))
    with pytest.raises(HpoError, match=message) as e:
        read_cifar_batch(path)
    assert str(path) in str(e.value)


# ---------------------------------------------------------------- lookup

def test_lookup_order(tmp_path, monkeypatch):
    # The three places hold different sizes, so the size says which one was read.
    make_fake_datasets(tmp_path / "cwd" / "data", n_train=100, datasets=("mnist",))
    assert len(load_raw("mnist", "train")[1]) == 100
    make_fake_datasets(tmp_path / "env", n_train=200, datasets=("mnist",))
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "env"))
    assert len(load_raw("mnist", "train")[1]) == 200
    make_fake_datasets(tmp_path / "arg", n_train=300, datasets=("mnist",))
    assert len(load_raw("mnist", "train", data_dir=tmp_path / "arg")[1]) == 300
    assert len(load_raw("mnist", "test", data_dir=str(tmp_path / "arg"))[1]) == 100


def test_torchvision_and_debian_layouts(fake_data_dir, tmp_path, monkeypatch):
    root = tmp_path / "tv"
    shutil.copytree(fake_data_dir / "mnist", root / "MNIST" / "raw")
    shutil.copytree(fake_data_dir / "fashion_mnist", root / "FashionMNIST" / "raw")
    shutil.copytree(fake_data_dir / "cifar10" / "cifar-10-batches-py", root / "cifar-10-batches-py")
    for name, n in (("mnist", 300), ("fashion_mnist", 300), ("cifar10", 300)):
        x, y = load_raw(name, "train", root)
        info = DATASETS[name]
        assert len(x) == len(y) == n and x.shape[1:] == (info.channels, info.size, info.size)
    # Debian: the files directly in /usr/share/datasets/fashion-mnist (hyphen).
    shutil.copytree(fake_data_dir / "fashion_mnist", tmp_path / "debian" / "fashion-mnist")
    assert len(load_raw("fashion_mnist", "test")[1]) == 100


def test_missing_dataset_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(HpoError) as e:
        load_raw("mnist", "train", tmp_path / "arg")
    msg = str(e.value)
    for place in (tmp_path / "arg" / "mnist", tmp_path / "arg" / "MNIST" / "raw", tmp_path / "env" / "mnist",
                  Path("data") / "mnist", tmp_path / "debian" / "mnist"):
        assert str(place) in msg
    for expected in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "network unreachable", "--data-dir"):
        assert expected in msg
    assert msg.index(str(tmp_path / "arg")) < msg.index(str(tmp_path / "env"))  # in lookup order
    with pytest.raises(HpoError, match="data_batch_1, .*test_batch"):
        load_raw("cifar10", "test")


def test_download_goes_to_first_dir_under_a_lock(fake_data_dir, tmp_path, monkeypatch):
    calls = []

    def fake_download(name, root):  # what torchvision writes: MNIST/raw/...
        with pytest.raises(filelock.Timeout):  # another process could not download now
            filelock.FileLock(str(root / ".mnist.download.lock")).acquire(timeout=0)
        calls.append(root)
        shutil.copytree(fake_data_dir / "mnist", root / "MNIST" / "raw")

    monkeypatch.setattr(data, "_download", fake_download)
    assert len(load_raw("mnist", "train", tmp_path / "arg")[1]) == 300
    assert len(load_raw("mnist", "test", tmp_path / "arg")[1]) == 100
    assert calls == [tmp_path / "arg"]  # downloaded once, then found


def test_incomplete_folder_is_skipped_and_named(fake_mnist_dir, tmp_path, monkeypatch):
    (fake_mnist_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(HpoError, match=r"Incomplete: \S+mnist lacks: t10k-labels-idx1-ubyte\."):
        load_raw("mnist", "train", fake_mnist_dir)
    # Skipped, not fatal: another process may be downloading into it; a complete copy further on is used.
    monkeypatch.setenv("HPO_DATA_DIR", str(make_fake_datasets(tmp_path / "env", n_train=200, datasets=("mnist",))))
    assert len(load_raw("mnist", "train", fake_mnist_dir)[1]) == 200


def test_bad_names(fake_mnist_dir):
    with pytest.raises(HpoError, match="Unknown dataset 'svhn'"):
        load_data("svhn", data_dir=fake_mnist_dir)
    with pytest.raises(HpoError, match="Unknown split"):
        load_raw("mnist", "val", fake_mnist_dir)


def test_label_image_count_mismatch(fake_mnist_dir):
    write_idx(fake_mnist_dir / "fashion_mnist" / "t10k-labels-idx1-ubyte", np.zeros(99, np.uint8))
    with pytest.raises(HpoError, match="100 images but 99 labels"):
        load_raw("fashion_mnist", "test", fake_mnist_dir)


# ---------------------------------------------------------------- splits

@pytest.mark.parametrize("val_fraction, n_val", [(1 / 6, 50), (0.2, 60), (0.5, 150)])
def test_val_split_sizes(fake_mnist_dir, val_fraction, n_val):
    d = load_data("mnist", data_dir=fake_mnist_dir, val_fraction=val_fraction)
    assert (len(d.train), len(d.val), len(d.test)) == (300 - n_val, n_val, 100)
    assert d.info is DATASETS["mnist"]


@pytest.mark.parametrize("val_fraction", [0, 1, -0.1, 1.5])
def test_val_fraction_must_be_inside_0_1(fake_mnist_dir, val_fraction):
    with pytest.raises(HpoError, match="val_fraction"):
        load_data("mnist", data_dir=fake_mnist_dir, val_fraction=val_fraction)


def rows(t: torch.Tensor) -> list[bytes]:
    return [r.numpy().tobytes() for r in t]


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_split_is_fixed_disjoint_complete_and_normalised(fake_data_dir, name):
    a = load_data(name, data_dir=fake_data_dir)
    b = load_data(name, data_dir=fake_data_dir)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    assert a.train.images.dtype == torch.float32 and a.train.labels.dtype == torch.int64
    # Normalised exactly once, and train + val are the training set, each image once.
    raw_x, raw_y = load_raw(name, "train", fake_data_dir)
    train, val, full = rows(a.train.images), rows(a.val.images), rows(normalised(raw_x, name))
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(full)
    assert sorted(a.train.labels.tolist() + a.val.labels.tolist()) == sorted(raw_y.tolist())
    assert sorted(rows(a.test.images)) == sorted(rows(normalised(load_raw(name, "test", fake_data_dir)[0], name)))


def test_caps_take_a_fixed_prefix(fake_mnist_dir):
    full = load_data("mnist", data_dir=fake_mnist_dir)
    d = load_data("mnist", data_dir=fake_mnist_dir, max_train=64, max_eval=32)
    assert (len(d.train), len(d.val), len(d.test)) == (64, 32, 32)
    assert torch.equal(d.train.images, full.train.images[:64]) and torch.equal(d.val.labels, full.val.labels[:32])
    assert len(set(d.test.labels.tolist())) > 5  # the capped test set is not one class


# ---------------------------------------------------------------- batches

def small_split(n=50, c=1, size=8) -> Split:
    return Split(torch.randn(n, c, size, size), torch.arange(n))


def test_batches_in_order_keep_last_partial_batch():
    s = small_split()
    sizes = [len(y) for _, y in s.batches(16)]
    assert sizes == [16, 16, 16, 2]
    assert torch.equal(torch.cat([x for x, _ in s.batches(16)]), s.images)


def test_shuffle_covers_every_sample_once_and_follows_generator():
    s = small_split()

    def epoch(seed):
        return torch.cat([y for _, y in s.batches(16, shuffle=True, generator=torch.Generator().manual_seed(seed))])

    assert sorted(epoch(0).tolist()) == list(range(50))
    assert torch.equal(epoch(0), epoch(0)) and not torch.equal(epoch(0), epoch(1))
    assert not torch.equal(epoch(0), torch.arange(50))
    x, y = next(s.batches(50, shuffle=True))  # no generator: the global one
    assert torch.equal(x, s.images[y])


def test_augment_keeps_shape_and_labels_changes_pixels():
    s = small_split(64, 3, 32)
    g = torch.Generator().manual_seed(0)
    (x, y), = s.batches(64, augment=True, generator=g)
    assert x.shape == s.images.shape and torch.equal(y, s.labels)
    changed = (x != s.images).flatten(1).any(1)
    assert changed.float().mean() > 0.8  # 1 of 81 shifts x no flip leaves an image as it was
    (x2, _), = s.batches(64, augment=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)  # randomness comes from the generator
    # Each image is a shifted window (at most 4 pixels), maybe mirrored: find where its centre went.
    centre = s.images[:, :, 12:20, 12:20]
    found = [[(flip, r - 12, c - 12) for flip in (0, 1) for r in range(8, 17) for c in range(8, 17)
              if torch.equal(centre[i], (x[i].flip(2) if flip else x[i])[:, r:r + 8, c:c + 8])] for i in range(16)]
    assert all(len(f) == 1 for f in found)
    moves = [f[0] for f in found]
    assert {m[0] for m in moves} == {0, 1} and any(m[1] != m[2] for m in moves)  # flips and independent shifts


def test_permutation_and_resize():
    s = small_split(10, 1, 28)
    perm = pixel_permutation(28 * 28)
    assert sorted(perm.tolist()) == list(range(784)) and torch.equal(perm, pixel_permutation(784))
    assert not torch.equal(perm, torch.arange(784))
    (x, _), = s.batches(10, permutation=perm)
    assert x.shape == (10, 1, 28, 28)
    assert torch.equal(x.flatten(1), s.images.flatten(1)[:, perm])
    x, _ = next(s.batches(4, resize=224))
    assert x.shape == (4, 1, 224, 224)
    # Order: permutation before resize.
    (x, _), = s.batches(10, permutation=perm, resize=56)
    expected = torch.nn.functional.interpolate(s.images.flatten(1)[:, perm].view(10, 1, 28, 28), size=(56, 56),
                                               mode="bilinear", align_corners=False)
    assert x.shape == (10, 1, 56, 56) and torch.allclose(x, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_data_with_cuda_and_cpu_generators(fake_data_dir):
    d = load_data("cifar10", data_dir=fake_data_dir, device="cuda")
    assert d.train.images.is_cuda and d.val.labels.is_cuda
    perm = pixel_permutation(32 * 32, device="cuda")
    for g in (torch.Generator(device="cuda").manual_seed(0), torch.Generator().manual_seed(0)):
        ys = [y for x, y in d.train.batches(64, shuffle=True, generator=g, augment=True, permutation=perm, resize=40)
              if x.is_cuda and x.shape[-1] == 40]
        assert sorted(torch.cat(ys).tolist()) == sorted(d.train.labels.tolist())


# ---------------------------------------------------------------- real data

@pytest.mark.realdata
def test_real_fashion_mnist_from_debian(monkeypatch):
    if not (REAL_DEBIAN_DIR / "fashion-mnist").is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    monkeypatch.setattr(data, "DEBIAN_DIR", REAL_DEBIAN_DIR)
    x, y = load_raw("fashion_mnist", "train")
    xt, yt = load_raw("fashion_mnist", "test")
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(y), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(yt), torch.full((10,), 1000))
    d = load_data("fashion_mnist")
    assert (len(d.train), len(d.val), len(d.test)) == (50000, 10000, 10000)
    assert abs(d.train.images.mean().item()) < 0.01 and abs(d.train.images.std().item() - 1) < 0.01
