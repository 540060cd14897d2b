"""The tables: numbers only (formatting is render.py's job), one function each.

Statistics are over the trials of a group, i.e. over seeds for a configuration.
Only finished trials (completed, stopped early, diverged) are counted: a running
trial's numbers are not final yet.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from analysis import fmt, stats
from analysis.load import OUTCOMES, StudyData

# Summarised per configuration after the study's own metric, when present.
SUMMARY_METRICS = ("best_val_acc", "test_acc_at_best", "final_val_acc", "final_test_acc",
                   "best_val_loss", "test_loss_at_best", "final_val_loss", "final_test_loss")
# Reported as a plain mean per configuration.
EXTRAS = ("epochs_run", "time_s", "params", "final_samples_per_s")
TOP_K = 10
STAT_FIELDS = ("mean", "std", "ci_low", "ci_high")


class Skipped(Exception):
    """A table or figure this study cannot have; the message says why."""


def summary_metrics(data: StudyData) -> list[str]:
    metrics = [data.target] + [m for m in SUMMARY_METRICS if m != data.target]
    return [m for m in metrics if m in data.trials]


def summarise(trials: pd.DataFrame, by: list[str], metrics: list[str], target: str, mode: str,
              extras=()) -> pd.DataFrame:
    """One row per group of `by` columns: n, mean/std/CI of `metrics`, means of `extras`, and the
    comparison of `target` with the best group (p_value, verdict, letters, difference, hedges_g); sorted
    best first."""
    return _summarise(trials, by, metrics, target, mode, extras)[0]


def _summarise(trials, by, metrics, target, mode, extras=()) -> tuple[pd.DataFrame, np.ndarray]:
    """summarise's table and the Games-Howell p-values between its rows (NaN for a row with fewer than 2 seeds)."""
    groups = list(trials.groupby(by, dropna=False, sort=False)) if by else [((), trials)]
    rows, samples = [], []
    for key, g in groups:
        row = {c.removeprefix("config/"): v for c, v in zip(by, key)}
        row["n"] = len(g)
        for m in metrics:
            s = stats.summary(g[m])
            row.update({f"{m} {f}": s[f] for f in STAT_FIELDS})
        row.update({f"{x} mean": g[x].mean() for x in extras})
        rows.append(row)
        samples.append(g[target].to_numpy(dtype=float))
    table = pd.DataFrame(rows)
    if table.empty:
        return table, np.empty((0, 0))
    means = table[f"{target} mean"].to_numpy(dtype=float)
    order = sorted(range(len(table)), key=lambda i: (math.isnan(means[i]), -means[i] if mode == "max" else means[i]))
    table, samples = table.iloc[order].reset_index(drop=True), [samples[i] for i in order]
    # One family: every group with 2+ seeds against every other, so "tied with the best" and the letters
    # rest on the same error-controlled test.
    tested = [i for i, s in enumerate(samples) if len(stats.finite(s)) >= 2 and not np.isinf(s).any()]
    p = np.full((len(table), len(table)), math.nan)
    p[np.ix_(tested, tested)] = stats.games_howell([samples[i] for i in tested])
    table["p_value"] = p[:, 0]
    table["verdict"] = [stats.verdict(v, i == 0) for i, v in enumerate(table["p_value"])]
    found = dict(zip(tested, stats.letters(p[np.ix_(tested, tested)])))
    table["letters"] = [found.get(i) for i in range(len(table))]
    effects = [stats.versus(s, samples[0]) if i else {} for i, s in enumerate(samples)]  # the best is the reference
    for field, column in (("diff", "diff"), ("ci_low", "diff ci_low"), ("ci_high", "diff ci_high")):
        table[f"{target} {column}"] = [e.get(field, math.nan) for e in effects]
    table["hedges_g"] = [e.get("g", math.nan) for e in effects]
    return table, p


def config_table(data: StudyData) -> pd.DataFrame:
    """Per configuration (seeds grouped), best first."""
    return config_tables(data)[0]


def pairwise_table(data: StudyData) -> pd.DataFrame:
    """The Games-Howell p-values between configurations (config_tables)."""
    return config_tables(data)[1]


