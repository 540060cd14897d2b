"""The comparisons of issue 15 on synthetic data: all pairs by Games-Howell with a compact letter display,
effect sizes against the best, what the seeds can detect, Pareto fronts, and the report's new tables.

Expected numbers come from scipy called here, from formulas written out here, or from textbooks; never from
the analysis' own functions.
"""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from test_analysis import GRID, grid_trials, trial, write_study

from analysis import analyse, stats
from analysis.load import load
from analysis.tables import config_table, importance_table, pairwise_table, pareto_table, power_summary, top_trials

# Five configurations, 3 seeds each: a and b close, c between b and d, d and e far below.
FIVE = {"a": [0.912, 0.915, 0.910], "b": [0.909, 0.914, 0.906], "c": [0.900, 0.908, 0.897],
        "d": [0.880, 0.887, 0.884], "e": [0.850, 0.871, 0.842]}


def five_study(tmp_path, seeds=(0, 1, 2)):
    trials = [trial(f"{name}{s}", {"arch": name}, s, accs[s], 3) for name, accs in FIVE.items() for s in seeds]
    return write_study(tmp_path / "five", trials, varied=["arch"])


def shares_letter(x: str, y: str) -> bool:
    return bool(set(x) & set(y))


# ---------------------------------------------------------------- all pairs

def test_games_howell_p_value_of_one_pair_by_hand():
    """Games-Howell written out (Games & Howell 1976): Welch's t and degrees of freedom for the pair, the
    studentized range of k groups at q = |t| * sqrt(2). Not the scipy call the analysis makes."""
    groups = list(FIVE.values())
    a, c = np.array(FIVE["a"]), np.array(FIVE["c"])
    va, vc = a.var(ddof=1) / len(a), c.var(ddof=1) / len(c)
    t = (a.mean() - c.mean()) / math.sqrt(va + vc)
    df = (va + vc) ** 2 / (va ** 2 / (len(a) - 1) + vc ** 2 / (len(c) - 1))
    expected = sps.studentized_range.sf(abs(t) * math.sqrt(2), len(groups), df)
    p = stats.games_howell(groups)
    assert p[0, 2] == pytest.approx(expected, rel=1e-6) and p[2, 0] == pytest.approx(expected, rel=1e-6)
    assert 0.01 < expected < 0.5  # a pair the test has to weigh (p = 0.22), not a foregone conclusion


def test_games_howell_p_values_and_letters_match_scipy(tmp_path):
    data = load(five_study(tmp_path))
    table = config_table(data)
    order = table["arch"].tolist()
    assert order == sorted(FIVE, key=lambda k: -statistics.mean(FIVE[k]))
    p = sps.tukey_hsd(*(FIVE[k] for k in order), equal_var=False).pvalue
    # Against the best: p, verdict and "tied" follow the same all-pairs test.
    assert table["p_value"].iloc[1:].tolist() == pytest.approx(p[1:, 0].tolist(), rel=1e-9)
    assert table["verdict"].tolist() == ["best"] + ["tied" if v >= 0.05 else "worse" for v in p[1:, 0]]
    # The full matrix.
    pairwise = pairwise_table(data)
    assert pairwise["configuration"].tolist() == order == list(pairwise.columns[1:])
    matrix = pairwise[order].to_numpy(float)
    off = ~np.eye(len(order), dtype=bool)
    assert matrix[off] == pytest.approx(p[off], rel=1e-9) and np.isnan(matrix.diagonal()).all()
    # Letters: two configurations share one exactly when scipy finds no difference.
    letters = table["letters"].tolist()
    for i, j in itertools.combinations(range(len(order)), 2):
        assert shares_letter(letters[i], letters[j]) == (p[i, j] >= 0.05), (order[i], order[j], p[i, j])
    assert letters[0].startswith("a")
    # The data make the display non-trivial: some pairs differ, some do not.
    assert (p[off] < 0.05).any() and (p[off] >= 0.05).any()


def test_letters_of_hand_made_p_values():
    nan = math.nan
    # 0~1, 1~2, 0 differs from 2: the middle one shares a letter with both.
    p = np.array([[nan, 0.3, 0.01], [0.3, nan, 0.2], [0.01, 0.2, nan]])
    assert stats.letters(p) == ["a", "ab", "b"]
    # A chain: only neighbours are alike (pairs 0-2, 0-3, 1-3 differ).
    p = np.full((4, 4), 0.5)
    for i, j in [(0, 2), (0, 3), (1, 3)]:
        p[i, j] = p[j, i] = 0.001
    assert stats.letters(p) == ["a", "ab", "bc", "c"]
    assert stats.letters(np.full((3, 3), 0.9)) == ["a", "a", "a"]
    assert stats.letters(np.full((3, 3), 0.001)) == ["a", "b", "c"]


