"""Datasets beyond the three built-ins: "torchvision:NAME", "folder:PATH" and "npz:PATH" (docs/data.md).

Each is read once into uint8 tensors [N,C,H,W] and int64 labels, its normalisation statistics computed
from its training split; hpo.data then treats it like a built-in (a DatasetInfo, load_raw, load_data).
hpo.data imports this module; both read files through hpo.formats.

- torchvision:NAME (e.g. torchvision:KMNIST, torchvision:EMNIST/balanced) is looked up in the data
  directories in torchvision's own layout, downloaded with torchvision into the first of them when found
  nowhere (under the same file lock as the built-ins' downloads), and converted once to `<data
  dir>/<NAME>.hpo.pt`: later trials read that one file and never touch PIL.
- folder:PATH[?size=N] is an image folder (PATH/train/<class>/*, PATH/test/<class>/*; without test/, a
  fixed 20% of each class of train/), decoded once (at N x N when ?size=N is given) into
  `PATH/.hpo-<N or native>.pt`, rebuilt when an image file is added, removed or changed.
- npz:PATH is a NumPy file with x_train, y_train, x_test, y_test (and optionally classes).

Where a folder cannot be written, the cache goes to ~/.cache/hpo-studies/ (or $XDG_CACHE_HOME).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hpo.errors import HpoError
from hpo.formats import DatasetInfo, read_cifar_batch, unpickle_arrays

TORCHVISION, FOLDER, NPZ = "torchvision:", "folder:", "npz:"
CACHE_VERSION = 1
FOLDER_TEST_FRACTION = 0.2  # folder:PATH without test/: this share of each class of train/ is the test set
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp")
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

_DIGITS = tuple(string.digits)
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")
_EMNIST_MERGED = set("cijklmopsuvwxyz")  # torchvision.datasets.EMNIST.classes_split_dict, without importing it
EMNIST_SPLITS = {
    "byclass": tuple(sorted(string.digits + string.ascii_letters)),
    "bymerge": tuple(sorted(set(string.digits + string.ascii_letters) - _EMNIST_MERGED)),
    "balanced": tuple(sorted(set(string.digits + string.ascii_letters) - _EMNIST_MERGED)),
    "letters": ("N/A", *string.ascii_lowercase),  # labels 1..26; 0 is unused, as in torchvision
    "digits": _DIGITS,
    "mnist": _DIGITS,
}


@dataclass(frozen=True)
class TorchvisionSet:
    """One of torchvision's image-classification datasets: its shape, classes and files (inside a data dir)."""

    channels: int
    size: int
    classes: tuple[str, ...]  # () for CIFAR100 until its meta file is read (100 classes)
    folder: str  # torchvision's folder inside its root ("" for SVHN: the files sit in the root)
    files: tuple[str, ...]
    num_classes: int = 0

    @property
    def n_classes(self) -> int:
        return self.num_classes or len(self.classes)


TORCHVISION_SETS = {
    "KMNIST": TorchvisionSet(1, 28, ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), "KMNIST/raw",
                             _MNIST_FILES),
    "EMNIST": TorchvisionSet(1, 28, (), "EMNIST/raw", ()),  # per split: see _tv_set
    "QMNIST": TorchvisionSet(1, 28, _DIGITS, "QMNIST/raw",
                             ("qmnist-train-images-idx3-ubyte", "qmnist-train-labels-idx2-int",
                              "qmnist-test-images-idx3-ubyte", "qmnist-test-labels-idx2-int")),
    "SVHN": TorchvisionSet(3, 32, _DIGITS, "", ("train_32x32.mat", "test_32x32.mat")),
    "CIFAR100": TorchvisionSet(3, 32, (), "cifar-100-python", ("train", "test", "meta"), num_classes=100),
    "STL10": TorchvisionSet(3, 96, ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship",
                                    "truck"), "stl10_binary", ("train_X.bin", "train_y.bin", "test_X.bin",
                                                               "test_y.bin")),
    "MNIST": TorchvisionSet(1, 28, _DIGITS, "MNIST/raw", _MNIST_FILES),
    "FashionMNIST": TorchvisionSet(1, 28, ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                           "Sneaker", "Bag", "Ankle boot"), "FashionMNIST/raw", _MNIST_FILES),
    "CIFAR10": TorchvisionSet(3, 32, ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                      "ship", "truck"), "cifar-10-batches-py",
                              tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)),
}
_MNIST_FAMILY = ("KMNIST", "EMNIST", "QMNIST", "MNIST", "FashionMNIST")

