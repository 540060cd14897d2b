"""--extend: a finished study grows by rounds in its own folder (hpo/rounds.py), through the real CLI, real
Ray Tune and the real analysis, on small datasets in the real IDX format."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from test_analysis import CHROMIUM, chromium
from test_run import hpo_run, kill_when, refused, report, reported, write_study

# The momentum comes from a bundle (hpo.variants: a tune.sample_from Ray resolves per trial), as in
# studies/fashion_lenet5.py: an --extend round's fixed points must leave such keys to Ray.
GRID = """
    from hpo import variants

    study = Study(name="rounds", dataset="mnist", model="mnist_cnn",
                  space={{"batch_size": tune.grid_search({batches}), "lr": 0.05,
                         **variants(sgd={{"momentum": 0.5}})}},
                  epochs=3, seeds=2)
"""


def files(folder: Path) -> dict[str, int]:
    """Every file under a folder with its size: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_extend_adds_seeds_and_grid_values_and_pools_every_round(tmp_path, fake_mnist_dir):
    study = write_study(tmp_path, GRID.format(batches=[32, 64]))
    results = tmp_path / "results"
    common = ["--results", results, "--data-dir", fake_mnist_dir, "--max-concurrent", 1]
    hpo_run(study, *common, "--no-analysis")
    first, first_epochs, _ = report(results, "rounds")
    assert len(first) == 4 and set(first["round"]) == {1}
    shutil.copytree(results / "rounds", tmp_path / "round1" / "rounds")  # compared with the pooled study below

    # Refused before Ray starts, naming the difference; nothing written.
    before = files(results)
    for args, expected in [(["--set", "epochs=4"], "epochs was 3, now 4"),
                           (["--set", "dataset=fashion_mnist"], "dataset was 'mnist', now 'fashion_mnist'"),
                           (["--smoke"], "--smoke was off, now on"),
                           ([], "nothing to add"),
                           (["--resume"], "contradict"),
                           (["--set", "scheduler=asha"], "scheduler was 'fifo', now 'asha'"),
                           (["--top", 0], "--top 0: --top N (N >= 1)")]:
        code, err = refused(study, *common, "--extend", *args)
        assert code == 2 and expected in err, (args, err)
    code, err = refused(study, "--results", tmp_path / "elsewhere", "--data-dir", fake_mnist_dir, "--extend")
    assert code == 2 and "no study 'rounds'" in err and "Run it first" in err
    code, err = refused(study, *common, "--top", 2)
    assert code == 2 and "--top 2: --top N (N >= 1) chooses what a --extend round trains" in err, err
    assert files(results) == before

    # Round 2: seeds 2-4. The driver is killed (with its Ray) once round 2's first trial has reported an
    # epoch (six trials of a second each: most are still to run), then the round is resumed.
    kill_when(lambda: reported(results / "rounds" / "experiment-round2"),
              study, *common, "--no-analysis", "--extend", "--set", "seeds=5")
    code, err = refused(study, *common, "--extend", "--set", "seeds=6")
    assert code == 2 and "round 2" in err, err
    assert f"{study} --resume --results {results}" in err and "--set seeds=5" in err
    resumed = hpo_run(study, *common, "--no-analysis", "--resume", "--set", "seeds=5")
    assert "round 2: 6 new trials beside the 4 of rounds 1-1" in resumed.stdout, resumed.stdout
    assert "Done: 10 trials completed" in resumed.stdout, resumed.stdout  # the whole study's

    trials, epochs, meta = report(results, "rounds")
    assert len(trials) == 10 and trials["trial_id"].is_unique and set(trials["outcome"]) == {"completed"}
    assert sorted(zip(trials["config/batch_size"], trials["seed"], trials["round"])) == [
        (b, s, 1 if s < 2 else 2) for b in (32, 64) for s in range(5)]
    assert len(epochs) == 30 and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert set(epochs.loc[epochs["round"] == 2, "seed"]) == {2, 3, 4}
    kept = epochs[epochs["round"] == 1].reset_index(drop=True)  # round 1's rows untouched
    pd.testing.assert_frame_equal(kept[first_epochs.columns.drop("round")],
                                  first_epochs.drop(columns="round").reset_index(drop=True))
    assert [r["round"] for r in meta["rounds"]] == [1, 2] and "--extend" in meta["rounds"][1]["command"]
    assert all(trials["checkpoint"].str.startswith(("experiment/", "experiment-round2/")))

    # Round 3: an edited grid (a new batch size): only its 5 seeds are new.
    study.write_text(study.read_text().replace("[32, 64]", "[32, 64, 128]"))
    third = hpo_run(study, *common, "--extend", "--set", "seeds=5")
    assert "round 3: 5 new trials beside the 10 of rounds 1-2" in third.stdout, third.stdout
    trials, epochs, meta = report(results, "rounds")
    assert sorted(zip(trials["config/batch_size"], trials["round"])).count((128, 3)) == 5 and len(trials) == 15
    assert set(trials["config/momentum"]) == {0.5} and set(trials["outcome"]) == {"completed"}  # the bundle's

    # The analysis pools the seeds of every round: n is 3, and Games-Howell's p equals one computed here.
    from analysis.load import load
    from analysis.tables import config_table

    table = config_table(load(results / "rounds"))
    assert sorted(table["n"]) == [5, 5, 5]
    best, other = (trials.loc[trials["config/batch_size"] == table["batch_size"][i], "best_val_acc"].to_numpy()
                   for i in (0, 1))
    if np.var(best, ddof=1) + np.var(other, ddof=1) > 0:
        assert table["p_value"][1] == pytest.approx(games_howell_pair(best, other, k=3), rel=1e-6)
    assert (results / "rounds" / "report" / "report.html").exists()
    assert "3 rounds" in (results / "rounds" / "report" / "report.md").read_text()

    # The pooled study beside its first round, in one comparison report, rendered by a browser.
    from analysis.__main__ import main as analysis_main

    assert analysis_main([str(results / "rounds"), str(tmp_path / "round1" / "rounds"), "--out",
                          str(tmp_path / "compared")]) == 0
    compared = (tmp_path / "compared" / "report.md").read_text()
    assert "# Comparison: rounds (results) vs rounds (round1)" in compared
    assert "| rounds (round1) | 32 | 2 |" in compared  # round 1 alone had 2 seeds of batch size 32
    if CHROMIUM.exists():
        dom = chromium(["--dump-dom", (tmp_path / "compared" / "report.html").as_uri()], tmp_path)
        assert dom.returncode == 0 and "Studies compared" in dom.stdout and dom.stdout.count("<table") >= 4


