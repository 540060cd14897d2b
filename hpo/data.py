"""Datasets as device-resident tensors: read once, normalise once, batch by slicing.

A torchvision Dataset + DataLoader with per-sample PIL transforms spends more
time converting images than a small CNN spends learning from them. So each split
is read straight from its files (IDX or CIFAR python batches) into a uint8
tensor, moved to the trial's device and normalised once; batches are slices of
a `torch.randperm`, and augmentation, pixel permutation and resizing act on
whole batches on the device (the style of KellerJordan/cifar10-airbench).

Files are looked up in: `data_dir`, `$HPO_DATA_DIR`, `./data`,
`/usr/share/datasets/<name>` (Debian), then downloaded with torchvision.
The other forms of a dataset name ("torchvision:NAME", "folder:PATH", "npz:PATH") are read by
hpo.sources; `dataset_info` and `load_raw` serve every form.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from hpo.errors import HpoError
from hpo.formats import DatasetInfo, read_cifar_batch, read_idx, unpickle_arrays  # noqa: F401  (hpo.data's API)


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", 1, 28, 10, (0.1307,), (0.3081,), tuple(str(i) for i in range(10))),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", 1, 28, 10, (0.2860,), (0.3530,),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "cifar10": DatasetInfo(
        "cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    ),
}

# Original file names per split (IDX files may also carry a .gz suffix).
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_TORCHVISION_DIR = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
DEBIAN_DIR = Path("/usr/share/datasets")  # Debian's dataset-* packages install here

# Fixed seeds: every trial, seed and process sees the same split and permutation.
SPLIT_SEED = 0
PERMUTATION_SEED = 1


def _check_name(name: str) -> DatasetInfo:
    if name not in DATASETS:
        check_dataset(name)  # the allowed forms, for an unknown name
        raise HpoError(f"{name!r} is not a built-in dataset.")
    return DATASETS[name]


def check_dataset(name) -> str:
    """The canonical form of a dataset name (a built-in name, "torchvision:NAME", or "folder:PATH" /
    "npz:PATH" with PATH made absolute: trials run in other working directories); an HpoError that
    names what is wrong and lists the allowed forms otherwise. Reads no data."""
    from hpo import sources

    if isinstance(name, str) and name in DATASETS:
        return name
    return sources.parse(name, DATASETS).name


def dataset_info(name: str, data_dir=None, *, read: bool = True) -> DatasetInfo:
    """What a trial, the checks and the figures need to know about a dataset, for every form:
    built-ins from DATASETS; "torchvision:NAME" read (downloaded and converted when needed: see
    hpo.sources), or with read=False its shape and classes only (mean and std empty); "folder:PATH" and
    "npz:PATH" read (and a folder decoded once) in either case."""
    from hpo import sources

    name = check_dataset(name)
    if name in DATASETS:
        return DATASETS[name]
    source = sources.parse(name)
    if source.kind == "torchvision" and not read:
        return sources.static_info(source)
    return _load_source(name, data_dir).info


def _load_source(name: str, data_dir):
    from hpo import sources

    roots = tuple(str(r.resolve()) for r in _roots(data_dir)) if name.startswith(sources.TORCHVISION) else ()
    return sources.load(name, roots)


# ---------------------------------------------------------------- lookup

def _roots(data_dir) -> list[Path]:
    roots = [Path(data_dir)] if data_dir else []
    if os.environ.get("HPO_DATA_DIR"):
        roots.append(Path(os.environ["HPO_DATA_DIR"]))
    return roots + [Path.cwd() / "data"]  # absolute: error messages say which ./data


def _folders(name: str, root: Path) -> list[Path]:
    """Where a dataset's files may sit inside a data root: ours first, then torchvision's."""
    if name == "cifar10":
        return [root / "cifar10" / "cifar-10-batches-py", root / "cifar-10-batches-py"]
    return [root / name, root / _TORCHVISION_DIR[name] / "raw"]


def _file(name: str, folder: Path, fname: str) -> Path | None:
    for p in [folder / fname] + ([] if name == "cifar10" else [folder / (fname + ".gz")]):
        if p.is_file():
            return p
    return None


def _expected(name: str) -> list[str]:
    if name == "cifar10":
        return [f for files in _CIFAR_FILES.values() for f in files]
    return [f for files in _IDX_FILES.values() for f in files]


def _search(name: str, folders: list[Path]) -> tuple[Path | None, list[str]]:
    """The first folder holding all of the dataset's files, and notes on folders holding only some
    (skipped, not an error: another process may be downloading into one right now)."""
    partial = []
    for folder in folders:
        missing = [f for f in _expected(name) if not _file(name, folder, f)]
        if not missing:
            return folder, partial
        if len(missing) < len(_expected(name)):
            partial.append(f"{folder} lacks: {', '.join(missing)}")
    return None, partial


def _download(name: str, root: Path) -> None:
    """torchvision's download into root (writes MNIST/raw, FashionMNIST/raw or cifar-10-batches-py)."""
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    cls(str(root), train=True, download=True)
    cls(str(root), train=False, download=True)


