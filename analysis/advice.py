"""What to run next: advice the report's own numbers support, each with its reason and, where this toolkit
can act on it, the exact command (`python -m hpo.run STUDY.py --extend ...`, docs/running.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import fmt, stats
from analysis.load import StudyData

MOST_SEEDS = 20  # a difference that needs more seeds per configuration is too small to chase with seeds
EDGE = 0.05  # a best sampled value within 5% of a range's bound (log scale for log ranges) is at its edge
MIN_SEARCH_TRIALS = 6  # fewer finished trials say nothing about whether a search still improves
TOP = 3  # a search's best configurations that --extend --top re-runs with more seeds
TOP_SEEDS = 5  # ... and with how many seeds each: what a 1-2 point difference of LeNet-sized nets needs


@dataclass(frozen=True)
class Advice:
    reason: str
    command: str | None = None  # what to run; None where it is a change to make by hand


def advise(data: StudyData, table: pd.DataFrame, power: dict) -> list[Advice]:
    """Every piece of advice the numbers support (none for a --smoke run: its numbers say nothing).
    `table`, `power`: tables.config_table and tables.power_summary of the same data."""
    if data.meta.get("smoke") or data.finished.empty:
        return []
    return [*_more_seeds(data, table, power), *_grid_edges(data), *_range_edges(data), *_search_progress(data),
            *_top_seeds(data, table), *_asha_ties(data)]


def _command(data: StudyData, sets: dict | None = None, top: int | None = None) -> str | None:
    from hpo.rounds import command_with

    command = data.meta.get("command")
    return command_with(command, f"--extend --top {top}" if top else "--extend", sets) if command else None


def _grid(data: StudyData) -> bool:
    """A study whose configurations are a grid (so `--extend` can add values)."""
    return data.search is not None and not data.search.samples


def _extendable(data: StudyData) -> bool:
    """A study `--extend` can add seeds and trials to: a grid, or a search that does not draw inside a grid."""
    grid = any(isinstance(v, dict) and "grid_search" in v for v in (data.study.get("space") or {}).values())
    return data.search is not None and (not data.search.samples or not grid)


def _more_seeds(data: StudyData, table: pd.DataFrame, power: dict) -> list[Advice]:
    """The seeds per configuration that would separate the best from the runner-up, where the test has not."""
    if len(table) < 2 or table.loc[1, "verdict"] == "worse" or not power.get("runner_up_diff"):
        return []
    if not math.isfinite(power.get("runner_up_std", math.nan)):
        return []  # one seed each: no spread to size seeds by (_top_seeds runs more of a search's best)
    needed, seeds = power["runner_up_seeds"], power["seeds"]
    best, runner = (fmt.settings(data.varied_keys, table.iloc[i], data.name) for i in (0, 1))
    gap = (f"The runner-up ({runner}) is {fmt.amount(data.target, power['runner_up_diff'])} from the best ({best})"
           f" and not yet told apart from it ({table.loc[1, 'verdict']})")
    if needed is None or needed > MOST_SEEDS:
        more = f"{needed}" if needed else "more than 1000"
        return [Advice(f"{gap}: {more} seeds per configuration would be needed to separate them with "
                       f"{stats.POWER:.0%} power. A difference this small is rarely worth the compute: treat the "
                       "two as equally good.")]
    if needed <= seeds or not _extendable(data):
        return []  # the power for one pair says the seeds suffice (the test over all pairs is stricter)
    # A search: the two alone (--top 2), not every configuration it drew. ASHA: the two alone too, and with no
    # early stopping: a new ASHA round could stop the new seeds of either at a rung, pooling 3-epoch seeds with
    # ones that ran every epoch.
    if data.search.samples or data.stops_early:
        return [Advice(f"{gap}: {needed} seeds per configuration (now {seeds}) would separate them with "
                       f"{stats.POWER:.0%} power. This trains the missing seeds of the two best that ran every "
                       "epoch, each to the last epoch, and pools them with the existing ones:",
                       _command(data, {"seeds": needed}, top=2))]
    return [Advice(f"{gap}: {needed} seeds per configuration (now {seeds}) would separate them with "
                   f"{stats.POWER:.0%} power. This trains the missing seeds of every configuration and pools them "
                   "with the existing ones:", _command(data, {"seeds": needed}))]


def _numeric(values) -> bool:
    return len(values) > 0 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _beyond(values: list, upward: bool):
    """A next grid value past the end: the grid's own ratio for a geometric grid, else its last step."""
    values = sorted(values)
    a, b = (values[-2], values[-1]) if upward else (values[1], values[0])
    if a > 0 and b > 0 and all(math.isclose(y / x, values[1] / values[0], rel_tol=0.01)
                               for x, y in zip(values, values[1:])):
        nxt = b * (b / a)
    else:
        nxt = b + (b - a)
        if nxt <= 0 < b:
            nxt = b / 2
    return int(round(nxt)) if all(isinstance(v, int) for v in values) else float(f"{nxt:.3g}")


