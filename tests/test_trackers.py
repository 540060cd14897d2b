"""What other tools see of a study: Optuna's journal (optuna-dashboard), MLflow and W&B through Ray Tune's
own logger callbacks. A real study through the real CLI; the trackers are optional extras."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from hpo.run import main

ROOT = Path(__file__).resolve().parents[1]
HAVE_TRACKERS = all(importlib.util.find_spec(m) for m in ("mlflow", "wandb"))


def optuna_study(tmp_path: Path) -> Path:
    path = tmp_path / "tracked.py"
    path.write_text(textwrap.dedent("""
        from ray import tune
        from hpo import Study
        study = Study(name="tracked", dataset="mnist", model="mnist_cnn",
                      space={"lr": tune.loguniform(1e-3, 1e-1)}, epochs=2, search="optuna", num_samples=3)
    """))
    return path


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TRACKERS, reason="needs the optional extras: uv sync --extra mlflow --extra wandb")
def test_optuna_journal_mlflow_and_wandb_see_every_trial(tmp_path, fake_mnist_dir):
    import mlflow
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    proc = subprocess.run([sys.executable, "-m", "hpo.run", str(optuna_study(tmp_path)), "--results",
                           str(tmp_path / "r"), "--data-dir", str(fake_mnist_dir), "--no-analysis",
                           "--log", "mlflow", "--log", "wandb"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**env, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study_dir = tmp_path / "r" / "tracked"
    trials = pd.read_csv(study_dir / "report" / "trials.csv")
    lrs = sorted(trials["config/lr"])

    journal = JournalStorage(JournalFileBackend(str(study_dir / "optuna.journal")))
    record = optuna.load_study(study_name="tracked", storage=journal)
    assert sorted(t.params["lr"] for t in record.trials) == pytest.approx(lrs)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in record.trials)

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{study_dir}/mlflow.db")
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(float(r.data.params["lr"]) for r in runs) == pytest.approx(lrs)
    for run in runs:  # every epoch of every trial
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1, 2]

    offline = sorted((study_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 3 and all(list(run.glob("*.wandb")) for run in offline)


def test_a_tracker_whose_extra_is_missing_names_the_install_command(tmp_path, capsys, fake_mnist_dir, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    code = main([str(optuna_study(tmp_path)), "--results", str(tmp_path / "r"), "--data-dir", str(fake_mnist_dir),
                 "--log", "mlflow"])
    output = capsys.readouterr().err
    assert code == 2 and "uv sync --extra mlflow" in output and not (tmp_path / "r" / "tracked").exists()
    code = main([str(optuna_study(tmp_path)), "--results", str(tmp_path / "r"), "--log", "tensorboard"])
    assert code == 2 and "allowed: mlflow, wandb" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").exists(),
                    reason="needs Debian's dataset-fashion-mnist")
def test_multi_objective_search_finds_a_pareto_front(tmp_path):
    """metric=["val_acc", "params"] through OptunaSearch's multi-objective support, on a Fashion-MNIST
    subset (--smoke sizes): Optuna's record has both directions and a Pareto front, and the report says so."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "pareto.py"
    path.write_text(textwrap.dedent("""
        from ray import tune
        from hpo import Study
        study = Study(name="pareto", dataset="fashion_mnist", model="lenet5",
                      space={"feature_maps": tune.choice([2, 4, 8, 16]), "lr": tune.loguniform(1e-3, 1e-1)},
                      epochs=1, search="optuna", num_samples=6, metric=["val_acc", "params"], mode=["max", "min"])
    """))
    proc = subprocess.run([sys.executable, "-m", "hpo.run", str(path), "--results", str(tmp_path / "r"), "--smoke",
                           "--set", "num_samples=6"], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study_dir = tmp_path / "r" / "pareto"
    record = optuna.load_study(study_name="pareto",
                               storage=JournalStorage(JournalFileBackend(str(study_dir / "optuna.journal"))))
    assert record.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    trials = pd.read_csv(study_dir / "report" / "trials.csv")
    assert len(record.trials) == len(trials) >= 4  # --smoke keeps at most 4 samples
    front = record.best_trials
    assert front and all(len(t.values) == 2 for t in front)
    # the front is non-dominated: no trial is at least as good on both and better on one
    for t in front:
        assert not any(o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values
                       for o in record.trials if o.values)
    report = (study_dir / "report" / "report.md").read_text()
    assert "multi-objective study" in report and "front: params" in report
