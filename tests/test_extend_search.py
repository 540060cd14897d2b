"""--extend of a search or of seed groups (hpo/rounds.py): an Optuna search continued from its journal, --top's
seeds of a search's best configurations, and an ASHA grid's new seeds as seed groups, through the real CLI and
real Ray Tune on small datasets in the real IDX format. (Beside tests/test_rounds.py, in a file of their own so
that pytest-xdist runs them in parallel with it.)"""

from __future__ import annotations

import pytest

from test_run import hpo_run, kill_when, report, reported, write_study


def round_groups(trials, number: int) -> dict[str, list[int]]:
    """The seeds of each Ray trial (trials.csv's `group`) of a round: every row of it must be in a seed group."""
    rows = trials[trials["round"] == number]
    assert rows["group"].notna().all(), rows[["trial_id", "group", "seed"]]
    return {group: sorted(seeds) for group, seeds in rows.groupby("group")["seed"]}


@pytest.mark.slow
def test_extend_continues_an_optuna_search_and_adds_seeds(tmp_path, fake_mnist_dir):
    """6 TPE trials, then --extend to 9 configurations with 2 seeds each: seed 1 of the 6 (fixed points) and 3
    new configurations (2 seeds each) that Optuna's TPE suggests from the same study in the journal."""
    import optuna

    study = write_study(tmp_path, """
        study = Study(name="tpe", dataset="mnist", model="mnist_cnn", search="optuna", num_samples=6,
                      space={"lr": tune.loguniform(1e-3, 1e-1), "momentum": 0.5}, epochs=2)
    """)
    results = tmp_path / "results"
    common = ["--results", results, "--data-dir", fake_mnist_dir, "--no-analysis", "--max-concurrent", 1]
    hpo_run(study, *common)
    out = hpo_run(study, *common, "--extend", "--set", "num_samples=9", "--set", "seeds=2")
    assert "round 2: 12 new trials beside the 6 of rounds 1-1" in out.stdout, out.stdout

    trials, epochs, meta = report(results, "tpe")
    assert len(trials) == 18 and trials["trial_id"].is_unique and set(trials["outcome"]) == {"completed"}
    per_config = trials.groupby("config/lr")["seed"].apply(sorted)
    assert len(per_config) == 9 and all(seeds == [0, 1] for seeds in per_config), per_config
    # seeds=2 makes the study seed-grouped: seed 1 of each earlier configuration is a group of its own, each
    # new configuration's two seeds one group (ASHA and TPE would judge their mean)
    assert sorted(round_groups(trials, 2).values()) == [[0, 1]] * 3 + [[1]] * 6
    first = set(trials.loc[trials["round"] == 1, "config/lr"])
    assert set(trials.loc[(trials["round"] == 2) & (trials["seed"] == 1), "config/lr"]) >= first

    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(results / "tpe" / "optuna.journal")))
    (summary,) = optuna.get_all_study_summaries(journal)  # one Optuna study for both rounds
    ot_trials = optuna.load_study(study_name=summary.study_name, storage=journal).get_trials()
    assert [t.number for t in ot_trials] == list(range(9))  # the fixed points are not Optuna's
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in ot_trials)
    # The 7th suggestion was drawn from the study that held the first six, finished.
    assert max(t.datetime_complete for t in ot_trials[:6]) <= ot_trials[6].datetime_start
    assert {round(t.params["lr"], 12) for t in ot_trials[:6]} == {round(v, 12) for v in first}
    assert not {round(t.params["lr"], 12) for t in ot_trials[6:]} & {round(v, 12) for v in first}


@pytest.mark.slow
def test_extend_top_reruns_the_best_configurations_with_seeds_to_the_last_epoch(tmp_path, fake_mnist_dir):
    """A random search with ASHA (rungs at epochs 1 and 2 of 3), then `--extend --top 2 --set seeds=3`: seeds 1
    and 2 of the two best configurations that ran every epoch, and each of them runs every epoch (ASHA,
    which halves at every rung, would stop about half of them)."""
    study = write_study(tmp_path, """
        study = Study(name="top", dataset="mnist", model="mnist_cnn", search="random", num_samples=5,
                      scheduler="asha", grace_period=1, reduction_factor=2,
                      space={"lr": tune.loguniform(1e-3, 0.3), "momentum": 0.5}, epochs=3)
    """)
    results = tmp_path / "results"
    common = ["--results", results, "--data-dir", fake_mnist_dir, "--no-analysis", "--max-concurrent", 1]
    hpo_run(study, *common)
    first, _, _ = report(results, "top")
    done = first[first["outcome"] == "completed"].sort_values("best_val_acc", ascending=False)
    assert len(done) >= 2, first[["outcome", "epochs_run"]]
    out = hpo_run(study, *common, "--extend", "--top", 2, "--set", "seeds=3")
    assert "round 2: 4 new trials beside the 5 of rounds 1-1" in out.stdout, out.stdout
    assert "the missing seeds of the 2 best configurations, no early stopping" in out.stdout

    trials, _, meta = report(results, "top")
    second = trials[trials["round"] == 2]
    assert sorted(second["seed"]) == [1, 1, 2, 2]
    chosen = done["config/lr"].isin(second["config/lr"])  # the two best (ties on these tiny splits either way)
    assert chosen.sum() == 2 and done[chosen]["best_val_acc"].min() >= done[~chosen]["best_val_acc"].max(), done
    assert set(second["outcome"]) == {"completed"} and set(second["epochs_run"]) == {3}, second
    assert sorted(round_groups(trials, 2).values()) == [[1, 2], [1, 2]]  # one trial per configuration
    assert "study.py --extend --top 2 " in meta["rounds"][1]["command"]  # the round's own command


