"""The report's outcome of a trial, from its Ray Tune status and the epochs it reported."""

from types import SimpleNamespace

import pytest

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


def test_a_trial_cut_by_the_time_budget_at_a_rung_is_interrupted():
    """Ray Tune completes a trial the scheduler stops (on_trial_complete); one the time budget or Ctrl-C
    cuts at the experiment's end it does not, even when the cut falls on a rung epoch."""
    asha = Study(name="s", dataset="mnist", model="fc2", space={"lr": tune.loguniform(1e-3, 1e-1)},
                 search="optuna", scheduler="asha", num_samples=4, epochs=15, grace_period=3)
    epochs = {e: {"epoch": e} for e in range(1, 4)}
    trial = SimpleNamespace(status="TERMINATED", last_result=epochs[3])
    assert outcome(trial, epochs, asha, completed=True) == "stopped_early"
    assert outcome(trial, epochs, asha, completed=False) == "interrupted"


def test_report_writer_on_a_hand_made_sequence_of_events(tmp_path):
    """ReportWriter alone, fed Ray Tune's callback events by hand: the rows, the outcomes (one stopped by
    the scheduler at a rung, one cut at the same rung by the experiment's end) and the counts."""
    import pandas as pd

    from hpo.report import ReportWriter

    study = Study(name="w", dataset="mnist", model="fc2", space={"lr": tune.loguniform(1e-3, 1e-1)},
                  search="optuna", scheduler="asha", num_samples=3, epochs=4, grace_period=2,
                  reduction_factor=2)
    writer = ReportWriter(study, tmp_path / "w", str(tmp_path / "w" / "experiment"), {"slots": 2})
    writer.setup()
    a, b, c = (SimpleNamespace(trial_id=i, status="RUNNING", config={"lr": lr, "tag": tag}, last_result=None,
                               error_file=None)
               for i, lr, tag in (("a", 0.01, '=HYPERLINK("http://x","y")'), ("b", 0.02, "@sum"), ("c", 0.03, "c")))
    trials = [a, b, c]
    for trial in trials:
        writer.on_trial_start(0, trials, trial)
    for epoch in (1, 2):
        for trial, acc in ((a, 0.5), (b, 0.6), (c, 0.4)):
            trial.last_result = {"epoch": epoch, "val_acc": acc + epoch / 10, "train_loss": 1.0 / epoch}
            writer.on_trial_result(0, trials, trial, trial.last_result)
    c.status = "TERMINATED"
    writer.on_trial_complete(0, trials, c)  # ASHA stops c at its rung (epoch 2)
    for epoch in (3, 4):
        a.last_result = {"epoch": epoch, "val_acc": 0.9, "train_loss": 0.1}
        writer.on_trial_result(0, trials, a, a.last_result)
    a.status = "TERMINATED"
    writer.on_trial_complete(0, trials, a)
    b.status = "TERMINATED"  # the time budget ends the experiment with b at epoch 2, a rung
    writer.on_experiment_end(trials)

    table = pd.read_csv(tmp_path / "w" / "report" / "trials.csv").set_index("trial_id")
    assert table["outcome"].to_dict() == {"a": "completed", "b": "interrupted", "c": "stopped_early"}
    assert table["epochs_run"].to_dict() == {"a": 4, "b": 2, "c": 2}
    assert table.loc["a", "best_val_acc"] == 0.9 and table.loc["c", "best_val_acc"] == pytest.approx(0.6)
    assert writer.counts["completed"] == 1 and writer.counts["interrupted"] == 1 and writer.counts["total"] == 3
    assert table["started_s"].notna().all() and table.loc["a", "ended_s"] >= table.loc["a", "started_s"]
    # a config string a spreadsheet would run as a formula stays text; numbers stay numbers
    assert table["config/tag"].to_dict() == {"a": "\'=HYPERLINK(\"http://x\",\"y\")", "b": "\'@sum", "c": "c"}
    assert table["config/lr"].dtype == float
    epochs = pd.read_csv(tmp_path / "w" / "report" / "epochs.csv")
    assert len(epochs) == 8 and sorted(epochs[epochs["trial_id"] == "a"]["epoch"]) == [1, 2, 3, 4]


def test_a_seed_group_is_a_row_per_seed(tmp_path):
    """A seed group's results (hpo.trainable.group_result) become one row per seed, each from its own
    metrics, named by the group; a seed that diverged ends as diverged while the others complete."""
    import pandas as pd

    from hpo.report import ReportWriter

    study = Study(name="g", dataset="mnist", model="fc2", space={"lr": tune.loguniform(1e-3, 1e-1)},
                  search="optuna", num_samples=1, seeds=3, epochs=2)
    writer = ReportWriter(study, tmp_path / "g", str(tmp_path / "g" / "experiment"), {"slots": 1})
    writer.setup()
    group = SimpleNamespace(trial_id="grp", status="RUNNING", config={"lr": 0.01, "__seeds__": [0, 1, 2]},
                            last_result=None, error_file=None)
    writer.on_trial_start(0, [group], group)
    for epoch in (1, 2):
        seeds = {str(s): {"epoch": epoch, "val_acc": 0.5 + s / 10 + epoch / 100, "train_loss": 1.0}
                 for s in (0, 1, 2) if epoch == 1 or s != 1}
        if epoch == 1:
            seeds["1"].update(train_loss=float("nan"), diverged=True)
        group.last_result = {"epoch": epoch, "val_acc": 0.6, "seeds": seeds, "node": "n1"}
        writer.on_trial_result(0, [group], group, group.last_result)
    group.status = "TERMINATED"
    writer.on_trial_complete(0, [group], group)

    table = pd.read_csv(tmp_path / "g" / "report" / "trials.csv").set_index("trial_id")
    assert table["outcome"].to_dict() == {"grp_s0": "completed", "grp_s1": "diverged", "grp_s2": "completed"}
    assert table["seed"].to_dict() == {"grp_s0": 0, "grp_s1": 1, "grp_s2": 2} and set(table["group"]) == {"grp"}
    assert table["epochs_run"].to_dict() == {"grp_s0": 2, "grp_s1": 1, "grp_s2": 2}
    assert table.loc["grp_s2", "best_val_acc"] == pytest.approx(0.72) and (table["node"] == "n1").all()
    assert "config/__seeds__" not in table and "diverged" in table.loc["grp_s1", "error"]
    epochs = pd.read_csv(tmp_path / "g" / "report" / "epochs.csv")
    assert len(epochs) == 5 and set(epochs["group"]) == {"grp"}