def games_howell_pair(a, b, k: int) -> float:
    """Games-Howell's p for two of k groups, by its formula (Welch's standard error and degrees of freedom,
    the studentized range distribution)."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    q = abs(np.mean(a) - np.mean(b)) / np.sqrt((va + vb) / 2)
    return float(scipy_stats.studentized_range.sf(q, k, df))


def finished_study(folder: Path, study, trials: list[dict], ended="2026-12-05T12:00:00+00:00") -> None:
    """A study folder as a finished round 1 leaves it: study.json, trials.csv (a trial's `outcome` and
    `best_val_acc` from its dict), Ray's params.json per trial in a folder named as Ray names it."""
    report_dir = folder / "report"
    report_dir.mkdir(parents=True)
    record = {"study": study.to_json(), "smoke": False, "ended": ended, "command": "python -m hpo.run s.py",
              "data": {"dataset": study.dataset, "train_images": 300, "test_images": 100}}
    (report_dir / "study.json").write_text(json.dumps(record, default=str))
    pd.DataFrame([{"trial_id": f"ab12c_{i:05d}", "outcome": t.pop("outcome", "completed"),
                   "best_val_acc": t.pop("best_val_acc", 0.5), "epochs_run": t.pop("epochs_run", study.epochs)}
                  for i, t in enumerate(trials)]
                 ).to_csv(report_dir / "trials.csv", index=False)
    for i, config in enumerate(trials):
        trial_dir = folder / "experiment" / f"train_ab12c_{i:05d}_{i}_lr={config.get('lr')}_2026-12-05_12-00-00"
        trial_dir.mkdir(parents=True)
        (trial_dir / "params.json").write_text(json.dumps(config))