FORMS = ("mnist, fashion_mnist, cifar10, torchvision:NAME (NAME: " + ", ".join(
    "EMNIST/SPLIT" if n == "EMNIST" else n for n in TORCHVISION_SETS) + "), folder:PATH (an image folder "
         "PATH/train/<class>/*; folder:PATH?size=N decodes it at N x N), npz:PATH (a NumPy file with "
         "x_train, y_train, x_test, y_test)")


def _tv_set(tv: str, split: str | None) -> TorchvisionSet:
    s = TORCHVISION_SETS[tv]
    if tv != "EMNIST":
        return s
    prefixes = [f"emnist-{split}-{part}" for part in ("train", "test")]
    files = tuple(f"{p}-{kind}" for p in prefixes for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))
    return TorchvisionSet(1, 28, EMNIST_SPLITS[split], s.folder, files)


# ---------------------------------------------------------------- names

@dataclass(frozen=True)
class Source:
    """A parsed dataset name of one of the forms this module serves."""

    kind: str  # "torchvision", "folder" or "npz"
    name: str  # the canonical name (folder/npz: an absolute path)
    path: Path | None = None  # folder or npz file
    tv: str = ""  # torchvision class name
    split: str | None = None  # EMNIST split
    size: int | None = None  # folder:PATH?size=N

    @property
    def key(self) -> str:  # a file name for this torchvision dataset
        return self.tv + (f"-{self.split}" if self.split else "")


def is_source(name) -> bool:
    return isinstance(name, str) and name.startswith((TORCHVISION, FOLDER, NPZ))


def _unknown(name, builtin) -> HpoError:
    candidates = list(builtin) + [TORCHVISION + n for n in TORCHVISION_SETS]
    lower = {c.lower(): c for c in candidates}
    text = str(name).lower()
    close = difflib.get_close_matches(text, lower, n=1) or difflib.get_close_matches(
        TORCHVISION + text.removeprefix(TORCHVISION), lower, n=1)
    hint = f" Did you mean {lower[close[0]]!r}?" if close else ""
    return HpoError(f"Unknown dataset {name!r}; allowed: {FORMS}.{hint}")


def parse(name, builtin=()) -> Source:
    """The Source of a dataset name, folder and npz paths made absolute (trials run in other working
    directories); an HpoError naming what is wrong and the allowed forms."""
    if not is_source(name):
        raise _unknown(name, builtin)
    if name.startswith(TORCHVISION):
        tv, _, split = name[len(TORCHVISION):].partition("/")
        if tv not in TORCHVISION_SETS:
            raise _unknown(name, builtin)
        if tv == "EMNIST" and split not in EMNIST_SPLITS:
            raise HpoError(f"Dataset {name!r}: EMNIST needs one of its splits: "
                           + ", ".join(f"torchvision:EMNIST/{s}" for s in EMNIST_SPLITS) + ".")
        if tv != "EMNIST" and split:
            raise HpoError(f"Dataset {name!r}: only EMNIST takes a split (/{split}); use {TORCHVISION + tv!r}.")
        return Source("torchvision", name, tv=tv, split=split or None)
    kind = "folder" if name.startswith(FOLDER) else "npz"
    text = name[len(FOLDER if kind == "folder" else NPZ):]
    size = None
    if kind == "folder" and "?" in text:
        text, _, query = text.rpartition("?")
        key, _, value = query.partition("=")
        if key != "size" or not value.isdigit() or int(value) < 1:
            raise HpoError(f"Dataset {name!r}: after '?' a folder takes size=N, the image size in pixels "
                           f"(e.g. folder:{text}?size=32); got {query!r}.")
        size = int(value)
    if not text:
        example = "images" if kind == "folder" else "data.npz"
        raise HpoError(f"Dataset {name!r}: give a path, e.g. {kind}:data/my_{example}.")
    path = Path(os.path.abspath(os.path.expanduser(text)))
    if kind == "folder" and not path.is_dir():
        raise HpoError(f"Dataset {name!r}: {path} is {'a file' if path.exists() else 'not there'}; folder:PATH "
                       "takes an image folder (PATH/train/<class>/*.png, docs/data.md).")
    if kind == "npz" and not path.is_file():
        raise HpoError(f"Dataset {name!r}: {path} is {'a folder' if path.exists() else 'not there'}; npz:PATH "
                       "takes a NumPy .npz file with x_train, y_train, x_test, y_test.")
    canonical = f"{kind}:{path}" + (f"?size={size}" if size else "")
    return Source(kind, canonical, path=path, size=size)