@pytest.mark.slow
def test_extend_of_an_asha_grid_trains_each_configurations_new_seeds_as_one_group(tmp_path, fake_mnist_dir):
    """A grid with ASHA and 2 seeds (seed groups), then `--extend --set seeds=4`: each configuration's seeds 2
    and 3 are one Ray trial, and train as many epochs as its seeds 0 and 1 did (the round's own ASHA, which
    judges afresh in another order, leaves them alone). The round's driver is killed after its first epoch and
    the round resumed: no seed lost or trained twice."""
    study = write_study(tmp_path, """
        study = Study(name="asha", dataset="mnist", model="mnist_cnn", scheduler="asha", grace_period=1,
                      reduction_factor=2, space={"lr": tune.grid_search([0.3, 0.05, 0.01]), "momentum": 0.5},
                      epochs=2, seeds=2)
    """)
    results = tmp_path / "results"
    common = ["--results", results, "--data-dir", fake_mnist_dir, "--no-analysis", "--max-concurrent", 1]
    hpo_run(study, *common)
    kill_when(lambda: reported(results / "asha" / "experiment-round2"), study, *common, "--extend", "--set", "seeds=4")
    resumed = hpo_run(study, *common, "--resume", "--set", "seeds=4")
    assert "round 2: 6 new trials beside the 6 of rounds 1-1" in resumed.stdout, resumed.stdout

    trials, epochs, meta = report(results, "asha")
    assert meta["rounds"][1]["ray_trials"] == 3 and meta["rounds"][1]["planned_trials"] == 6
    assert len(trials) == 12 and trials["trial_id"].is_unique
    assert set(trials["step"]) == {"eager"}  # a seed group on a CPU: its seeds one after another, not fused
    assert trials["outcome"].isin(["completed", "stopped_early"]).all(), trials["outcome"]
    groups = round_groups(trials, 2)
    assert sorted(groups.values()) == [[2, 3]] * 3, groups
    assert len(list((results / "asha" / "experiment-round2").glob("*/params.json"))) == 3
    second = trials[trials["round"] == 2]
    assert sorted(second["config/lr"]) == [0.01, 0.01, 0.05, 0.05, 0.3, 0.3]
    assert (second.groupby("group")["epochs_run"].nunique() == 1).all(), second  # stopped or kept together
    first = trials[trials["round"] == 1]
    assert first.groupby("config/lr")["epochs_run"].max().to_dict() == \
        second.groupby("config/lr")["epochs_run"].max().to_dict(), trials[["config/lr", "round", "epochs_run"]]
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert len(epochs[epochs["round"] == 2]) == second["epochs_run"].sum()


def test_asha_neither_stops_nor_counts_the_trials_with_fixed_epochs():
    """hpo.searchers.AshaBesideFixedEpochs against Ray's own ASHA, on Ray's own Trial objects: a fixed-epochs
    trial far below the rung's cutoff goes on, and its value does not lower the cutoff that a later trial
    meets (with Ray's ASHA the fixed trial stops and the later one, above its value, goes on)."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import ASHAScheduler

    from hpo.registry import EPOCHS_KEY
    from hpo.searchers import AshaBesideFixedEpochs

    def decisions(scheduler) -> list[str]:
        good, fixed, middling = (Trial("t", config=c, stub=True) for c in ({"lr": 1}, {"lr": 2, EPOCHS_KEY: 1},
                                                                           {"lr": 3}))
        for trial in (good, fixed, middling):
            scheduler.on_trial_add(None, trial)
        found = [scheduler.on_trial_result(None, good, {"training_iteration": 1, "acc": 0.9}),
                 scheduler.on_trial_result(None, fixed, {"training_iteration": 1, "acc": 0.1})]
        scheduler.on_trial_complete(None, fixed, {"training_iteration": 1, "acc": 0.1})  # its last epoch
        return [*found, scheduler.on_trial_result(None, middling, {"training_iteration": 1, "acc": 0.5})]

    common = {"metric": "acc", "mode": "max", "time_attr": "training_iteration", "max_t": 9, "grace_period": 1,
              "reduction_factor": 2}
    assert decisions(ASHAScheduler(**common)) == ["CONTINUE", "STOP", "CONTINUE"]
    assert decisions(AshaBesideFixedEpochs(**common, fixed_key=EPOCHS_KEY)) == ["CONTINUE", "CONTINUE", "STOP"]
