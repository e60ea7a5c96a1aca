"""The statistics of a run over its seeds: what every report and table gives.

- **Sample standard deviation** (n - 1 in the denominator): the spread of one more seed.
- **95 % interval of the mean**: mean ± t(0.975, n - 1) · std / sqrt(n), Student's t,
  since a handful of seeds is far from the normal limit (t is 4.30 for 3 seeds, 2.78 for
  5, against 1.96).
- **Paired differences against the baseline**: seed s of a network and seed s of its
  baseline share their initialisation seed, data order and augmentation, so the
  difference per seed removes what they share; its mean and interval say whether the two
  differ by more than this run can resolve (an interval that holds 0 does not say they
  are equal, only that the run cannot tell them apart).

A diverged seed (NaN or infinity, null in the JSON) is left out of the figures and
counted under `diverged`; a pair is left out when either side diverged.
"""

from __future__ import annotations

import math
import statistics

# t(0.975, df) for df = 1 .. 30 (Student's t, two-sided 95 %).
T_975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
Z_975 = 1.959964


def t_975(df: int) -> float:
    """The 97.5 % quantile of Student's t with `df` degrees of freedom (df >= 1): the table
    up to 30, then the Cornish-Fisher expansion around the normal quantile (within 1e-4)."""
    if df < 1:
        raise ValueError(f"t_975 needs at least 1 degree of freedom, not {df}")
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def summarize(values: list[float]) -> dict:
    """Mean, sample std and 95 % interval over seeds; a diverged run (NaN, inf or None) is
    kept as null and counted. With one finite value std is 0 and the interval None (one
    seed says nothing of the spread)."""
    kept = [None if v is None or not math.isfinite(v) else float(v) for v in values]
    finite = [v for v in kept if v is not None]
    n = len(finite)
    mean = statistics.fmean(finite) if finite else None
    std = statistics.stdev(finite) if n > 1 else (0.0 if finite else None)
    return {
        "mean": mean,
        "std": std,
        "ci95": half_width(std, n),
        "n": n,
        "values": kept,
        "diverged": len(values) - n,
    }


def half_width(std: float | None, n: int) -> float | None:
    """Half the 95 % interval of a mean of n values of sample std `std`."""
    if std is None or n < 2:
        return None
    return t_975(n - 1) * std / math.sqrt(n)


def paired(values: list, baseline: list) -> dict:
    """The summary of `values[s] - baseline[s]` over the seeds both have finite."""
    pairs = [
        a - b
        for a, b in zip(values, baseline)
        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)
    ]
    return summarize(pairs)


def majority_error(train_counts: list[int], test_counts: list[int]) -> float:
    """The test error of the trivial classifier: always the most frequent training class."""
    most = max(range(len(train_counts)), key=lambda c: train_counts[c])
    return 1 - test_counts[most] / sum(test_counts)
