"""How well scores foresaw outcomes: pure functions, no I/O and no numerical libraries (the
services do not install them; `healthscore backtest` has its own, services/modelling/).

A sample is a score as it stood at some time, its stated probability of the objective's
outcome (None where the model states none), and whether the adverse case followed within the
horizon (the outcome, or for a favourable one its absence). A higher score is safer, so the
risk ranked is the score's reverse.

Intervals are 95%, with the effective sample the number of distinct accounts, not of samples:
one account judged at several cuts is not several independent accounts, and counting it so
would make the interval too narrow. ROC AUC's is Hanley and McNeil's (1982); Brier's the normal
approximation of a mean.

What a model expects of itself, before outcomes arrive (confidence-based performance
estimation, as NannyML's CBPE): if its probabilities are calibrated, an account of probability
p is adverse with probability p, so the expected Brier is the mean of p(1 - p), and the expected
ROC AUC is the share of (adverse, other) pairs, weighted by how likely each pair is to be one,
that the score orders rightly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

Z95 = 1.959964


@dataclass(frozen=True, slots=True)
class Sample:
    account_id: str
    score: float
    probability: float | None  # of the adverse case
    adverse: bool


def roc_auc(samples: Sequence[Sample]) -> float | None:
    """P(an adverse sample has the lower score), ties counting half; None without both
    kinds. By ranks: O(n log n)."""
    ordered = sorted(samples, key=lambda s: -s.score)  # the least risky first
    positives = sum(s.adverse for s in ordered)
    negatives = len(ordered) - positives
    if not positives or not negatives:
        return None
    rank_sum, rank = 0.0, 0
    for _, tied in groupby(ordered, key=lambda s: s.score):
        group = list(tied)
        middle = rank + (len(group) + 1) / 2  # the average rank of the tied group
        rank_sum += middle * sum(s.adverse for s in group)
        rank += len(group)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def auc_interval(auc: float, positives: int, negatives: int) -> tuple[float, float]:
    """Hanley and McNeil's 95% interval of an ROC AUC from `positives` and `negatives`."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    ) / (positives * negatives)
    half = Z95 * math.sqrt(max(variance, 0.0))
    return max(auc - half, 0.0), min(auc + half, 1.0)


def brier(samples: Sequence[Sample]) -> tuple[float, float, float] | None:
    """The mean squared error of the stated probability, with its interval; None if no sample
    states one."""
    errors = [(s.probability - s.adverse) ** 2 for s in samples if s.probability is not None]
    if not errors:
        return None
    mean = sum(errors) / len(errors)
    accounts = len({s.account_id for s in samples if s.probability is not None})
    spread = math.sqrt(sum((e - mean) ** 2 for e in errors) / max(len(errors) - 1, 1))
    half = Z95 * spread / math.sqrt(accounts)
    return mean, max(mean - half, 0.0), min(mean + half, 1.0)


def reliability(samples: Sequence[Sample], bins: int = 10) -> list[dict[str, float]]:
    """Stated against observed, by tenths of the probability: each non-empty bin's mean
    probability, its rate of the adverse case and its samples."""
    binned: dict[int, list[Sample]] = {}
    for s in samples:
        if s.probability is not None:
            binned.setdefault(min(int(s.probability * bins), bins - 1), []).append(s)
    return [
        {
            "predicted": round(sum(s.probability or 0.0 for s in group) / len(group), 4),
            "observed": round(sum(s.adverse for s in group) / len(group), 4),
            "samples": len(group),
        }
        for _, group in sorted(binned.items())
    ]


def expected_roc_auc(groups: Sequence[tuple[float, float, float, float]]) -> float | None:
    """The ROC AUC that scores and calibrated probabilities of the adverse case imply: over
    ordered pairs of accounts (i, j), i != j, the sum of p_i (1 - p_j) where i's score is the
    lower (half where equal), over the sum of p_i (1 - p_j). `groups`: the accounts of each
    score, as (score, sum of p, sum of 1 - p, sum of p (1 - p))."""
    total_p = sum(g[1] for g in groups)
    total_q = sum(g[2] for g in groups)
    pairs = total_p * total_q - sum(g[3] for g in groups)  # less each account with itself
    if pairs <= 1e-12:
        return None
    right, safer_q = 0.0, 0.0  # safer_q: the sum of 1 - p above the score at hand
    for _, p, q, pq in sorted(groups, key=lambda g: -g[0]):
        right += p * safer_q + (p * q - pq) / 2
        safer_q += q
    return right / pairs
