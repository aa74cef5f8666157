"""How well a score ranks and predicts churn: pure functions over arrays, no I/O.

A health score is higher-is-safer, so the churn *risk* ranked here is `100 - score`. Every
figure is computed on one population (accounts at an as-of time, not yet churned, labelled by
whether they churn within the horizon after it):

- ROC AUC and PR AUC (average precision) of the risk;
- churn rate and lift by risk decile (decile 1 = the riskiest tenth); tied scores stay in one
  decile, so a score with few distinct values shows empty deciles and a warning instead of a
  lift that only the order of ties made;
- churn rate per band;
- the Brier score of a calibrated churn probability: an unregularised logistic (Platt) fit of
  the outcome on the score, so that it does not depend on the score's range, cross-validated
  so that no account's probability comes from a fit that saw it, next to the Brier score of
  always predicting the base rate (skill > 0 = better than that);
- with the account of every sample, 95% bootstrap intervals of ROC AUC and Brier: accounts
  are resampled, since one account's samples at several as-of times are not independent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import rankdata
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold

DECILES = 10


@dataclass
class ScoreMetrics:
    n: int
    churned: int
    churn_rate: float
    roc_auc: float | None
    pr_auc: float | None
    brier: float | None
    brier_base_rate: float | None
    deciles: list[dict[str, Any]] = field(default_factory=list)
    bands: list[dict[str, Any]] = field(default_factory=list)
    calibration: list[dict[str, float]] = field(default_factory=list)
    roc_curve: list[tuple[float, float]] = field(default_factory=list)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    histogram: list[int] = field(default_factory=list)  # samples per 5 points of score

    @property
    def brier_skill(self) -> float | None:
        if self.brier is None or not self.brier_base_rate:
            return None
        return 1 - self.brier / self.brier_base_rate

    def headline(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "churned": self.churned,
            "churn_rate": _r(self.churn_rate),
            "roc_auc": _r(self.roc_auc),
            "pr_auc": _r(self.pr_auc),
            "brier": _r(self.brier),
            "brier_skill": _r(self.brier_skill),
            "top_decile_lift": self.deciles[0]["lift"] if self.deciles else None,
            **{f"{name}_ci95": [_r(lo), _r(hi)] for name, (lo, hi) in self.intervals.items()},
            **({"warnings": self.warnings} if self.warnings else {}),
        }


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


def score_metrics(
    scores: NDArray[np.float64],
    churned: NDArray[np.bool_],
    bands: list[str] | None = None,
    band_order: list[str] | None = None,
    *,
    groups: NDArray[np.int64] | None = None,
    seed: int = 0,
) -> ScoreMetrics:
    """All figures for one population. `scores` are 0-100, higher = safer; `groups` numbers
    the account of each sample (for the bootstrap intervals)."""
    scores = np.asarray(scores, dtype=float)
    churned = np.asarray(churned, dtype=bool)
    n, positives = len(scores), int(churned.sum())
    rate = positives / n if n else 0.0
    both = 0 < positives < n
    risk = 100.0 - scores
    metrics = ScoreMetrics(
        n=n,
        churned=positives,
        churn_rate=rate,
        roc_auc=float(roc_auc_score(churned, risk)) if both else None,
        pr_auc=float(average_precision_score(churned, risk)) if both else None,
        brier=None,
        brier_base_rate=rate * (1 - rate) if n else None,
        deciles=deciles(scores, churned),
        bands=band_rates(bands, churned, band_order) if bands is not None else [],
    )
    metrics.histogram = np.histogram(scores, bins=20, range=(0, 100))[0].tolist()
    if metrics.deciles and any(d["n"] == 0 for d in metrics.deciles):
        distinct = len(np.unique(scores))
        metrics.warnings.append(
            f"only {distinct} distinct scores: tied scores share a decile, some deciles are empty"
        )
    if both:
        from sklearn.metrics import roc_curve

        fpr, tpr, _ = roc_curve(churned, risk)
        metrics.roc_curve = list(zip(fpr.round(4).tolist(), tpr.round(4).tolist(), strict=True))
        folds = min(5, positives, n - positives)
        if folds >= 2:
            probability = calibrated_probability(scores, churned, folds, seed)
            metrics.brier = float(brier_score_loss(churned, probability))
            observed, predicted = calibration_curve(
                churned, probability, n_bins=10, strategy="quantile"
            )
            metrics.calibration = [
                {"predicted": round(float(p), 4), "observed": round(float(o), 4)}
                for p, o in zip(predicted, observed, strict=True)
            ]
            if groups is not None:
                metrics.intervals = bootstrap_intervals(risk, churned, probability, groups, seed)
    return metrics


def bootstrap_intervals(
    risk: NDArray[np.float64],
    churned: NDArray[np.bool_],
    probability: NDArray[np.float64],
    groups: NDArray[np.int64],
    seed: int = 0,
    reps: int = 200,
) -> dict[str, tuple[float, float]]:
    """95% intervals of ROC AUC and Brier, resampling accounts (each drawn account counts with
    all its samples, as often as it was drawn). The AUC of a resample is the weighted
    Mann-Whitney statistic over one sort of the risk: ~0.1 ms a resample, not a refit."""
    auc = _ResampledAuc(risk, churned)
    squared = (probability - churned) ** 2
    aucs, briers = [], []
    for w in _account_weights(groups, seed, reps):
        value = auc(w)
        if value is None:
            continue
        aucs.append(value)
        briers.append(float((w * squared).sum() / w.sum()))
    if len(aucs) < reps // 2:
        return {}
    return {"roc_auc": _interval(aucs), "brier": _interval(briers)}


def auc_difference(
    risk: NDArray[np.float64],
    other: NDArray[np.float64],
    churned: NDArray[np.bool_],
    groups: NDArray[np.int64],
    seed: int = 0,
    reps: int = 400,
) -> tuple[float, tuple[float, float]] | None:
    """ROC AUC of `other` minus that of `risk` on the same samples, and its 95% interval from
    resampling accounts, the same accounts for both: a paired comparison, much tighter than two
    models' intervals side by side, since most of each resample's luck is shared. None without
    both outcomes."""
    first, second = _ResampledAuc(risk, churned), _ResampledAuc(other, churned)
    everyone = np.ones(len(churned))
    a, b = first(everyone), second(everyone)
    if a is None or b is None:
        return None
    differences = []
    for w in _account_weights(groups, seed, reps):
        x, y = first(w), second(w)
        if x is not None and y is not None:
            differences.append(y - x)
    if len(differences) < reps // 2:
        return None
    return b - a, _interval(differences)


class _ResampledAuc:
    """The ROC AUC of a risk under sample weights: the weighted Mann-Whitney statistic over
    one sort of the risk, ties counted half."""

    def __init__(self, risk: NDArray[np.float64], churned: NDArray[np.bool_]) -> None:
        self.order = np.argsort(risk, kind="stable")
        self.tie = np.unique(risk[self.order], return_inverse=True)[1]
        self.positive = churned[self.order].astype(float)

    def __call__(self, weights: NDArray[np.float64]) -> float | None:
        w = weights[self.order]
        pos = np.bincount(self.tie, w * self.positive)
        neg = np.bincount(self.tie, w) - pos
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:
            return None
        below = np.cumsum(neg) - neg
        return float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))


def _account_weights(
    groups: NDArray[np.int64], seed: int, reps: int
) -> Iterator[NDArray[np.float64]]:
    """Per sample, how often its account was drawn, for each of `reps` resamples."""
    rng = np.random.default_rng(seed)
    ids, index = np.unique(groups, return_inverse=True)
    for _ in range(reps):
        drawn = np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids))
        yield drawn[index].astype(float)


def _interval(values: list[float]) -> tuple[float, float]:
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def calibrated_probability(
    scores: NDArray[np.float64], churned: NDArray[np.bool_], folds: int, seed: int = 0
) -> NDArray[np.float64]:
    """P(churn | score) by Platt scaling, each account's from a fit on the other folds."""
    x = np.asarray(scores, dtype=float) / 100.0
    y = np.asarray(churned, dtype=bool)
    predicted = np.empty(len(x))
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in split.split(x.reshape(-1, 1), y):
        intercept, slope = _logistic(x[train], y[train])
        predicted[test] = _sigmoid(intercept + slope * x[test])
    return predicted


