"""Rates from counts: hit rates of races, fail rates of reruns."""

from __future__ import annotations

import math

Z95 = 1.959964          # two-sided 95% normal quantile


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a hit rate: honest at 0/n and n/n, where
    the normal approximation gives a zero-width interval."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def zero_hit_bound(n: int, confidence: float = 0.95) -> float:
    """The hit rate that n rounds without a hit rule out at this confidence
    (one-sided, exact: (1 - p)^n = 1 - confidence; about 3/n)."""
    return 1 - (1 - confidence) ** (1 / n) if n else 1.0


def percent(x: float) -> str:
    return f"{100 * x:.1f}%" if x < 0.1 else f"{100 * x:.0f}%"
