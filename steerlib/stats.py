"""Errors for every comparison: paired differences and bootstrap-over-problems ratios.

Two configurations evaluated on the same problems with the same sampling streams are paired: the
standard error of their difference comes from the per-problem differences, which is smaller than the
two separate errors combined whenever the configurations agree on which problems are hard. A ratio of
differences (a gain share, a normalised gain) has no closed-form error; :func:`bootstrap` resamples the
problems (with replacement, the same draw for every configuration) and reports the spread of the
statistic.

Example:
    >>> d = paired_difference([1, 1, 0, 1], [0, 1, 0, 0])
    >>> round(d.estimate, 3), round(d.se, 3)
    (0.5, 0.289)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Estimate", "mean_estimate", "paired_difference", "bootstrap", "gain_share", "paired_gain",
           "share_estimate", "describe", "describe_share", "t_975"]

#: The 0.975 quantile of Student's t by degrees of freedom (1-30); beyond 30 the normal's 1.96 is used.
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
          2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_975(df: int) -> float:
    """The two-sided 95% multiplier of a mean over ``df + 1`` values (Student's t; 1.96 beyond 30 df).

    Example:
        >>> t_975(2), t_975(100)       # three training seeds; many problems
        (4.303, 1.96)
    """
    if df < 1:
        raise ValueError(f"a t interval needs at least one degree of freedom, not {df}")
    return _T_975[df - 1] if df <= len(_T_975) else 1.96


@dataclass(frozen=True)
class Estimate:
    """A number with its standard error (NaN when it cannot be estimated)."""

    estimate: float
    se: float

    def __str__(self) -> str:
        return f"{self.estimate:.3f} ± {self.se:.3f}"


def mean_estimate(xs: Sequence[float]) -> Estimate:
    """The mean of ``xs`` and its standard error (sd / sqrt(n)); the error is NaN below two values.

    Example:
        >>> e = mean_estimate([1.0, 0.0])
        >>> e.estimate, round(e.se, 3)
        (0.5, 0.5)
    """
    n = len(xs)
    mean = sum(xs) / n if n else math.nan
    return Estimate(mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1) / n) if n > 1 else math.nan)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Estimate:
    """Mean of ``a - b`` over paired problems and its standard error (sd of the differences / sqrt(n))."""
    x = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if x.ndim != 1 or len(a) != len(b):
        raise ValueError(f"paired per-problem scores must have the same length, got {len(a)} and {len(b)}")
    n = len(x)
    return Estimate(float(x.mean()) if n else math.nan, float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan)


def bootstrap(per_problem: Mapping[str, Sequence[float]], statistic: Callable[[Mapping[str, float]], float], *,
              n_boot: int = 2000, seed: int = 0) -> Estimate:
    """``statistic`` of the configurations' mean scores, with its bootstrap standard error over problems.

    ``per_problem`` maps each configuration to its per-problem scores on the same problems; each
    bootstrap draw resamples problem indices once and applies them to every configuration. Draws where
    the statistic is not finite (a zero denominator) are dropped; the error is NaN when more than a
    tenth of them are.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> scores = {"base": rng.random(500) < 0.3, "full": rng.random(500) < 0.8, "x": rng.random(500) < 0.55}
        >>> share = bootstrap(scores, lambda m: gain_share(m["x"], m["base"], m["full"]))
        >>> 0.3 < share.estimate < 0.7 and 0.02 < share.se < 0.08
        True
    """
    arrays = {k: np.asarray(v, dtype=float) for k, v in per_problem.items()}
    sizes = {len(v) for v in arrays.values()}
    if len(sizes) != 1:
        raise ValueError(f"every configuration needs scores on the same problems, got sizes {sorted(sizes)}")
    n = sizes.pop()
    point = statistic({k: float(v.mean()) for k, v in arrays.items()})
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    means = {k: v[idx].mean(axis=1) for k, v in arrays.items()}
    draws = np.array([statistic({k: float(m[i]) for k, m in means.items()}) for i in range(n_boot)])
    finite = draws[np.isfinite(draws)]
    se = float(finite.std(ddof=1)) if len(finite) >= 0.9 * n_boot else math.nan
    return Estimate(float(point), se)


def gain_share(acc: float, base: float, full: float) -> float:
    """``(acc - base) / (full - base)``: the share of a reference gain a configuration keeps (NaN if none)."""
    return (acc - base) / (full - base) if full != base else math.nan


def paired_gain(a: Any, b: Any) -> Estimate:
    """``a - b`` for two evaluations on the same problems (anything with ``per_problem``), paired."""
    return paired_difference(a.per_problem, b.per_problem)


def _share(m: Mapping[str, float]) -> float:
    return gain_share(m["part"], m["base"], m["full"])


def share_estimate(part: Any, base: Any, full: Any, *, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """The share of ``full``'s gain over ``base`` that ``part`` keeps, with its bootstrap error over
    problems (three evaluations on the same problems, anything with ``per_problem``)."""
    return bootstrap({"part": part.per_problem, "base": base.per_problem, "full": full.per_problem}, _share,
                     n_boot=n_boot, seed=seed)


def describe(est: Estimate, unit: str = "") -> str:
    """A difference in words by the 2-SE rule, for a chapter's prose.

    Example:
        >>> describe(Estimate(0.008, 0.009))
        '+0.008 ± 0.009, within two standard errors of zero: not an effect'
        >>> describe(Estimate(-0.05, 0.01))
        '-0.050 ± 0.010, more than two standard errors below zero'
    """
    if not (math.isfinite(est.estimate) and math.isfinite(est.se)):
        return f"{est.estimate:+.3f}{unit} (no error available: not read as an effect)"
    text = f"{est.estimate:+.3f} ± {est.se:.3f}{unit}"
    if abs(est.estimate) <= 2 * est.se:
        return text + ", within two standard errors of zero: not an effect"
    return text + f", more than two standard errors {'above' if est.estimate > 0 else 'below'} zero"


def describe_share(est: Estimate, of: str = "the gain") -> str:
    """A gain share in words for a chapter's prose: the number with its error, or why there is none.

    Example:
        >>> describe_share(Estimate(0.74, 0.2)), describe_share(Estimate(math.nan, math.nan))
        ('0.74 ± 0.20', 'undefined (the share of a zero gain)')
        >>> describe_share(Estimate(0.5, math.nan))
        '0.50 (no error: more than a tenth of the bootstrap draws had no gain to share)'
    """
    if not math.isfinite(est.estimate):
        return f"undefined (the share of a zero {of.removeprefix('the ')})"
    if not math.isfinite(est.se):
        return f"{est.estimate:.2f} (no error: more than a tenth of the bootstrap draws had no gain to share)"
    return f"{est.estimate:.2f} ± {est.se:.2f}"
