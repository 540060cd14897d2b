"""The figures, one function each: (data, figure folder) -> the PNG written.

A function raises `Skipped` when the study cannot have its figure. Names on
axes, titles and legends are the study's own (its varied keys, its metric).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter, PercentFormatter  # noqa: E402

from analysis import fmt, stats, tables  # noqa: E402
from analysis.load import OUTCOMES, StudyData  # noqa: E402
from analysis.tables import Skipped  # noqa: E402

DPI = 110
MAX_COLOURED = 10  # configurations drawn in colour; the others in grey, without a legend entry
MAX_EFFECTS = 20  # configurations in the difference-from-the-best panel
MAX_NAMED = 8  # points named on a Pareto front
CURVES = (("train_acc", "train accuracy"), ("val_acc", "validation accuracy"),
          ("train_loss", "train loss"), ("val_loss", "validation loss"))


@contextmanager
def style():
    """Seaborn's look for our figures only (hpo.run calls the analysis in its own process). No mathtext: the
    texts are the study's own names and values, and two `$` in one (a$b$c) would be read as math or fail."""
    with plt.rc_context({"text.parse_math": False}), sns.axes_style("whitegrid"), \
            sns.plotting_context("notebook", font_scale=0.9):
        yield


def log_scale(ax, axis: str = "y") -> None:
    """A log axis labelled 0.001, 0.01 (matplotlib's 10^-3 labels are mathtext, which style() turns off)."""
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(lambda v, _: fmt.value(v)))
    target.set_minor_formatter(NullFormatter())


def save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def config_label(data: StudyData, frame: pd.DataFrame) -> pd.Series:
    """'conv, 14' for each row: the values of the varied keys, named in the legend's title."""
    if not data.varied_keys:
        return pd.Series(data.name, index=frame.index)
    return frame[data.key_columns].apply(lambda r: ", ".join(fmt.value(v) for v in r), axis=1)


def legend_title(data: StudyData) -> str:
    return ", ".join(data.varied_keys) or "study"


def percent_axis(ax, name: str, axis: str = "y") -> None:
    if fmt.is_accuracy(name):
        (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(1.0, decimals=None))


def ranked_labels(data: StudyData) -> list[str]:
    """Configuration labels, best first (by the mean of the study's metric over finished seeds)."""
    t = data.trials.assign(label=config_label(data, data.trials))
    means = t.groupby("label", dropna=False)[data.target].mean()
    return list(means.sort_values(ascending=data.mode == "min", na_position="last").index)


def colours(labels: list[str]) -> dict[str, object]:
    palette = sns.color_palette("tab10" if len(labels) <= 10 else "husl", min(len(labels), MAX_COLOURED))
    return {lab: palette[i] if i < MAX_COLOURED else (0.7, 0.7, 0.7) for i, lab in enumerate(labels)}


# ---------------------------------------------------------------- learning curves

def learning_curves(data: StudyData, out: Path) -> Path:
    """Train/val accuracy and loss per epoch: one line per configuration, a band over its seeds."""
    e = data.epochs
    panels = [(m, title) for m, title in CURVES if m in e]
    if e.empty or not panels or "epoch" not in e:
        raise Skipped("Learning curves need epochs.csv with train/val metrics per epoch.")
    e = e.assign(label=config_label(data, e)).replace([np.inf, -np.inf], np.nan)
    labels = [lab for lab in ranked_labels(data) if lab in set(e["label"])]
    labels += sorted(set(e["label"]) - set(labels))  # configurations with no finished trial yet
    colour = colours(labels)
    fig, axes = plt.subplots(2, 2, figsize=(12, 9), squeeze=False, layout="constrained")
    for ax, (metric, title) in zip(axes.flat, panels):
        for i, lab in reversed(list(enumerate(labels))):  # best drawn last, on top
            _curve(ax, e[e["label"] == lab], metric, colour[lab], lab if i < MAX_COLOURED else None)
        ax.set(title=title, xlabel="epoch", ylabel=metric)
        percent_axis(ax, metric)
        if fmt.is_loss(metric) and _spans_decades(e[metric], 2):
            log_scale(ax, "y")
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    _figure_legend(fig, axes.flat[0], labels, legend_title(data))
    fig.suptitle(f"{data.name}: learning curves (mean over seeds, band: 95% CI)", fontsize=13)
    return save(fig, out / "learning_curves.png")


