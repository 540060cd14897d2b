"""The statistics the tables rest on: mean, std and a Student t interval over
seeds; Games-Howell tests of all pairs of configurations and their compact
letter display; a configuration's difference from the best with its Welch
interval and Hedges' g; what a study's seeds can detect; Pareto fronts."""

from __future__ import annotations

import math
import string
import warnings

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05  # family-wise error rate of the pairwise tests: a difference with p < ALPHA counts as real
POWER = 0.80  # the chance of finding a real difference that the seed counts below are sized for
TEST_NAME = ("the Games-Howell test (all pairs, unequal variances, Welch degrees of freedom;"
             " scipy.stats.tukey_hsd(equal_var=False))")
LETTERS = string.ascii_lowercase + string.ascii_uppercase


def finite(values) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


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


# ---------------------------------------------------------------- all pairs

def games_howell(samples: list) -> np.ndarray:
    """p-values of the Games-Howell test between every two samples (each with 2 or more finite values), the
    family-wise error rate held at ALPHA over all pairs; NaN on the diagonal. tukey_hsd's equal_var needs
    SciPy 1.16 or later."""
    samples = [finite(s) for s in samples]
    k = len(samples)
    p = np.full((k, k), math.nan)
    if k < 2:
        return p
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # 0/0 for two groups without spread, decided below
        p[:] = stats.tukey_hsd(*samples, equal_var=False).pvalue
    still = [i for i, s in enumerate(samples) if s.std() == 0]
    for i in still:  # two groups without spread (identical seeds): the statistic is 0/0 or x/0, the means decide
        for j in still:
            p[i, j] = 1.0 if samples[i].mean() == samples[j].mean() else 0.0
    np.fill_diagonal(p, math.nan)
    return p


def letters(p: np.ndarray, alpha: float = ALPHA) -> list[str]:
    """Compact letter display of a p-value matrix (Piepho's insert-absorb): two groups share a letter exactly
    when they do not differ at `alpha`. Letters follow the groups' order: the first group (the best) has a."""
    k = len(p)
    columns = [set(range(k))] if k else []
    for i in range(k):
        for j in range(i + 1, k):
            if not p[i, j] < alpha:
                continue
            # Insert: a letter shared by two groups that differ splits into one without each of them.
            split = [part for c in columns for part in ([c - {i}, c - {j}] if {i, j} <= c else [c])]
            # Absorb: a letter whose groups all have another letter in common says nothing more.
            columns = [c for n, c in enumerate(split)
                       if not any(c < d or (c == d and m < n) for m, d in enumerate(split))]
    columns.sort(key=sorted)
    return ["".join(_letter(n) for n, c in enumerate(columns) if i in c) for i in range(k)]


def _letter(n: int) -> str:
    return LETTERS[n] if n < len(LETTERS) else f"({n + 1})"


# ---------------------------------------------------------------- effect sizes

def versus(a, best) -> dict[str, float]:
    """Sample `a` against `best`: the difference of means (a - best), its 95% Welch interval (unequal variances,
    Welch-Satterthwaite degrees of freedom) and Hedges' g (the difference over the pooled std, times the
    small-sample correction 1 - 3 / (4 (n_a + n_b) - 9)). Interval and g need 2 or more values on each side."""
    a, b = finite(a), finite(best)
    out = {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "g": math.nan}
    if len(a) == 0 or len(b) == 0:
        return out
    diff = float(a.mean() - b.mean())
    out["diff"] = diff
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return out
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    se = math.sqrt(va + vb)
    if se > 0:
        df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
        half = float(stats.t.ppf((1 + CONFIDENCE) / 2, df)) * se
        pooled = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
        out.update(ci_low=diff - half, ci_high=diff + half, g=diff / pooled * (1 - 3 / (4 * (na + nb) - 9)))
    else:  # identical seeds on both sides: the difference is exact, g is undefined
        out.update(ci_low=diff, ci_high=diff)
    return out


# ---------------------------------------------------------------- what the seeds can detect

def pooled_std(ns, stds) -> float:
    """The seed-to-seed std pooled over groups: sqrt(sum((n - 1) s^2) / sum(n - 1)), groups of 2+ seeds."""
    pairs = [(n, s) for n, s in zip(ns, stds) if n >= 2 and not math.isnan(s)]
    dof = sum(n - 1 for n, _ in pairs)
    return math.sqrt(sum((n - 1) * s**2 for n, s in pairs) / dof) if dof else math.nan


def detectable_difference(std: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true difference of two means, each over n seeds with this std, that a two-sided t-test at
    `alpha` finds with probability `power`: (t(1 - alpha/2, v) + t(power, v)) * std * sqrt(2/n), v = 2n - 2.
    This t approximation of the noncentral t gives Cohen's 64 per group for d = 0.5; with 2 seeds its true
    power is 77%, not 80%. It is for one pair: Games-Howell over many pairs needs a larger difference."""
    if n < 2 or math.isnan(std):
        return math.nan
    v = 2 * n - 2
    return float(stats.t.ppf(1 - alpha / 2, v) + stats.t.ppf(power, v)) * std * math.sqrt(2 / n)


def seeds_needed(difference: float, std: float, most: int = 1000, **kw) -> int | None:
    """The fewest seeds per group at which `difference` is detectable (detectable_difference <= |difference|);
    None when no count up to `most` is enough, e.g. for a difference of 0."""
    difference = abs(difference)
    if math.isnan(difference) or math.isnan(std) or difference == 0:
        return None
    return next((n for n in range(2, most + 1) if detectable_difference(std, n, **kw) <= difference), None)


# ---------------------------------------------------------------- accuracy against cost

def non_dominated(quality, cost, mode: str = "max") -> list[bool]:
    """Which points no other point dominates (as good or better in quality at the same or lower cost, and
    strictly better in one of them); a point with a NaN is never on the front."""
    q = np.asarray(quality, dtype=float) * (1 if mode == "max" else -1)
    c = np.asarray(cost, dtype=float)
    ok = ~(np.isnan(q) | np.isnan(c))
    return [bool(ok[i]) and not any(ok[j] and q[j] >= q[i] and c[j] <= c[i] and (q[j] > q[i] or c[j] < c[i])
                                    for j in range(len(q))) for i in range(len(q))]


def verdict(p: float, is_best: bool) -> str:
    """How a group compares with the best group."""
    if is_best:
        return "best"
    if math.isnan(p):
        return "n=1, untested"
    return "tied" if p >= ALPHA else "worse"
