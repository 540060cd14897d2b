"""'What to run next' (analysis/advice.py) on hand-made reports where the right advice is known."""

from __future__ import annotations

import json
import math
from pathlib import Path

from scipy import stats as sps

from analysis import analyse
from analysis.advice import advise
from analysis.load import load
from analysis.tables import config_table, power_summary
from test_analysis import trial, write_study


def study_with(folder: Path, trials: list, varied: list[str], space: dict, fields: dict | None = None,
               **kw) -> Path:
    write_study(folder, trials, varied=varied, **kw)
    record = folder / "report" / "study.json"
    meta = json.loads(record.read_text())
    meta["study"].update(space=space, **(fields or {}))
    record.write_text(json.dumps(meta))
    return folder


def advice_of(folder: Path) -> list:
    data = load(folder)
    table = config_table(data)
    return advise(data, table, power_summary(data, table))


def test_the_seeds_that_would_separate_the_runner_up_as_an_extend_command(tmp_path):
    accs = {0.1: [0.90, 0.92, 0.91], 0.05: [0.89, 0.91, 0.90], 0.01: [0.50, 0.51, 0.52]}
    trials = [trial(f"t{i}{s}", {"lr": lr}, s, acc, epochs=3) for i, (lr, a) in enumerate(accs.items())
              for s, acc in enumerate(a)]
    folder = study_with(tmp_path / "lr", trials, ["lr"], {"lr": {"grid_search": [0.1, 0.05, 0.01]}})
    found = advice_of(folder)
    seeds = [a for a in found if "seeds per configuration" in a.reason]
    assert len(seeds) == 1 and "runner-up (lr=0.05)" in seeds[0].reason
    # By the power formula, for the std pooled over the three configurations (each 0.01) and a 0.01 difference.
    std, diff = 0.01, 0.01
    needed = next(n for n in range(2, 1000) if (sps.t.ppf(0.975, 2 * n - 2) + sps.t.ppf(0.8, 2 * n - 2))
                  * std * math.sqrt(2 / n) <= diff + 1e-12)
    assert seeds[0].command == f"python -m hpo.run studies/lr.py --extend --set seeds={needed}"
    assert "(now 3)" in seeds[0].reason and 3 < needed <= 20

    analyse(folder, log=lambda _: None)
    text = (folder / "report" / "report.md").read_text()
    assert "## What to run next" in text and f"--extend --set seeds={needed}`" in text

    # The same grid under ASHA: the two best alone, to the last epoch (--top 2), not a new ASHA round that
    # could stop their new seeds at a rung.
    asha = study_with(tmp_path / "asha", trials, ["lr"], {"lr": {"grid_search": [0.1, 0.05, 0.01]}},
                      scheduler="asha")
    (seeds,) = [a for a in advice_of(asha) if "seeds per configuration" in a.reason]
    assert seeds.command == f"python -m hpo.run studies/asha.py --extend --top 2 --set seeds={needed}"


def test_a_best_at_the_end_of_a_grid_or_a_range(tmp_path):
    accs = {0.001: 0.80, 0.01: 0.85, 0.1: 0.90}
    trials = [trial(f"t{i}{s}", {"lr": lr, "dropout": 0.2}, s, acc + 0.01 * s, epochs=3)
              for i, (lr, acc) in enumerate(accs.items()) for s in range(3)]
    folder = study_with(tmp_path / "grid", trials, ["lr"], {"lr": {"grid_search": [0.001, 0.01, 0.1]}})
    edge = [a for a in advice_of(folder) if "of its grid" in a.reason]
    assert len(edge) == 1 and "largest value" in edge[0].reason and "such as 1 " in edge[0].reason
    assert edge[0].command == "python -m hpo.run studies/grid.py --extend"

    sampled = [trial(f"s{i}", {"lr": lr, "dropout": d}, 0, acc, epochs=3)
               for i, (lr, d, acc) in enumerate([(0.09, 0.25, 0.95), (0.001, 0.1, 0.80), (0.01, 0.4, 0.85)])]
    folder = study_with(tmp_path / "tpe", sampled, ["lr", "dropout"], search="optuna",
                        space={"lr": {"loguniform": [1e-4, 0.1]}, "dropout": {"uniform": [0.0, 0.5]}})
    edges = [a for a in advice_of(folder) if "end of its range" in a.reason]
    assert len(edges) == 1 and "lr, 0.09, lies at the upper end" in edges[0].reason
    assert "log scale" in edges[0].reason and "above 0.1" in edges[0].reason and edges[0].command is None


