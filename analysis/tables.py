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

from analysis import stats
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
    comparison of `target` with the best group (p_value, verdict); sorted best first."""
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
        return table
    means = table[f"{target} mean"].to_numpy(dtype=float)
    order = sorted(range(len(table)), key=lambda i: (math.isnan(means[i]), -means[i] if mode == "max" else means[i]))
    best = order[0]
    table["p_value"] = [math.nan if i == best else stats.welch_p(samples[i], samples[best]) for i in range(len(table))]
    table["verdict"] = [stats.verdict(p, i == best) for i, p in enumerate(table["p_value"])]
    return table.iloc[order].reset_index(drop=True)


def config_table(data: StudyData) -> pd.DataFrame:
    """Per configuration (seeds grouped), best first."""
    extras = [x for x in EXTRAS if x in data.trials]
    return summarise(data.finished, data.key_columns, summary_metrics(data), data.target, data.mode, extras)


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
    t = data.finished.sort_values(data.target, ascending=data.mode == "min").head(k)
    cols = ["trial_id", "outcome", *data.key_columns, "seed", "epochs_run", data.target, "test_acc_at_best", "time_s"]
    return _rename_keys(t[[c for c in dict.fromkeys(cols) if c in t]]).reset_index(drop=True)


def rung_table(data: StudyData) -> pd.DataFrame:
    """Trials ASHA stopped, by the epoch they stopped at (its rungs)."""
    t = data.trials[data.trials["outcome"] == "stopped_early"]
    g = t.groupby("epochs_run")[data.target]
    best = g.max() if data.mode == "max" else g.min()
    table = pd.DataFrame({"trials stopped": g.size(), f"{data.target} mean": g.mean(), f"{data.target} best": best})
    return table.rename_axis("stopped after epoch").reset_index()


def _rename_keys(t: pd.DataFrame) -> pd.DataFrame:
    return t.rename(columns=lambda c: c.removeprefix("config/"))


# ---------------------------------------------------------------- parameter importance

def importance_table(data: StudyData) -> tuple[pd.DataFrame, str]:
    """Importance of each varied key for the metric, from an in-memory Optuna study of the finished
    trials; returns the table and the evaluator's description."""
    import optuna

    t = data.finished
    if len(t) < 2 or not data.varied_keys:
        raise Skipped("Parameter importance needs at least 2 finished trials and 1 varied key.")
    dists = {k: d for k, c in zip(data.varied_keys, data.key_columns) if (d := _distribution(t[c])) is not None}
    if not dists:
        raise Skipped("Parameter importance: no varied key took two values among the finished trials.")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if data.mode == "max" else "minimize")
    for _, row in t.iterrows():
        params = {k: _param(row[f"config/{k}"], d) for k, d in dists.items()}
        if any(v is None for v in params.values()):
            continue  # a numeric key with no value in this trial
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(row[data.target])))
    if len(study.trials) < 2:
        raise Skipped("Parameter importance needs at least 2 finished trials with every varied key set.")
    evaluator, described = _evaluator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's ExperimentalWarning and small-sample warnings
        importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    table = pd.DataFrame({"parameter": list(importances), "importance": list(importances.values())})
    return table, f"{described}, over {len(study.trials)} finished trials"


def _evaluator():
    import optuna.importance as imp

    return imp.FanovaImportanceEvaluator(seed=0), "fANOVA (optuna.importance.FanovaImportanceEvaluator, seed 0)"


def _distribution(values: pd.Series):
    """An Optuna distribution that covers the observed values: numbers -> a range (log scale when it
    spans 2 decades or more), anything else -> categories. None for a key with one value."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    present = values.dropna()
    if values.nunique(dropna=False) < 2 or present.empty:
        return None
    if pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present):
        lo, hi = float(present.min()), float(present.max())
        log = lo > 0 and hi / lo >= 100
        if np.all(present == np.round(present)):
            return IntDistribution(int(lo), int(hi), log=log and lo >= 1)
        return FloatDistribution(lo, hi, log=log)
    return CategoricalDistribution(sorted({str(v) for v in values}))


def _param(value, dist):
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return str(value)
    if pd.isna(value):
        return None
    return int(value) if isinstance(dist, IntDistribution) else float(value)
