"""End to end through the real CLI, real Ray Tune (embedded, 127.0.0.1) and real Optuna,
on small datasets written in the real IDX format."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # each test starts Ray and runs a study: about a minute


def write_study(tmp_path: Path, body: str, name: str = "study.py") -> Path:
    path = tmp_path / name
    path.write_text("from ray import tune\nfrom hpo import Study\n\n" + textwrap.dedent(body))
    return path


def hpo_run(*args, timeout=300, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "hpo.run", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"hpo.run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def refused(*args) -> tuple[int, str]:
    """`python -m hpo.run ARGS` run in this process, for a command refused before Ray starts (no process
    start-up: torch and Ray imported once); its exit code and what it printed to stderr."""
    import contextlib
    import io

    from hpo.run import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in args])
    return code, err.getvalue()


def kill_when(ready, *args, timeout=240) -> None:
    """Start `python -m hpo.run ARGS` in a process group of its own and kill the group (the driver and the
    embedded Ray it started) with SIGKILL once `ready()` is true: a crash at that point of the run."""
    driver = subprocess.Popen([sys.executable, "-m", "hpo.run", *map(str, args)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while not ready():
            assert time.time() < deadline and driver.poll() is None, driver.stdout.read()[-3000:]
            time.sleep(0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()


def reported(experiment: Path) -> bool:
    """Whether a trial of a Ray experiment has reported a result (an epoch)."""
    return any(p.stat().st_size for p in experiment.glob("*/result.json"))


def report(results: Path, name: str):
    d = results / name / "report"
    return pd.read_csv(d / "trials.csv"), pd.read_csv(d / "epochs.csv"), json.loads((d / "study.json").read_text())


def test_grid_study_with_seeds_gives_every_trial_and_epoch(tmp_path, fake_mnist_dir):
    study = write_study(tmp_path, """
        study = Study(name="grid", dataset="mnist", model="mnist_cnn",
                      space={"batch_size": tune.grid_search([32, 64]), "lr": 0.05, "momentum": 0.5},
                      epochs=2, seeds=2)
    """)
    out = hpo_run(study, "--results", tmp_path / "results", "--data-dir", fake_mnist_dir, "--no-analysis",
                  "--max-concurrent", 1, "--verbose")
    trials, epochs, meta = report(tmp_path / "results", "grid")
    # --max-concurrent 1 holds for a grid too: each trial's progress lines form one block, never interleaved
    blocks = [t for t, _ in itertools.groupby(re.findall(r"\] (\S+) epoch \d", out.stdout))]
    assert len(blocks) == len(set(blocks)) == 4, out.stdout
    assert len(trials) == 4 and set(trials["outcome"]) == {"completed"}
    assert sorted(zip(trials["config/batch_size"], trials["seed"])) == [(32, 0), (32, 1), (64, 0), (64, 1)]
    assert len(epochs) == 8 and sorted(epochs.groupby("trial_id")["epoch"].apply(list).map(tuple)) == [(1, 2)] * 4
    for column in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                   "epoch_time_s", "samples_per_s", "lr"):
        assert epochs[column].notna().all(), column
    assert epochs[["train_acc", "val_acc", "test_acc"]].stack().between(0, 1).all()
    assert (trials["params"] > 0).all() and trials["node"].notna().all()
    # Repeats of one configuration differ: their seeds change initialisation and batch order.
    first = trials[trials["config/batch_size"] == 32].sort_values("seed")["final_train_loss"].tolist()
    assert first[0] != first[1]
    assert meta["varied_keys"] == ["batch_size"] and meta["trials"]["completed"] == 4 and meta["ended"]
    assert "Done: 4 trials completed" in out.stdout

    # --resume of the finished study: exit 0, the same Done line, not one epoch trained again.
    again = hpo_run(study, "--results", tmp_path / "results", "--data-dir", fake_mnist_dir, "--no-analysis",
                    "--resume", "--verbose")
    assert "Done: 4 trials completed" in again.stdout
    assert " epoch " not in again.stdout.replace("epochs", "")  # --verbose prints a line per trained epoch
    trials_after, epochs_after, _ = report(tmp_path / "results", "grid")
    pd.testing.assert_frame_equal(epochs, epochs_after)
    assert list(trials_after["outcome"]) == list(trials["outcome"])


def test_optuna_asha_study_stops_some_trials_early(tmp_path, fake_mnist_dir):
    study = write_study(tmp_path, """
        study = Study(name="tpe", dataset="mnist", model="lenet5",
                      space={"lr": tune.loguniform(1e-4, 1e-1), "batch_size": tune.choice([32, 64]),
                             "optimizer": tune.choice(["sgd", "adam"])},
                      epochs=4, search="optuna", scheduler="asha", num_samples=8, reduction_factor=2,
                      metric="val_loss", mode="min")  # a loss has no ties for ASHA's cut-off
    """)
    hpo_run(study, "--results", tmp_path / "results", "--data-dir", fake_mnist_dir, "--no-analysis",
            "--max-concurrent", 2)
    trials, epochs, meta = report(tmp_path / "results", "tpe")
    assert len(trials) == 8 and (trials["status"] == "TERMINATED").all()
    stopped = trials[trials["outcome"] == "stopped_early"]
    assert len(stopped) >= 1 and (stopped["epochs_run"] < 4).all()
    assert (trials["outcome"] == "completed").sum() >= 1
    assert trials["config/lr"].nunique() == 8  # Optuna sampled a different lr for each trial
    assert len(epochs) == trials["epochs_run"].sum()

    # Optuna was told the truth: the trials ASHA stopped are PRUNED (with their per-epoch values), the
    # others COMPLETE with their final value (hpo.searchers.PrunedWhenStopped).
    import optuna

    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "results" / "tpe" / "optuna.journal")))
    ot_trials = optuna.load_study(study_name="tpe", storage=journal).get_trials()
    states = {round(t.params["lr"], 12): t for t in ot_trials}
    for _, row in trials.iterrows():
        ot = states[round(row["config/lr"], 12)]
        stopped = row["outcome"] == "stopped_early"
        assert ot.state == (optuna.trial.TrialState.PRUNED if stopped else optuna.trial.TrialState.COMPLETE)
        assert sorted(ot.intermediate_values) == list(range(1, int(row["epochs_run"]) + 1))
        if not stopped:
            assert ot.value == pytest.approx(row["final_val_loss"])


def test_resume_after_killed_driver_finishes_without_rerunning(tmp_path, fake_mnist_dir):
    study = write_study(tmp_path, """
        study = Study(name="resumable", dataset="mnist", model="mnist_cnn",
                      space={"lr": tune.grid_search([0.01, 0.02, 0.03, 0.04]), "momentum": 0.5},
                      epochs=3)
    """)
    results = tmp_path / "results"
    trials_csv = results / "resumable" / "report" / "trials.csv"
    # the driver killed once one trial has finished
    kill_when(lambda: trials_csv.exists() and (pd.read_csv(trials_csv)["outcome"] == "completed").sum() >= 1,
              study, "--results", results, "--data-dir", fake_mnist_dir, "--no-analysis", "--max-concurrent", 1)
    before, before_epochs, _ = report(results, "resumable")
    done_before = set(before.loc[before["outcome"] == "completed", "trial_id"])

    again = hpo_run(study, "--results", results, "--data-dir", fake_mnist_dir, "--no-analysis", "--resume",
                    "--verbose")  # a line per epoch of every trial it trains
    code, err = refused(study, "--results", results, "--data-dir", fake_mnist_dir)
    assert code == 2 and "already exist" in err  # no silent rerun

    trials, epochs, _ = report(results, "resumable")
    assert len(trials) == 4 and set(trials["outcome"]) == {"completed"}
    assert sorted(trials["config/lr"]) == [0.01, 0.02, 0.03, 0.04]
    assert all(f"{t} epoch" not in again.stdout for t in done_before)  # finished trials were not re-run
    assert epochs.groupby("trial_id")["epoch"].apply(list).map(tuple).tolist() == [(1, 2, 3)] * 4
    kept = before_epochs[before_epochs["trial_id"].isin(done_before)].reset_index(drop=True)
    after = epochs[epochs["trial_id"].isin(done_before)].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, after)


def test_ctrl_c_stops_cleanly_with_a_report_and_the_resume_command(tmp_path, fake_mnist_dir):
    study = write_study(tmp_path, """
        study = Study(name="interrupted", dataset="mnist", model="mnist_cnn",
                      space={"lr": tune.grid_search([0.01, 0.02, 0.03, 0.04])}, epochs=100)
    """)
    results = tmp_path / "results"
    args = [sys.executable, "-m", "hpo.run", study, "--results", results, "--data-dir", fake_mnist_dir,
            "--max-concurrent", 1]
    driver = subprocess.Popen(list(map(str, args)), cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    trials_csv = results / "interrupted" / "report" / "trials.csv"
    deadline = time.time() + 240
    while not (trials_csv.exists() and (pd.read_csv(trials_csv)["outcome"] == "completed").any()):
        assert time.time() < deadline and driver.poll() is None, "no trial finished in time"
        time.sleep(0.5)
    driver.send_signal(signal.SIGINT)  # what Ctrl-C sends
    output, _ = driver.communicate(timeout=180)
    assert driver.returncode == 130, output[-3000:]
    assert "Traceback" not in output
    assert f"python -m hpo.run {study} --resume" in output
    trials, _, _ = report(results, "interrupted")
    assert 1 <= (trials["outcome"] == "completed").sum() < 4  # stopped: 4 trials of 100 epochs cannot finish
    assert (results / "interrupted" / "report" / "report.html").exists()  # analysed what finished


def test_seeds_repeat_each_sampled_configuration(tmp_path, fake_mnist_dir):
    """With seed_groups=False, random/Optuna studies with seeds=N run every sampled configuration as N trials
    (Ray's Repeater)."""
    study = write_study(tmp_path, """
        study = Study(name="repeats", dataset="mnist", model="mnist_cnn",
                      space={"lr": tune.loguniform(1e-3, 1e-1), "momentum": 0.5},
                      epochs=1, search="optuna", num_samples=2, seeds=2, seed_groups=False)
    """)
    out = hpo_run(study, "--results", tmp_path / "results", "--data-dir", fake_mnist_dir, "--no-analysis",
                  "--verbose").stdout
    trials, _, _ = report(tmp_path / "results", "repeats")
    assert len(trials) == 4 and set(trials["outcome"]) == {"completed"}
    # progress counts the planned trials, though Optuna creates them one by one
    assert set(re.findall(r"\[\d+/(\d+) trials done\]", out)) == {"4"}, out
    by_lr = trials.groupby("config/lr")["seed"].apply(sorted).tolist()
    assert by_lr == [[0, 1], [0, 1]]  # two configurations, each with seeds 0 and 1
    assert (trials["config/momentum"] == 0.5).all()


def test_asha_and_optuna_judge_a_configuration_by_its_seed_mean(tmp_path, fake_mnist_dir):
    """seeds=2 with Optuna and ASHA: each configuration is one Ray trial training both seeds (a seed group), so
    ASHA stops or keeps both seeds together and Optuna is told one value per configuration; the report keeps
    a row per seed, named by its group."""
    import optuna

    study = write_study(tmp_path, """
        study = Study(name="groups", dataset="mnist", model="lenet5",
                      space={"lr": tune.loguniform(1e-4, 1e-1), "optimizer": tune.choice(["sgd", "adam"])},
                      epochs=4, search="optuna", scheduler="asha", num_samples=6, seeds=2, reduction_factor=2,
                      metric="val_loss", mode="min")
    """)
    out = hpo_run(study, "--results", tmp_path / "results", "--data-dir", fake_mnist_dir, "--no-analysis",
                  "--max-concurrent", 2, "--verbose").stdout
    assert set(re.findall(r"\[\d+/(\d+) trials done\]", out)) == {"6"}, out  # Ray's trials: one per configuration
    trials, epochs, _ = report(tmp_path / "results", "groups")
    assert len(trials) == 12 and trials["group"].nunique() == 6 and trials["trial_id"].is_unique
    for group, rows in trials.groupby("group"):
        assert sorted(rows["seed"]) == [0, 1] and rows["config/lr"].nunique() == 1
        assert rows["epochs_run"].nunique() == 1 and rows["outcome"].nunique() == 1  # stopped or kept together
        assert set(rows["trial_id"]) == {f"{group}_s0", f"{group}_s1"}
    assert (trials["outcome"] == "stopped_early").any() and (trials["outcome"] == "completed").any()
    assert len(epochs) == trials["epochs_run"].sum() and set(epochs["group"]) == set(trials["group"])
    seed0, seed1 = (trials[trials["seed"] == s].set_index("group")["best_val_loss"] for s in (0, 1))
    assert (seed0 != seed1).all()  # two seeds really trained

    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "results" / "groups" / "optuna.journal")))
    ot_trials = optuna.load_study(study_name="groups", storage=journal).get_trials()
    assert len(ot_trials) == 6  # one per configuration, not per seed
    finals = trials.groupby("group").agg(lr=("config/lr", "first"), outcome=("outcome", "first"),
                                         loss=("final_val_loss", "mean"))
    for _, g in finals.iterrows():
        (ot,) = [t for t in ot_trials if round(t.params["lr"], 12) == round(g["lr"], 12)]
        if g["outcome"] == "completed":
            assert ot.state == optuna.trial.TrialState.COMPLETE and ot.value == pytest.approx(g["loss"])
        else:
            assert ot.state == optuna.trial.TrialState.PRUNED