def _curve(ax, rows: pd.DataFrame, metric: str, colour, label) -> None:
    s = pd.DataFrame([{"epoch": ep, **stats.summary(g[metric])} for ep, g in rows.groupby("epoch")])
    if s.empty:
        return
    ax.plot(s["epoch"], s["mean"], color=colour, label=label, lw=1.8 if label else 0.8,
            marker="o" if len(s) <= 3 else None, ms=4)
    band = s.dropna(subset=["ci_low"])
    if label and not band.empty:
        ax.fill_between(band["epoch"], band["ci_low"], band["ci_high"], color=colour, alpha=0.15, lw=0)


def _figure_legend(fig, ax, ranked: list[str], title: str) -> None:
    """One legend below the panels, best configuration first."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    order = sorted(range(len(labels)), key=lambda i: ranked.index(labels[i]))
    if len(ranked) > MAX_COLOURED:
        title += f" (best {MAX_COLOURED}; grey: the other {len(ranked) - MAX_COLOURED})"
    columns = max(1, min(6, len(handles), 110 // (max(map(len, labels)) + 6)))  # fit the figure's width
    fig.legend([handles[i] for i in order], [labels[i] for i in order], title=title, loc="outside lower center",
               ncol=columns, frameon=False)


def _spans_decades(values: pd.Series, decades: float) -> bool:
    v = values[(values > 0) & np.isfinite(values)]
    return len(v) > 1 and v.max() / v.min() >= 10**decades


# ---------------------------------------------------------------- effect of each varied key

def factor_effects(data: StudyData, configs: pd.DataFrame, out: Path) -> Path:
    """The metric by each varied key (each trial, the mean, its 95% CI); each configuration against the best.

    The lower panel: the difference with its 95% Welch interval, Hedges' g and the letters of the Games-Howell
    test, from `configs` (tables.config_table)."""
    t, target = data.finished, data.target
    if t.empty or not data.varied_keys:
        raise Skipped("The metric-by-key figure needs finished trials and at least one varied key.")
    n = len(data.varied_keys)
    cols, rows = min(3, n), math.ceil(n / min(3, n))
    table = configs.head(MAX_EFFECTS)
    effects = len(table) >= 2 and table[f"{target} diff"].notna().any()
    heights = [3.9] * rows + ([0.32 * len(table) + 1.3] if effects else [])
    fig = plt.figure(figsize=(max(4.6 * cols, 9), sum(heights)), layout="constrained")
    grid = fig.add_gridspec(len(heights), cols, height_ratios=heights)
    axes = []
    for i, (key, col) in enumerate(zip(data.varied_keys, data.key_columns)):
        ax = fig.add_subplot(grid[i // cols, i % cols], sharey=axes[0] if axes else None)
        axes.append(ax)
        values = t[col]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values) and values.nunique() > 12:
            ax.scatter(values, t[target], s=22, alpha=0.7, color="C0", edgecolor="white", lw=0.5)
            if _spans_decades(values, 2):
                log_scale(ax, "x")
        else:
            _levels_panel(ax, t, col, target)
        ax.set(title=f"{target} by {key}", xlabel=key, ylabel=target if i % cols == 0 else "")
        ax.set_ylim(*_limits(t[target], target))
        percent_axis(ax, target)
    if effects:
        _effects_panel(fig.add_subplot(grid[rows, :]), data, table)
    fig.suptitle(f"{data.name}: {target} of each trial (dots) and mean with 95% CI (black)", fontsize=12)
    return save(fig, out / "factor_effects.png")


def _effects_panel(ax, data: StudyData, table: pd.DataFrame) -> None:
    """One row per configuration, best on top: its difference from the best, the 95% Welch interval, g, letters."""
    target = data.target
    scale = 100 if fmt.is_accuracy(target) else 1  # accuracies in percentage points
    diff = table[f"{target} diff"].fillna(0).to_numpy() * scale  # the best: 0, its own reference
    lo, hi = (table[f"{target} diff {f}"].to_numpy() * scale for f in ("ci_low", "ci_high"))
    y = np.arange(len(table))[::-1]
    ax.errorbar(diff, y, xerr=np.nan_to_num(np.vstack([diff - lo, hi - diff])), fmt="o", color="black", ms=5,
                capsize=3, lw=1.2)
    ax.axvline(0, color="C2", lw=1.2, ls="--")
    names = [", ".join(fmt.value(r[k]) for k in data.varied_keys) for _, r in table.iterrows()]
    ax.set_yticks(y, names, fontsize=8)
    ax.set_ylim(-0.7, len(table) - 0.3)
    for yi, (_, r) in zip(y, table.iterrows()):
        g = "best" if r["verdict"] == "best" else ("g –" if pd.isna(r["hedges_g"]) else f"g {r['hedges_g']:.2f}")
        letters = "–" if pd.isna(r["letters"]) else r["letters"]
        ax.annotate(f"{g}   {letters}", (1.0, yi), xycoords=("axes fraction", "data"),
                    xytext=(6, 0), textcoords="offset points", va="center", fontsize=8)
    unit = "percentage points" if scale == 100 else target
    ax.set(xlabel=f"difference from the best configuration in {target} ({unit}); bars: 95% Welch interval",
           title=f"Each configuration against the best ({len(table)} best shown; right: Hedges' g and letters,"
                 " sharing a letter = no significant difference)")


def _limits(values: pd.Series, name: str) -> tuple[float, float]:
    """The points with a margin: an interval from two seeds can be far wider than anything measured."""
    lo, hi = float(values.min()), float(values.max())
    pad = 0.25 * (hi - lo) or 0.01 * max(abs(hi), 1e-3)
    lo, hi = lo - pad, hi + pad
    return (max(lo, -0.02), min(hi, 1.02)) if fmt.is_accuracy(name) else (lo, hi)


def _levels_panel(ax, t: pd.DataFrame, col: str, target: str) -> None:
    levels = list(pd.Series(t[col].unique()).sort_values(na_position="last"))
    names = [fmt.value(v) for v in levels]
    x = t[col].map(dict(zip(levels, range(len(levels)))))
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(t))
    ax.scatter(x + jitter, t[target], s=22, alpha=0.6, color="C0", edgecolor="white", lw=0.5, zorder=2)
    s = [stats.summary(t.loc[x == i, target]) for i in range(len(levels))]
    means = np.array([v["mean"] for v in s])
    lo = np.array([v["ci_low"] for v in s])
    hi = np.array([v["ci_high"] for v in s])
    yerr = np.nan_to_num(np.vstack([means - lo, hi - means]))
    ax.errorbar(range(len(levels)), means, yerr=yerr, fmt="D", color="black", ms=6, capsize=5, lw=1.5, zorder=3)
    ax.set_xticks(range(len(levels)), names)
    ax.set_xlim(-0.6, len(levels) - 0.4)


# ---------------------------------------------------------------- the search

def parallel_coordinates(data: StudyData, out: Path) -> Path:
    """Every finished trial as a line through its varied keys' values and its metric, coloured by the metric."""
    t, target = data.finished, data.target
    if len(t) < 2 or not data.varied_keys:
        raise Skipped("Parallel coordinates need at least 2 finished trials and 1 varied key.")
    t = t.sort_values(target, ascending=data.mode == "max")  # best drawn last, on top
    columns = data.key_columns + [target]
    names = data.varied_keys + [target]
    scaled, ticks = zip(*(_scale(t[c], n, levels=c != target) for c, n in zip(columns, names)))
    fig, ax = plt.subplots(figsize=(max(7, 2.6 * len(columns)), 5))
    cmap = plt.get_cmap("viridis" if data.mode == "max" else "viridis_r")
    norm = plt.Normalize(t[target].min(), t[target].max())
    y = np.column_stack(scaled)
    for row, v in zip(y, t[target]):
        ax.plot(range(len(columns)), row, color=cmap(norm(v)), alpha=0.75, lw=1.4)
    for i, axis_ticks in enumerate(ticks):
        ax.axvline(i, color="0.3", lw=1)
        for pos, text in axis_ticks:
            ax.text(i + 0.03, pos, text, fontsize=8, va="center", ha="left",
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.7, pad=0.5))
    ax.set_xticks(range(len(columns)), names, fontsize=10)
    ax.set_yticks([])
    ax.set_xlim(-0.1, len(columns) - 0.6)
    ax.set_ylim(-0.06, 1.06)
    ax.grid(False)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02)
    bar.set_label(target)
    if fmt.is_accuracy(target):
        bar.ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title(f"{data.name}: parallel coordinates of {len(t)} finished trials")
    return save(fig, out / "parallel_coordinates.png")


