"""Fit an objective's weights from churn outcomes; write the result as a new model file.

The features are the objective's factor sub-scores (0-100, as the input model computes them,
segment transforms included) at each as-of time; the label is churn within the horizon. An
L2-regularised logistic regression on the training split (as-of before `test_from`) gives one
coefficient per factor; a factor that protects against churn has a negative coefficient, and its
new weight is that coefficient's size. A factor the data says is counter-indicative or
irrelevant gets weight 0 (refitting without it, so the rest are not distorted by it): the
weighted-mean score then ranks accounts as the fitted regression does whenever all factors
have data. Factors without data at a sample are imputed with the training mean, the regression's
counterpart of the score leaving them out.

Segments with enough training data (and churners) get weights of their own; the others fall
back to the fitted base weights. Transforms, bands and caps are kept from the input model.
"""

from __future__ import annotations

import copy
import textwrap
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml
from sklearn.linear_model import LogisticRegression

from services.modelling.backtest import DAY, Sample, collect, iso, measure
from shared.history import History
from shared.scoring.model import Model

WEIGHT_SCALE = 20.0  # fitted factor weights are scaled to sum to this (readable numbers)


@dataclass
class Fit:
    weights: dict[str, float]
    samples: int
    churned: int
    dropped: list[str] = field(default_factory=list)
    coefficients: dict[str, float] = field(default_factory=dict)


def fit_weights(
    samples: list[Sample], objective: str, factors: list[str], *, c: float = 1.0
) -> Fit | None:
    """Non-negative factor weights for `objective` from `samples`; None without both classes."""
    rows = [s for s in samples if s.scores.get(objective) is not None]
    y = np.array([s.churned for s in rows], dtype=bool)
    if len(rows) == 0 or y.all() or not y.any():
        return None
    x = np.array(
        [[_nan(s.sub_scores[objective].get(f)) for f in factors] for s in rows], dtype=float
    )
    means = np.array(
        [np.nanmean(col) if not np.isnan(col).all() else np.nan for col in x.T], dtype=float
    )
    keep = [i for i, m in enumerate(means) if not np.isnan(m)]
    x = np.where(np.isnan(x), means, x) / 100.0
    dropped = [factors[i] for i in range(len(factors)) if i not in keep]
    coefficients: dict[str, float] = {}
    while keep:
        regression = LogisticRegression(C=c, max_iter=2000)
        regression.fit(x[:, keep], y)
        beta = regression.coef_[0]
        coefficients = {factors[i]: round(float(b), 4) for i, b in zip(keep, beta, strict=True)}
        wrong = [i for i, b in zip(keep, beta, strict=True) if b >= 0]
        if not wrong:
            break
        dropped += [factors[i] for i in wrong]
        keep = [i for i in keep if i not in wrong]
    total = sum(-coefficients[factors[i]] for i in keep)
    weights = {f: 0.0 for f in factors}
    for i in keep:
        weights[factors[i]] = round(-coefficients[factors[i]] / total * WEIGHT_SCALE, 2)
    return Fit(weights, len(rows), int(y.sum()), sorted(dropped), coefficients)


def _nan(value: float | None) -> float:
    return np.nan if value is None else value


def objective_weights(model: Model, fit: Fit) -> dict[str, dict[str, float]]:
    """`groups` and `factors` for a model file such that every factor's effective weight is
    proportional to its fitted weight (the engine splits a group's weight over its factors)."""
    per_group: dict[str, float] = {}
    for name, weight in fit.weights.items():
        group = model.factors[name].group
        per_group[group] = per_group.get(group, 0.0) + weight
    total = sum(per_group.values()) or 1.0
    return {
        "groups": {g: round(w / total, 4) for g, w in sorted(per_group.items())},
        "factors": dict(fit.weights),
    }


@dataclass
class FittedModel:
    document: dict[str, Any]
    base: Fit
    segments: dict[str, Fit | None]