def test_time_budget_ends_the_study_and_says_what_did_not_finish(tmp_path, fake_mnist_dir):
    """time_budget_min is Ray Tune's time_budget_s: the study stops when it runs out, and exits 0."""
    study = write_study(tmp_path, """
        study = Study(name="budget", dataset="mnist", model="mnist_cnn",
                      space={"lr": tune.grid_search([0.01, 0.02, 0.03, 0.04, 0.05, 0.06]), "momentum": 0.5},
                      epochs=10000, time_budget_min=0.25)  # one trial alone would take many minutes
    """)
    out = hpo_run(study, "--results", tmp_path / "results", "--data-dir", fake_mnist_dir, "--no-analysis",
                  "--max-concurrent", 1).stdout
    trials, epochs, meta = report(tmp_path / "results", "budget")
    assert "completed" not in set(trials["outcome"]) and len(epochs) > 0
    assert "interrupted" in set(trials["outcome"]) and set(trials["outcome"]) <= {"interrupted", "pending"}
    assert "time budget ran out" in out, out
    # Finished as far as its budget went: --extend takes it as it is (its cut trials stay cut).
    assert meta["budget_ran_out"] is True and meta["rounds"][0]["budget_ran_out"] is True
    from hpo.run import parse_args, plan
    extension = plan(parse_args([str(study), "--results", str(tmp_path / "results"), "--data-dir",
                                 str(fake_mnist_dir), "--extend", "--set", "seeds=2"]))
    assert extension.round == 2 and sorted({c["seed"] for c in extension.points}) == [0, 1]


