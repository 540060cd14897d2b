"""Every study under studies/ reproduces its write-up's setting and trains its --smoke trials on
datasets written in their real formats (IDX, CIFAR python batches); two of them run end to end through
the real CLI (python -m hpo.run) and Ray Tune."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_fake_datasets

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "studies"

# Trials each study's --smoke runs (Study.smoke: seeds=1, at most 4 grid points, the first values
# of each grid kept; random/optuna: at most 4 samples).
SMOKE = {
    "mnist_batchsize": 3,
    "mnist_lr": 3,
    "mnist_momentum": 4,
    "mnist_epochs": 2,
    "mnist_downsampling": 4,  # 2 x 3 x 2 grid -> 1 x 2 x 2 (the longest grids shrink first)
    "mnist_fc_vs_cnn": 4,
    "fashion_lenet5": 3,
    "fashion_lenet5_tpe": 4,
    "cifar10_cnn": 1,
    "cifar10_vgg": 1,
    # VGG-11 at 224 x 224 with a 4096-wide classifier, as the study says: --smoke caps an epoch's compute
    # (SMOKE_FLOPS), so it trains a few images (about 7 s on a CPU).
    "fashion_vgg11": 1,
}


def load(name: str):
    return runpy.run_path(str(STUDIES / f"{name}.py"))


def test_every_study_file_is_smoke_tested():
    assert sorted(p.stem for p in STUDIES.glob("*.py")) == sorted(SMOKE)


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_study_file_names_itself_and_opens_with_its_write_up(name):
    namespace = load(name)
    study, doc = namespace["study"], namespace["__doc__"]
    assert study.name == name
    assert doc and "write-up" in doc and "Question" in doc, "docstring: which write-up, its claim, the question"


# ---------------------------------------------------------------- the write-ups' settings


def test_fashion_lenet5_has_the_write_up_s_three_models():
    study = load("fashion_lenet5")["study"]
    space = study.space
    assert space["variant"] == {"grid_search": ["model1", "model2", "model3"]}
    bundles = {k: v.func.values for k, v in space.items() if hasattr(getattr(v, "func", None), "values")}
    assert bundles == {
        "optimizer": {"model1": "sgd", "model2": "adam", "model3": "adam"},
        "batch_size": {"model1": 100, "model2": 256, "model3": 256},
        "weight_decay": {"model1": 0.0, "model2": 1e-3, "model3": 1e-3},
        "dropout": {"model1": 0.0, "model2": 0.0, "model3": 0.5},
    }
    assert (space["lr"], space["lr_gamma"], space["normalize"], study.epochs) == (0.01, 0.7, [0.5, 0.5], 14)
    assert study.seeds >= 3 and study.num_trials() == 3 * study.seeds


def test_planned_trial_counts():
    from hpo import Study
    from ray import tune

    grid = {"lr": tune.grid_search([0.01, 0.1]), "momentum": tune.uniform(0.1, 0.9)}
    assert Study(name="g", dataset="mnist", model="fc2", space=grid, seeds=3).num_trials() == 6
    # random search draws num_samples configurations per grid point (Ray's BasicVariantGenerator)
    assert Study(name="r", dataset="mnist", model="fc2", space=grid, search="random", num_samples=4,
                 seeds=2).num_trials() == 16
    tpe = {"lr": tune.loguniform(1e-3, 1e-1)}
    assert Study(name="o", dataset="mnist", model="fc2", space=tpe, search="optuna", num_samples=5,
                 seeds=2).num_trials() == 10


def test_where_seeds_train_as_one_trial():
    """Seed groups where something judges configurations during the study (ASHA, a sampling search), one
    trial per seed for a grid with FIFO; the study field overrides; Ray's trials count groups."""
    from hpo import HpoError, Study
    from ray import tune

    grid = {"lr": tune.grid_search([0.01, 0.1])}
    tpe = {"lr": tune.loguniform(1e-3, 1e-1)}

    def study(**kw):
        return Study(name="s", dataset="mnist", model="fc2", epochs=4, **kw)

    assert not study(space=grid, seeds=3).seed_grouped and study(space=grid, seeds=3).ray_trials() == 6
    assert study(space=grid, seeds=3, scheduler="asha").seed_grouped
    assert study(space=grid, seeds=3, scheduler="asha").ray_trials() == 2
    assert study(space=tpe, search="optuna", num_samples=5, seeds=2).ray_trials() == 5
    assert study(space=grid, seeds=3, seed_groups=True).seed_grouped
    assert not study(space=tpe, search="optuna", seeds=2, seed_groups=False).seed_grouped
    assert not study(space=tpe, search="optuna", seeds=1).seed_grouped  # one seed: nothing to group
    with pytest.raises(HpoError, match="seed_groups.*True, False or None"):
        study(space=grid, seed_groups="yes")