def _scale(values: pd.Series, name: str, levels: bool) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Values mapped to [0, 1] (log scale over 2+ decades, categories evenly), and the ticks to label:
    with `levels`, each of up to 12 distinct values (a grid's levels), else 5 evenly spaced."""
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if not numeric or values.nunique() <= 1:
        levels = list(pd.Series(values.unique()).sort_values(na_position="last"))
        pos = {v: (i / (len(levels) - 1) if len(levels) > 1 else 0.5) for i, v in enumerate(levels)}
        return values.map(pos).to_numpy(float), [(pos[v], fmt.value(v)) for v in levels]
    log = _spans_decades(values, 2) and (values > 0).all()
    v = np.log10(values.to_numpy(float)) if log else values.to_numpy(float)
    lo, hi = np.nanmin(v), np.nanmax(v)
    scaled = (v - lo) / (hi - lo)
    if levels and values.nunique() <= 12:
        tick_values = np.unique(v[~np.isnan(v)])
    else:
        tick_values = np.linspace(lo, hi, 5)
    label = (lambda x: fmt.number(name, x)) if fmt.is_accuracy(name) or fmt.is_loss(name) else fmt.value
    ticks = [((tv - lo) / (hi - lo), label(float(f"{10 ** tv if log else tv:.3g}"))) for tv in tick_values]
    return scaled, ticks


def asha_survival(data: StudyData, out: Path) -> Path:
    """How many trials were still training at each epoch: ASHA's rungs are where the bars drop."""
    t = data.trials[data.trials["epochs_run"].fillna(0) > 0] if "epochs_run" in data.trials else data.trials.iloc[:0]
    if t.empty:
        raise Skipped("The ASHA survival figure needs trials that ran at least one epoch.")
    epochs = np.arange(1, int(t["epochs_run"].max()) + 1)
    alive = np.array([(t["epochs_run"] >= ep).sum() for ep in epochs])
    stopped = t[t["outcome"] == "stopped_early"]["epochs_run"].value_counts()
    stopped_here = np.array([stopped.get(ep, 0) for ep in epochs])
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(epochs) + 2), 4))
    ax.bar(epochs, alive - stopped_here, color="C0", width=0.8, label="went on (or finished)")
    ax.bar(epochs, stopped_here, bottom=alive - stopped_here, color="C1", width=0.8, label="stopped by ASHA after it")
    for ep, n in zip(epochs, alive):
        ax.text(ep, n, str(n), ha="center", va="bottom", fontsize=8)
    ax.set(xlabel="epoch", ylabel="trials that trained this epoch",
           title=f"{data.name}: trials alive per epoch ({len(t)} trials)")
    ax.set_xticks(epochs if len(epochs) <= 30 else epochs[:: math.ceil(len(epochs) / 30)])
    ax.set_ylim(0, alive.max() * 1.15)
    ax.legend(loc="upper right", frameon=True)
    return save(fig, out / "asha_survival.png")


