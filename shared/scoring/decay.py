"""Exact, order-independent time-decayed sums ("forward decay", Cormode et al., ICDE 2009).

A decayed sum with half-life h evaluated at time t is  V(t) = sum_i w_i * 2^-((t - t_i) / h).
Against a fixed landmark L it becomes  V(t) = 2^-((t - L)/h) * sum_i w_i * 2^((t_i - L)/h):
the sum no longer depends on t, so a late event is simply added with its own weight.

Each term is rounded once, on its own, to an integer (PRECISION_BITS of fraction) and the terms
are added as Python integers. Integer addition is exact and associative, so the same set of
events gives bit-for-bit the same state whatever the arrival order, batching or restarts in
between. The integers grow by one bit per half-life elapsed since the landmark (about 100 bits a
year for a 7-day half-life), which Python handles natively.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

LANDMARK = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
PRECISION_BITS = 48
DAY = 86_400.0


def _exponent(t: float, half_life_days: float) -> float:
    return (t - LANDMARK) / (half_life_days * DAY)


def term(weight: float, t: float, half_life_days: float) -> int:
    """The integer contribution of one event of `weight` at time `t` (epoch seconds)."""
    if weight == 0:
        return 0
    e = (t - LANDMARK) / (half_life_days * DAY)  # _exponent, inline: this runs per signal
    n = math.floor(e)
    mantissa = round(weight * 2.0 ** (e - n + PRECISION_BITS))
    shift = n
    return int(mantissa << shift if shift >= 0 else mantissa >> -shift)


def value(total: int, t: float, half_life_days: float) -> float:
    """The decayed sum at time `t` of the accumulated integer `total`."""
    if total == 0:
        return 0.0
    e = _exponent(t, half_life_days)
    n = math.floor(e)
    excess = max(abs(total).bit_length() - 62, 0)
    head = total >> excess if total > 0 else -((-total) >> excess)
    return float(math.ldexp(float(head), excess - n - PRECISION_BITS) * 2.0 ** (n - e))


def encode(total: int) -> str:
    return format(total, "x") if total >= 0 else "-" + format(-total, "x")


def decode(text: str) -> int:
    return int(text, 16)