def static_info(source: Source):
    """A torchvision dataset's shape and classes, without reading or downloading it (mean and std are
    unknown: empty)."""
    s = _tv_set(source.tv, source.split)
    classes = s.classes or tuple(str(i) for i in range(s.n_classes))
    return DatasetInfo(source.name, s.channels, s.size, len(classes), (), (), classes)


# ---------------------------------------------------------------- what every form gives


@dataclass(frozen=True)
class Loaded:
    info: DatasetInfo
    train: tuple[torch.Tensor, torch.Tensor]  # uint8 [N,C,H,W], int64 [N]
    test: tuple[torch.Tensor, torch.Tensor]
    folder: Path  # where it was read from


def statistics(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] pixel units (chunked: no float copy of it all)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(x), 4096):
        chunk = x[start:start + 4096].double()
        total += chunk.sum((0, 2, 3))
        squares += chunk.square().sum((0, 2, 3))
    n = max(1, len(x) * x.shape[2] * x.shape[3])
    mean = total / n
    std = (squares / n - mean.square()).clamp_min(0).sqrt()
    mean, std = mean / 255, std / 255
    return tuple(round(float(v), 6) for v in mean), tuple(round(max(float(v), 1e-6), 6) for v in std)


def device_limit() -> tuple[int, str]:
    """The most bytes a trial's splits may take on its device: half of the GPU's memory (or, without a
    GPU, of this machine's), the rest left to the model and its activations; $HPO_DATA_LIMIT_GB sets it."""
    if os.environ.get("HPO_DATA_LIMIT_GB"):
        try:
            return int(float(os.environ["HPO_DATA_LIMIT_GB"]) * 1e9), "$HPO_DATA_LIMIT_GB"
        except ValueError:
            raise HpoError(f"$HPO_DATA_LIMIT_GB={os.environ['HPO_DATA_LIMIT_GB']!r} is not a number of GB.") from None
    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        return total // 2, f"half of the GPU's {total / 1e9:.1f} GB"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return total // 2, f"half of this machine's {total / 1e9:.1f} GB of memory (no GPU)"