def locate(name: str, data_dir=None) -> Path:
    """The folder holding `name`'s files, downloading them as the last resort (for a folder:PATH or
    npz:PATH dataset: that path)."""
    if check_dataset(name) not in DATASETS:
        return _load_source(check_dataset(name), data_dir).folder
    _check_name(name)
    roots = _roots(data_dir)
    folders = [f for r in roots for f in _folders(name, r)] + [DEBIAN_DIR / name.replace("_", "-")]
    folder, partial = _search(name, folders)
    if folder:
        return folder
    # Several trials on one node may start at once: one downloads, the others wait and then find it.
    from filelock import FileLock

    target = roots[0]
    try:
        target.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target / f".{name}.download.lock")):
            folder = _search(name, _folders(name, target))[0]
            if folder is None:
                _download(name, target)
                folder = _search(name, _folders(name, target))[0]
        if folder:
            return folder
        reason = "the download finished without the expected files"
    except HpoError:
        raise
    except Exception as e:  # no network, read-only dir, ...: the message below says what to do
        reason = f"{type(e).__name__}: {' '.join(str(e).split())}"  # one paragraph
    suffix = "" if name == "cifar10" else " (or .gz)"
    incomplete = f" Incomplete: {'; '.join(partial)}." if partial else ""
    raise HpoError(
        f"Dataset {name!r} not found. Looked in: {', '.join(str(f) for f in folders)}.{incomplete} "
        f"Expected files: {', '.join(_expected(name))}{suffix}. Downloading into {target} failed ({reason}). "
        f"Put them in {_folders(name, target)[0]}/, or pass --data-dir DIR (or set $HPO_DATA_DIR) "
        f"with them in {_folders(name, Path('DIR'))[0]}/."
    )


@functools.lru_cache(maxsize=8)
def _read_split(name: str, folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    info = DATASETS[name]
    if name == "cifar10":
        parts = [read_cifar_batch(folder / f) for f in _CIFAR_FILES[split]]
        x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    else:
        xf, yf = (_file(name, folder, f) for f in _IDX_FILES[split])
        x, y = read_idx(xf), read_idx(yf).long()
        if x.ndim != 3 or x.shape[1:] != (info.size, info.size):
            raise HpoError(f"{xf}: expected images of shape [N, {info.size}, {info.size}], got {list(x.shape)}.")
        x = x.unsqueeze(1)
        if y.ndim != 1:
            raise HpoError(f"{yf}: expected a 1-d labels file, got shape {list(y.shape)}.")
    if len(x) != len(y):
        raise HpoError(f"{folder}: the {split} split has {len(x)} images but {len(y)} labels.")
    if len(y) and (y.min() < 0 or y.max() >= info.num_classes):
        raise HpoError(f"{folder}: {split} labels must lie in 0..{info.num_classes - 1}.")
    return x, y


def load_raw(name: str, split: str, data_dir=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 [N,C,H,W], int64 [N]) on CPU; read once per process (do not modify in place)."""
    if split not in _IDX_FILES:
        raise HpoError(f"Unknown split {split!r}; choose 'train' or 'test'.")
    if check_dataset(name) not in DATASETS:
        loaded = _load_source(check_dataset(name), data_dir)
        return loaded.train if split == "train" else loaded.test
    return _read_split(name, locate(name, data_dir).resolve(), split)


# ---------------------------------------------------------------- batching

def _randint(high: int, n: int, generator, device) -> torch.Tensor:
    # A generator draws on its own device (a CUDA generator for CUDA); move the result to the data.
    g_device = generator.device if generator is not None else device
    return torch.randint(high, (n,), generator=generator, device=g_device).to(device)


def batch_flip_lr(x: torch.Tensor, generator=None) -> torch.Tensor:
    flip = _randint(2, len(x), generator, x.device).bool()
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def batch_crop(x: torch.Tensor, pad: int = 4, generator=None) -> torch.Tensor:
    """Random crop of every image from its reflect-padded copy (one shift per image, no python loop)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad,) * 4, mode="reflect")
    dy = _randint(2 * pad + 1, n, generator, x.device)
    dx = _randint(2 * pad + 1, n, generator, x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


@dataclass
class Split:
    images: torch.Tensor  # float32 [N,C,H,W], normalised, on the target device
    labels: torch.Tensor  # int64 [N], same device

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                augment: bool = False, resize: int | None = None, permutation: torch.Tensor | None = None):
        """Yield (x, y); the last partial batch is kept. Order: augment, permutation, resize."""
        n, device = len(self), self.images.device
        permutation = permutation.to(device) if permutation is not None else None
        if shuffle:
            g_device = generator.device if generator is not None else device
            order = torch.randperm(n, generator=generator, device=g_device).to(device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size] if shuffle else slice(start, start + batch_size)
            x, y = self.images[idx], self.labels[idx]
            if augment:
                x = batch_flip_lr(batch_crop(x, 4, generator), generator)
            yield pixel_transforms(x, permutation, resize), y