def platt(scores: NDArray[np.float64], churned: NDArray[np.bool_]) -> tuple[float, float]:
    """(intercept, slope per 100 points): the unregularised logistic fit of the outcome on
    the score that a model's calibration stores."""
    return _logistic(np.asarray(scores, dtype=float) / 100.0, np.asarray(churned, dtype=bool))


def _sigmoid(z: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=float)


def _logistic(
    x: NDArray[np.float64], y: NDArray[np.bool_], iterations: int = 100
) -> tuple[float, float]:
    """(intercept, slope) of the unregularised maximum-likelihood logistic fit of y on one
    feature, by Newton's method on the two parameters (milliseconds on a million samples,
    where a general solver takes a second). Where the classes are separable the likelihood
    has no maximum; the steps are then stopped once the fit predicts to 1e-9."""
    target = y.astype(float)
    rate = float(np.clip(target.mean(), 1e-9, 1 - 1e-9))
    beta = np.array([np.log(rate / (1 - rate)), 0.0])
    design = np.column_stack([np.ones_like(x), x])
    for _ in range(iterations):
        p = _sigmoid(design @ beta)
        w = p * (1 - p)
        if w.max() < 1e-9:
            break
        gradient = design.T @ (target - p)
        hessian = (design * w[:, None]).T @ design
        try:
            step = np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:
            break
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    return float(beta[0]), float(beta[1])