def _amount(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def check_fits(name: str, channels: int, size: int, images: int) -> None:
    """A trial holds its train, validation and test splits as float32 on its device: refuse what cannot fit."""
    need = 4 * images * channels * size * size
    limit, what = device_limit()
    if need > limit:
        raise HpoError(f"Dataset {name!r} is too large for the device: its {images:,} images of {channels}x{size}x"
                       f"{size} take {_amount(need)} as float32 on a trial's device (every split is held "
                       f"there), more than the limit of {_amount(limit)} ({what}). Use fewer or smaller "
                       "images (folder:PATH?size=N), or set $HPO_DATA_LIMIT_GB.")


def _labels_in_range(name, where, y: torch.Tensor, num_classes: int) -> None:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise HpoError(f"Dataset {name!r}: {where} has label {bad}, out of range: labels must lie in "
                       f"0..{num_classes - 1} ({num_classes} classes).")


def finish(name, folder, classes, train, test, stats=None) -> Loaded:
    """The DatasetInfo and splits of a read dataset, checked: shapes, labels, size on the device;
    `stats`: its (mean, std) when known (a cache), else computed from the training split."""
    (x, y), (xt, yt) = train, test
    for split, (a, b) in (("train", train), ("test", test)):
        if len(a) != len(b):
            raise HpoError(f"Dataset {name!r} ({folder}): the {split} split has {len(a)} images but {len(b)} labels.")
    if x.shape[1:] != xt.shape[1:]:
        raise HpoError(f"Dataset {name!r} ({folder}): train images are {list(x.shape[1:])} but test images "
                       f"{list(xt.shape[1:])}; both splits need the same channels and size.")
    if len(x) == 0:
        raise HpoError(f"Dataset {name!r} ({folder}): the training split is empty.")
    _labels_in_range(name, "the training split", y, len(classes))
    _labels_in_range(name, "the test split", yt, len(classes))
    check_fits(name, x.shape[1], x.shape[2], len(x) + len(xt))
    mean, std = stats or statistics(x)
    info = DatasetInfo(name, int(x.shape[1]), int(x.shape[2]), len(classes), mean, std, tuple(classes))
    return Loaded(info, (x, y), (xt, yt), folder)


# ---------------------------------------------------------------- caches

def _user_cache(folder: Path) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hpo-studies"
    return base / hashlib.sha1(str(folder).encode()).hexdigest()[:16]


def cache_dir(folder: Path) -> Path:
    """Where a dataset's converted copy goes: beside its files, or a per-user cache where they cannot be written."""
    if os.access(folder, os.W_OK | os.X_OK):
        return folder
    fallback = _user_cache(folder)
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def read_cache(path: Path, fingerprint: str = "") -> dict | None:
    """A converted dataset, or None when there is none, it is damaged, or it was made from other files."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # cut short or not a torch file: convert again
        return None
    keys = {"version", "fingerprint", "classes", "mean", "std", "x_train", "y_train", "x_test", "y_test"}
    if not isinstance(state, dict) or not keys <= set(state) or state["version"] != CACHE_VERSION \
            or state["fingerprint"] != fingerprint:
        return None
    return state


def write_cache(path: Path, fingerprint: str, loaded: Loaded) -> None:
    (train, test), info = (loaded.train, loaded.test), loaded.info
    state = {"version": CACHE_VERSION, "fingerprint": fingerprint, "classes": list(info.classes),
             "mean": list(info.mean), "std": list(info.std),
             "x_train": train[0].contiguous(), "y_train": train[1], "x_test": test[0].contiguous(), "y_test": test[1]}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)  # readers see the old file or the whole new one
    except OSError as e:  # a full disk, a read-only folder: the data is read, only the cache is lost
        tmp.unlink(missing_ok=True)
        import sys
        print(f"warning: could not cache the converted dataset in {path} ({e}); it is read again next time.",
              file=sys.stderr, flush=True)


def _cached(state: dict) -> tuple:
    """finish()'s classes, train, test and stats from a cache."""
    return (state["classes"], (state["x_train"], state["y_train"]), (state["x_test"], state["y_test"]),
            (tuple(state["mean"]), tuple(state["std"])))


# ---------------------------------------------------------------- torchvision:NAME

def tv_files_missing(s: TorchvisionSet, root: Path) -> list[str]:
    """The dataset's files missing from a data root ([] when it is complete)."""
    folder = root / s.folder
    return [f for f in s.files if not (folder / f).is_file()]


def tv_download(tv: str, split: str | None, root: Path) -> None:
    """torchvision's own download of both splits into root (its layout: KMNIST/raw, cifar-100-python...)."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, tv)
    for train in (True, False):
        if tv == "EMNIST":
            cls(str(root), split=split, train=train, download=True)
        elif tv in ("SVHN", "STL10"):
            cls(str(root), split="train" if train else "test", download=True)
        else:
            cls(str(root), train=train, download=True)


def tv_read(tv: str, split: str | None, root: Path):
    """(classes, (x, y) train, (x, y) test) from torchvision's files in root: MNIST-like files through
    torchvision's readers (they check no checksums), the others with readers of their formats."""
    s = _tv_set(tv, split)
    folder = root / s.folder
    classes = list(s.classes)
    try:
        if tv in _MNIST_FAMILY:
            import torchvision.datasets as tvd

            parts = []
            for train in (True, False):
                ds = (tvd.EMNIST(str(root), split=split, train=train) if tv == "EMNIST"
                      else getattr(tvd, tv)(str(root), train=train))
                x, y = ds.data, ds.targets
                if tv == "QMNIST":
                    y = y[:, 0]  # the class; the other columns are QMNIST's extended labels
                x = x.unsqueeze(1)
                if tv == "EMNIST":
                    x = x.transpose(2, 3)  # EMNIST's files hold the images transposed
                parts.append((x.contiguous(), y.long()))
            return classes, parts[0], parts[1]
        if tv in ("CIFAR10", "CIFAR100"):
            key = b"labels" if tv == "CIFAR10" else b"fine_labels"
            names = [f for f in s.files if f != "meta"]
            train = [read_cifar_batch(folder / f, key) for f in names[:-1]]
            test = read_cifar_batch(folder / names[-1], key)
            if tv == "CIFAR100":
                meta = unpickle_arrays(folder / "meta")
                classes = [n.decode() if isinstance(n, bytes) else str(n)
                           for n in (meta.get(b"fine_label_names") or meta.get("fine_label_names") or [])]
                if len(classes) != 100:
                    raise HpoError(f"{folder / 'meta'}: expected 100 fine_label_names, got {len(classes)}.")
            return classes, (torch.cat([p[0] for p in train]), torch.cat([p[1] for p in train])), test
        if tv == "SVHN":
            return classes, *(_read_svhn(folder / f) for f in s.files)
        if tv == "STL10":
            names = folder / "class_names.txt"
            if names.is_file():
                classes = names.read_text().split()
            return classes, *(_read_stl10(folder / f"{p}_X.bin", folder / f"{p}_y.bin") for p in ("train", "test"))
    except HpoError:
        raise
    except Exception as e:  # torchvision's readers raise AssertionError, RuntimeError, ValueError...
        raise HpoError(f"Dataset 'torchvision:{tv}': the files in {folder} cannot be read "
                       f"({type(e).__name__}: {' '.join(str(e).split())}). Replace them with intact copies "
                       "(delete them to download them again).") from None
    raise AssertionError(tv)


def _read_svhn(path: Path):
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
        x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).astype(np.int64).reshape(-1)
    except Exception as e:
        raise HpoError(f"{path} is not an SVHN .mat file with X [32, 32, 3, N] and y [N, 1] "
                       f"({type(e).__name__}: {e}).") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise HpoError(f"{path}: expected uint8 X of shape [32, 32, 3, N], got {x.dtype} {list(x.shape)}.")
    y[y == 10] = 0  # SVHN labels the digit 0 as 10 (torchvision does the same)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1))), torch.from_numpy(y)


