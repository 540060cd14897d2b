"""The report's outcome of a trial, from its Ray Tune status and the epochs it reported."""

import json
from types import SimpleNamespace

from ray import tune

from hpo import Study
from hpo.report import outcome


def test_asha_rungs_are_ray_s_milestones():
    def study(**fields):
        return Study(name="s", dataset="mnist", model="fc2", space={"lr": tune.loguniform(1e-3, 1e-1)},
                     search="optuna", scheduler="asha", num_samples=4, **fields)

    assert study(epochs=15, grace_period=3, reduction_factor=3).asha_rungs() == {3, 9}
    assert study(epochs=12, grace_period=2, reduction_factor=3).asha_rungs() == {2, 6}
    assert study(epochs=10, grace_period=1, reduction_factor=2).asha_rungs() == {1, 2, 4, 8}
    assert Study(name="g", dataset="mnist", model="fc2", epochs=10).asha_rungs() == set()


def test_a_trial_ended_off_the_rungs_was_interrupted_not_stopped_early():
    asha = Study(name="s", dataset="mnist", model="fc2", space={"lr": tune.loguniform(1e-3, 1e-1)},
                 search="optuna", scheduler="asha", num_samples=4, epochs=15, grace_period=3)
    fifo = Study(name="f", dataset="mnist", model="fc2", epochs=15)

    def ended(n_epochs, status="TERMINATED", study=asha, **last):
        epochs = {e: {"epoch": e, **(last if e == n_epochs else {})} for e in range(1, n_epochs + 1)}
        return outcome(SimpleNamespace(status=status, last_result=epochs.get(n_epochs)), epochs, study)

    assert ended(15) == "completed"
    assert ended(3) == ended(9) == "stopped_early"  # ASHA's rungs
    assert ended(8) == ended(0) == "interrupted"  # Ctrl-C mid-way, or before its first epoch
    assert ended(3, study=fifo) == "interrupted"  # FIFO stops nothing early
    assert ended(4, status="RUNNING") == "running" and ended(0, status="PENDING") == "pending"
    assert ended(5, diverged=True) == "diverged" and ended(5, status="ERROR") == "failed"


def test_report_is_written_at_most_every_few_seconds_and_always_at_the_end(tmp_path, monkeypatch):
    """Each write rebuilds the whole study's tables: many short trials must not mean one write each."""
    import pandas as pd

    import hpo.report
    from hpo.report import ReportWriter

    clock = [1000.0]
    monkeypatch.setattr(hpo.report.time, "monotonic", lambda: clock[0])
    study = Study(name="s", dataset="mnist", model="fc2", space={"lr": tune.grid_search([0.1, 0.2, 0.3])}, epochs=1)
    writer = ReportWriter(study, tmp_path, str(tmp_path / "experiment"), {}, quiet=True)
    trials = [SimpleNamespace(trial_id=f"t{i}", config={"lr": lr}, status="RUNNING", last_result=None,
                              error_file=None) for i, lr in enumerate([0.1, 0.2, 0.3])]

    def finish(trial):
        trial.status, trial.last_result = "TERMINATED", {"epoch": 1, "val_acc": trial.config["lr"]}
        writer.on_trial_result(0, trials, trial, {"epoch": 1, "val_acc": trial.config["lr"]})
        writer.on_trial_complete(0, trials, trial)

    def rows():
        return pd.read_csv(tmp_path / "report" / "trials.csv")["outcome"].tolist()

    finish(trials[0])
    assert rows() == ["completed", "running", "running"]  # the first event writes at once
    clock[0] += 1
    finish(trials[1])
    assert rows() == ["completed", "running", "running"]  # 1 s later: not yet
    clock[0] += hpo.report.WRITE_EVERY_S
    finish(trials[2])
    assert rows() == ["completed"] * 3  # due again
    trials[2].status = "TERMINATED"
    writer.on_experiment_end(trials)
    assert rows() == ["completed"] * 3
    assert json.loads((tmp_path / "report" / "study.json").read_text())["ended"]  # the end is always written