def reliability(probability: NDArray[np.float64], churned: NDArray[np.bool_]) -> dict[str, Any]:
    """How well stated probabilities hold: Brier score, its skill over the base rate, and the
    observed rate per tenth of the predictions."""
    rate = float(churned.mean()) if len(churned) else 0.0
    brier = float(brier_score_loss(churned, probability))
    base = rate * (1 - rate)
    observed, predicted = calibration_curve(churned, probability, n_bins=10, strategy="quantile")
    return {
        "brier": round(brier, 4),
        "brier_skill": round(1 - brier / base, 4) if base else None,
        "bins": [
            {"predicted": round(float(p), 4), "observed": round(float(o), 4)}
            for p, o in zip(predicted, observed, strict=True)
        ],
    }


def brier_interval(
    probability: NDArray[np.float64],
    happened: NDArray[np.bool_],
    groups: NDArray[np.int64],
    seed: int = 0,
    reps: int = 200,
) -> tuple[float, float]:
    """The 95% interval of the Brier score of stated probabilities, resampling accounts."""
    rng = np.random.default_rng(seed)
    ids, index = np.unique(groups, return_inverse=True)
    squared = (np.asarray(probability, dtype=float) - happened) ** 2
    briers = []
    for _ in range(reps):
        w = np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids))[index]
        briers.append(float((w * squared).sum() / w.sum()))
    return float(np.percentile(briers, 2.5)), float(np.percentile(briers, 97.5))


def deciles(scores: NDArray[np.float64], churned: NDArray[np.bool_]) -> list[dict[str, Any]]:
    """Churn rate and lift per tenth of the population, riskiest (lowest score) first. Tied
    scores go to one decile, the one their average rank falls in."""
    n = len(scores)
    if n < DECILES:
        return []
    ranks = rankdata(scores, method="average")  # 1..n, ties averaged
    decile_of = np.minimum(((ranks - 0.5) * DECILES / n).astype(int), DECILES - 1)
    rate = churned.mean()
    rows = []
    for i in range(DECILES):
        part = decile_of == i
        count = int(part.sum())
        part_rate = float(churned[part].mean()) if count else None
        rows.append(
            {
                "decile": i + 1,
                "n": count,
                "churned": int(churned[part].sum()),
                "churn_rate": None if part_rate is None else round(part_rate, 4),
                "lift": round(part_rate / rate, 3) if rate and part_rate is not None else None,
                "score_min": round(float(scores[part].min()), 2) if count else None,
                "score_max": round(float(scores[part].max()), 2) if count else None,
            }
        )
    return rows


def band_rates(
    bands: list[str], churned: NDArray[np.bool_], order: list[str] | None = None
) -> list[dict[str, Any]]:
    """Accounts, churners and churn rate per band, in `order` (lowest band first)."""
    names = order or sorted(set(bands))
    labels = np.asarray(bands)
    rows = []
    for name in names:
        mask = labels == name
        count = int(mask.sum())
        rows.append(
            {
                "band": name,
                "n": count,
                "churned": int(churned[mask].sum()),
                "churn_rate": round(float(churned[mask].mean()), 4) if count else None,
            }
        )
    return rows