def test_variants_resolve_per_trial_in_ray_tune():
    from ray.tune.search.variant_generator import generate_variants

    study = load("fashion_lenet5")["study"]
    space = {**study.space, "seed": {"grid_search": [0, 1]}}
    configs = [config for _, config in generate_variants(space)]
    assert len(configs) == 6
    by_variant = {c["variant"]: (c["optimizer"], c["batch_size"], c["weight_decay"], c["dropout"]) for c in configs}
    assert by_variant == {"model1": ("sgd", 100, 0.0, 0.0), "model2": ("adam", 256, 1e-3, 0.0),
                          "model3": ("adam", 256, 1e-3, 0.5)}


def test_variants_are_validated():
    from hpo import HpoError, Study, variants

    with pytest.raises(HpoError, match="does not set dropout"):
        variants(a={"lr": 0.1, "dropout": 0.5}, b={"lr": 0.2})
    with pytest.raises(HpoError, match="'lr' has value -1"):
        Study(name="v", dataset="mnist", model="lenet5", space=variants(a={"lr": 0.1}, b={"lr": -1}))
    with pytest.raises(HpoError, match="'variant' must name the bundles"):
        Study(name="v", dataset="mnist", model="lenet5", space={**variants(a={"lr": 0.1}, b={"lr": 1}),
                                                                 "variant": "c"})


def test_normalize_reproduces_the_write_ups_transforms(fake_data_dir):
    import torch

    from hpo import HpoError, Study
    from hpo.data import load_data, load_raw

    raw = load_raw("cifar10", "train", fake_data_dir)[0][:4].float() / 255
    cifar = load("cifar10_vgg")["study"].space["normalize"]
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in cifar)
    data = load_data("cifar10", data_dir=fake_data_dir, val_fraction=0.5, normalize=cifar)
    assert torch.allclose(data.train.images.std(), ((raw - mean) / std).std(), rtol=0.2)
    half = load_data("mnist", data_dir=fake_data_dir, normalize=[0.5, 0.5]).train.images
    assert half.min() >= -1 and half.max() <= 1 and half.min() < -0.9
    none = load_data("mnist", data_dir=fake_data_dir, normalize="none").train.images
    assert none.min() >= 0 and none.max() <= 1
    with pytest.raises(HpoError, match="does not fit mnist"):
        Study(name="n", dataset="mnist", model="lenet5", space={"normalize": cifar})


def test_write_up_settings_of_the_other_studies():
    s = {name: load(name)["study"] for name in SMOKE}
    fc = s["mnist_fc_vs_cnn"]
    assert fc.space["model"] == {"grid_search": ["fc2", "mnist_cnn"]} and fc.epochs == 1
    assert (fc.space["lr"], fc.space["momentum"], fc.space["batch_size"]) == (0.01, 0.5, 64)
    down = s["mnist_downsampling"].space
    assert down["feature_size"] == {"grid_search": [14, 7, 1]} and down["relu_logits"]["grid_search"][0] is True
    assert (down["lr"], down["momentum"], down["batch_size"]) == (0.01, 0.0, 64)
    vgg = s["fashion_vgg11"].space
    assert (vgg["resize"], vgg["batch_norm"], vgg["dropout"], vgg["normalize"]) == (224, False, 0.0, "none")
    assert s["fashion_vgg11"].epochs == 3 and vgg["batch_size"] == 4
    cv = s["cifar10_vgg"].space
    assert cv["augment"] is True and cv["batch_norm"] is True and cv["batch_size"] == 128
    tpe = s["fashion_lenet5_tpe"]
    assert (tpe.search, tpe.scheduler) == ("optuna", "asha")
    assert {"lr", "batch_size", "momentum", "optimizer", "weight_decay", "dropout", "feature_maps"} <= set(
        tpe.varied_keys())


def test_vgg11_at_224_builds_the_write_up_s_network():
    from hpo.models import build_model, count_params

    space = load("fashion_vgg11")["study"].space
    options = {k: space[k] for k in ("cfg", "batch_norm", "dropout")}
    import torch
    with torch.device("meta"):
        net = build_model("vgg", in_channels=1, num_classes=10, image_size=224, **options)
    # make_layers(1, cfgs['A']) + Linear(512*7*7, 4096), Linear(4096, 4096), Linear(4096, 10)
    assert count_params(net) == 128_806_154
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert all(m.p == 0 for m in net.modules() if isinstance(m, torch.nn.Dropout))


# ---------------------------------------------------------------- every study's --smoke trials, in process


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory) -> Path:
    return make_fake_datasets(tmp_path_factory.mktemp("data"), n_train=360, n_test=100)  # 300 to train: batch 256 fits


