"""Bad input gets one clear paragraph (file, field, allowed values), no traceback,
and nothing already computed is lost. Trials that diverge or fail are recorded
and the study goes on."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpo import HpoError, Study
from hpo.run import main
from hpo.study import parse_overrides

ROOT = Path(__file__).resolve().parents[1]
HEADER = "from ray import tune\nfrom hpo import Study\n"
GOOD = 'study = Study(name="s", dataset="mnist", model="lenet5", space=SPACE, epochs=EPOCHS{EXTRA})'


def study_file(tmp_path, body: str) -> Path:
    path = tmp_path / "bad_study.py"
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def good(space='{"lr": 0.01}', epochs="2", extra="") -> str:
    return GOOD.replace("SPACE", space).replace("EPOCHS", epochs).replace("{EXTRA}", extra)


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err + captured.out


CASES = {
    "syntax error": ("study = Study(name='s',\n  dataset='mnist' model='lenet5')\n", ["line 4", "syntax error"]),
    "no study": ("x = 1\n", ["no variable named 'study'"]),
    "study not a Study": ("study = {'name': 's'}\n", ["not an hpo.Study", "dict"]),
    "raises in file": ("import math\nstudy = math.sqrt(-1)\n", ["line 4", "ValueError"]),
    "unknown dataset": (good().replace('"mnist"', '"mnsit"'),
                        ["'dataset'", "mnist, fashion_mnist, cifar10", "Did you mean 'mnist'"]),
    "unknown model": (good().replace('"lenet5"', '"lenet"'), ["unknown model 'lenet'", "Did you mean 'lenet5'"]),
    "unknown optimizer": (good('{"optimizer": "adamm"}'), ["'optimizer'", "sgd, adam, adamw, rmsprop"]),
    "unknown search": (good(extra=', search="tpe"'), ["'search'", "grid, random, optuna"]),
    "unknown scheduler": (good(extra=', scheduler="hyperband"'), ["'scheduler'", "fifo, asha"]),
    "unknown space key": (good('{"learning_rate": 0.1}'), ["unknown space key 'learning_rate'", "Did you mean 'lr'"]),
    "key of another model": (good('{"downsample": "pool"}'),
                             ["unknown space key 'downsample'", "Model 'lenet5' takes"]),
    "negative lr": (good('{"lr": -0.1}'), ["'lr'", "-0.1", "> 0"]),
    "lr range through zero": (good('{"lr": tune.uniform(0, 0.1)}'), ["'lr'", "> 0"]),
    "zero batch size": (good('{"batch_size": tune.grid_search([64, 0])}'), ["'batch_size'", "integer > 0"]),
    "zero epochs": (good(epochs="0"), ["'epochs'", "integer > 0"]),
    "zero samples": (good(extra=", num_samples=0"), ["'num_samples'", "integer > 0"]),
    "zero seeds": (good(extra=", seeds=0"), ["'seeds'", "integer > 0"]),
    "negative time budget": (good(extra=", time_budget_min=-5"), ["'time_budget_min'", "minutes > 0"]),
    "time budget too short to start": (good(extra=", time_budget_min=1e-9"), ["'time_budget_min'", ">= 0.1"]),
    "resize too large": (good('{"resize": 100000}'), ["'resize'", "100000", "from 1 to 1024"]),
    "metric not reported": (good(extra=', metric="accuracy"'), ["'metric'", "val_acc", "Did you mean"]),
    "bad mode": (good(extra=', mode="maximize"'), ["'mode'", "min, max"]),
    "asha on a metric not reported each epoch": (good(extra=', scheduler="asha", metric="best_val_acc"'),
                                                 ["'metric'", "val_acc"]),
    "empty grid": (good('{"lr": tune.grid_search([])}'), ["empty tune.grid_search", "no trials"]),
    "grid with optuna": (good('{"lr": tune.grid_search([0.1, 0.01])}', extra=', search="optuna"'),
                         ["'search'", "tune.choice"]),
    "bad option value": (good('{"activation": tune.grid_search(["relu", "gelu"])}'), ["activation", "gelu", "sigmoid"]),
    "image too small": (good().replace('"lenet5"', '"vgg"'), ["vgg", "resize"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_study_file_is_one_clear_message(case, tmp_path, capsys):
    body, expected = CASES[case]
    path = study_file(tmp_path, body)
    code, output = run_cli(capsys, path, "--results", tmp_path / "results")
    assert code == 2
    assert output.startswith("error: ") and "Traceback" not in output
    assert str(path) in output or "Study 's'" in output  # names the file or the study
    for fragment in expected:
        assert fragment in output, (fragment, output)
    assert not (tmp_path / "results").exists()  # rejected before anything was started or written


def test_missing_study_file(tmp_path, capsys):
    code, output = run_cli(capsys, tmp_path / "nope.py")
    assert code == 2 and "does not exist" in output


@pytest.mark.parametrize("item, expected", [
    ("learning_rate=0.1", ["unknown space key 'learning_rate'", "Did you mean 'lr'"]),
    ("lr=fast", ["'lr'", "'fast'", "> 0"]),
    ("epochs=2.5", ["'epochs' must be an integer"]),
    ("batch_size=[1, 2]", ["'batch_size'"]),
    ("dataset=imagenet", ["'dataset'", "mnist, fashion_mnist, cifar10"]),
    ("noequals", ["expected KEY=VALUE"]),
])
def test_bad_set_option(item, expected, tmp_path, capsys):
    path = study_file(tmp_path, good())
    code, output = run_cli(capsys, path, "--set", item, "--results", tmp_path / "results")
    assert code == 2 and "Traceback" not in output
    for fragment in expected:
        assert fragment in output, (fragment, output)


def test_set_overrides_fields_and_space():
    study = Study(name="s", dataset="mnist", model="lenet5", space={"lr": tune_grid([0.1, 0.01])})
    changed = study.with_overrides(parse_overrides(["dataset=fashion_mnist", "epochs=3", "lr=0.5", "dropout=0.2"]))
    assert (changed.dataset, changed.epochs, changed.space["lr"], changed.space["dropout"]) == \
        ("fashion_mnist", 3, 0.5, 0.2)
    assert study.space["lr"] == tune_grid([0.1, 0.01])  # the original is untouched


def tune_grid(values):
    from ray import tune
    return tune.grid_search(values)


def test_missing_dataset_says_where_it_looked(tmp_path, capsys, monkeypatch):
    import hpo.data
    monkeypatch.setattr(hpo.data, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(hpo.data, "_download", lambda name, root: (_ for _ in ()).throw(OSError("no network")))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_DATA_DIR", raising=False)
    hpo.data.load_raw.cache_clear() if hasattr(hpo.data.load_raw, "cache_clear") else None
    path = study_file(tmp_path, good())
    code, output = run_cli(capsys, path, "--data-dir", tmp_path / "empty", "--results", tmp_path / "results")
    assert code == 2 and "Traceback" not in output
    assert str(tmp_path / "empty") in output and "train-images-idx3-ubyte" in output
    assert not (tmp_path / "results").exists()


def test_truncated_data_file_is_named(tmp_path, capsys, fake_mnist_dir):
    images = fake_mnist_dir / "mnist" / "train-images-idx3-ubyte.gz"
    import gzip
    images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:5000]))
    path = study_file(tmp_path, good())
    code, output = run_cli(capsys, path, "--data-dir", fake_mnist_dir, "--results", tmp_path / "results")
    assert code == 2 and "Traceback" not in output
    assert "train-images-idx3-ubyte" in output


def test_existing_results_are_not_overwritten(tmp_path, capsys, fake_mnist_dir):
    results = tmp_path / "results"
    (results / "s" / "report").mkdir(parents=True)
    keep = results / "s" / "report" / "trials.csv"
    keep.write_text("trial_id\nprecious\n")
    path = study_file(tmp_path, good())
    code, output = run_cli(capsys, path, "--results", results, "--data-dir", fake_mnist_dir)
    assert code == 2 and "--resume" in output and "--overwrite" in output
    assert keep.read_text() == "trial_id\nprecious\n"
    code, output = run_cli(capsys, path, "--results", results, "--data-dir", fake_mnist_dir, "--resume")
    assert code == 2 and "no interrupted study" in output
    assert keep.exists()


def test_cli_subprocess_has_no_traceback(tmp_path):
    """The real command line, as a user runs it: exit status 2 and one paragraph on stderr."""
    path = study_file(tmp_path, good('{"learning_rate": 0.1}'))
    proc = subprocess.run([sys.executable, "-m", "hpo.run", str(path)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr and "Did you mean 'lr'" in proc.stderr
    assert proc.stdout == ""  # nothing started


@pytest.mark.slow
def test_diverged_and_out_of_memory_trials_are_recorded_and_the_study_goes_on(tmp_path, fake_mnist_dir):
    # lr=1e6 diverges at once; feature_maps=10**6 asks fc2 for a 4 TB hidden-to-hidden weight matrix: out of
    # memory. Both are recorded in the report and do not stop the healthy trial.
    path = study_file(tmp_path, """
        study = Study(name="faulty", dataset="mnist", model="fc2",
                      space={"lr": tune.grid_search([0.05, 1e6]), "feature_maps": tune.grid_search([8, 10**6])},
                      epochs=2)
    """)
    proc = subprocess.run([sys.executable, "-m", "hpo.run", str(path), "--results", str(tmp_path / "results"),
                           "--data-dir", str(fake_mnist_dir), "--no-analysis"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = pd.read_csv(tmp_path / "results" / "faulty" / "report" / "trials.csv")
    by_config = {(lr, n == 8): row for lr, n, row in
                 zip(trials["config/lr"], trials["config/feature_maps"], trials.to_dict("records"))}
    healthy = by_config[(0.05, True)]
    assert healthy["outcome"] == "completed" and healthy["epochs_run"] == 2
    diverged = by_config[(1e6, True)]
    assert diverged["outcome"] == "diverged" and "diverged" in diverged["error"]
    for lr in (0.05, 1e6):
        oom = by_config[(lr, False)]
        assert oom["outcome"] == "failed" and "out of memory" in oom["error"]
    assert "1 diverged, 2 failed" in proc.stdout


@pytest.mark.slow
def test_a_trial_that_raises_is_recorded_with_its_message(tmp_path):
    """Real Ray Tune with the report writer: the error's message lands in trials.csv."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray import tune
    from hpo.report import ReportWriter

    def trainable(config):
        if config["lr"] > 0.05:
            raise ValueError("boom: lr too high for this test")
        tune.report({"epoch": 1, "train_loss": 1.0, "val_acc": 0.5})

    study = Study(name="raising", dataset="mnist", model="lenet5", space={"lr": tune.grid_search([0.01, 0.1])},
                  epochs=1)
    writer = ReportWriter(study, tmp_path / "raising", str(tmp_path / "raising" / "experiment"), {})
    # "local": a new Ray, never an earlier `ray start` whose address file was left in /tmp/ray
    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        tune.Tuner(trainable, param_space=study.space,
                   run_config=tune.RunConfig(name="experiment", storage_path=str(tmp_path / "raising"),
                                             callbacks=[writer], verbose=0)).fit()
    finally:
        ray.shutdown()
    trials = pd.read_csv(tmp_path / "raising" / "report" / "trials.csv").set_index("config/lr")
    assert trials.loc[0.1, "outcome"] == "failed" and trials.loc[0.1, "status"] == "ERROR"
    assert "ValueError: boom: lr too high for this test" in trials.loc[0.1, "error"]
    assert trials.loc[0.01, "outcome"] == "completed"