def config_tables(data: StudyData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """config_table, and the Games-Howell p-value of every two of its configurations with 2+ seeds, in its
    order. One call for both: the p-values take a while (about 1 s for 12 configurations, 60 s for 60)."""
    extras = [x for x in EXTRAS if x in data.trials]
    table, p = _summarise(data.finished, data.key_columns, summary_metrics(data), data.target, data.mode, extras)
    tested = [i for i in range(len(table)) if not np.isnan(p[i]).all()]
    names = unique_names(config_names(data, table.iloc[tested]))
    pairwise = pd.DataFrame(p[np.ix_(tested, tested)], columns=names).assign(configuration=names)
    return table, pairwise[["configuration", *names]]


def config_names(data: StudyData, table: pd.DataFrame) -> list[str]:
    """'conv, 14' for each row of a per-configuration table (the varied keys' values, in their order)."""
    return [", ".join(fmt.value(r[k]) for k in data.varied_keys) or data.name for _, r in table.iterrows()]


def unique_names(names: list[str]) -> list[str]:
    """Column names must differ (0.1 and "0.1" read alike): number the repeats."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def power_summary(data: StudyData, table: pd.DataFrame) -> dict:
    """What the study's seeds can detect: the pooled seed-to-seed std of the metric, the seeds per configuration
    (study.json's `seeds`, else the most any configuration has), the smallest difference found with 80% power,
    and for the runner-up its distance from the best and the seeds per configuration that would separate them
    (with the std pooled over those two alone)."""
    std = stats.pooled_std(table["n"], table[f"{data.target} std"]) if not table.empty else math.nan
    seeds = data.study.get("seeds")
    seeds = int(seeds) if isinstance(seeds, (int, float)) and seeds >= 1 else int(table["n"].max() or 0)
    out = {"std": std, "seeds": seeds, "detectable": stats.detectable_difference(std, seeds),
           "configurations": int((table["n"] >= 2).sum()) if not table.empty else 0,
           "runner_up_diff": math.nan, "runner_up_seeds": None}
    if len(table) >= 2:
        diff = float(table.loc[1, f"{data.target} mean"] - table.loc[0, f"{data.target} mean"])
        # The two's own spread: one unstable configuration elsewhere (a momentum that diverges on some
        # seeds) would otherwise inflate the std and the seeds this pair needs a hundredfold.
        pair = stats.pooled_std(table["n"][:2], table[f"{data.target} std"][:2])
        pair = std if math.isnan(pair) else pair
        out.update(runner_up_diff=diff, runner_up_std=pair, runner_up_seeds=stats.seeds_needed(diff, pair))
    return out


def factor_tables(data: StudyData) -> dict[str, pd.DataFrame]:
    """Per varied key: the metric at each level, over every other key and seed (marginal effect)."""
    metrics = [m for m in (data.target, "test_acc_at_best") if m in data.trials]
    tables = {}
    for key, col in zip(data.varied_keys, data.key_columns):
        table = summarise(data.finished, [col], list(dict.fromkeys(metrics)), data.target, data.mode)
        if not table.empty:
            table = _sort_levels(table, key)
        tables[key] = table
    return tables


def _sort_levels(table: pd.DataFrame, key: str) -> pd.DataFrame:
    """Levels in their natural order (50, 100, 200), like a hand-made comparison table."""
    try:
        return table.sort_values(key, na_position="last").reset_index(drop=True)
    except TypeError:  # mixed types in one key
        return table.sort_values(key, key=lambda s: s.map(str)).reset_index(drop=True)


def outcome_table(data: StudyData) -> pd.DataFrame:
    """One row: how many trials had each outcome, and the total."""
    counts = data.trials["outcome"].value_counts()
    outcomes = list(OUTCOMES) + [o for o in counts.index if o not in OUTCOMES]
    return pd.DataFrame([{**{o: int(counts.get(o, 0)) for o in outcomes}, "total": len(data.trials)}])


def problem_table(data: StudyData) -> pd.DataFrame:
    """Failed and diverged trials with their error message."""
    t = data.trials[data.trials["outcome"].isin(["failed", "diverged"])]
    cols = ["trial_id", "outcome", *data.key_columns, "seed", "epochs_run", "error"]
    return _rename_keys(t[[c for c in cols if c in t]]).reset_index(drop=True)


def top_trials(data: StudyData, k: int = TOP_K) -> pd.DataFrame:
    """The best k trials; under ASHA those that reached the highest rung first: a trial stopped at an early
    rung has a metric from fewer epochs, not comparable with a trial that trained to the end."""
    t = data.finished
    if data.stops_early and "epochs_run" in t:
        t = t.sort_values(["epochs_run", data.target], ascending=[False, data.mode == "min"]).head(k)
    else:
        t = t.sort_values(data.target, ascending=data.mode == "min").head(k)
    cols = ["trial_id", "outcome", *data.key_columns, "seed", "epochs_run", data.target, "test_acc_at_best", "time_s"]
    return _rename_keys(t[[c for c in dict.fromkeys(cols) if c in t]]).reset_index(drop=True)


def uneven_epochs(data: StudyData) -> pd.DataFrame:
    """Configurations whose seeds ran different numbers of epochs though none diverged: ASHA stopped some of
    them and not others (seeds as lone trials, `seed_groups=False`, or an --extend round of an earlier
    version judged by a new ASHA). One row each: its varied keys, and the fewest and most epochs."""
    if not data.key_columns or "epochs_run" not in data.trials:
        return pd.DataFrame()
    t = data.finished[data.finished["outcome"].isin(["completed", "stopped_early"])]
    epochs = t.groupby(data.key_columns, dropna=False)["epochs_run"].agg(["min", "max"]).reset_index()
    return _rename_keys(epochs[epochs["min"] < epochs["max"]]).reset_index(drop=True)


def rung_table(data: StudyData) -> pd.DataFrame:
    """Trials ASHA stopped, by the epoch they stopped at (its rungs)."""
    t = data.trials[data.trials["outcome"] == "stopped_early"]
    g = t.groupby("epochs_run")[data.target]
    best = g.max() if data.mode == "max" else g.min()
    table = pd.DataFrame({"trials stopped": g.size(), f"{data.target} mean": g.mean(), f"{data.target} best": best})
    return table.rename_axis("stopped after epoch").reset_index()


def pareto_table(data: StudyData) -> pd.DataFrame:
    """Per configuration: the mean of the study's metric, the parameter count and the training time per epoch
    (each trial's time_s / epochs_run, averaged over seeds), and whether it is on the Pareto front against each
    cost (no configuration is as good or better and as cheap or cheaper); best first."""
    t = data.finished
    per_epoch = t["time_s"] / t["epochs_run"].where(t["epochs_run"] > 0) if {"time_s", "epochs_run"} <= set(t) \
        else pd.Series(math.nan, index=t.index)
    t = t.assign(params=t["params"] if "params" in t else math.nan, epoch_time=per_epoch)
    if t.empty:
        return pd.DataFrame()
    groups = t.groupby(data.key_columns, dropna=False, sort=False) if data.key_columns else [((), t)]
    table = pd.DataFrame([{**dict(zip(data.varied_keys, key)), "n": len(g),
                           f"{data.target} mean": g[data.target].mean(), "params mean": g["params"].mean(),
                           "epoch_time mean": g["epoch_time"].mean()} for key, g in groups])
    table = table.sort_values(f"{data.target} mean", ascending=data.mode == "min", ignore_index=True)
    quality = table[f"{data.target} mean"]
    table["front: params"] = stats.non_dominated(quality, table["params mean"], data.mode)
    table["front: time"] = stats.non_dominated(quality, table["epoch_time mean"], data.mode)
    return table


# ---------------------------------------------------------------- when the trials ran

def ray_trial_ids(trials: pd.DataFrame) -> pd.Series:
    """The Ray trial of each trials.csv row: its own id, or for a seed of a seed group the group's."""
    ids = trials["trial_id"].astype(str) if "trial_id" in trials else trials.index.to_series().astype(str)
    if "group" in trials:
        grouped = trials["group"].notna() & (trials["group"].astype(str) != "")
        ids = trials["group"].astype(str).where(grouped, ids)
    return ids


def latest_round_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """The rows of the latest --extend round (each round is a run of its own, with its own clock and slots)."""
    return trials[trials["round"] == trials["round"].max()] if "round" in trials else trials


def trial_times(data: StudyData) -> pd.DataFrame:
    """The Ray trials of the latest round that started, first started first: trial_id, outcome, started_s,
    ended_s (seconds since the run began) and `open` (no end recorded: running, or stopped with the run; it
    ends at the latest time in the table). A seed group is one Ray trial in one slot: one row (its `group` id,
    from its first seed's start to its last seed's end, the outcome of the seed that ended last)."""
    if data.meta.get("compared"):
        raise Skipped("No trial timeline in a comparison: each study ran on its own clock (each study's own"
                      " report has its timeline).")
    t = latest_round_rows(data.trials)
    started = pd.to_numeric(t["started_s"], errors="coerce") if "started_s" in t else None
    if started is None or "ended_s" not in t or started.isna().all():
        raise Skipped("No trial timeline: trials.csv has no started_s/ended_s times (a report written by an older"
                      " hpo.run, or no trial has started yet).")
    ended = pd.to_numeric(t["ended_s"], errors="coerce")
    latest = float(np.nanmax([started.max(), ended.max()]))
    times = pd.DataFrame({"trial_id": ray_trial_ids(t), "outcome": t["outcome"], "started_s": started,
                          "ended_s": np.maximum(ended.fillna(latest), started), "open": ended.isna()})
    times = times[started.notna()].sort_values("ended_s", kind="stable")
    times = times.groupby("trial_id", sort=False).agg(outcome=("outcome", "last"), started_s=("started_s", "min"),
                                                      ended_s=("ended_s", "max"), open=("open", "any"))
    return times.reset_index().sort_values(["started_s", "ended_s"], kind="stable", ignore_index=True)


def in_flight(times: pd.DataFrame) -> pd.DataFrame:
    """How many trials ran at once (trial_times): `in_flight` from each `time_s` on, a step from 0 (the run's
    start) to the latest time, where it drops to 0."""
    changes = pd.concat([pd.Series(1, index=times["started_s"]), pd.Series(-1, index=times["ended_s"])])
    count = changes.groupby(level=0).sum().sort_index().cumsum()
    steps = pd.DataFrame({"time_s": count.index.to_numpy(float), "in_flight": count.to_numpy(int)})
    if steps.empty or steps["time_s"].iloc[0] > 0:
        steps = pd.concat([pd.DataFrame({"time_s": [0.0], "in_flight": [0]}), steps], ignore_index=True)
    return steps


def occupancy(data: StudyData, times: pd.DataFrame) -> dict:
    """The trials in flight on average from the run's start to the latest time in the table (trial-seconds over
    that span), the most at once, the slots (study.json) and their utilisation: study.json's `slot_utilisation`
    (trial-seconds over slots x wall time, measured by hpo.run), else the mean over the slots, else None."""
    span = float(times["ended_s"].max()) if len(times) else math.nan
    busy = float((times["ended_s"] - times["started_s"]).sum())
    mean = busy / span if span > 0 else math.nan
    slots = data.meta.get("slots")
    slots = int(slots) if _is_number(slots) and slots >= 1 else None
    utilisation = data.meta.get("slot_utilisation")
    if not _is_number(utilisation):
        utilisation = mean / slots if slots and not math.isnan(mean) else None
    return {"mean": mean, "peak": int(in_flight(times)["in_flight"].max()), "slots": slots,
            "utilisation": utilisation, "span_s": span, "trials": len(times),
            "median_s": float((times["ended_s"] - times["started_s"]).median())}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _rename_keys(t: pd.DataFrame) -> pd.DataFrame:
    return t.rename(columns=lambda c: c.removeprefix("config/"))


# ---------------------------------------------------------------- parameter importance

def importance_table(data: StudyData) -> tuple[pd.DataFrame, str]:
    """Importance of each varied key for the metric, from an in-memory Optuna study of the finished trials;
    returns the table and the evaluator's description. A key only some trials set (momentum only with sgd:
    empty in the others) is evaluated apart, on the trials that set it; its row says on how many."""
    t = data.finished
    if len(t) < 2 or not data.varied_keys:
        raise Skipped("Parameter importance needs at least 2 finished trials and 1 varied key.")
    dists = {k: d for k, c in zip(data.varied_keys, data.key_columns) if (d := _distribution(t[c])) is not None}
    if not dists:
        raise Skipped("Parameter importance: no varied key took two values among the finished trials.")
    always = [k for k in dists if t[f"config/{k}"].notna().all()]
    rows = []
    if always:
        found = _importances(data, t, {k: dists[k] for k in always})
        rows += [{"parameter": k, "importance": v, "trials": len(t), "evaluated on": "all finished trials"}
                 for k, v in found.items()]
    for key in (k for k in dists if k not in always):  # it takes 2+ values where set (_distribution)
        some = t[t[f"config/{key}"].notna()]
        dists_there = {k: d for k in always + [key] if (d := _distribution(some[f"config/{k}"])) is not None}
        found = _importances(data, some, dists_there)
        rows.append({"parameter": key, "importance": found[key], "trials": len(some),
                     "evaluated on": f"the {len(some)} trials that set it, with {', '.join(dists_there)}"})
    return pd.DataFrame(rows), f"{_evaluator()[1]}, over {len(t)} finished trials"


def _importances(data: StudyData, t: pd.DataFrame, dists: dict) -> dict[str, float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if data.mode == "max" else "minimize")
    for _, row in t.iterrows():
        params = {k: _param(row[f"config/{k}"], d) for k, d in dists.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(row[data.target])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's ExperimentalWarning and small-sample warnings
        return optuna.importance.get_param_importances(study, evaluator=_evaluator()[0])


def _evaluator():
    import optuna.importance as imp

    return imp.FanovaImportanceEvaluator(seed=0), "fANOVA (optuna.importance.FanovaImportanceEvaluator, seed 0)"


def _distribution(values: pd.Series):
    """An Optuna distribution that covers the observed values: numbers -> a range (log scale when it
    spans 2 decades or more), anything else -> categories. None for a key with one value."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    present = values.dropna()
    if present.nunique() < 2:  # empty (NaN) is "not set", not a value: see importance_table
        return None
    if pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present):
        lo, hi = float(present.min()), float(present.max())
        log = lo > 0 and hi / lo >= 100
        if np.all(present == np.round(present)):
            return IntDistribution(int(lo), int(hi), log=log and lo >= 1)
        return FloatDistribution(lo, hi, log=log)
    return CategoricalDistribution(sorted({str(v) for v in present}))


def _param(value, dist):
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return str(value)
    return int(value) if isinstance(dist, IntDistribution) else float(value)
