"""The one retry policy every loop uses."""

from __future__ import annotations

from shared.retry import FIRST_SECONDS, MAX_SECONDS, Backoff


def test_waits_double_from_the_first_to_the_ceiling_jittered_and_start_again() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay() for _ in range(12)]
    ceilings = [min(MAX_SECONDS, FIRST_SECONDS * 2**i) for i in range(12)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert ceilings[0] == FIRST_SECONDS and ceilings[-1] == MAX_SECONDS
    assert len({round(d, 9) for d in delays[-4:]}) > 1  # jittered, not in step
    backoff.failures = 5_000  # a day's outage: still the ceiling, not an overflow
    assert MAX_SECONDS / 2 <= backoff.next_delay() <= MAX_SECONDS
    backoff.reset()
    assert backoff.next_delay() <= FIRST_SECONDS