def _read_stl10(images: Path, labels: Path):
    x = np.fromfile(images, dtype=np.uint8)
    y = np.fromfile(labels, dtype=np.uint8).astype(np.int64) - 1  # STL-10 labels are 1..10
    if x.size % (3 * 96 * 96) or x.size // (3 * 96 * 96) != len(y):
        raise HpoError(f"{images}: {x.size} bytes is not {len(y)} (the labels in {labels.name}) images of 3x96x96.")
    # column-major images, as torchvision reads them
    return torch.from_numpy(np.ascontiguousarray(x.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2))), torch.from_numpy(y)


def load_torchvision(source: Source, roots: list[Path]) -> Loaded:
    """A torchvision dataset from the first data root holding its converted copy or its files, else
    downloaded into roots[0]; converted (under the download lock) once."""
    from filelock import FileLock

    s = _tv_set(source.tv, source.split)
    partial = []
    for root in roots:
        cache = root / f"{source.key}.hpo.pt"
        state = read_cache(cache, source.name)
        if state is None and root.is_dir() and cache_dir(root) != root:
            cache = cache_dir(root) / cache.name
            state = read_cache(cache, source.name)
        if state is not None:
            return finish(source.name, root / s.folder, *_cached(state))
        missing = tv_files_missing(s, root)
        if not missing:
            with FileLock(str(cache_dir(root) / f".{source.key}.download.lock")):
                return _convert(source, root)
        if len(missing) < len(s.files):
            partial.append(f"{root / s.folder} lacks: {', '.join(missing)}")
    target = roots[0]
    try:
        target.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target / f".{source.key}.download.lock")):
            if tv_files_missing(s, target):
                tv_download(source.tv, source.split, target)
            if not tv_files_missing(s, target):
                return _convert(source, target)
        reason = "the download finished without the expected files"
    except HpoError:
        raise
    except Exception as e:  # no network, a read-only folder...
        reason = f"{type(e).__name__}: {' '.join(str(e).split())}"
    incomplete = f" Incomplete: {'; '.join(partial)}." if partial else ""
    split = f", split={source.split!r}" if source.split else ""
    raise HpoError(
        f"Dataset {source.name!r} not found. Looked in: {', '.join(str(r / s.folder) for r in roots)}.{incomplete} "
        f"Expected files: {', '.join(s.files)}. Downloading into {target} failed ({reason}). Put them in "
        f"{target / s.folder}/ (torchvision.datasets.{source.tv}(root={str(target)!r}{split}, download=True) "
        f"writes them, on a machine with internet), or pass --data-dir DIR (or set $HPO_DATA_DIR) with them "
        f"in {Path('DIR') / s.folder}/.")


