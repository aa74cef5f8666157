from __future__ import annotations

import math
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from shared.scoring import decay

DAY = decay.DAY
T0 = decay.ORIGIN + 400 * DAY
YEAR_1990 = datetime(1990, 3, 1, tzinfo=UTC).timestamp()
YEAR_2030 = datetime(2030, 3, 1, tzinfo=UTC).timestamp()


def total_of(events: list[tuple[float, float]], half_life: float) -> decay.Sum | None:
    current = None
    for w, t in events:
        current = decay.add(current, w, t, half_life)
    return current


def test_one_event_halves_every_half_life() -> None:
    total = decay.add(None, 1.0, T0, 7)
    assert math.isclose(decay.value(total, T0, 7), 1.0, rel_tol=1e-12)
    assert math.isclose(decay.value(total, T0 + 7 * DAY, 7), 0.5, rel_tol=1e-12)
    assert math.isclose(decay.value(total, T0 + 21 * DAY, 7), 0.125, rel_tol=1e-12)


def test_matches_closed_form_sum() -> None:
    events = [(2.0, T0 - 3 * DAY), (1.0, T0 - 10 * DAY), (5.0, T0)]
    expected = sum(w * 2 ** (-(T0 - t) / (14 * DAY)) for w, t in events)
    assert math.isclose(decay.value(total_of(events, 14), T0, 14), expected, rel_tol=1e-12)


def test_an_event_from_1990_counts_like_one_from_2030() -> None:
    # the fixed landmark of version 2 rounded a 7-day sum from 1990 to exactly zero
    for half_life in (0.5, 7, 30, 365):
        for distance in (0.0, 1.5 * DAY, 40 * DAY):
            old = decay.value(
                decay.add(None, 3.0, YEAR_1990, half_life), YEAR_1990 + distance, half_life
            )
            new = decay.value(
                decay.add(None, 3.0, YEAR_2030, half_life), YEAR_2030 + distance, half_life
            )
            assert old > 0
            assert math.isclose(old, new, rel_tol=4 * 2.0**-52), (half_life, distance)


def test_an_old_event_arriving_late_is_kept_exactly() -> None:
    old_t = T0 - 3 * 365 * DAY
    recent, old = decay.add(None, 1.0, T0, 7), decay.add(None, 2.0, old_t, 7)
    both = decay.add(recent, 2.0, old_t, 7)
    assert both[0] == old[0] < recent[0]  # the landmark moved down to the older event
    assert both == (old[0], (recent[1] << (recent[0] - old[0])) + old[1])
    assert both == decay.add(old, 1.0, T0, 7)
    at = old_t + DAY
    assert decay.value(both, at, 7) == decay.value(old, at, 7) + decay.value(recent, at, 7)


def test_version_2_totals_are_read_against_the_origin() -> None:
    legacy = format(round(2.0 ** (48 + 10 / 7)), "x")  # 1.0 at ORIGIN + 10 days, as v2 wrote it
    assert decay.decode(legacy)[0] == -48
    assert math.isclose(decay.value(decay.decode(legacy), decay.ORIGIN + 10 * DAY, 7), 1.0)


# event times from the year 100 to the year 9000, at any second
times = st.floats(-59e9, 221e9)


@given(
    st.lists(st.tuples(st.floats(-1000, 1000).filter(bool), times), min_size=1, max_size=30),
    st.sampled_from([0.25, 7.0, 90.0]),
    st.randoms(),
)
def test_sum_is_exactly_order_independent_for_any_dates(events, half_life, rnd) -> None:  # type: ignore[no-untyped-def]
    forward = total_of(events, half_life)
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert total_of(shuffled, half_life) == forward
    assert forward is not None and decay.decode(decay.encode(forward)) == forward


# whole seconds: a float epoch time near 2096 cannot hold microseconds, whatever the decay does
@given(
    st.lists(
        st.tuples(st.floats(0.01, 1000), st.integers(0, 60 * 86_400)), min_size=1, max_size=20
    ),
    st.sampled_from([1.0, 7.0, 30.0]),
    st.integers(-2_000_000_000, 4_000_000_000),  # shift the whole history: 1906 to 2096
)
def test_value_depends_on_distances_not_dates(events, half_life, shift) -> None:  # type: ignore[no-untyped-def]
    at = max(t for _, t in events) + DAY
    here = decay.value(total_of([(w, T0 + t) for w, t in events], half_life), T0 + at, half_life)
    shifted = total_of([(w, T0 + t + shift) for w, t in events], half_life)
    there = decay.value(shifted, T0 + at + shift, half_life)
    expected = sum(w * 2 ** (-(at - t) / (half_life * DAY)) for w, t in events)
    assert here > 0 and there > 0
    assert math.isclose(here, there, rel_tol=1e-12)
    assert math.isclose(here, expected, rel_tol=1e-12)
