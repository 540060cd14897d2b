"""The statistics the tables rest on: mean, std and a Student t interval over
seeds, and Welch's t-test of a configuration against the best one."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05  # a difference with p < ALPHA counts as real
TEST_NAME = "Welch's t-test (two-sided, unequal variances, scipy.stats.ttest_ind(equal_var=False))"


def summary(values) -> dict[str, float]:
    """n, mean, sample std (ddof=1) and the 95% Student t interval of the mean; NaNs ignored."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    mean = float(x.mean())
    if n == 1:  # no spread to estimate from a single seed
        return {"n": 1, "mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def welch_p(a, b) -> float:
    """Two-sided p-value of Welch's t-test; NaN when a side has fewer than 2 values (untestable)."""
    a, b = (np.asarray(v, dtype=float) for v in (a, b))
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if a.std() == 0 and b.std() == 0:  # the t statistic is 0/0 or x/0: decide by the means
        return 1.0 if a.mean() == b.mean() else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def verdict(p: float, is_best: bool) -> str:
    """How a group compares with the best group."""
    if is_best:
        return "best"
    if math.isnan(p):
        return "n=1, untested"
    return "tied" if p >= ALPHA else "worse"