def test_live_report_is_rewritten_while_the_study_runs(tmp_path, fake_mnist_dir):
    """report.html appears with a 'running' banner and reloads itself before the study ends; the final
    report (here after a Ctrl-C) replaces it."""
    study = write_study(tmp_path, """
        study = Study(name="live", dataset="mnist", model="mnist_cnn",
                      space={"lr": tune.grid_search([0.01, 0.02, 0.03])}, epochs=1000)
    """)
    results = tmp_path / "results"
    args = [sys.executable, "-m", "hpo.run", study, "--results", results, "--data-dir", fake_mnist_dir,
            "--max-concurrent", 1, "--live-report", 2]
    driver = subprocess.Popen(list(map(str, args)), cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    page = results / "live" / "report" / "report.html"
    seen = None
    deadline = time.time() + 240
    while driver.poll() is None and time.time() < deadline:
        if page.exists() and "running: " in (text := page.read_text()):
            seen = text
            break
        time.sleep(0.5)
    driver.send_signal(signal.SIGINT)
    output, _ = driver.communicate(timeout=240)
    assert seen, "no live report while the study ran:\n" + output[-3000:]
    assert driver.returncode == 130, output[-3000:]
    assert re.search(r"running: 0 of 3 trials finished, updated \d\d:\d\d", seen)
    assert '<meta http-equiv="refresh" content="60">' in seen
    final = page.read_text()
    assert "running: " not in final and "http-equiv" not in final