def _grid_edges(data: StudyData) -> list[Advice]:
    """A numeric grid key (3+ values) whose best level (over the other keys and seeds) is its first or last."""
    out = []
    for key in data.varied_keys:
        grid = (data.study.get("space") or {}).get(key)
        values = grid.get("grid_search") if isinstance(grid, dict) else None
        column = f"config/{key}"
        if not values or len(values) < 3 or not _numeric(values) or column not in data.finished:
            continue
        means = data.finished.groupby(column)[data.target].mean()
        if len(means) < 3:
            continue
        best = means.idxmax() if data.mode == "max" else means.idxmin()
        if best not in (min(values), max(values)):
            continue
        upward = best == max(values)
        out.append(Advice(
            f"The best {key}, {fmt.value(best)} (mean {data.target} over the other keys and seeds), is the "
            f"{'largest' if upward else 'smallest'} value of its grid: the best {key} may lie "
            f"{'above' if upward else 'below'} it. Add a value such as {fmt.value(_beyond(values, upward))} to "
            f"the grid in {data.meta.get('study_file') or 'the study file'}; then this trains only the new "
            "configurations:", _command(data) if _grid(data) else None))
    return out


def _position(value: float, low: float, high: float, log: bool) -> float:
    if log:
        value, low, high = math.log(value), math.log(low), math.log(high)
    return (value - low) / (high - low)


def _range_edges(data: StudyData) -> list[Advice]:
    """The best trial's sampled value within EDGE of its range's bound."""
    best = data.finished.sort_values(data.target, ascending=data.mode == "min").iloc[0]
    out = []
    for key, entry in (data.study.get("space") or {}).items():
        if not isinstance(entry, dict) or len(entry) != 1 or f"config/{key}" not in best:
            continue
        (kind, bounds), = entry.items()
        value = best[f"config/{key}"]
        if kind not in ("uniform", "loguniform", "randint") or not _numeric([value, *bounds]) or bounds[0] >= bounds[1]:
            continue
        where = _position(float(value), *map(float, bounds), log=kind == "loguniform")
        if EDGE < where < 1 - EDGE:
            continue
        upward = where >= 1 - EDGE
        scale = " on the log scale" if kind == "loguniform" else ""
        out.append(Advice(
            f"The best trial's {key}, {fmt.value(value)}, lies at the {'upper' if upward else 'lower'} end of its "
            f"range {kind}({fmt.value(bounds[0])}, {fmt.value(bounds[1])}){scale}: widen the range "
            f"{'above ' + fmt.value(bounds[1]) if upward else 'below ' + fmt.value(bounds[0])} in "
            f"{data.meta.get('study_file') or 'the study file'} and run it as a new study (another name), so the "
            "search can look past it."))
    return out


