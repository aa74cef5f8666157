"""Exact, order-independent time-decayed sums ("forward decay", Cormode et al., ICDE 2009).

A decayed sum with half-life h evaluated at time t is  V(t) = sum_i w_i * 2^-((t - t_i) / h).
Against a landmark L it becomes  V(t) = 2^-((t - L)/h) * sum_i w_i * 2^((t_i - L)/h):
the sum no longer depends on t, so a late event is simply added with its own weight.

Times are counted in half-lives on a grid from ORIGIN: an event's exponent (t_i - ORIGIN)/h is
split exactly (`divmod`) into a whole number n_i and a fraction f_i in [0, 1), so the fraction is
as precise for an event in 1990 as for one in 2030. The float w_i * 2^f_i is then taken exactly
as an integer times a power of two, M_i * 2^b_i (53-bit M_i): the event's term is
M_i * 2^(n_i + b_i) at ORIGIN, with no rounding beyond the float's own.

A sum is the pair (landmark, total) meaning total * 2^landmark, the landmark being the smallest
n_i + b_i among its events: total = sum_i M_i << (n_i + b_i - landmark). Adding an event at or
above the landmark shifts its M left; adding one below shifts the total left and moves the
landmark down. Left shifts and integer addition are exact and associative, so the same set of
events gives bit-for-bit the same pair whatever the arrival order, batching or restarts in
between, and no event is ever rounded away however old it is. The total grows by one bit per
half-life between the sum's oldest and newest event, which Python handles natively.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

ORIGIN = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
DAY = 86_400.0
_FLOAT_BITS = 53
_LEGACY_BITS = 48  # version 2 documents: total * 2^-48 at ORIGIN

Sum = tuple[int, int]  # (landmark, total): the sum at ORIGIN is total * 2^landmark


def add(current: Sum | None, weight: float, t: float, half_life_days: float) -> Sum:
    """`current` (None: no event yet) with one event of `weight` at time `t` (epoch seconds)
    added. An event of weight 0 is no event: leave it out rather than add it, or it would move
    the landmark."""
    whole, rest = divmod(t - ORIGIN, half_life_days * DAY)
    fraction, bits = math.frexp(weight * math.exp2(rest / (half_life_days * DAY)))
    mantissa = int(math.ldexp(fraction, _FLOAT_BITS))
    at = int(whole) + bits - _FLOAT_BITS
    if current is None:
        return at, mantissa
    landmark, total = current
    if at >= landmark:
        return landmark, total + (mantissa << (at - landmark))
    return at, (total << (landmark - at)) + mantissa


def value(current: Sum | None, t: float, half_life_days: float) -> float:
    """The decayed sum at time `t`."""
    if current is None or current[1] == 0:
        return 0.0
    landmark, total = current
    whole, rest = divmod(t - ORIGIN, half_life_days * DAY)
    excess = max(abs(total).bit_length() - 62, 0)
    head = total >> excess if total > 0 else -((-total) >> excess)
    return math.ldexp(float(head), excess + landmark - int(whole)) * math.exp2(
        -rest / (half_life_days * DAY)
    )


def encode(current: Sum) -> str:
    """`landmark:total` with the total in hexadecimal."""
    landmark, total = current
    return f"{landmark}:{total:x}" if total >= 0 else f"{landmark}:-{-total:x}"


def decode(text: str) -> Sum:
    """Reads `encode`'s form, and the bare hexadecimal total of version 2 state documents (at
    2^-48 against ORIGIN itself: events before it had been shifted right, so the oldest may
    have lost bits then; nothing more is lost from here on)."""
    landmark, colon, total = text.rpartition(":")
    return (int(landmark) if colon else -_LEGACY_BITS), int(total, 16)