def test_letters_hold_for_random_p_values():
    rng = np.random.default_rng(0)
    for _ in range(300):
        k = int(rng.integers(2, 8))
        p = rng.choice([0.001, 0.01, 0.2, 0.9], size=(k, k))
        p = np.triu(p, 1) + np.triu(p, 1).T
        letters = stats.letters(p)
        for i, j in itertools.combinations(range(k), 2):
            assert shares_letter(letters[i], letters[j]) == (p[i, j] >= 0.05)


def test_games_howell_with_identical_seeds():
    """Two configurations whose seeds all agree (deterministic runs): the means decide, as they should."""
    p = stats.games_howell([[0.5, 0.5], [0.5, 0.5], [0.4, 0.4], [0.45, 0.47, 0.46]])
    assert p[0, 1] == 1.0 and p[0, 2] == 0.0 and p[1, 2] == 0.0
    assert 0 < p[0, 3] < 1 and not np.isnan(p[2, 3])


def test_single_seed_configurations_are_left_out_of_the_family(tmp_path):
    trials = [trial(f"{name}{s}", {"arch": name}, s, accs[s], 3) for name, accs in FIVE.items() for s in (0, 1, 2)]
    trials.append(trial("f0", {"arch": "f"}, 0, 0.5, 3))  # one seed only
    data = load(write_study(tmp_path / "s", trials, varied=["arch"]))
    table = config_table(data).set_index("arch")
    assert table.loc["f", "verdict"] == "n=1, untested" and pd.isna(table.loc["f", "letters"])
    order = [k for k in table.index if k != "f"]
    p = sps.tukey_hsd(*(FIVE[k] for k in order), equal_var=False).pvalue  # five groups, not six
    assert table.loc[order[1:], "p_value"].tolist() == pytest.approx(p[1:, 0].tolist(), rel=1e-9)
    assert "f" not in pairwise_table(data)["configuration"].tolist()


# ---------------------------------------------------------------- effect sizes

def test_difference_interval_and_hedges_g_by_hand(tmp_path):
    table = config_table(load(write_study(tmp_path / "s", grid_trials(), varied=["downsample", "feature_size"])))
    best = GRID[("conv", 14)]
    for _, row in table.iloc[1:].iterrows():
        a = GRID[(row["downsample"], row["feature_size"])]
        na, nb = len(a), len(best)
        va, vb = statistics.variance(a), statistics.variance(best)
        diff = statistics.mean(a) - statistics.mean(best)
        # Welch: se = sqrt(va/na + vb/nb), df = se^4 / ((va/na)^2/(na-1) + (vb/nb)^2/(nb-1)).
        se = math.sqrt(va / na + vb / nb)
        df = se**4 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
        half = sps.t.ppf(0.975, df) * se
        # Hedges' g: d over the pooled sd, times J = 1 - 3 / (4 (na + nb) - 9).
        pooled = math.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
        g = diff / pooled * (1 - 3 / (4 * (na + nb) - 9))
        assert row["best_val_acc diff"] == pytest.approx(diff, abs=1e-12)
        assert row["best_val_acc diff ci_low"] == pytest.approx(diff - half, rel=1e-9)
        assert row["best_val_acc diff ci_high"] == pytest.approx(diff + half, rel=1e-9)
        assert row["hedges_g"] == pytest.approx(g, rel=1e-9)
        # The same interval from scipy's own Welch test.
        ci = sps.ttest_ind(a, best, equal_var=False).confidence_interval(0.95)
        assert (row["best_val_acc diff ci_low"], row["best_val_acc diff ci_high"]) == pytest.approx(ci, rel=1e-9)
    # conv/7 on paper: diff -0.002333; variances 13.0e-6 and 6.333e-6, pooled sd sqrt(9.667e-6) = 0.003109;
    # J = 1 - 3/15 = 0.8; g = 0.8 * -0.002333 / 0.003109 = -0.600.
    assert table.loc[1, "hedges_g"] == pytest.approx(-0.600, abs=0.001)
    assert math.isnan(table.loc[0, "best_val_acc diff"]) and math.isnan(table.loc[0, "hedges_g"])


# ---------------------------------------------------------------- what the seeds can detect

def test_seeds_needed_matches_cohen():
    """Cohen (1988), Table 2.4.1: two-sided alpha 0.05, power 0.80: n per group 26 for d = 0.8, 64 for
    d = 0.5, 393 for d = 0.2 (the t approximation gives 394 there)."""
    assert stats.seeds_needed(0.8, 1.0) == 26
    assert stats.seeds_needed(0.5, 1.0) == 64
    assert stats.seeds_needed(0.2, 1.0) in (393, 394)
    assert stats.seeds_needed(0.5 * 0.004, 0.004) == 64  # in units of the metric, not of d
    assert stats.seeds_needed(0.0, 0.004) is None  # no number of seeds separates equal means
    assert stats.detectable_difference(1.0, 64) == pytest.approx(0.5, abs=0.005)