def _search_progress(data: StudyData) -> list[Advice]:
    """A sampled search that found its best early (more trials are unlikely to help), or late (they may)."""
    if data.search is None or not data.search.samples:
        return []
    t = data.finished
    order = [c for c in ("round", "trial_id") if c in t]
    t = t.sort_values(order) if order else t  # Ray numbers a round's trials in the order it created them
    # each configuration once, where the search drew it: the seeds --extend added later are not draws
    t = t.drop_duplicates(subset=[c for c in data.key_columns if c in t], keep="first")
    if len(t) < MIN_SEARCH_TRIALS:
        return []
    values = t[data.target].to_numpy(dtype=float)
    found = int(np.nanargmax(values) if data.mode == "max" else np.nanargmin(values))  # first of the best
    n = len(values)
    if found < n / 2:
        return [Advice(f"The search found its best in trial {found + 1} of its {n} finished trials and none of the "
                       f"{n - found - 1} after it did better: more trials of the same search are unlikely to help. "
                       "More seeds of the top configurations, or another space, would tell more.")]
    if found >= 3 * n / 4:
        more = 2 * int(data.study.get("num_samples") or n)
        return [Advice(f"The search found its best late, in trial {found + 1} of {n}: it may still improve. This "
                       f"continues the same search to {more} configurations, its sampler learning from every "
                       "trial so far:", _command(data, {"num_samples": more}) if _extendable(data) else None)]
    return []


def _top_seeds(data: StudyData, table: pd.DataFrame) -> list[Advice]:
    """A search's best configurations with fewer seeds than it takes to rank them: --extend --top runs more."""
    if data.search is None or not data.search.samples or len(table) < 2 or not _extendable(data):
        return []
    seeds = int(table["n"].iloc[:TOP].min())
    if seeds >= TOP_SEEDS:
        return []
    return [Advice(f"The search's best configurations have {seeds} seed{'s' if seeds > 1 else ''} each, too few to "
                   "tell a better configuration from a lucky seed. This trains the missing seeds of the "
                   f"{TOP} best that ran every epoch, each to the last epoch, and compares them over "
                   f"{TOP_SEEDS} seeds:", _command(data, {"seeds": TOP_SEEDS}, top=TOP))]


def _asha_ties(data: StudyData) -> list[Advice]:
    """Trials ASHA stopped that were as good as the eventual best trial at their last epoch."""
    if not data.stops_early or data.epochs.empty or data.metric not in data.epochs:
        return []
    t, e = data.trials, data.epochs
    done = t[t["outcome"] == "completed"]
    stopped = t[t["outcome"] == "stopped_early"]
    if done.empty or stopped.empty:
        return []
    best = done.sort_values(data.target, ascending=data.mode == "min").iloc[0]
    curve = e[e["trial_id"] == best["trial_id"]].set_index("epoch")[data.metric]
    ties = []
    for _, trial in stopped.iterrows():
        epoch = int(trial["epochs_run"])
        mine = e[(e["trial_id"] == trial["trial_id"]) & (e["epoch"] == epoch)][data.metric]
        if epoch in curve.index and len(mine):
            better = mine.iloc[0] >= curve[epoch] if data.mode == "max" else mine.iloc[0] <= curve[epoch]
            if better:
                ties.append((trial, epoch))
    if not ties:
        return []
    shown = "; ".join(f"{trial['trial_id']} ({fmt.settings(data.varied_keys, _keys(data, trial), data.name)},"
                      f" epoch {epoch})" for trial, epoch in ties[:3])
    grace = max(epoch for _, epoch in ties) * 2
    return [Advice(f"{len(ties)} trial(s) ASHA stopped were as good as the best trial at the same epoch (their "
                   f"last): {shown}{' ...' if len(ties) > 3 else ''}. ASHA may have stopped a configuration as good "
                   f"as the best: a new study with a later first rung (`--set grace_period={grace}`) would let them "
                   "train further.")]


def _keys(data: StudyData, trial) -> dict:
    return {k: trial.get(f"config/{k}") for k in data.varied_keys}