def _convert(source: Source, root: Path) -> Loaded:
    cache = cache_dir(root) / f"{source.key}.hpo.pt"
    folder = root / _tv_set(source.tv, source.split).folder
    state = read_cache(cache, source.name)  # another process may have converted it while we waited
    if state is not None:
        return finish(source.name, folder, *_cached(state))
    loaded = finish(source.name, folder, *tv_read(source.tv, source.split, root))
    write_cache(cache, source.name, loaded)
    return loaded


# ---------------------------------------------------------------- folder:PATH

def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not p.name.startswith("."))


def _class_folders(name: str, root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        loose = len(_images_in(root))
        raise HpoError(f"Dataset {name!r}: {root} has no class subfolders"
                       + (f" ({loose} image files lie directly in it)" if loose else "")
                       + ". An image folder holds one subfolder of images per class: PATH/train/<class>/*.png "
                       "(and optionally PATH/test/<class>/*.png), as torchvision's ImageFolder reads it.")
    return folders


def _folder_files(source: Source) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]] | None]:
    path = source.path
    train_root = path / "train" if (path / "train").is_dir() else path
    test_root = path / "test" if (path / "test").is_dir() else None
    if test_root is not None and train_root == path:
        raise HpoError(f"Dataset {source.name!r}: {path} has test/ but no train/ folder; put the training "
                       "images in PATH/train/<class>/.")
    folders = _class_folders(source.name, train_root)
    classes = [f.name for f in folders]
    train = []
    for label, folder in enumerate(folders):
        files = _images_in(folder)
        if not files:
            raise HpoError(f"Dataset {source.name!r}: class folder {folder} has no images "
                           f"({', '.join(IMAGE_EXTENSIONS)}).")
        train += [(f, label) for f in files]
    if test_root is None:
        return classes, train, None
    test = []
    for folder in _class_folders(source.name, test_root):
        if folder.name not in classes:
            raise HpoError(f"Dataset {source.name!r}: test class folder {folder} is not a class of "
                           f"{train_root} ({', '.join(classes)}).")
        test += [(f, classes.index(folder.name)) for f in _images_in(folder)]
    if not test:
        raise HpoError(f"Dataset {source.name!r}: {test_root} has no images; remove it to split the test set "
                       "from train/.")
    return classes, train, test


