"""Your own model and your own dataset in a study file (issue 13): model=<a class or factory> or
"package.module:Name"; dataset="torchvision:NAME", "folder:PATH" or "npz:PATH".

Datasets are written in the real on-disk formats torchvision reads (KMNIST's and EMNIST's IDX files,
SVHN's .mat, CIFAR-100's pickles, STL-10's binaries), real PNG files for an image folder, and real
.npz files. The end-to-end tests run the real CLI on the real Ray Tune, like tests/test_run.py.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import filelock
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import fake_images, write_idx
from hpo import HpoError, sources
from hpo.data import check_dataset, dataset_info, load_data, load_raw, locate
from hpo.models import ModelRef, as_model, build_model, check_build, check_model_name, count_params, model_options
from hpo.plan import RunOptions
from hpo.run import load_study, main, plan
from hpo.studydir import check_resumable

ROOT = Path(__file__).resolve().parents[1]

OWN_MODEL = '''
import torch
from torch import nn
from ray import tune
from hpo import Study


class TinyNet(nn.Module):
    """A conv net of the study file's own."""

    def __init__(self, in_channels, num_classes, image_size, *, width=4, activation="relu"):
        super().__init__()
        if activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be relu or tanh, not {activation!r}")
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.act = nn.ReLU() if activation == "relu" else nn.Tanh()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(width * 16, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.act(self.conv1(x))).flatten(1))
'''


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No $HPO_DATA_DIR, an empty working directory, no network, nothing cached from another test."""
    monkeypatch.delenv("HPO_DATA_DIR", raising=False)
    monkeypatch.delenv("HPO_DATA_LIMIT_GB", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")

    def no_network(tv, split, root):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(sources, "tv_download", no_network)
    sources.load.cache_clear()
    yield
    sources.load.cache_clear()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def own_study(tmp_path, tail: str, name="own_study.py") -> Path:
    return write(tmp_path / name, OWN_MODEL + textwrap.dedent(tail))


# ====================================================================== models

def test_a_class_in_the_study_file_is_a_model_with_its_options(tmp_path):
    path = own_study(tmp_path, """
        study = Study(name="own", dataset="mnist", model=TinyNet,
                      space={"width": tune.grid_search([2, 8]), "activation": "tanh", "lr": 0.05})
    """)
    study = load_study(str(path))
    assert isinstance(study.model, ModelRef) and str(study.model) == f"{path}:TinyNet"
    assert model_options(study.model) == {"width": 4, "activation": "relu"}
    net = build_model(study.model, in_channels=1, num_classes=10, image_size=28, width=8)
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 10) and count_params(net) == 8 * 9 + 8 + 8 * 16 * 10 + 10
    # study.json and the --resume comparison: a readable label, the same in every process
    described = json.dumps(study.to_json())
    assert f'"model": "{path}:TinyNet"' in described and "0x" not in described
    # relative to the working directory when the file lies inside it
    os.chdir(tmp_path)
    assert str(load_study(path.name).model) == "own_study.py:TinyNet"


def test_an_own_model_s_options_are_checked_like_the_built_ins(tmp_path):
    path = own_study(tmp_path, """
        study = Study(name="own", dataset="mnist", model=TinyNet, space={"depth": 3})
    """)
    with pytest.raises(HpoError, match=r"unknown space key 'depth'.*Model '\S+own_study.py:TinyNet' takes: "
                                       r"activation, width"):
        load_study(str(path))
    # a value the model's own code refuses, found before Ray starts, on the meta device
    path = own_study(tmp_path, """
        study = Study(name="own", dataset="mnist", model=TinyNet,
                      space={"activation": tune.grid_search(["relu", "gelu"])})
    """)
    with pytest.raises(HpoError, match=r"TinyNet' \(activation='gelu'\) raised ValueError: activation must be relu"):
        load_study(str(path))


@pytest.mark.parametrize("factory, message", [
    ("def Net(in_channels, num_classes, *, width=4):\n    return nn.Linear(1, 1)",
     r"'\S+:Net' cannot be a model: it must be callable as Net\(in_channels, num_classes, image_size, \*, "
     r"option=default, ...\).*it takes no image_size \(it takes: in_channels, num_classes, width\)"),
    ("def Net(in_channels, num_classes, image_size, width):\n    return nn.Linear(1, 1)",
     r"width has no default"),
    ("def Net(in_channels, num_classes, image_size):\n    return {'fc': nn.Linear(1, 1)}",
     r"'\S+:Net' returned a dict, not a torch.nn.Module"),
    ("def Net(in_channels, num_classes, image_size):\n"
     "    return nn.Sequential(nn.Flatten(), nn.Linear(100, num_classes))",
     r"'\S+:Net' fails on a batch of 2 images of 1x28x28 \(RuntimeError: .*shapes cannot be multiplied.*resize"),
    ("def Net(in_channels, num_classes, image_size):\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 7))",
     r"'\S+:Net' gives \[2, 7\] for a batch of 2 images of 1x28x28; it must give logits \[2, 10\]"),
])
def test_a_model_callable_of_the_wrong_form_is_one_paragraph_naming_it(tmp_path, capsys, factory, message):
    path = write(tmp_path / "bad_model.py", f"""
from torch import nn
from hpo import Study
{factory}
study = Study(name="s", dataset="mnist", model=Net)
""")
    code = main([str(path), "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err and "\n" not in err.strip()
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "results").exists()


def test_a_forward_the_meta_device_cannot_run_is_checked_on_the_cpu():
    class Net(torch.nn.Module):
        def __init__(self, in_channels, num_classes, image_size, outputs=None):
            super().__init__()
            self.fc = torch.nn.Linear(in_channels * image_size ** 2, outputs or num_classes)

        def forward(self, x):
            scale = float(x.abs().max().item()) + 1  # .item() has no meta kernel
            return self.fc(x.flatten(1)) / scale

    check_build(as_model(Net), in_channels=1, num_classes=10, image_size=8)  # passes on the CPU
    with pytest.raises(HpoError, match=r"gives \[2, 3\] .* must give logits \[2, 10\]"):  # and is checked there
        check_build(as_model(Net), in_channels=1, num_classes=10, image_size=8, outputs=3)


def test_import_paths(tmp_path, monkeypatch):
    write(tmp_path / "pkg" / "ownnets.py", """
        from torch import nn

        def small_cnn(in_channels, num_classes, image_size, *, width=3):
            return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(width * image_size * image_size, num_classes))
    """)
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    check_model_name("ownnets:small_cnn")
    assert model_options("ownnets:small_cnn") == {"width": 3}
    model = build_model("ownnets:small_cnn", in_channels=3, num_classes=5, image_size=8)
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 5)
    import ownnets
    assert as_model(ownnets.small_cnn) == "ownnets:small_cnn"  # an importable callable is run by its path
    from hpo.models import lenet5
    assert as_model(lenet5) == "lenet5"
    with pytest.raises(HpoError, match=r"model 'nosuchpkg.nets:Net': module 'nosuchpkg.nets' does not import "
                                       r"\(ModuleNotFoundError: No module named 'nosuchpkg'\)"):
        check_model_name("nosuchpkg.nets:Net")
    with pytest.raises(HpoError, match=r"module 'ownnets' has no 'SmallCNN'. It has: .*small_cnn"):
        check_model_name("ownnets:SmallCNN")
    with pytest.raises(HpoError, match=r"'studies/nets.py:Net' is not an import path"):
        check_model_name("studies/nets.py:Net")
    # as a study's model and in a `model` grid beside a built-in
    from hpo import Study
    from ray import tune
    study = Study(name="s", dataset="mnist", model="lenet5",
                  space={"model": tune.grid_search(["lenet5", "ownnets:small_cnn"]), "lr": 0.1})
    assert study.models() == ["lenet5", "ownnets:small_cnn"]


def test_a_study_file_class_pickles_by_value_into_another_process(tmp_path):
    """What Ray does with the run's settings, and what a checkpoint holds: the class itself, by value
    (runpy runs a study file as a module no other process can import)."""
    path = own_study(tmp_path, 'study = Study(name="own", dataset="mnist", model=TinyNet)\n')
    ref = load_study(str(path)).model
    blob = tmp_path / "ref.pt"
    torch.save({"model": ref, "state": build_model(ref, in_channels=1, num_classes=10, image_size=28).state_dict()},
               blob)
    code = f"""
import torch
from hpo.models import build_model, count_params
saved = torch.load({str(blob)!r}, weights_only=False)
net = build_model(saved["model"], in_channels=1, num_classes=10, image_size=28)
net.load_state_dict(saved["state"])
print(saved["model"], type(saved["model"]).__name__, count_params(net))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [f"{path}:TinyNet", "ModelRef", str(4 * 9 + 4 + 4 * 16 * 10 + 10)]
    assert pickle.loads(pickle.dumps(ref)) == ref


# ====================================================================== torchvision:NAME

def write_kmnist(root: Path, n_train=120, n_test=40, seed=0) -> Path:
    """KMNIST as torchvision keeps it: <root>/KMNIST/raw/*-idx?-ubyte (uncompressed IDX)."""
    rng = np.random.default_rng(seed)
    raw = root / "KMNIST" / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", fake_images(y, 1, 28, rng)[:, 0])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
    return root


def test_torchvision_kmnist_from_its_idx_files_is_converted_once(tmp_path, monkeypatch):
    root = write_kmnist(tmp_path / "data")
    info = dataset_info("torchvision:KMNIST", root)
    assert (info.channels, info.size, info.num_classes) == (1, 28, 10) and info.classes[:3] == ("o", "ki", "su")
    x, y = load_raw("torchvision:KMNIST", "train", root)
    assert x.dtype == torch.uint8 and x.shape == (120, 1, 28, 28) and y.dtype == torch.int64
    raw = root / "KMNIST" / "raw" / "train-images-idx3-ubyte"
    pixels = np.frombuffer(raw.read_bytes(), np.uint8, offset=16).reshape(-1, 28, 28).copy()
    assert torch.equal(x[:, 0], torch.from_numpy(pixels))
    mean = x.double().mean().item() / 255
    assert info.mean[0] == pytest.approx(mean, abs=1e-5)  # statistics of the training split
    assert (root / "KMNIST.hpo.pt").is_file() and locate("torchvision:KMNIST", root) == root / "KMNIST" / "raw"
    # later processes read the converted file only: torchvision's files are never read again
    sources.load.cache_clear()
    monkeypatch.setattr(sources, "tv_read", lambda *a: pytest.fail("read the files again"))
    again = load_data("torchvision:KMNIST", data_dir=root)
    assert again.info == info and len(again.train) + len(again.val) == 120 and len(again.test) == 40


def test_torchvision_emnist_split_reads_its_own_files_upright(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "data" / "EMNIST" / "raw"
    images = {}
    for part, n in (("train", 60), ("test", 20)):
        y = (np.arange(n) % 26 + 1).astype(np.uint8)  # letters: 1..26
        images[part] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        write_idx(raw / f"emnist-letters-{part}-images-idx3-ubyte", images[part])
        write_idx(raw / f"emnist-letters-{part}-labels-idx1-ubyte", y)
    info = dataset_info("torchvision:EMNIST/letters", tmp_path / "data")
    assert info.num_classes == 27 and info.classes[:3] == ("N/A", "a", "b")
    x, _ = load_raw("torchvision:EMNIST/letters", "train", tmp_path / "data")
    assert torch.equal(x[:, 0], torch.from_numpy(images["train"]).transpose(1, 2))  # EMNIST's files are transposed
    with pytest.raises(HpoError, match=r"needs one of its splits: torchvision:EMNIST/byclass"):
        check_dataset("torchvision:EMNIST")
    with pytest.raises(HpoError, match=r"EMNIST/balanced.*not found.*emnist-balanced-train-images-idx3-ubyte"):
        dataset_info("torchvision:EMNIST/balanced", tmp_path / "data")


def test_torchvision_svhn_from_its_mat_files(tmp_path):
    import scipy.io

    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(1)
    stored = {}
    for split, n in (("train", 50), ("test", 20)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # SVHN's layout: H, W, C, N
        y = (np.arange(n) % 10 + 1).reshape(-1, 1).astype(np.uint8)  # the digit 0 is labelled 10
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
        stored[split] = (x, y)
    x, y = load_raw("torchvision:SVHN", "train", root)
    assert x.shape == (50, 3, 32, 32) and sorted(set(y.tolist())) == list(range(10))
    assert y[9] == 0 and y[0] == 1
    assert torch.equal(x[7, 2], torch.from_numpy(stored["train"][0][:, :, 2, 7]))  # as torchvision: (3, 2, 0, 1)
    assert dataset_info("torchvision:SVHN", root).classes == tuple("0123456789")


def test_torchvision_cifar100_from_its_pickles_with_its_class_names(tmp_path):
    folder = tmp_path / "data" / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for split, n in (("train", 200), ("test", 100)):
        batch = {b"filenames": [b"x.png"] * n, b"batch_label": split.encode(),
                 b"fine_labels": [i % 100 for i in range(n)], b"coarse_labels": [i % 20 for i in range(n)],
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (folder / split).write_bytes(pickle.dumps(batch, protocol=2))
    names = [f"class{i}".encode() for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": names, b"coarse_label_names": []}, protocol=2))
    info = dataset_info("torchvision:CIFAR100", tmp_path / "data")
    assert (info.channels, info.size, info.num_classes, info.classes[99]) == (3, 32, 100, "class99")
    assert len(info.mean) == 3
    assert load_raw("torchvision:CIFAR100", "test", tmp_path / "data")[0].shape == (100, 3, 32, 32)


def test_torchvision_stl10_from_its_binaries(tmp_path):
    folder = tmp_path / "data" / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for split, n in (("train", 10), ("test", 10)):
        rng.integers(0, 256, n * 3 * 96 * 96, dtype=np.uint8).tofile(folder / f"{split}_X.bin")
        (np.arange(n) % 10 + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
    info = dataset_info("torchvision:STL10", tmp_path / "data")
    assert (info.channels, info.size, info.classes[0]) == (3, 96, "airplane")
    assert load_raw("torchvision:STL10", "train", tmp_path / "data")[1].tolist() == list(range(10))


def test_a_missing_torchvision_dataset_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(HpoError) as e:
        dataset_info("torchvision:KMNIST", tmp_path / "arg")
    msg = str(e.value)
    for text in ("Dataset 'torchvision:KMNIST' not found", str(tmp_path / "arg" / "KMNIST" / "raw"),
                 str(tmp_path / "env" / "KMNIST" / "raw"), "train-images-idx3-ubyte, train-labels-idx1-ubyte",
                 "network unreachable (test)", f"torchvision.datasets.KMNIST(root='{tmp_path / 'arg'}'",
                 "--data-dir"):
        assert text in msg, text
    assert "\n" not in msg
    # partly there: named, and skipped
    write_kmnist(tmp_path / "env")
    (tmp_path / "env" / "KMNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(HpoError, match=r"Incomplete: \S+env/KMNIST/raw lacks: t10k-labels-idx1-ubyte"):
        dataset_info("torchvision:KMNIST", tmp_path / "arg")


def test_a_torchvision_download_goes_to_the_first_dir_under_the_lock(tmp_path, monkeypatch):
    calls = []

    def fake_download(tv, split, root):  # torchvision's layout, as its download writes it
        with pytest.raises(filelock.Timeout):  # another process could not download now
            filelock.FileLock(str(root / ".KMNIST.download.lock")).acquire(timeout=0)
        calls.append(root)
        write_kmnist(root)

    monkeypatch.setattr(sources, "tv_download", fake_download)
    assert len(load_raw("torchvision:KMNIST", "train", tmp_path / "arg")[1]) == 120
    sources.load.cache_clear()
    assert len(load_raw("torchvision:KMNIST", "test", tmp_path / "arg")[1]) == 40
    assert calls == [tmp_path / "arg"] and (tmp_path / "arg" / "KMNIST.hpo.pt").is_file()


def test_corrupt_torchvision_files_are_named(tmp_path):
    root = write_kmnist(tmp_path / "data")
    (root / "KMNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(HpoError, match=r"'torchvision:KMNIST': the files in \S+KMNIST/raw cannot be read"):
        dataset_info("torchvision:KMNIST", root)


# ====================================================================== folder:PATH

def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_image_folder(root: Path, classes=("cat", "dog", "fox"), per_class=10, size=16, test=True, gray=False,
                       seed=0) -> Path:
    """An ImageFolder tree of real PNGs whose classes a small net can tell apart (a bright bar per class)."""
    rng = np.random.default_rng(seed)
    splits = {"train": per_class, "test": per_class // 2} if test else {"train": per_class}
    for split, n in splits.items():
        for label, name in enumerate(classes):
            for i in range(n):
                image = fake_images(np.array([label]), 1 if gray else 3, size, rng)[0]
                write_png(root / split / name / f"{i:03d}.png", image[0] if gray else image.transpose(1, 2, 0))
    return root


def test_an_image_folder_is_decoded_once_with_its_class_names(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "pets")
    (root / "train" / "cat" / "notes.txt").write_text("not an image: skipped")
    name = f"folder:{root}"
    info = dataset_info(name)
    assert (info.channels, info.size, info.num_classes, info.classes) == (3, 16, 3, ("cat", "dog", "fox"))
    x, y = load_raw(name, "train")
    assert x.shape == (30, 3, 16, 16) and y.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    first = np.array(Image.open(root / "train" / "dog" / "000.png")).transpose(2, 0, 1)
    assert torch.equal(x[10], torch.from_numpy(first))
    assert len(load_raw(name, "test")[1]) == 15 and (root / ".hpo-native.pt").is_file()
    # later processes read the cache; a changed folder is decoded again
    sources.load.cache_clear()
    decode = sources._decode
    monkeypatch.setattr(sources, "_decode", lambda *a: pytest.fail("decoded again"))
    assert torch.equal(load_raw(name, "train")[0], x)
    monkeypatch.setattr(sources, "_decode", decode)
    write_png(root / "train" / "fox" / "999.png", np.zeros((16, 16, 3), np.uint8))
    sources.load.cache_clear()
    assert len(load_raw(name, "train")[1]) == 31


def test_an_image_folder_without_test_is_split_with_a_fixed_seed_and_resized_on_request(tmp_path):
    root = write_image_folder(tmp_path / "gray", per_class=10, test=False, gray=True)
    write_png(root / "train" / "cat" / "big.png", np.full((40, 24), 255, np.uint8))  # another size
    with pytest.raises(HpoError, match=r"images of mixed sizes: \S+ is 16x16 but \S+big.png is 24x40.*\?size=N"):
        dataset_info(f"folder:{root}")
    info = dataset_info(f"folder:{root}?size=8")
    assert (info.channels, info.size, info.name) == (1, 8, f"folder:{root}?size=8")
    x, y = load_raw(f"folder:{root}?size=8", "train")
    xt, yt = load_raw(f"folder:{root}?size=8", "test")
    assert len(y) + len(yt) == 31 and sorted(yt.tolist()) == [0, 0, 1, 1, 2, 2]  # 20% of each class
    sources.load.cache_clear()
    (root / ".hpo-8.pt").unlink()
    assert torch.equal(load_raw(f"folder:{root}?size=8", "test")[1], yt)  # the same split every time
    # relative paths are made absolute in the study (trials run in other working directories)
    os.chdir(tmp_path)
    assert check_dataset("folder:gray?size=8") == f"folder:{root}?size=8"


@pytest.mark.parametrize("case, message", [
    ("no class folders", r"\S+flat/train has no class subfolders \(2 image files lie directly in it\)"),
    ("unreadable image", r"cannot read image \S+train/dog/001.png \(UnidentifiedImageError"),
    ("mixed sizes", r"images of mixed sizes: \S+ is 16x16 but \S+ is 12x12.*folder:\S+\?size=N"),
    ("unknown test class", r"test class folder \S+test/wolf is not a class of"),
])
def test_bad_image_folders_are_named(tmp_path, case, message):
    root = tmp_path / "flat"
    if case == "no class folders":
        for i in range(2):
            write_png(root / "train" / f"{i}.png", np.zeros((8, 8), np.uint8))
    else:
        write_image_folder(root)
    if case == "unreadable image":
        (root / "train" / "dog" / "001.png").write_bytes(b"not a png")
    if case == "mixed sizes":
        write_png(root / "test" / "cat" / "small.png", np.zeros((12, 12, 3), np.uint8))
    if case == "unknown test class":
        write_png(root / "test" / "wolf" / "0.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(HpoError, match=message) as e:
        dataset_info(f"folder:{root}")
    assert f"folder:{root}" in str(e.value)


# ====================================================================== npz:PATH

def write_npz(path: Path, n_train=90, n_test=30, size=12, layout="NHWC", floats=False, **extra) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % 3
        x = fake_images(y, 3, size, rng)  # N, C, H, W
        x = x.transpose(0, 2, 3, 1) if layout == "NHWC" else x
        arrays[f"x_{split}"], arrays[f"y_{split}"] = (x / 255.0 if floats else x), y
    arrays.update(extra)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("layout, floats", [("NHWC", False), ("NCHW", True)])
def test_an_npz_file_in_any_layout(tmp_path, layout, floats):
    path = write_npz(tmp_path / "d.npz", layout=layout, floats=floats, classes=np.array(["a", "b", "c"]))
    data = load_data(f"npz:{path}", val_fraction=0.2)
    assert (data.info.channels, data.info.size, data.info.classes) == (3, 12, ("a", "b", "c"))
    assert (len(data.train), len(data.val), len(data.test)) == (72, 18, 30)
    x, _ = load_raw(f"npz:{path}", "train")
    reference = write_npz(tmp_path / "ref.npz", layout="NCHW")
    assert torch.equal(x, torch.from_numpy(np.load(reference)["x_train"]))  # the same pixels, whatever the layout
    # normalised with the training split's own statistics
    assert data.train.images.mean().item() == pytest.approx(0, abs=0.2)


def test_an_npz_of_one_channel_without_class_names(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "g.npz"
    np.savez(path, x_train=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8), y_train=np.arange(20) % 4,
             x_test=rng.integers(0, 256, (8, 8, 8), dtype=np.uint8), y_test=np.arange(8) % 4)
    info = dataset_info(f"npz:{path}")
    assert (info.channels, info.size, info.classes) == (1, 8, ("0", "1", "2", "3"))


@pytest.mark.parametrize("change, message", [
    ({"y_test": None}, r"\S+bad.npz lacks y_test \(it has: x_train, y_train, x_test\)"),
    ({"y_train": np.arange(90) % 3 - 1}, r"y_train\) has label -1, out of range"),
    ({"y_test": np.arange(30) % 5}, r"the test split has label 4, out of range: labels must lie in 0..2"),
    ({"classes": np.array(["a", "b"])}, r"the training split has label 2, out of range: labels must lie in 0..1"),
    ({"x_train": np.full((90, 12, 12), 2.0)}, r"x_train\) holds floats from 2 to 2; float images must lie in \[0, 1\]"),
    ({"x_train": np.zeros((90, 12, 10), np.uint8)}, r"x_train\) holds 12x10 images; they must be square"),
    ({"y_train": np.zeros(89, np.int64)}, r"the train split has 90 images but 89 labels"),
])
def test_bad_npz_files_are_named(tmp_path, change, message):
    path = write_npz(tmp_path / "bad.npz", **{k: v for k, v in change.items() if k == "classes"})
    if "classes" not in change:
        arrays = dict(np.load(path))
        arrays.update(change)
        np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(HpoError, match=message) as e:
        dataset_info(f"npz:{path}")
    assert f"npz:{path}" in str(e.value) and "\n" not in str(e.value)


def test_a_dataset_too_large_for_the_device_is_refused_with_its_size_and_the_limit(tmp_path, monkeypatch):
    path = write_npz(tmp_path / "d.npz")
    monkeypatch.setenv("HPO_DATA_LIMIT_GB", "0.0001")
    with pytest.raises(HpoError, match=r"'npz:\S+d.npz' is too large for the device: its 120 images of 3x12x12 take "
                                       r"0.2 MB as float32.*more than the limit of 0.1 MB \(\$HPO_DATA_LIMIT_GB\)"):
        dataset_info(f"npz:{path}")
    monkeypatch.delenv("HPO_DATA_LIMIT_GB")
    limit, what = sources.device_limit()
    assert limit > 0 and ("GPU" in what if torch.cuda.is_available() else "no GPU" in what)


# ====================================================================== the command line

def test_dataset_names_in_a_study(tmp_path):
    from hpo import Study

    with pytest.raises(HpoError, match=r"field 'dataset': Unknown dataset 'torchvision:ImageNet'; allowed: mnist, "
                                       r"fashion_mnist, cifar10, torchvision:NAME \(NAME: KMNIST, EMNIST/SPLIT"):
        Study(name="s", dataset="torchvision:ImageNet", model="lenet5")
    with pytest.raises(HpoError, match=r"Unknown dataset 'svhn'.*Did you mean 'torchvision:SVHN'"):
        Study(name="s", dataset="svhn", model="lenet5")
    # torchvision datasets are not read when a study is checked: their shapes are known
    study = Study(name="s", dataset="torchvision:STL10", model="vgg", space={"feature_maps": 8})
    assert study.dataset == "torchvision:STL10"
    with pytest.raises(HpoError, match=r"vgg.*32x32"):
        Study(name="s", dataset="torchvision:EMNIST/digits", model="vgg")


BAD_DATA = {
    "folder without class subfolders": (
        lambda t: (write_png(t / "flat" / "train" / "a.png", np.zeros((8, 8), np.uint8)), f"folder:{t / 'flat'}")[1],
        "has no class subfolders"),
    "unreadable image": (lambda t: ((write_image_folder(t / "imgs") / "train" / "cat" / "003.png").write_bytes(b"x"),
                                    f"folder:{t / 'imgs'}")[1], "cannot read image"),
    "mixed sizes": (lambda t: (write_image_folder(t / "imgs"), write_png(t / "imgs" / "train" / "fox" / "x.png",
                                                                         np.zeros((9, 9, 3), np.uint8)),
                               f"folder:{t / 'imgs'}")[2], "images of mixed sizes"),
    "labels out of range": (lambda t: f"npz:{write_npz(t / 'd.npz', classes=np.array(['a', 'b']))}", "out of range"),
    "npz missing a key": (lambda t: (np.savez(t / "d.npz", x_train=np.zeros((4, 8, 8), np.uint8)),
                                     f"npz:{t / 'd.npz'}")[1], "lacks y_train, x_test, y_test"),
    "unknown torchvision dataset": (lambda t: "torchvision:Imagenette", "Unknown dataset 'torchvision:Imagenette'"),
    "too large": (lambda t: f"npz:{write_npz(t / 'd.npz')}", "too large for the device"),
}


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_own_data_through_the_command_line(case, tmp_path, capsys, monkeypatch):
    make, expected = BAD_DATA[case]
    dataset = make(tmp_path)
    if case == "too large":
        monkeypatch.setenv("HPO_DATA_LIMIT_GB", "0.0001")
    path = write(tmp_path / "study.py", f"""
        from hpo import Study
        study = Study(name="s", dataset={dataset!r}, model="fc2")
    """)
    code = main([str(path), "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err and "\n" not in err.strip(), err
    assert expected in err and dataset.partition("?")[0] in err
    assert not (tmp_path / "results").exists()  # nothing written


def test_the_real_command_exits_2_for_a_bad_folder(tmp_path):
    write_png(tmp_path / "flat" / "train" / "a.png", np.zeros((8, 8), np.uint8))
    path = write(tmp_path / "study.py", f"""
        from hpo import Study
        study = Study(name="s", dataset="folder:{tmp_path / 'flat'}", model="fc2")
    """)
    proc = subprocess.run([sys.executable, "-m", "hpo.run", str(path), "--results", str(tmp_path / "results")],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "has no class subfolders" in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "results").exists()


# ====================================================================== end to end: real Ray Tune

def hpo_run(*args, env=None, timeout=400) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "hpo.run", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"hpo.run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def report(study_dir: Path):
    d = study_dir / "report"
    return pd.read_csv(d / "trials.csv"), json.loads((d / "study.json").read_text())


@pytest.mark.slow
def test_own_models_in_a_real_study_on_an_npz_dataset(tmp_path, monkeypatch):
    """A study-file class and an import path side by side in a `model` grid: both reach Ray's workers,
    their checkpoints load back in this process, and a second run compares the study as text."""
    write(tmp_path / "pkg" / "ownnets.py", """
        from torch import nn

        def small_cnn(in_channels, num_classes, image_size, *, width=3):
            return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(width * image_size * image_size, num_classes))
    """)
    data = write_npz(tmp_path / "own.npz", n_train=240, n_test=60)
    study = own_study(tmp_path, f"""
        study = Study(name="own_models", dataset="npz:{data}", epochs=2,
                      model=TinyNet, space={{"model": tune.grid_search([TinyNet, "ownnets:small_cnn"]),
                                             "lr": 0.05, "batch_size": 32}})
    """)
    env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path / 'pkg'}"}
    out = hpo_run(study, "--results", tmp_path / "results", "--no-analysis", env=env)
    trials, meta = report(tmp_path / "results" / "own_models")
    assert set(trials["outcome"]) == {"completed"} and len(trials) == 2, out.stdout
    assert sorted(trials["config/model"]) == sorted([f"{study}:TinyNet", "ownnets:small_cnn"])
    assert sorted(trials["params"]) == sorted([4 * 27 + 4 + 64 * 3 + 3, 3 * 27 + 3 + 3 * 144 * 3 + 3])
    assert meta["study"]["model"] == f"{study}:TinyNet"
    assert meta["study"]["space"]["model"] == {"grid_search": [f"{study}:TinyNet", "ownnets:small_cnn"]}
    assert meta["data"]["dataset"] == f"npz:{data}" and meta["data"]["train_images"] == 240
    # the checkpoints rebuild both models, here, with no study file run; the study file's class only when
    # the folder is trusted (it is unpickled from study_code.pt), an importable one without
    from hpo.checkpoints import UntrustedCode, load_model
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    for _, row in trials.iterrows():
        checkpoint = tmp_path / "results" / "own_models" / row["checkpoint"]
        trusted = row["config/model"] != "ownnets:small_cnn"
        assert (checkpoint / "study_code.pt").exists() == trusted
        if trusted:
            with pytest.raises(UntrustedCode, match="--trust"):
                load_model(checkpoint)
        model, config = load_model(checkpoint, trust=trusted)
        assert count_params(model) == row["params"] and str(config["model"]) == row["config/model"]
        assert model(torch.zeros(2, 3, 12, 12)).shape == (2, 3)
    # --resume compares the study started then with the one loaded now, in another process: equal
    check_resumable(plan(RunOptions(str(study), results=str(tmp_path / "results"), resume=True)))


@pytest.mark.slow
def test_an_own_dataset_study_with_its_analysis_figures(tmp_path):
    """An image folder and a study-file model, through Ray Tune and the analysis: the figures from the
    best trial's checkpoint (predictions with the folder's class names, feature maps) are drawn."""
    pets = write_image_folder(tmp_path / "pets", per_class=40)
    study = own_study(tmp_path, f"""
        study = Study(name="own_data", dataset="folder:{pets}", model=TinyNet, epochs=2,
                      space={{"width": tune.grid_search([4, 6]), "lr": 0.05, "batch_size": 16}})
    """)
    hpo_run(study, "--results", tmp_path / "results")
    trials, meta = report(tmp_path / "results" / "own_data")
    assert len(trials) == 2 and set(trials["outcome"]) == {"completed"}
    assert trials["params"].tolist() == [4 * 27 + 4 + 4 * 16 * 3 + 3, 6 * 27 + 6 + 6 * 16 * 3 + 3]
    assert meta["data"]["train_images"] == 120 and meta["data"]["test_images"] == 60
    folder = tmp_path / "results" / "own_data" / "report"
    for figure in ("predictions.png", "feature_maps.png", "learning_curves.png"):
        assert (folder / "figures" / figure).is_file(), figure
    text = (folder / "report.md").read_text()
    assert "No figures from the best trial" not in text and "predictions.png" in text
    # the same folder analysed again without --trust (as if copied from elsewhere): the study file's class
    # is not unpickled, those two figures are left out and the report says how to allow it
    from analysis import analyse
    for figure in ("predictions.png", "feature_maps.png"):
        (folder / "figures" / figure).unlink()
    analyse(tmp_path / "results" / "own_data", log=lambda _: None)
    text = (folder / "report.md").read_text()
    assert "UntrustedCode" in text and "--trust" in text and "predictions.png" not in text
    assert not (folder / "figures" / "predictions.png").exists()


@pytest.mark.slow
def test_a_torchvision_dataset_study(tmp_path):
    """torchvision:KMNIST in torchvision's layout under --data-dir: converted once by the driver's check,
    then read from the converted file by the trials."""
    data = write_kmnist(tmp_path / "data", n_train=300, n_test=100)
    study = write(tmp_path / "kmnist.py", """
        from ray import tune
        from hpo import Study
        study = Study(name="kmnist", dataset="torchvision:KMNIST", model="mnist_cnn", epochs=1,
                      space={"lr": tune.grid_search([0.05, 0.1])})
    """)
    hpo_run(study, "--results", tmp_path / "results", "--data-dir", data, "--no-analysis")
    trials, meta = report(tmp_path / "results" / "kmnist")
    assert len(trials) == 2 and set(trials["outcome"]) == {"completed"}
    assert meta["data"]["train_images"] == 300 and meta["data"]["folder"] == str(data / "KMNIST" / "raw")
    assert (data / "KMNIST.hpo.pt").is_file()


@pytest.mark.cluster
@pytest.mark.slow
def test_own_model_and_dataset_on_a_two_node_cluster(tmp_path, two_nodes):
    """A study-file class reaches the workers of another node (by value: no node can import the study
    file as a module), and an npz dataset at a path every node sees is read there."""
    from ray_cluster import finish, start_driver

    data = write_npz(tmp_path / "own.npz", n_train=240, n_test=60)
    study = own_study(tmp_path, f"""
        study = Study(name="own_cluster", dataset="npz:{data}", model=TinyNet, epochs=2,
                      space={{"width": tune.grid_search([2, 3, 4, 5]), "lr": 0.05, "batch_size": 32}})
    """)
    out = finish(start_driver(study, "--address", two_nodes.address, "--storage", tmp_path / "storage"), timeout=300)
    trials, meta = report(tmp_path / "storage" / "own_cluster")
    assert len(trials) == 4 and set(trials["outcome"]) == {"completed"}, out[-3000:]
    assert set(trials["node"]) == {n[:12] for n in [two_nodes.state["head"], *two_nodes.state["workers"]]}
    assert set(trials["config/model"]) == {f"{study}:TinyNet"} and meta["study"]["model"] == f"{study}:TinyNet"
    assert trials["params"].tolist() == [w * 27 + w + w * 16 * 3 + 3 for w in (2, 3, 4, 5)]


def test_an_optuna_choice_between_study_file_classes_is_refused_with_the_way_out(tmp_path):
    """Optuna's journal (optuna-dashboard) stores a choice's values as JSON text: import paths work."""
    path = own_study(tmp_path, """
        study = Study(name="own", dataset="mnist", model="fc2", search="optuna", num_samples=2,
                      space={"model": tune.choice([TinyNet, "fc2"]), "lr": tune.loguniform(1e-3, 1e-1)})
    """)
    with pytest.raises(HpoError, match=r"field 'search' is 'optuna'.*cannot choose between classes defined in the "
                                       r"study file \(\S+own_study.py:TinyNet\).*import paths"):
        load_study(str(path))
    path.write_text(path.read_text().replace("tune.choice([TinyNet, \"fc2\"])", "tune.choice([\"lenet5\", \"fc2\"])"))
    load_study(str(path))
