"""The statistics of ``lightning-kd seeds``' tables: mean and sample std, Student's t-interval of a mean, and the
paired difference of two runs on the seeds both finished (*beyond the noise*: its 95 % interval excludes 0)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; 0 for one value)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def t_interval(values: Sequence[float], level: float = 0.95) -> list[float] | None:
    """The ``level`` Student-t interval of the mean, ``mean ± t_{(1+level)/2, n−1} · s / √n``; ``None`` below two
    values (one value has no spread).

    Example:
        >>> [round(x, 4) for x in t_interval([0.05, 0.04, 0.03])]  # 0.04 ± 4.3027 · 0.01 / √3
        [0.0152, 0.0648]
    """
    if len(values) < 2:
        return None
    from scipy.stats import t  # scikit-learn's dependency

    mean, std = _mean_std(values)
    half = float(t.ppf((1 + level) / 2, len(values) - 1)) * std / math.sqrt(len(values))
    return [mean - half, mean + half]


def paired(values: dict[int, float], base: dict[int, Any]) -> tuple[dict[str, Any], bool | None]:
    """The per-seed differences ``values - base`` on the seeds both have (a missing or ``None`` base value is
    left out), their mean, std and 95 % t-interval; and whether that interval excludes 0 (``None``: fewer than two
    paired seeds)."""
    diffs = {s: v - base[s] for s, v in values.items() if base.get(s) is not None}
    mean, std = _mean_std(list(diffs.values()))
    ci = t_interval(list(diffs.values()))
    return {"mean": mean, "std": std, "ci95": ci, "per_seed": diffs}, (ci[0] > 0 or ci[1] < 0) if ci else None