def importance_bars(data: StudyData, table: pd.DataFrame, evaluator: str, out: Path) -> Path:
    """How much each varied key explains of the metric's variation (orange: on the trials that set the key).

    A key only some trials set (momentum only with sgd) is evaluated on those trials."""
    t = table.sort_values("importance")
    apart = t["trials"] < len(data.finished)
    names = [f"{p} ({n} trials)" if a else p for p, n, a in zip(t["parameter"], t["trials"], apart)]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(t) + 1.6))
    ax.barh(names, t["importance"], color=["C1" if a else "C0" for a in apart])
    for y, v in enumerate(t["importance"]):
        ax.text(v, y, f" {v:.2f}", va="center", fontsize=9)
    summed = "blue bars sum to 1" if apart.any() else "sums to 1"
    ax.set(xlabel=f"importance for {data.target} ({summed})", xlim=(0, max(1e-9, t["importance"].max()) * 1.18),
           title=f"{data.name}: parameter importance ({evaluator.split(' ')[0]})")
    return save(fig, out / "importance.png")


# ---------------------------------------------------------------- accuracy against cost

def pareto_fronts(data: StudyData, table: pd.DataFrame, out: Path) -> Path:
    """Each configuration's mean metric against its parameter count and its time per epoch, the Pareto front in red.

    On the front: no other configuration is as good or better and as cheap or cheaper."""
    target = data.target
    panels = [(c, f, label) for c, f, label in (("params mean", "front: params", "parameters"),
                                                ("epoch_time mean", "front: time", "training time per epoch (s)"))
              if table[c].notna().any()]
    if not panels:
        raise Skipped("The Pareto figure needs parameter counts (params) or times (time_s) in trials.csv.")
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6), squeeze=False, layout="constrained")
    names = [", ".join(fmt.value(r[k]) for k in data.varied_keys) or data.name for _, r in table.iterrows()]
    for ax, (cost, front, label) in zip(axes.flat, panels):
        on = table[front].to_numpy(bool)
        ax.scatter(table.loc[~on, cost], table.loc[~on, f"{target} mean"], s=26, color="0.65", label="dominated")
        f = table[on].sort_values(cost)
        ax.step(f[cost], f[f"{target} mean"], where="post", color="C3", lw=1.2, alpha=0.6)
        ax.scatter(f[cost], f[f"{target} mean"], s=40, color="C3", zorder=3, label="Pareto front")
        for i in f.index[:MAX_NAMED]:
            ax.annotate(names[i], (table.loc[i, cost], table.loc[i, f"{target} mean"]), xytext=(4, 4),
                        textcoords="offset points", fontsize=8)
        if _spans_decades(table[cost], 2):
            log_scale(ax, "x")
        ax.set(xlabel=label, ylabel=f"{target} (mean over seeds)", title=f"{target} against {label.split(' (')[0]}")
        percent_axis(ax, target)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(f"{data.name}: {target} against cost ({len(table)} configurations)", fontsize=12)
    return save(fig, out / "pareto.png")


