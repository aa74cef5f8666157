"""Live model quality's figures (shared/quality.py) against hand computations and their
definitions, and an account's lapse and return (shared/outcomes.py)."""

from __future__ import annotations

import itertools
import random

import pytest

from shared import quality
from shared.outcomes import lapsed, within
from shared.quality import Sample


def _pairwise_auc(samples: list[Sample]) -> float:
    """The definition: over (adverse, other) pairs, 1 if the adverse has the lower score, 1/2
    if equal."""
    pairs = [(a, b) for a in samples if a.adverse for b in samples if not b.adverse]
    right = sum(1.0 if a.score < b.score else 0.5 if a.score == b.score else 0.0 for a, b in pairs)
    return right / len(pairs)


def test_roc_auc_by_hand() -> None:
    samples = [
        Sample("a", 10, None, True),
        Sample("b", 30, None, True),
        Sample("c", 30, None, False),  # tied with b: half a pair
        Sample("d", 60, None, False),
        Sample("e", 5, None, False),  # below both adverse: two wrong pairs
    ]
    # pairs (a,c) (a,d) (a,e) (b,c) (b,d) (b,e): 1 + 1 + 0 + 0.5 + 1 + 0 = 3.5 of 6
    assert quality.roc_auc(samples) == pytest.approx(3.5 / 6)


def test_roc_auc_agrees_with_the_definition_on_random_ties() -> None:
    rng = random.Random(7)
    samples = [
        Sample(str(i), rng.choice(range(0, 100, 5)), None, rng.random() < 0.3) for i in range(300)
    ]
    assert quality.roc_auc(samples) == pytest.approx(_pairwise_auc(samples))


def test_roc_auc_needs_both_kinds() -> None:
    assert quality.roc_auc([Sample("a", 1, None, True), Sample("b", 2, None, True)]) is None


def test_auc_interval_is_hanley_and_mcneil() -> None:
    # A = 0.8, 50 and 50: Q1 = 0.8 / 1.2, Q2 = 2 * 0.64 / 1.8,
    # SE^2 = (0.16 + 49 (Q1 - 0.64) + 49 (Q2 - 0.64)) / 2500 = 4.95111 / 2500
    low, high = quality.auc_interval(0.8, 50, 50)
    assert (high - low) / 2 / 1.959964 == pytest.approx((4.951111 / 2500) ** 0.5, rel=1e-5)
    assert quality.auc_interval(0.99, 3, 3)[1] == 1.0  # clamped


def test_brier_with_its_interval_by_accounts() -> None:
    samples = [
        Sample("a", 0, 0.9, True),  # (0.1)^2 = 0.01
        Sample("a", 0, 0.5, False),  # 0.25
        Sample("b", 0, 0.2, False),  # 0.04
        Sample("c", 0, None, True),  # states nothing: left out
    ]
    mean, low, high = quality.brier(samples)  # type: ignore[misc]
    assert mean == pytest.approx(0.1)
    sd = (((0.01 - 0.1) ** 2 + (0.25 - 0.1) ** 2 + (0.04 - 0.1) ** 2) / 2) ** 0.5
    assert high - mean == pytest.approx(1.959964 * sd / 2**0.5)  # two accounts, not three
    assert low == 0.0  # clamped
    assert quality.brier([Sample("a", 0, None, True)]) is None


def test_reliability_bins_by_tenths() -> None:
    samples = [Sample("a", 0, 0.05, False), Sample("b", 0, 0.07, True), Sample("c", 0, 0.95, True)]
    assert quality.reliability(samples) == [
        {"predicted": 0.06, "observed": 0.5, "samples": 2},
        {"predicted": 0.95, "observed": 1.0, "samples": 1},
    ]


def _expected_by_definition(scored: list[tuple[float, float]]) -> float:
    num = den = 0.0
    for (_, (si, pi)), (_, (sj, pj)) in itertools.permutations(enumerate(scored), 2):
        weight = pi * (1 - pj)
        den += weight
        num += weight * (1.0 if si < sj else 0.5 if si == sj else 0.0)
    return num / den


def test_expected_roc_auc_by_the_definition() -> None:
    rng = random.Random(3)
    scored = [(float(rng.choice(range(0, 100, 10))), rng.random()) for _ in range(60)]
    groups: dict[float, list[float]] = {}
    for score, p in scored:
        groups.setdefault(score, []).append(p)
    summed = [
        (s, sum(ps), sum(1 - p for p in ps), sum(p * (1 - p) for p in ps))
        for s, ps in groups.items()
    ]
    assert quality.expected_roc_auc(summed) == pytest.approx(_expected_by_definition(scored))


def test_expected_roc_auc_of_calibrated_probabilities_matches_what_follows() -> None:
    """The estimate is what the realised figure comes to when outcomes follow the stated
    probabilities: draw outcomes from them, many accounts."""
    rng = random.Random(11)
    samples, groups = [], {}
    for i in range(20_000):
        score = rng.uniform(0, 100)
        p = 1 / (1 + 2.718281828 ** (-(2.0 - 6.0 * score / 100)))
        samples.append(Sample(str(i), score, p, rng.random() < p))
        groups[score] = (score, p, 1 - p, p * (1 - p))
    assert quality.expected_roc_auc(list(groups.values())) == pytest.approx(
        quality.roc_auc(samples), abs=0.01
    )


def test_an_account_is_lapsed_from_a_churn_until_a_return() -> None:
    timeline = [(10.0, "churn"), (20.0, "return"), (30.0, "renewal")]
    assert [lapsed(timeline, t) for t in (5, 10, 15, 20, 40)] == [
        False,
        True,
        True,
        False,
        False,
    ]
    assert within(timeline, "churn", 5, 10) and not within(timeline, "churn", 10, 30)