def test_an_extension_trains_only_what_no_round_has(tmp_path):
    from ray import tune

    from hpo import HpoError, Study
    from hpo.rounds import plan_extension

    def record(study):
        return {"study": json.loads(json.dumps(study.to_json(), default=str)), "smoke": False,
                "data": {"dataset": "mnist", "train_images": 300, "test_images": 100}}

    grid = Study(name="g", dataset="mnist", model="lenet5", seeds=2,
                 space={"lr": tune.grid_search([0.1, 0.01]), "momentum": 0.9})
    finished_study(tmp_path / "g", grid, [{"lr": lr, "momentum": 0.9, "seed": s} for lr in (0.1, 0.01)
                                          for s in (0, 1)])
    wider = Study(name="g", dataset="mnist", model="lenet5", seeds=3,
                  space={"lr": tune.grid_search([0.1, 0.01, 0.001]), "momentum": 0.9})
    extension = plan_extension(wider, str(tmp_path / "g"), record(wider))
    assert extension.number == 2 and extension.earlier_trials == 4
    assert sorted((c["lr"], c["seed"]) for c in extension.points) == sorted(
        [(0.1, 2), (0.01, 2), (0.001, 0), (0.001, 1), (0.001, 2)])
    with pytest.raises(HpoError, match="nothing to add"):
        plan_extension(grid, str(tmp_path / "g"), record(grid))
    one_seed = Study(name="one", dataset="mnist", model="lenet5", space={"lr": tune.grid_search([0.1, 0.01])})
    finished_study(tmp_path / "one", one_seed, [{"lr": 0.1}, {"lr": 0.01}])  # seeds=1: no seed key in the config
    two_seeds = Study(name="one", dataset="mnist", model="lenet5", seeds=2, space=one_seed.space)
    extension = plan_extension(two_seeds, str(tmp_path / "one"), record(two_seeds))
    assert sorted((c["lr"], c["seed"]) for c in extension.points) == [(0.01, 1), (0.1, 1)]
    with pytest.raises(HpoError, match=r"epochs was 10, now 3.*another name"):
        longer = Study(name="g", dataset="mnist", model="lenet5", seeds=3, epochs=3, space=grid.space)
        plan_extension(longer, str(tmp_path / "g"), record(longer))
    changed_data = {**record(wider), "data": {"train_images": 600}}
    with pytest.raises(HpoError, match="train images were 300, now 600"):
        plan_extension(wider, str(tmp_path / "g"), changed_data)

    sampled = Study(name="s", dataset="mnist", model="lenet5", search="optuna", num_samples=2,
                    space={"lr": tune.loguniform(1e-3, 1e-1)})
    finished_study(tmp_path / "s", sampled, [{"lr": 0.01}, {"lr": 0.02}])
    with pytest.raises(HpoError, match="nothing to add.*num_samples=4"):
        plan_extension(sampled, str(tmp_path / "s"), record(sampled))
    more = Study(name="s", dataset="mnist", model="lenet5", search="optuna", num_samples=5, seeds=2,
                 space={"lr": tune.loguniform(1e-3, 1e-1)})
    extension = plan_extension(more, str(tmp_path / "s"), record(more))
    # seed 1 of the two drawn configurations (seed 0 ran: Ray's Repeater was not used with seeds=1), then 3
    # new configurations with 2 seeds each
    assert sorted((c["lr"], c["seed"]) for c in extension.points) == [(0.01, 1), (0.02, 1)]
    assert extension.new_configs == 3 and extension.trials(seeds=2) == 8
    inside_grid = Study(name="s", dataset="mnist", model="lenet5", search="random", num_samples=3,
                        space={"lr": tune.loguniform(1e-3, 1e-1), "momentum": tune.grid_search([0.5, 0.9])})
    finished_study(tmp_path / "rg", inside_grid, [{"lr": 0.01, "momentum": 0.5}, {"lr": 0.02, "momentum": 0.9}])
    with pytest.raises(HpoError, match="random values inside a grid"):
        plan_extension(inside_grid, str(tmp_path / "rg"), record(inside_grid))

    # --top: the missing seeds of the best configurations that ran every epoch, no new configurations
    ranked = Study(name="r", dataset="mnist", model="lenet5", search="optuna", num_samples=4, scheduler="asha",
                   space={"lr": tune.loguniform(1e-3, 1e-1)})
    finished_study(tmp_path / "r", ranked, [
        {"lr": 0.01, "best_val_acc": 0.80}, {"lr": 0.02, "best_val_acc": 0.90},
        {"lr": 0.03, "best_val_acc": 0.95, "outcome": "stopped_early"}, {"lr": 0.04, "best_val_acc": 0.85}])
    three_seeds = Study(name="r", dataset="mnist", model="lenet5", search="optuna", num_samples=8, seeds=3,
                        scheduler="asha", space=ranked.space)
    extension = plan_extension(three_seeds, str(tmp_path / "r"), record(three_seeds), top=2)
    assert sorted((c["lr"], c["seed"]) for c in extension.points) == [(0.02, 1), (0.02, 2), (0.04, 1), (0.04, 2)]
    assert extension.new_configs == 0 and extension.trials(seeds=3) == 4
    assert len(plan_extension(three_seeds, str(tmp_path / "r"), record(three_seeds), top=9).points) == 6
    with pytest.raises(HpoError, match="--top 2: nothing to add: the 2 best.*seeds=3"):
        plan_extension(ranked, str(tmp_path / "r"), record(ranked), top=2)
    # the same for a grid under ASHA (what the report's advice proposes to tell its best two apart)
    grid = Study(name="ga", dataset="mnist", model="lenet5", scheduler="asha", space={"lr": tune.grid_search(
        [0.01, 0.02, 0.03, 0.04])})
    finished_study(tmp_path / "ga", grid, [
        {"lr": 0.01, "best_val_acc": 0.80}, {"lr": 0.02, "best_val_acc": 0.90},
        {"lr": 0.03, "best_val_acc": 0.95, "outcome": "stopped_early"}, {"lr": 0.04, "best_val_acc": 0.85}])
    grid_seeds = dataclasses.replace(grid, seeds=3)
    extension = plan_extension(grid_seeds, str(tmp_path / "ga"), record(grid_seeds), top=2)
    assert sorted((c["lr"], c["seed"]) for c in extension.points) == [(0.02, 1), (0.02, 2), (0.04, 1), (0.04, 2)]
    assert not any("__epochs__" in c for c in extension.points)  # --top: to the last epoch, no ASHA

    # A plain --extend of an ASHA study: each earlier configuration's new seeds train the epochs its earlier
    # seeds trained (ASHA's earlier verdict, not a new ASHA's); a diverged seed is no verdict; a new grid value
    # meets the round's ASHA.
    judged = Study(name="j", dataset="mnist", model="lenet5", scheduler="asha", epochs=9, grace_period=1,
                   reduction_factor=3, space={"lr": tune.grid_search([0.1, 0.01, 0.001, 0.5])})
    finished_study(tmp_path / "j", judged, [
        {"lr": 0.1, "epochs_run": 9}, {"lr": 0.01, "outcome": "stopped_early", "epochs_run": 3},
        {"lr": 0.001, "outcome": "stopped_early", "epochs_run": 1}, {"lr": 0.5, "outcome": "diverged",
                                                                     "epochs_run": 2}])
    judged_again = Study(name="j", dataset="mnist", model="lenet5", scheduler="asha", epochs=9, grace_period=1,
                         reduction_factor=3, seeds=2, space={"lr": tune.grid_search([0.1, 0.01, 0.001, 0.5, 0.05])})
    extension = plan_extension(judged_again, str(tmp_path / "j"), record(judged_again))
    assert sorted((c["lr"], c["seed"], c.get("__epochs__")) for c in extension.points) == [
        (0.001, 1, 1), (0.01, 1, 3), (0.05, 0, None), (0.05, 1, None), (0.1, 1, 9), (0.5, 1, None)]
    finished_study(tmp_path / "cut_short", ranked, [{"lr": 0.01, "outcome": "stopped_early"}])
    with pytest.raises(HpoError, match="no configuration of study 'r' ran every epoch"):
        plan_extension(three_seeds, str(tmp_path / "cut_short"), record(three_seeds), top=2)

    # A round its time budget ended: its cut trials stay as they are (study.json says so, or for a study.json
    # written before `budget_ran_out`, the round lasted its whole budget).
    budgeted = Study(name="b", dataset="mnist", model="lenet5", seeds=2, time_budget_min=30,
                     space={"lr": tune.grid_search([0.1, 0.01])})
    finished_study(tmp_path / "b", budgeted, [{"lr": 0.1, "seed": 0}, {"lr": 0.1, "seed": 1, "outcome": "interrupted"}])
    study_json = tmp_path / "b" / "report" / "study.json"
    meta = json.loads(study_json.read_text())
    for started, ran_out in (("2026-12-05T11:30:00+00:00", True), ("2026-12-05T11:45:00+00:00", False)):
        study_json.write_text(json.dumps({**meta, "started": started}))  # ended 12:00
        if ran_out:
            assert sorted((c["lr"], c["seed"]) for c in plan_extension(budgeted, str(tmp_path / "b"),
                                                                       record(budgeted)).points) == [(0.01, 0),
                                                                                                     (0.01, 1)]
        else:
            with pytest.raises(HpoError, match="1 of its trials are not finished"):
                plan_extension(budgeted, str(tmp_path / "b"), record(budgeted))
    study_json.write_text(json.dumps({**meta, "budget_ran_out": False, "started": "2026-12-05T11:00:00+00:00"}))
    with pytest.raises(HpoError, match="1 of its trials are not finished"):
        plan_extension(budgeted, str(tmp_path / "b"), record(budgeted))

    finished_study(tmp_path / "cut", grid, [{"lr": 0.1, "momentum": 0.9, "seed": 0, "outcome": "interrupted"}])
    with pytest.raises(HpoError, match=r"round 1 .* \(1 of its trials.*: python -m hpo.run s.py --resume$"):
        plan_extension(wider, str(tmp_path / "cut"), record(wider))
    with pytest.raises(HpoError, match="no study 'g'.*Run it first"):
        plan_extension(wider, str(tmp_path / "nothing"), record(wider))