def smoke_trials(name: str, data: Path, tmp_path: Path):
    """The plan of `hpo.run studies/<name>.py --smoke` (its checks, settings and data) and the trial configs
    Ray Tune's variant generator resolves from its space: what the CLI's trials would train."""
    from hpo.rounds import configurations
    from hpo.run import parse_args, plan

    p = plan(parse_args([f"studies/{name}.py", "--smoke", "--results", str(tmp_path / "results"),
                         "--data-dir", str(data), "--no-analysis"]))
    return p, [config for _ in range(p.study.num_samples) for config in configurations(p.study)]


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_study_smoke_trials_train(name, smoke_data, tmp_path):
    """Every study's --smoke trials train in this process (no Ray: hpo.trainable.train_epochs, the code a
    Ray trial runs) on data in the study's real file format; the CLI's Ray Tune path runs below."""
    from hpo.trainable import train_epochs

    p, configs = smoke_trials(name, smoke_data, tmp_path)
    assert len(configs) == SMOKE[name] == p.planned_trials
    if p.study.search == "grid" and len(configs) > 1:  # every varied key really varies
        varied = {k: {str(c[k]) for c in configs} for k in p.study.varied_keys()}
        assert all(len(v) > 1 for v in varied.values()), varied
    for config in configs:
        epochs = [metrics for metrics, _ in train_epochs(config, p.settings)]
        assert [m["epoch"] for m in epochs] == list(range(1, min(p.study.epochs, 2) + 1)), config
        assert all(0 <= m["val_acc"] <= 1 and m["params"] > 0 and not m.get("diverged") for m in epochs), epochs


def test_smoke_of_fc_vs_cnn_compares_models_of_about_the_same_size(smoke_data, tmp_path):
    from hpo.trainable import Trial

    p, configs = smoke_trials("mnist_fc_vs_cnn", smoke_data, tmp_path)
    params = {c["model"]: Trial(c, p.settings, "cpu").params() for c in configs}
    assert params == {"fc2": 6442, "mnist_cnn": 6422}  # the write-up's printed counts
    assert sorted(c["permute_pixels"] for c in configs) == [False, False, True, True]


# ---------------------------------------------------------------- smoke runs through the CLI and Ray Tune

# Two study files through the real CLI, each its own process with its own embedded Ray (127.0.0.1 only),
# as a user runs them, side by side: a grid of variant bundles, and Optuna with ASHA. The other studies'
# trials are the same trainable on the same kind of config (above); Ray's own paths: tests/test_run.py.
CLI_SMOKE = ["fashion_lenet5", "fashion_lenet5_tpe"]


@pytest.fixture(scope="module")
def smoke_runs(smoke_data, tmp_path_factory):
    """{name: (CompletedProcess, report folder)} of `python -m hpo.run studies/<name>.py --smoke`."""
    results = tmp_path_factory.mktemp("studies") / "results"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(name):
        args = [sys.executable, "-m", "hpo.run", f"studies/{name}.py", "--smoke", "--results", str(results),
                "--data-dir", str(smoke_data), "--no-analysis"]
        try:
            proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired as e:
            proc = subprocess.CompletedProcess(args, -1, e.stdout or "", f"timed out: {e}")
        return name, (proc, results / name / "report")

    with ThreadPoolExecutor(len(CLI_SMOKE)) as pool:
        return dict(pool.map(run, CLI_SMOKE))


@pytest.mark.slow
@pytest.mark.parametrize("name", CLI_SMOKE)
def test_study_smoke_runs_every_trial(name, smoke_runs):
    proc, report = smoke_runs[name]
    assert proc.returncode == 0, f"{name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    trials = pd.read_csv(report / "trials.csv")
    epochs = pd.read_csv(report / "epochs.csv")
    expected = SMOKE[name]
    assert len(trials) == expected, trials[["trial_id", "outcome"]]
    study = load(name)["study"]
    # ASHA may stop a trial after its first epoch: that is the scheduler working, not a failure.
    finished = {"completed", "stopped_early"} if study.scheduler == "asha" else {"completed"}
    assert set(trials["outcome"]) <= finished, trials[["trial_id", "outcome", "error"]]
    assert (trials["status"] == "TERMINATED").all()
    assert (trials["outcome"] == "completed").any()
    max_epochs = min(study.epochs, 2)
    assert (trials.loc[trials["outcome"] == "completed", "epochs_run"] == max_epochs).all()
    assert len(epochs) == trials["epochs_run"].sum() and epochs["val_acc"].between(0, 1).all()
    assert (trials["params"] > 0).all()
    # Every varied key of the study is a column and really varies (a grid of more than one point).
    for key in study.varied_keys():
        assert f"config/{key}" in trials, key
    if expected > 1 and study.search == "grid":
        assert trials[[f"config/{k}" for k in study.varied_keys()]].astype(str).drop_duplicates().shape[0] == expected


@pytest.mark.slow
def test_smoke_of_fashion_lenet5_keeps_the_models_settings(smoke_runs):
    _, report = smoke_runs["fashion_lenet5"]
    trials = pd.read_csv(report / "trials.csv").sort_values("config/variant")
    assert trials["config/variant"].tolist() == ["model1", "model2", "model3"]
    assert trials["config/optimizer"].tolist() == ["sgd", "adam", "adam"]
    assert trials["config/batch_size"].tolist() == [100, 256, 256]
    assert trials["config/dropout"].tolist() == [0.0, 0.0, 0.5]