def _fingerprint(source: Source, files) -> str:
    h = hashlib.sha1(f"{CACHE_VERSION} {source.size}".encode())
    for f, label in files:
        st = f.stat()
        h.update(f"{f.relative_to(source.path)}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _decode(source: Source, files) -> torch.Tensor:
    """uint8 [N,C,S,S]: 1 channel when every image is grayscale, else RGB; S the given size (shorter side
    resized to it, then a centre crop) or the images' own (then all the same, and square)."""
    from PIL import Image

    def fail(f, e):
        return HpoError(f"Dataset {source.name!r}: cannot read image {f} ({type(e).__name__}: "
                        f"{' '.join(str(e).split())}). Replace or remove it.")

    modes, first = set(), None
    for f, _ in files:  # headers only: sizes and modes
        try:
            with Image.open(f) as im:
                modes.add(im.mode)
                size = im.size
        except Exception as e:
            raise fail(f, e) from None
        if source.size is None:
            if first is None:
                first = (f, size)
            elif size != first[1]:
                raise HpoError(f"Dataset {source.name!r}: images of mixed sizes: {first[0]} is {first[1][0]}x"
                               f"{first[1][1]} but {f} is {size[0]}x{size[1]}. Give the size to decode them at: "
                               f"folder:{source.path}?size=N.")
    if source.size is None and first[1][0] != first[1][1]:
        raise HpoError(f"Dataset {source.name!r}: the images are {first[1][0]}x{first[1][1]}, not square. Give a "
                       f"size to decode them at (shorter side resized, centre crop): folder:{source.path}?size=N.")
    side = source.size or first[1][0]
    mode = "L" if modes <= GRAY_MODES else "RGB"
    out = np.empty((len(files), 1 if mode == "L" else 3, side, side), np.uint8)
    for i, (f, _) in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert(mode)
                if im.size != (side, side):
                    w, h = im.size
                    scale = side / min(w, h)
                    w2, h2 = max(side, round(w * scale)), max(side, round(h * scale))
                    im = im.resize((w2, h2), Image.BILINEAR)
                    left, top = (w2 - side) // 2, (h2 - side) // 2
                    im = im.crop((left, top, left + side, top + side))
                a = np.asarray(im, dtype=np.uint8)
        except Exception as e:
            raise fail(f, e) from None
        out[i] = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(out)


def _split_test(labels: list[int]) -> tuple[list[int], list[int]]:
    """A fixed share of each class as the test set (seed 0): the same in every trial and process."""
    rng = np.random.default_rng(0)
    labels_a = np.asarray(labels)
    test = []
    for c in np.unique(labels_a):
        idx = np.flatnonzero(labels_a == c)
        n = int(round(len(idx) * FOLDER_TEST_FRACTION)) if len(idx) > 1 else 0
        test += rng.permutation(idx)[:max(n, 1 if len(idx) > 1 else 0)].tolist()
    chosen = set(test)
    return [i for i in range(len(labels)) if i not in chosen], sorted(test)


def load_folder(source: Source) -> Loaded:
    from filelock import FileLock

    classes, train, test = _folder_files(source)
    files = train + (test or [])
    fingerprint = _fingerprint(source, files)
    where = cache_dir(source.path)
    cache = where / f".hpo-{source.size or 'native'}.pt"
    with FileLock(str(where / f".hpo-{source.size or 'native'}.lock")):
        state = read_cache(cache, fingerprint)
        if state is None:
            x = _decode(source, files)
            y = torch.tensor([label for _, label in files], dtype=torch.int64)
            if test is None:
                train_idx, test_idx = _split_test([label for _, label in train])
                train_idx = torch.tensor(train_idx, dtype=torch.long)
                test_idx = torch.tensor(test_idx, dtype=torch.long)
            else:
                train_idx, test_idx = torch.arange(len(train)), torch.arange(len(train), len(files))
            split_train, split_test = (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])
            loaded = finish(source.name, source.path, classes, split_train, split_test)
            write_cache(cache, fingerprint, loaded)
            return loaded
    return finish(source.name, source.path, *_cached(state))