def test_a_search_that_stopped_improving_or_still_improves(tmp_path):
    def search(name, best_at):
        accs = [0.80 + 0.001 * i for i in range(8)]
        accs[best_at] = 0.95
        trials = [trial(f"t_{i:05d}", {"lr": 0.001 * (i + 1)}, 0, acc, epochs=3) for i, acc in enumerate(accs)]
        return advice_of(study_with(tmp_path / name, trials, ["lr"], search="optuna",
                                    space={"lr": {"uniform": [0.0, 1.0]}}, fields={"num_samples": 8, "seeds": 1}))

    early = [a.reason for a in search("early", 1) if "search found" in a.reason]
    assert early == [early[0]] and "trial 2 of its 8" in early[0] and "none of the 6 after it" in early[0]
    (late,) = [a for a in search("late", 7) if "search found" in a.reason]
    assert "late, in trial 8 of 8" in late.reason
    assert late.command == "python -m hpo.run studies/late.py --extend --set num_samples=16"
    middle = search("middle", 4)
    assert not [a for a in middle if "search found" in a.reason]
    assert not [a for a in middle if "seeds per configuration" in a.reason]  # one seed: no spread to size by
    # one seed each: the 3 best re-run with 5 seeds, to the last epoch (--top), whatever the search's progress
    (top,) = [a for a in middle if "best configurations have" in a.reason]
    assert "1 seed each" in top.reason and "3 best that ran every epoch" in top.reason
    assert top.command == "python -m hpo.run studies/middle.py --extend --top 3 --set seeds=5"


def test_a_search_extended_by_top_is_judged_by_its_draws_and_its_two_best(tmp_path):
    """After `--extend --top`, the later seeds are not draws of the search (its best still came early), and
    more seeds for the best two of a search train those two alone (--top 2), not every configuration."""
    draws = [0.80, 0.95, 0.94, 0.81, 0.82, 0.83, 0.84, 0.85]  # the best drawn second, the runner-up third
    trials = [trial(f"t_{i:05d}", {"lr": 0.001 * (i + 1)}, 0, acc, epochs=3) for i, acc in enumerate(draws)]
    trials += [trial(f"u_{s:05d}{i}", {"lr": 0.001 * (i + 1)}, s, draws[i] + 0.01 * (-1) ** s, epochs=3)
               for i in (1, 2) for s in (1, 2)]  # round 2: seeds 1-2 of the two best, within noise of each other
    for row, epochs in trials:
        row["round"] = 2 if row["trial_id"].startswith("u") else 1
    folder = study_with(tmp_path / "topped", trials, ["lr"], search="optuna", space={"lr": {"uniform": [0.0, 1.0]}},
                        fields={"num_samples": 8, "seeds": 3})
    found = advice_of(folder)
    (progress,) = [a.reason for a in found if "search found" in a.reason]
    assert "found its best in trial 2 of its 8" in progress, progress
    (seeds,) = [a for a in found if "seeds per configuration" in a.reason]
    assert "the two best that ran every epoch" in seeds.reason
    assert seeds.command.startswith("python -m hpo.run studies/topped.py --extend --top 2 --set seeds="), seeds

    record = folder / "report" / "study.json"
    rounds = [{"round": 1, "command": "python -m hpo.run studies/topped.py", "set": []},
              {"round": 2, "command": "python -m hpo.run studies/topped.py --extend --top 2 --set seeds=3",
               "set": ["seeds=3"]}]
    record.write_text(json.dumps({**json.loads(record.read_text()), "rounds": rounds}))
    analyse(folder, log=lambda _: None)
    overview = (folder / "report" / "report.md").read_text()
    assert "round 1: 8 trials; round 2: 4 trials (--top 2; --set seeds=3)" in overview, overview[:2000]


