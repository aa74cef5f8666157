from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from shared.scoring import decay

T0 = decay.LANDMARK + 400 * decay.DAY


def test_one_event_halves_every_half_life() -> None:
    total = decay.term(1.0, T0, 7)
    assert math.isclose(decay.value(total, T0, 7), 1.0, rel_tol=1e-12)
    assert math.isclose(decay.value(total, T0 + 7 * decay.DAY, 7), 0.5, rel_tol=1e-12)
    assert math.isclose(decay.value(total, T0 + 21 * decay.DAY, 7), 0.125, rel_tol=1e-12)


def test_matches_closed_form_sum() -> None:
    events = [(2.0, T0 - 3 * decay.DAY), (1.0, T0 - 10 * decay.DAY), (5.0, T0)]
    total = sum(decay.term(w, t, 14) for w, t in events)
    expected = sum(w * 2 ** (-(T0 - t) / (14 * decay.DAY)) for w, t in events)
    assert math.isclose(decay.value(total, T0, 14), expected, rel_tol=1e-12)


def test_events_before_the_landmark_still_count() -> None:
    t = decay.LANDMARK - 3 * decay.DAY
    assert math.isclose(decay.value(decay.term(1.0, t, 3), t + 3 * decay.DAY, 3), 0.5, rel_tol=1e-9)


@given(
    st.lists(st.tuples(st.floats(0, 1000), st.floats(0, 800 * decay.DAY)), max_size=30),
    st.randoms(),
)
def test_sum_is_exactly_order_independent(events: list[tuple[float, float]], rnd) -> None:  # type: ignore[no-untyped-def]
    forward = sum(decay.term(w, decay.LANDMARK + t, 7) for w, t in events)
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert sum(decay.term(w, decay.LANDMARK + t, 7) for w, t in shuffled) == forward
    assert decay.decode(decay.encode(forward)) == forward