def test_detectable_difference_has_80_percent_power():
    """The exact power of Student's two-sample t-test (noncentral t) at the returned difference."""
    for n in (3, 5, 10, 30):
        d = stats.detectable_difference(1.0, n)
        df, shift, crit = 2 * n - 2, d * math.sqrt(n / 2), sps.t.ppf(0.975, 2 * n - 2)
        power = sps.nct.sf(crit, df, shift) + sps.nct.cdf(-crit, df, shift)
        assert power == pytest.approx(0.80, abs=0.01), n
    assert math.isnan(stats.detectable_difference(1.0, 1))


def test_power_summary_of_a_study(tmp_path):
    data = load(write_study(tmp_path / "s", grid_trials(), varied=["downsample", "feature_size"]))
    power = power_summary(data, config_table(data))
    # Equal seed counts: the pooled variance is the mean of the four variances.
    std = math.sqrt(statistics.mean(statistics.variance(v) for v in GRID.values()))
    assert power["std"] == pytest.approx(std, rel=1e-9) and power["seeds"] == 3
    crit = sps.t.ppf(0.975, 4) + sps.t.ppf(0.80, 4)  # 2n - 2 = 4 degrees of freedom
    assert power["detectable"] == pytest.approx(crit * std * math.sqrt(2 / 3), rel=1e-9)
    diff = statistics.mean(GRID[("conv", 7)]) - statistics.mean(GRID[("conv", 14)])
    assert power["runner_up_diff"] == pytest.approx(diff)
    n = power["runner_up_seeds"]
    # The runner-up's seeds come from the two configurations' own spread, not the study's.
    pair = math.sqrt(statistics.mean(statistics.variance(GRID[k]) for k in (("conv", 14), ("conv", 7))))
    assert power["runner_up_std"] == pytest.approx(pair, rel=1e-9) and pair != pytest.approx(std)

    def exact_power(n):
        df, shift, crit = 2 * n - 2, abs(diff) / pair * math.sqrt(n / 2), sps.t.ppf(0.975, 2 * n - 2)
        return sps.nct.sf(crit, df, shift) + sps.nct.cdf(-crit, df, shift)

    assert exact_power(n) >= 0.795 and exact_power(n - 1) < 0.805


def test_report_says_what_the_seeds_detect_and_warns_about_two(tmp_path):
    md = (analyse(five_study(tmp_path, seeds=(0, 1)), log=lambda _: None) / "report.md").read_text()
    assert "Note: 5 configuration(s) have only 2 seeds" in md
    assert "Seeds: the seed-to-seed std of best_val_acc" in md and "found 80% of the time" in md
    assert "The runner-up (arch=b)" in md and "seeds per configuration would separate them" in md


# ---------------------------------------------------------------- accuracy against cost

def test_non_dominated_on_a_hand_made_table():
    quality = [0.90, 0.95, 0.93, 0.95, math.nan, 0.80, 0.93]
    cost = [10, 50, 20, 60, 5, 5, 20]
    # 3 has 1's accuracy at a higher cost; 4 has no accuracy; 2 and 6 tie exactly, so neither dominates.
    assert stats.non_dominated(quality, cost, "max") == [True, True, True, False, False, True, True]
    loss = [0.30, 0.20, 0.25, 0.20]
    assert stats.non_dominated(loss, [1, 3, 2, 4], "min") == [True, True, True, False]
    assert stats.non_dominated(loss, [1, 3, 2, 4], "max") == [True, False, False, False]


def test_pareto_table_of_a_study(tmp_path):
    # arch: (accuracy, params, seconds per epoch): big is best and slow, tiny is cheap, wasteful is dominated.
    archs = {"big": (0.95, 90_000, 4.0), "mid": (0.93, 40_000, 2.0), "tiny": (0.85, 5_000, 1.0),
             "wasteful": (0.90, 95_000, 5.0), "slow_small": (0.94, 30_000, 6.0)}
    trials = []
    for name, (acc, params, per_epoch) in archs.items():
        for seed in (0, 1):
            row, epochs = trial(f"{name}{seed}", {"arch": name}, seed, acc + 0.001 * seed, 4)
            row.update(params=params, time_s=per_epoch * 4 + seed * 0.4)  # seed 1: 0.1 s per epoch slower
            trials.append((row, epochs))
    table = pareto_table(load(write_study(tmp_path / "s", trials, varied=["arch"]))).set_index("arch")
    assert table.loc["mid", "epoch_time mean"] == pytest.approx(2.05)
    assert table.loc["big", "params mean"] == 90_000
    assert sorted(table.index[table["front: params"]]) == ["big", "slow_small", "tiny"]
    assert sorted(table.index[table["front: time"]]) == ["big", "mid", "tiny"]


