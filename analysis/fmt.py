"""How numbers and values are written in tables, legends and axes."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd


def is_accuracy(name: str) -> bool:
    """Accuracies (fractions in [0, 1]) are shown as percentages: best_val_acc, test_acc_at_best..."""
    return "acc" in re.split(r"[_ ]", str(name))


def is_loss(name: str) -> bool:
    return "loss" in re.split(r"[_ ]", str(name))


def value(v) -> str:
    """A config value as people write it: 0.001, 50, conv, True."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return str(int(v)) if v.is_integer() and abs(v) < 1e6 else f"{v:.4g}"
    return str(v)


def settings(keys, row, otherwise: str = "") -> str:
    """A row's values of `keys` as people write them, "lr=0.01, batch_size=64" (the keys it has); `otherwise`
    when it has none."""
    return ", ".join(f"{k}={value(row[k])}" for k in keys if k in row) or otherwise


def amount(name: str, x: float) -> str:
    """A difference (its size) in metric `name`'s units: percentage points for accuracies."""
    if pd.isna(x):
        return "–"
    return f"{100 * abs(x):.2f} percentage points" if is_accuracy(name) else number(name, abs(x))


def number(name: str, v) -> str:
    """A measured number, formatted by what the column holds."""
    if v is None or pd.isna(v):
        return "–"
    v = float(v)
    if name == "importance":
        return f"{v:.3f}"
    if name == "hedges_g":
        return f"{v:.2f}"
    if is_accuracy(name):
        return f"{100 * v:.2f}%"
    if is_loss(name):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    if name.startswith("time") or (name.endswith("_s") and "per" not in name):
        return f"{v:,.1f}"
    if abs(v) >= 1000 or v.is_integer():
        return f"{v:,.0f}"
    return f"{v:.4g}"


def spread(name: str, std: float) -> str:
    """A standard deviation in the units of its mean (percentage points for accuracies)."""
    if is_accuracy(name):
        return f"{100 * std:.2f}"
    return number(name, std) if is_loss(name) else f"{std:.2g}"


def stat(name: str, mean: float, std: float, lo: float, hi: float, n: int) -> str:
    """'91.23% ± 0.45' and, on a second line, the 95% interval (just the value for a single seed)."""
    if pd.isna(mean):
        return "–"
    if n < 2 or pd.isna(std):
        return number(name, mean)
    if is_accuracy(name):  # an accuracy lies in [0, 100]%, whatever two seeds' t-interval says
        ci = f"CI {100 * max(lo, 0):.2f}–{100 * min(hi, 1):.2f}%"
    else:  # a loss is never negative either
        ci = f"CI {number(name, max(lo, 0) if is_loss(name) else lo)}–{number(name, hi)}"
    return f"{number(name, mean)} ± {spread(name, std)}\n{ci}"


def difference(name: str, d: float, lo: float, hi: float) -> str:
    """'-0.23 pp' (percentage points for accuracies) and, on a second line, its 95% interval."""
    if pd.isna(d):
        return "–"

    def signed(v):
        if is_accuracy(name):
            return f"{100 * v:+.2f}"
        return f"{v:+.4f}" if is_loss(name) else f"{v:+.4g}"

    unit = " pp" if is_accuracy(name) else ""
    ci = "" if pd.isna(lo) else f"\nCI {signed(lo)} to {signed(hi)}{unit}"
    return f"{signed(d)}{unit}{ci}"


def p_value(p: float) -> str:
    if pd.isna(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"