def test_study_json_without_rounds_is_one_round():
    from hpo.rounds import experiment_name, rounds_of

    assert experiment_name(1) == "experiment" and experiment_name(2) == "experiment-round2"
    old = {"command": "python -m hpo.run s.py", "started": "t0", "ended": "t1", "study": {"name": "s"}}
    assert rounds_of(old) == [{"round": 1, "command": "python -m hpo.run s.py", "set": None, "started": "t0",
                               "ended": "t1", "study": {"name": "s"}}]
    assert rounds_of({**old, "rounds": [{"round": 1}, {"round": 2}]})[-1]["round"] == 2
    assert json.loads(json.dumps(rounds_of(old)))  # study.json holds it as JSON


def test_commands_for_the_next_round():
    from hpo.rounds import command_with, resume_command, top_of

    ran = "python -m hpo.run 'studies/my study.py' --extend --results r --set seeds=3 --set lr=0.1"
    assert resume_command(ran) == "python -m hpo.run 'studies/my study.py' --resume --results r --set seeds=3 " \
                                  "--set lr=0.1"
    assert command_with(ran, "--extend", {"seeds": 8}) == ("python -m hpo.run 'studies/my study.py' --extend "
                                                           "--results r --set lr=0.1 --set seeds=8")
    assert command_with("python -m hpo.run s.py --overwrite", "--extend") == "python -m hpo.run s.py --extend"
    topped = "python -m hpo.run s.py --extend --top 3 --set seeds=5"  # --top belongs to its round alone
    assert top_of(topped) == 3 and top_of(ran) is None and top_of("python -m hpo.run s.py --top") is None
    assert resume_command(topped) == "python -m hpo.run s.py --resume --set seeds=5"
    assert command_with(topped, "--extend --top 2", {"seeds": 8}) == ("python -m hpo.run s.py --extend --top 2 "
                                                                      "--set seeds=8")


