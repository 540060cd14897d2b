"""What a dataset is and how its files are read: the leaf that hpo.data (the built-in datasets) and
hpo.sources (torchvision:, folder:, npz:) both stand on. Readers take bytes only: a file cannot run code.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hpo.errors import HpoError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    size: int  # images are size x size
    num_classes: int
    mean: tuple[float, ...]  # per channel, in [0, 1] pixel units
    std: tuple[float, ...]
    classes: tuple[str, ...]


def read_idx(path) -> torch.Tensor:
    """Read an IDX file (gzipped or raw) of unsigned bytes: images [N,H,W] or labels [N]."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic: decide by content, not by suffix
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; EOFError: truncated gzip
        raise HpoError(f"Cannot read {path}: {e}. Replace the file with an intact copy.") from None
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise HpoError(f"{path} is not an IDX file: bad magic number {raw[:4].hex() or '(empty file)'}.")
    code, ndim = raw[2], raw[3]
    if code != 0x08:
        raise HpoError(f"{path}: IDX data type code 0x{code:02x}, expected 0x08 (unsigned byte).")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise HpoError(f"{path}: IDX header is truncated or declares {ndim} dimensions.")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) != header + math.prod(dims):
        raise HpoError(
            f"{path}: expected {header + math.prod(dims)} bytes for an IDX array of shape {dims}, "
            f"got {len(raw)} (truncated or corrupt file)."
        )
    return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy())


class _NumpyUnpickler(pickle.Unpickler):
    """Builds numpy arrays and nothing else, so a data file cannot run code."""

    def find_class(self, module, name):
        if module.split(".")[0] == "numpy" and name in {"_reconstruct", "ndarray", "dtype", "_frombuffer"}:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):  # bytes in a protocol-2 pickle written by Python 3
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def unpickle_arrays(path, kind: str = "CIFAR python batch"):
    """A pickle of numpy arrays, lists, bytes and numbers (CIFAR's files), refusing anything else."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _NumpyUnpickler(f, encoding="bytes").load()
    except Exception as e:  # pickle raises many types (EOFError, UnpicklingError, ValueError...)
        raise HpoError(f"{path} is not a {kind} ({type(e).__name__}: {e}).") from None


def read_cifar_batch(path, labels_key: bytes = b"labels") -> tuple[torch.Tensor, torch.Tensor]:
    """Read one CIFAR-10 python batch (or CIFAR-100's train/test, labels_key=b"fine_labels"):
    (uint8 [N,3,32,32], int64 [N])."""
    path = Path(path)
    kind = "CIFAR-10 python batch" if labels_key == b"labels" else "CIFAR-100 python file"
    batch = unpickle_arrays(path, kind)
    if not isinstance(batch, dict) or b"data" not in batch or labels_key not in batch:
        raise HpoError(f"{path} is not a {kind}: expected a dict with b'data' and {labels_key!r}.")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[labels_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != data.shape[:1]:
        raise HpoError(
            f"{path}: expected uint8 data of shape [N, 3072] and N labels, "
            f"got data {data.dtype} {list(data.shape)} and {labels.size} labels."
        )
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels.astype(np.int64))