def pixel_transforms(x: torch.Tensor, permutation: torch.Tensor | None = None,
                     resize: int | None = None) -> torch.Tensor:
    """A batch's fixed pixel permutation, then its resize: the one copy the eager loop (Split.batches) and
    the CUDA-graph step (hpo.trainable.GraphedStep) share, so the two cannot drift apart."""
    if permutation is not None:
        x = x.flatten(2)[:, :, permutation].view_as(x)
    if resize is not None and resize != x.shape[-1]:
        x = F.interpolate(x, size=(resize, resize), mode="bilinear", align_corners=False)
    return x


@dataclass
class Data:
    info: DatasetInfo
    train: Split
    val: Split
    test: Split


def normalization(info: DatasetInfo, normalize="dataset") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel: "dataset" = the dataset's own, "none" = pixels stay in [0, 1],
    [mean, std] = a write-up's transforms.Normalize (numbers, or one per channel), e.g. [0.5, 0.5]."""
    if normalize in (None, "dataset"):
        return info.mean, info.std
    if normalize == "none":
        return (0.0,) * info.channels, (1.0,) * info.channels
    try:
        mean, std = ((float(v),) * info.channels if isinstance(v, (int, float)) else tuple(map(float, v))
                     for v in normalize)
    except (TypeError, ValueError):
        mean = std = ()
    if len(mean) != info.channels or len(std) != info.channels or min(std) <= 0:
        raise HpoError(f"normalize={normalize!r} does not fit {info.name} ({info.channels} channel(s)): use "
                       f"\"dataset\", \"none\" or [mean, std] with a number or {info.channels} numbers each, std > 0.")
    return mean, std


def _split(x: torch.Tensor, y: torch.Tensor, info: DatasetInfo, device, normalize="dataset") -> Split:
    # Move as uint8 (4x less to copy), then convert and normalise once on the device.
    x = x.to(device).float().div_(255)
    mean, std = normalization(info, normalize)
    mean = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return Split(x.sub_(mean).div_(std), y.to(device))


def load_data(name: str, *, data_dir=None, val_fraction: float = 1 / 6, device="cpu",
              max_train: int | None = None, max_eval: int | None = None, normalize="dataset") -> Data:
    """Train/val split of the training set (fixed seed: the same for every trial), plus the test set.
    `normalize`: see `normalization`."""
    info = dataset_info(name, data_dir)
    name = info.name  # canonical: folder:/npz: paths absolute
    normalization(info, normalize)  # a bad value fails before any file is read
    if not 0 < val_fraction < 1:
        raise HpoError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}.")
    x, y = load_raw(name, "train", data_dir)
    xt, yt = load_raw(name, "test", data_dir)
    g = torch.Generator().manual_seed(SPLIT_SEED)
    perm = torch.randperm(len(y), generator=g)
    n_val = round(len(y) * val_fraction)
    if not 0 < n_val < len(y):
        raise HpoError(f"val_fraction {val_fraction} leaves an empty train or val split of {len(y)} images.")
    val_idx, train_idx = perm[:n_val][:max_eval], perm[n_val:][:max_train]
    test_idx = torch.randperm(len(yt), generator=g)[:max_eval]  # capped test sets sample all classes too
    return Data(
        info,
        train=_split(x[train_idx], y[train_idx], info, device, normalize),
        val=_split(x[val_idx], y[val_idx], info, device, normalize),
        test=_split(xt[test_idx], yt[test_idx], info, device, normalize),
    )


def pixel_permutation(num_pixels: int, device="cpu") -> torch.Tensor:
    """A fixed permutation of pixel indices, identical across trials and processes (write-up 002)."""
    return torch.randperm(num_pixels, generator=torch.Generator().manual_seed(PERMUTATION_SEED)).to(device)