def test_trials_cut_by_a_time_budget_are_said_so(tmp_path):
    """A round its time_budget_min ended: its interrupted trials are 'cut by the time budget', not a study
    to --resume."""
    trials = [trial(f"t{i}", {"lr": lr}, s, acc + 0.01 * s, epochs=3) for i, (lr, acc) in
              enumerate([(0.1, 0.9), (0.01, 0.8)]) for s in range(3)]
    trials.append(trial("cut", {"lr": 0.001}, 0, 0.5, epochs=1, outcome="interrupted"))
    folder = study_with(tmp_path / "budget", trials, ["lr"], {"lr": {"grid_search": [0.1, 0.01, 0.001]}},
                        fields={"time_budget_min": 60})  # started 09:00, ended 10:00: the budget ran out
    analyse(folder, log=lambda _: None)
    text = (folder / "report" / "report.md").read_text()
    assert "1 trials were cut by their round's time budget" in text and "--resume" not in text, text[:3000]
    meta = json.loads((folder / "report" / "study.json").read_text())
    (folder / "report" / "study.json").write_text(json.dumps({**meta, "budget_ran_out": False}))
    analyse(folder, log=lambda _: None)
    text = (folder / "report" / "report.md").read_text()
    assert "cut by their round's time budget" not in text and "1 trials are running, pending or interrupted" in text


def test_asha_stopped_a_trial_as_good_as_the_best_at_its_rung(tmp_path):
    best = trial("a", {"lr": 0.1}, 0, 0.95, epochs=9)
    weak = trial("b", {"lr": 0.2}, 0, 0.50, epochs=3, outcome="stopped_early")
    strong = trial("c", {"lr": 0.3}, 0, 0.95, epochs=3, outcome="stopped_early")  # 0.95 at epoch 3
    folder = study_with(tmp_path / "asha", [best, weak, strong], ["lr"], search="optuna", scheduler="asha",
                        space={"lr": {"uniform": [0.0, 1.0]}})
    ties = [a.reason for a in advice_of(folder) if "ASHA stopped" in a.reason]
    assert len(ties) == 1 and ties[0].startswith("1 trial(s)") and "c (lr=0.3, epoch 3)" in ties[0]
    assert "grace_period=6" in ties[0]


def test_no_advice_for_a_smoke_run_and_a_clear_answer(tmp_path):
    accs = {0.1: [0.90, 0.91, 0.92], 0.01: [0.50, 0.51, 0.52], 0.001: [0.60, 0.61, 0.62]}
    trials = [trial(f"t{i}{s}", {"lr": lr}, s, acc, epochs=3) for i, (lr, a) in enumerate(accs.items())
              for s, acc in enumerate(a)]
    folder = study_with(tmp_path / "clear", trials, ["lr"], {"lr": {"grid_search": [0.1, 0.01, 0.001]}})
    assert advice_of(folder) == [a for a in advice_of(folder) if "of its grid" in a.reason]  # the edge only
    record = folder / "report" / "study.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "smoke": True}))
    assert advice_of(folder) == []


def test_an_unstable_configuration_does_not_inflate_the_runner_up_s_seeds(tmp_path):
    """The seeds that would separate the best from the runner-up come from those two's spread: a third
    configuration that diverges on some seeds (std 25 points) leaves the advice as it was (17 seeds)."""
    accs = {0.1: [0.90, 0.92, 0.91], 0.05: [0.89, 0.91, 0.90], 0.5: [0.10, 0.60, 0.35]}
    trials = [trial(f"t{i}{s}", {"lr": lr}, s, acc, epochs=3) for i, (lr, a) in enumerate(accs.items())
              for s, acc in enumerate(a)]
    folder = study_with(tmp_path / "wild", trials, ["lr"], {"lr": {"grid_search": [0.5, 0.1, 0.05]}})
    (seeds,) = [a for a in advice_of(folder) if "seeds per configuration" in a.reason]
    assert seeds.command.endswith("--extend --set seeds=17")