# -- property-based: validation and readers never fail with anything but HpoError ----------

space_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True),
                         st.text(max_size=8), st.lists(st.integers(0, 3), max_size=3))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(["lr", "batch_size", "optimizer", "momentum", "weight_decay", "lr_gamma", "augment",
                            "resize", "dropout", "feature_maps", "activation", "pooling", "val_fraction", "bogus"]),
       value=space_values,
       epochs=st.integers(-2, 5), seeds=st.integers(-1, 3),
       search=st.sampled_from(["grid", "random", "optuna", "tpe"]),
       metric=st.sampled_from(["val_acc", "val_loss", "acc"]))
def test_study_validation_only_raises_hpo_error(key, value, epochs, seeds, search, metric):
    try:
        Study(name="p", dataset="fashion_mnist", model="lenet5", space={key: value}, epochs=epochs, seeds=seeds,
              search=search, metric=metric)
    except HpoError as e:
        assert str(e).strip() and "\n\n" not in str(e)  # one paragraph


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600), gz=st.booleans())
def test_idx_reader_on_random_bytes_only_raises_hpo_error(tmp_path_factory, data, gz):
    import gzip
    from hpo.data import read_idx
    path = tmp_path_factory.mktemp("idx") / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(data) if gz else data)
    try:
        read_idx(path)
    except HpoError as e:
        assert str(path) in str(e)  # the file is named


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600))
def test_cifar_reader_on_random_bytes_only_raises_hpo_error(tmp_path_factory, data):
    import pickle
    from hpo.data import read_cifar_batch
    folder = tmp_path_factory.mktemp("cifar")
    for name, payload in (("raw", data), ("pickled", pickle.dumps({b"data": data, b"labels": list(data[:3])}))):
        path = folder / name
        path.write_bytes(payload)
        try:
            read_cifar_batch(path)
        except HpoError as e:
            assert name in str(e)