# ---------------------------------------------------------------- npz:PATH

def _npz_images(source: Source, key: str, x: np.ndarray) -> torch.Tensor:
    where = f"{source.path} ({key})"
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        nchw = x.shape[1] in (1, 3) and x.shape[2] == x.shape[3]
        nhwc = x.shape[3] in (1, 3) and x.shape[1] == x.shape[2]
        if nhwc and not nchw:
            x = x.transpose(0, 3, 1, 2)
        elif not nchw:
            raise HpoError(f"Dataset {source.name!r}: {where} has shape {list(x.shape)}; expected square images "
                           "of 1 or 3 channels as [N, H, W], [N, H, W, C] or [N, C, H, W].")
    else:
        raise HpoError(f"Dataset {source.name!r}: {where} has shape {list(x.shape)}; expected [N, H, W], "
                       "[N, H, W, C] or [N, C, H, W].")
    if x.shape[2] != x.shape[3]:
        raise HpoError(f"Dataset {source.name!r}: {where} holds {x.shape[2]}x{x.shape[3]} images; they must be "
                       "square.")
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x))
    if np.issubdtype(x.dtype, np.floating):
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo and hi <= 1):
            raise HpoError(f"Dataset {source.name!r}: {where} holds floats from {lo:g} to {hi:g}; float images "
                           "must lie in [0, 1] (or store uint8 0..255).")
        return torch.from_numpy(np.ascontiguousarray(np.rint(x * 255).astype(np.uint8)))
    raise HpoError(f"Dataset {source.name!r}: {where} is {x.dtype}; images must be uint8 (0..255) or floats in "
                   "[0, 1].")


def _npz_labels(source: Source, key: str, y: np.ndarray) -> torch.Tensor:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise HpoError(f"Dataset {source.name!r}: {source.path} ({key}) is {y.dtype} {list(y.shape)}; labels must "
                       "be integers 0..classes-1, one per image.")
    return torch.from_numpy(y.astype(np.int64))


def load_npz(source: Source) -> Loaded:
    try:
        with np.load(source.path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise HpoError(f"Dataset {source.name!r}: {source.path} lacks {', '.join(missing)} (it has: "
                               f"{', '.join(z.files) or 'nothing'}); an npz dataset holds {', '.join(NPZ_KEYS)} "
                               "(and optionally classes, the class names).")
            arrays = {k: z[k] for k in (*NPZ_KEYS, "classes") if k in z.files}
    except HpoError:
        raise
    except Exception as e:  # not a zip, a damaged file, object arrays (allow_pickle=False)
        raise HpoError(f"Dataset {source.name!r}: {source.path} cannot be read as a NumPy .npz file "
                       f"({type(e).__name__}: {' '.join(str(e).split())}).") from None
    x, xt = (_npz_images(source, k, arrays[k]) for k in ("x_train", "x_test"))
    y, yt = (_npz_labels(source, k, arrays[k]) for k in ("y_train", "y_test"))
    if "classes" in arrays:
        classes = [str(c) for c in arrays["classes"].reshape(-1)]
    else:
        if len(y) and int(y.min()) < 0:
            raise HpoError(f"Dataset {source.name!r}: {source.path} (y_train) has label {int(y.min())}, out of "
                           "range: labels must lie in 0..classes-1.")
        classes = [str(i) for i in range(int(y.max()) + 1 if len(y) else 0)]
    return finish(source.name, source.path, classes, (x, y), (xt, yt))


# ---------------------------------------------------------------- entry point

@functools.lru_cache(maxsize=4)
def load(name: str, roots: tuple[str, ...] = ()) -> Loaded:
    """A dataset of one of these forms, read once per process (do not modify its tensors in place);
    `roots`: the data directories a torchvision dataset is looked up in, in order."""
    source = parse(name)
    if source.kind == "torchvision":
        return load_torchvision(source, [Path(r) for r in roots])
    if source.kind == "folder":
        return load_folder(source)
    return load_npz(source)