# ---------------------------------------------------------------- when the trials ran

OUTCOME_COLOURS = {"completed": "C2", "stopped_early": "C1", "diverged": "C4", "failed": "C3", "interrupted": "C7",
                   "running": "C0", "pending": "0.8"}
MAX_TRIAL_NAMES = 40  # trial ids on the timeline's axis; more trials: none


def timeline(data: StudyData, out: Path) -> Path:
    """When each trial ran (a bar from its start to its end, by outcome) and how many ran at once against the slots."""
    times = tables.trial_times(data)
    steps = tables.in_flight(times)
    o = tables.occupancy(data, times)
    n = len(times)
    bars = min(max(2.4, 0.2 * n + 0.8), 14)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, bars + 2.8), height_ratios=[bars, 2.4],
                                      layout="constrained")
    y = np.arange(n)
    colour = [OUTCOME_COLOURS.get(v, "0.5") for v in times["outcome"]]
    top.barh(y, times["ended_s"] - times["started_s"], left=times["started_s"], height=0.8, color=colour,
             hatch=["//" if v else "" for v in times["open"]], edgecolor="white", lw=0.3)
    if n <= MAX_TRIAL_NAMES:
        top.set_yticks(y, times["trial_id"].astype(str), fontsize=7)
    else:
        top.set_yticks([])
    top.set_ylim(n - 0.4, -0.6)  # the first started on top
    top.set(ylabel=f"{n} trials, by start")
    seen = sorted(set(times["outcome"]), key=lambda v: (OUTCOMES.index(v) if v in OUTCOMES else len(OUTCOMES), v))
    handles = [plt.Rectangle((0, 0), 1, 1, color=OUTCOME_COLOURS.get(v, "0.5")) for v in seen]
    names = [v.replace("_", " ") for v in seen]
    if times["open"].any():
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="0.4", hatch="//"))
        names.append("no end yet: drawn\nto the latest time")
    top.legend(handles, names, title="outcome", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8,
               frameon=False)
    x = np.append(steps["time_s"], o["span_s"])
    count = np.append(steps["in_flight"], steps["in_flight"].iloc[-1])
    bottom.step(x, count, where="post", color="C0", lw=1.5, label="trials in flight")
    bottom.fill_between(x, count, step="post", color="C0", alpha=0.15, lw=0)
    if o["slots"]:
        bottom.axhline(o["slots"], color="C3", ls="--", lw=1.2, label=f"{o['slots']} slots")
    if not math.isnan(o["mean"]):
        bottom.axhline(o["mean"], color="0.3", ls=":", lw=1.2, label=f"mean {o['mean']:.1f}")
    bottom.set(xlabel="seconds since the run began", ylabel="trials in flight",
               xlim=(0, max(o["span_s"], 1e-9)), ylim=(0, max(o["slots"] or 0, o["peak"], 1) * 1.15))
    bottom.yaxis.get_major_locator().set_params(integer=True)
    bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    used = "unknown (no slots in study.json)" if o["utilisation"] is None else f"{o['utilisation']:.0%}"
    fig.suptitle(f"{data.name}: trial timeline, slot utilisation {used}", fontsize=12)
    return save(fig, out / "timeline.png")
