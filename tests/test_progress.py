"""The live status (hpo.progress.ProgressView) fed Ray Tune's events by hand: what a terminal, a log file
and --verbose show."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

from ray import tune

from hpo import Study
from hpo.progress import ProgressView

STUDY = Study(name="p", dataset="mnist", model="lenet5", space={"lr": tune.grid_search([0.1, 0.01, 0.001])},
              epochs=2)


def trial(trial_id, status="RUNNING", lr=0.1, last=None):
    return SimpleNamespace(trial_id=trial_id, status=status, config={"lr": lr}, last_result=last,
                           error_file=None)


def result(epoch, acc):
    return {"epoch": epoch, "val_acc": acc, "epoch_time_s": 0.5}


def feed(view):
    a, b, c = trial("a"), trial("b", lr=0.01), trial("c", status="PENDING", lr=0.001)
    trials = [a, b, c]
    view.on_trial_result(0, trials, a, result(1, 0.5))
    view.on_trial_result(0, trials, b, result(1, 0.7))
    view.on_trial_result(0, trials, a, result(2, 0.6))
    a.status, a.last_result = "TERMINATED", result(2, 0.6)
    view.on_trial_complete(0, trials, a)
    view.on_experiment_end(trials)


def test_log_file_gets_throttled_summary_lines():
    out = io.StringIO()
    feed(ProgressView(STUDY, stream=out, live=False, interval_s=3600))
    lines = out.getvalue().splitlines()
    # the first result, then one line for the finished trial and one at the end: not one per epoch
    assert len(lines) == 3, lines
    assert lines[1].startswith("1 finished 0 stopped early 0 failed 1 running 1 pending | 3 epochs")
    assert "best val_acc 0.7000" in lines[-1] and "ETA" in lines[-1]


def test_seed_groups_are_counted_as_such():
    """Under ASHA with 3 seeds a Ray trial is a seed group: the status says what it counts (the first line and
    the last count seeds, the report's rows)."""
    out = io.StringIO()
    grouped = Study(name="p", dataset="mnist", model="lenet5", scheduler="asha", seeds=3, epochs=2,
                    space=STUDY.space)
    feed(ProgressView(grouped, stream=out, live=False, interval_s=3600, planned=3))
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("seed groups: 1 finished 0 stopped early 0 failed 1 running 1 pending"), lines


def test_verbose_prints_a_line_per_epoch():
    out = io.StringIO()
    feed(ProgressView(STUDY, stream=out, verbose=True))
    epochs = re.findall(r"\] (\w+) epoch (\d)/2", out.getvalue())
    assert epochs == [("a", "1"), ("b", "1"), ("a", "2")]


def test_terminal_status_is_redrawn_with_running_trials_and_best_config():
    out = io.StringIO()
    feed(ProgressView(STUDY, stream=out, live=True))
    text = out.getvalue()
    assert "best config: lr=0.01" in text and "b  epoch 1/2  val_acc 0.7000" in text
    assert "1 finished" in text


def test_a_trial_note_reaches_the_console():
    """A trial's workers print nowhere the user sees: its note (a damaged checkpoint gone back from) does."""
    out = io.StringIO()
    view = ProgressView(STUDY, stream=out, live=False, interval_s=3600)
    a = trial("a")
    view.on_trial_result(0, [a], a, {**result(3, 0.5), "note": "checkpoint_000002/state.pt cannot be read. "
                                                               "Went back to the older checkpoint_000001"})
    view.on_trial_result(0, [a], a, result(4, 0.6))
    assert out.getvalue().count("trial a: checkpoint_000002/state.pt cannot be read. Went back") == 1


def test_the_status_counts_trials_by_the_report_s_outcome_rule():
    """A stop at a rung by ASHA is 'stopped early'; a cut there by the time budget is 'interrupted' (Ray
    Tune never completed it); a trial whose loss became NaN is 'diverged': as in trials.csv."""
    asha = Study(name="s", dataset="mnist", model="fc2", space={"lr": tune.loguniform(1e-3, 1e-1)},
                 search="optuna", scheduler="asha", num_samples=5, epochs=9, grace_period=1,
                 reduction_factor=3)
    view = ProgressView(asha, stream=io.StringIO(), live=False)
    done, stopped, cut, nan = trial("done"), trial("stopped"), trial("cut"), trial("nan")
    trials = [done, stopped, cut, nan]
    for t, epoch, extra in ((done, 9, {}), (stopped, 3, {}), (cut, 3, {}), (nan, 2, {"diverged": True})):
        view.on_trial_result(0, trials, t, {**result(epoch, 0.5), **extra})
        t.status = "TERMINATED"
    for t in (done, stopped, nan):  # Ray Tune completes what ends by itself or by the scheduler
        view.on_trial_complete(0, trials, t)
    assert view.counts() == {"finished": 1, "stopped early": 1, "diverged": 1, "failed": 0, "interrupted": 1,
                             "running": 0, "pending": 1}
