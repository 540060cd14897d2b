"""What other tools see of a study: Optuna's journal (optuna-dashboard), MLflow and W&B through Ray Tune's
own logger callbacks. A real study through the real CLI; the trackers are optional extras."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from hpo.run import main

ROOT = Path(__file__).resolve().parents[1]
HAVE = {m: importlib.util.find_spec(m) is not None for m in ("mlflow", "wandb")}  # optional extras


def optuna_study(tmp_path: Path) -> Path:
    path = tmp_path / "tracked.py"
    path.write_text(textwrap.dedent("""
        from ray import tune
        from hpo import Study
        study = Study(name="tracked", dataset="mnist", model="mnist_cnn",
                      space={"lr": tune.loguniform(1e-3, 1e-1)}, epochs=2, search="optuna", num_samples=3)
    """))
    return path


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
def test_a_multi_objective_search_fills_its_slots_and_every_tracker_sees_it(tmp_path, fake_mnist_dir):
    """One real study, checked from every side: metric=["val_acc", "params"] through OptunaSearch's
    multi-objective support (on the Fashion-MNIST subset --smoke reads, where Debian's package is
    installed); Optuna's journal has both directions, every trial and a non-dominated front; with 4 slots
    (0.5 CPU per trial on 2 cores) the searcher had several trials in flight (Ray Tune alone gives it one
    pending trial at a time). MLflow and W&B (offline) got every trial and epoch: checked where their
    optional extras are installed (CI installs them), the rest always."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "pareto.py"
    path.write_text(textwrap.dedent("""
        from ray import tune
        from hpo import Study
        study = Study(name="pareto", dataset="fashion_mnist", model="lenet5",
                      space={"feature_maps": tune.choice([4, 8]), "lr": tune.loguniform(1e-3, 1e-1)},
                      epochs=2, search="optuna", num_samples=4, metric=["val_acc", "params"], mode=["max", "min"])
    """))
    data = [] if FASHION.exists() else ["--set", "dataset=mnist", "--data-dir", str(fake_mnist_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    logs = [a for tracker, installed in HAVE.items() if installed for a in ("--log", tracker)]
    proc = subprocess.run([sys.executable, "-m", "hpo.run", str(path), "--results", str(tmp_path / "r"), "--smoke",
                           "--cpus-per-trial", "0.5", *logs, *data],
                          cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**env, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study_dir = tmp_path / "r" / "pareto"
    trials = pd.read_csv(study_dir / "report" / "trials.csv")
    meta = json.loads((study_dir / "report" / "study.json").read_text())
    assert len(trials) == 4 and set(trials["outcome"]) == {"completed"}

    record = optuna.load_study(study_name="pareto",
                               storage=JournalStorage(JournalFileBackend(str(study_dir / "optuna.journal"))))
    assert record.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert sorted(t.params["lr"] for t in record.trials) == pytest.approx(sorted(trials["config/lr"]))
    assert all(t.state == optuna.trial.TrialState.COMPLETE and len(t.values) == 2 for t in record.trials)
    for t in record.best_trials:  # non-dominated: no trial as good on both and better on one
        assert not any(o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values
                       for o in record.trials)
    assert "multi-objective study" in (study_dir / "report" / "report.md").read_text()

    assert meta["slots"] == 4 and 0 < meta["slot_utilisation"] <= 1
    spans = sorted(zip(trials["started_s"], trials["ended_s"]))
    in_flight = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert in_flight >= 3, spans

    if HAVE["mlflow"]:
        import mlflow
        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{study_dir}/mlflow.db")
        runs = client.search_runs([client.get_experiment_by_name("pareto").experiment_id])
        assert sorted(float(r.data.params["lr"]) for r in runs) == pytest.approx(sorted(trials["config/lr"]))
        for run in runs:  # every epoch of every trial
            assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1, 2]
    if HAVE["wandb"]:
        offline = sorted((study_dir / "wandb").glob("offline-run-*"))
        assert len(offline) == 4 and all(list(run.glob("*.wandb")) for run in offline)


def test_a_tracker_whose_extra_is_missing_names_the_install_command(tmp_path, capsys, fake_mnist_dir, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    code = main([str(optuna_study(tmp_path)), "--results", str(tmp_path / "r"), "--data-dir", str(fake_mnist_dir),
                 "--log", "mlflow"])
    output = capsys.readouterr().err
    assert code == 2 and "uv sync --extra mlflow" in output and not (tmp_path / "r" / "tracked").exists()
    code = main([str(optuna_study(tmp_path)), "--results", str(tmp_path / "r"), "--log", "tensorboard"])
    assert code == 2 and "allowed: mlflow, wandb" in capsys.readouterr().err