# ---------------------------------------------------------------- the report's new tables

@pytest.fixture(scope="module")
def five_report(tmp_path_factory):
    return analyse(five_study(tmp_path_factory.mktemp("five")), log=lambda _: None)


def test_new_tables_in_xlsx_and_html(five_report):
    from openpyxl import load_workbook

    book = load_workbook(five_report / "tables.xlsx")
    assert {"configurations", "pairwise p-values", "pareto front"} <= set(book.sheetnames)
    configs = pd.read_excel(five_report / "tables.xlsx", sheet_name="configurations")
    for column in ("letters", "p_value", "verdict", "best_val_acc diff", "best_val_acc diff ci_low",
                   "best_val_acc diff ci_high", "hedges_g"):
        assert column in configs, column
    order = configs["arch"].tolist()
    p = sps.tukey_hsd(*(FIVE[k] for k in order), equal_var=False).pvalue
    pairwise = pd.read_excel(five_report / "tables.xlsx", sheet_name="pairwise p-values")
    assert pairwise.loc[0, order[1]] == pytest.approx(p[0, 1], rel=1e-9)
    pareto = pd.read_excel(five_report / "tables.xlsx", sheet_name="pareto front")
    assert {"front: params", "front: time", "epoch_time mean"} <= set(pareto.columns)

    page = (five_report / "report.html").read_text()
    for text in ("Pairwise p-values", "best_val_acc against cost", "Hedges&#x27; g", "difference from the best",
                 "letters", "Games-Howell", "family-wise error rate at 5%", "Seeds: the seed-to-seed std"):
        assert text in page, text
    assert {"factor_effects.png", "pareto.png"} <= {f.name for f in (five_report / "figures").glob("*.png")}


# ---------------------------------------------------------------- search studies

def asha_trials():
    """lr 0.1 learns fast and is stopped early with a high early value; the completed ones reach the last rung."""
    rows = [("fast", 0.1, 0.97, 2, "stopped_early"), ("slowest", 1e-4, 0.90, 8, "completed"),
            ("steady", 1e-2, 0.95, 8, "completed"), ("mid", 1e-3, 0.96, 4, "stopped_early")]
    return [trial(name, {"lr": lr, "optimizer": "adam"}, 0, acc, epochs, outcome)
            for name, lr, acc, epochs, outcome in rows]


def test_asha_top_trials_rank_by_rung_then_metric(tmp_path):
    folder = write_study(tmp_path / "asha", asha_trials(), varied=["lr"], search="optuna", scheduler="asha")
    assert top_trials(load(folder))["trial_id"].tolist() == ["steady", "slowest", "mid", "fast"]
    md = (analyse(folder, log=lambda _: None) / "report.md").read_text()
    assert "Optuna is told that a trial ASHA stopped was PRUNED" in md and "below every completed trial" in md
    assert "the highest rung first" in md
    # Without ASHA, the metric alone ranks.
    fifo = write_study(tmp_path / "fifo", asha_trials(), varied=["lr"], search="optuna", scheduler="fifo")
    assert top_trials(load(fifo))["trial_id"].tolist() == ["fast", "mid", "steady", "slowest"]
    assert "was PRUNED" not in (analyse(fifo, log=lambda _: None) / "report.md").read_text()


def test_importance_of_a_key_only_some_trials_set(tmp_path):
    """momentum exists only with sgd (empty otherwise); among sgd trials it decides the accuracy."""
    trials = []
    for i in range(24):
        optimizer = ["sgd", "adam"][i % 2]
        lr = [1e-3, 1e-2, 1e-1][(i // 2) % 3]
        config = {"optimizer": optimizer, "lr": lr}
        acc = 0.90 + 0.01 * ((i // 2) % 3)
        if optimizer == "sgd":
            config["momentum"] = [0.0, 0.5, 0.9][(i // 6) % 3]
            acc += 0.05 * config["momentum"]
        trials.append(trial(f"t{i:02d}", config, 0, acc, 3))
    data = load(write_study(tmp_path / "s", trials, varied=["optimizer", "lr", "momentum"], search="optuna"))
    table, evaluator = importance_table(data)
    rows = table.set_index("parameter")
    assert rows.loc["lr", "trials"] == rows.loc["optimizer", "trials"] == 24  # every trial counts, not 12
    assert rows.loc[["lr", "optimizer"], "importance"].sum() == pytest.approx(1)
    assert rows.loc["momentum", "trials"] == 12 and "12 trials that set it" in rows.loc["momentum", "evaluated on"]
    assert rows.loc["momentum", "importance"] > 0.5  # among sgd trials it matters most