def fit_model(
    model: Model,
    document: dict[str, Any],
    train: list[Sample],
    *,
    objective: str,
    name: str,
    c: float = 1.0,
    min_segment_samples: int = 500,
    min_segment_churned: int = 30,
) -> FittedModel:
    """A copy of the model `document` with `objective`'s weights fitted on `train`."""
    factors = list(model.objectives[objective].factors)
    base = fit_weights(train, objective, factors, c=c)
    if base is None:
        raise ValueError("the training split needs both churned and retained accounts")
    doc = copy.deepcopy(document)
    doc["name"] = name
    doc["objectives"][objective].update(objective_weights(model, base))
    fits: dict[str, Fit | None] = {}
    for segment in doc.get("segments", []):
        members = [s for s in train if s.segment == segment["name"]]
        churned = sum(s.churned for s in members)
        fit = None
        if len(members) >= min_segment_samples and churned >= min_segment_churned:
            fit = fit_weights(members, objective, factors, c=c)
        fits[segment["name"]] = fit
        overrides = segment.setdefault("objectives", {})
        if fit is None:
            overrides.pop(objective, None)  # too little data: the fitted base weights apply
        else:
            overrides[objective] = objective_weights(model, fit)
        if not overrides:
            segment.pop("objectives")
    return FittedModel(doc, base, fits)


def compare(
    history: History,
    churn_at: dict[str, float],
    model: Model,
    document: dict[str, Any],
    *,
    as_of: list[float],
    horizon_days: float,
    test_from: float,
    objective: str,
    name: str,
    c: float = 1.0,
    min_segment_samples: int = 500,
) -> tuple[FittedModel, Model, dict[str, Any]]:
    """Fit on the as-of times before `test_from`; score the later ones with both models."""
    horizon = horizon_days * DAY
    samples = collect(history, churn_at, model, as_of, horizon)
    train = [s for s in samples if s.as_of < test_from]
    test = [s for s in samples if s.as_of >= test_from]
    if not train or not test:
        raise ValueError("test_from must leave as-of times on both sides")
    fitted = fit_model(
        model,
        document,
        train,
        objective=objective,
        name=name,
        c=c,
        min_segment_samples=min_segment_samples,
    )
    candidate = Model.model_validate(fitted.document)
    test_cuts = sorted({s.as_of for s in test})
    candidate_test = collect(history, churn_at, candidate, test_cuts, horizon)
    order = [b.name for b in model.objectives[objective].bands]

    def auc(chosen: list[Sample]) -> float | None:
        metrics = measure(chosen, objective, order)
        return None if metrics is None or metrics.roc_auc is None else round(metrics.roc_auc, 4)

    figures = {
        "objective": objective,
        "input_model": model.version,
        "fitted_model": candidate.version,
        "train": {
            "as_of_before": iso(test_from),
            "samples": len(train),
            "churned": sum(s.churned for s in train),
        },
        "test": {"samples": len(test), "churned": sum(s.churned for s in test)},
        "auc_input_test": auc(test),
        "auc_fitted_test": auc(candidate_test),
        "auc_input_train": auc(train),
        "regularisation_c": c,
        "base": {"weights": fitted.base.weights, "dropped": fitted.base.dropped},
        "segments": {
            segment: {"samples": fit.samples, "churned": fit.churned, "dropped": fit.dropped}
            if fit
            else "too little data: base weights"
            for segment, fit in fitted.segments.items()
        },
    }
    return fitted, candidate, figures


def dump_model(document: dict[str, Any], figures: dict[str, Any], source: str) -> str:
    """The fitted model as YAML, headed by a comment block with how it was fitted."""
    header = [
        f"Fitted by `healthscore fit` from {figures['input_model']} ({source}).",
        f"Objective {figures['objective']}: weights from an L2-regularised logistic regression "
        f"(C={figures['regularisation_c']}) of churn within the horizon on factor sub-scores.",
        f"Train: as-of before {figures['train']['as_of_before']}, "
        f"{figures['train']['samples']} samples, {figures['train']['churned']} churned.",
        f"Test: {figures['test']['samples']} samples, {figures['test']['churned']} churned; "
        f"ROC AUC {figures['auc_input_test']} (input model) -> {figures['auc_fitted_test']} "
        "(this model).",
        f"Factors given weight 0 by the data: {', '.join(figures['base']['dropped']) or 'none'}.",
        "Segments: "
        + "; ".join(
            f"{name}: {fit if isinstance(fit, str) else 'fitted on ' + str(fit['samples'])}"
            for name, fit in figures["segments"].items()
        ),
        "Transforms, bands and caps are the input model's. Review before deploying; deploy as "
        "a shadow model first.",
    ]
    comment = "\n".join("# " + wrapped for line in header for wrapped in textwrap.wrap(line, 96))
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=100)
    return f"{comment}\n{body}"