def test_a_grid_of_seed_groups_extends_seed_by_seed():
    from ray import tune

    from hpo import Study
    from hpo.rounds import configurations

    grouped = Study(name="g", dataset="mnist", model="lenet5", scheduler="asha", epochs=4, seeds=2,
                    space={"lr": tune.grid_search([0.1, 0.01])})
    assert grouped.seed_grouped and grouped.ray_trials() == 2 and grouped.num_trials() == 4
    assert sorted((c["lr"], c["seed"]) for c in configurations(grouped)) == [(0.01, 0), (0.01, 1), (0.1, 0),
                                                                             (0.1, 1)]
    assert all("__seeds__" not in c for c in configurations(grouped))


def test_a_rounds_points_become_one_seed_group_per_configuration():
    from hpo.rounds import seed_groups

    points = [{"lr": 0.1, "seed": 2}, {"lr": 0.01, "seed": 2, "__epochs__": 3}, {"lr": 0.1, "seed": 3},
              {"lr": 0.01, "seed": 3, "__epochs__": 3}, {"lr": 0.001, "seed": 4}]
    assert seed_groups(points) == [{"lr": 0.1, "__seeds__": [2, 3]},
                                   {"lr": 0.01, "__epochs__": 3, "__seeds__": [2, 3]},
                                   {"lr": 0.001, "__seeds__": [4]}]

    from ray import tune

    from hpo import Study
    from hpo.plan import Plan

    grid = {"lr": tune.grid_search([0.1, 0.01, 0.001])}
    for scheduler, ray_trials in [("asha", 3), ("fifo", 5)]:  # the live status's count of Ray trials
        study = Study(name="g", dataset="mnist", model="lenet5", scheduler=scheduler, seeds=5, space=grid)
        plan = Plan(study, None, Path("g"), "g", None, round=2, points=tuple(points), round_trials=5)
        assert plan.ray_trials == ray_trials and plan.planned_trials == 5, scheduler


def test_a_resumed_round_is_the_round_its_extend_began(tmp_path):
    """A --resume of a round started with `--extend --top 2` is that round: its --top (the first line says it,
    study.json's command keeps it) and its Ray trials (seed groups: fewer than its rows) from study.json."""
    from ray import tune

    from hpo import Study
    from hpo.plan import Plan
    from hpo.run import parse_args, report_writer, with_round

    study = Study(name="s", dataset="mnist", model="lenet5", search="random", seeds=3, num_samples=4,
                  space={"lr": tune.loguniform(1e-3, 0.1), "momentum": 0.9})
    record = {"planned_trials": 8, "rounds": [
        {"round": 1, "command": "python -m hpo.run s.py", "planned_trials": 4},
        {"round": 2, "command": "python -m hpo.run s.py --extend --top 2 --set seeds=3", "planned_trials": 4,
         "ray_trials": 2}]}
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "study.json").write_text(json.dumps(record))
    options = parse_args(["s.py", "--resume", "--set", "seeds=3"])
    resumed = with_round(Plan(study, options, tmp_path, str(tmp_path), None))
    assert (resumed.round, resumed.earlier_trials, resumed.planned_trials, resumed.ray_trials) == (2, 4, 4, 2)
    assert resumed.options.top == 2 and "--top" not in resumed.options.command(resume=True)
    assert report_writer(resumed).meta["command"] == "python -m hpo.run s.py --extend --top 2 --set seeds=3"
