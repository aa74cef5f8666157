"""Fit an objective's shapes and weights from outcomes; write the result as a new model file.

Shapes first (unless told to keep the input model's): for every factor of the objective, the
training samples' raw values are cut at their quantiles (up to `SHAPE_BINS` bins of at least
`SHAPE_MIN_BIN` samples), the share of good outcomes per bin is made monotone by isotonic
regression (rising or falling, whichever fits better), and the result, stretched to 0-100,
becomes the objective's own piecewise-linear transform of that factor: its points are where the
data put them, so thresholds move. A factor whose bins all say the same keeps its transform. A
cap on a reshaped factor keeps its meaning in raw terms: its `below` moves to the new sub-score
of the raw value where the old cap stopped applying.

The features are then the objective's factor sub-scores (0-100, under those shapes, segment
transforms included where the objective has none of its own) at each as-of time; the label is
the adverse outcome within the horizon (churn, or a favourable outcome not happening). The
split is by account and by time: the test accounts (a stable share, by a digest of their id) are
never trained on, and training uses only as-of times whose horizon has closed by `test_from`, so
no training label looks into the test period. An L2-regularised logistic regression on the
training split gives one coefficient per factor; a factor that protects against churn has a
negative coefficient, and its new weight is that coefficient's size. A factor the data says is
counter-indicative or irrelevant gets weight 0 (refitting without it, so the rest are not
distorted by it): the weighted-mean score then ranks accounts as the fitted regression does
whenever all factors have data. Factors without data at a sample are imputed with the training
mean, the regression's counterpart of the score leaving them out.

Segments with enough training data (and churners) get weights of their own; the others fall back
to the fitted base weights. Bands are kept from the input model.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray
from sklearn.exceptions import ConvergenceWarning
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from services.modelling.backtest import DAY, Sample, collect, iso, measure, recency_baseline
from services.modelling.metrics import ScoreMetrics, auc_difference, platt, reliability
from services.modelling.replay import Outcomes
from shared.event_files import EventLog
from shared.outcomes import FAVOURABLE
from shared.scoring.model import Model, Piecewise

WEIGHT_SCALE = 20.0  # fitted factor weights are scaled to sum to this (readable numbers)
SHAPE_BINS = 8
SHAPE_MIN_BIN = 100  # training samples a bin of a learned shape needs at least
# adverse outcomes a fitted factor needs at least, the usual rule for a logistic regression
# (Peduzzi et al., 1996): with fewer, the weights say more about the regularisation
EVENTS_PER_FACTOR = 10
# how far the training split's base rate may be from the test's (a ratio either way)
BASE_RATE_RATIO = 2.0


@contextlib.contextmanager
def speaking_for_libraries(doing: str, notes: list[str]) -> Iterator[None]:
    """The warnings of the libraries the fit uses while `doing`, said in `notes` in the fit's
    own words (once each), instead of reaching the terminal raw."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for heard in caught:
        note = f"{doing}: {_plainly(heard)}"
        if note not in notes:
            notes.append(note)


def _plainly(heard: warnings.WarningMessage) -> str:
    text = str(heard.message)
    if "Spearman correlation" in text:  # IsotonicRegression(increasing="auto")
        return (
            "the data do not say clearly whether the outcome rises or falls with it, so the "
            "direction of its learned shape may be chance"
        )
    if issubclass(heard.category, ConvergenceWarning):
        return "the regression did not converge; its weights are approximate"
    return f"{heard.category.__name__}: {' '.join(text.split())}"


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
    y = np.array([s.adverse for s in rows], dtype=bool)
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


def learn_shape(
    raw: NDArray[np.float64],
    adverse: NDArray[np.bool_],
    *,
    bins: int = SHAPE_BINS,
    min_bin: int = SHAPE_MIN_BIN,
) -> Piecewise | None:
    """A monotone piecewise-linear transform of a factor's raw value to a 0-100 sub-score
    from samples (NaN: no value): the share of good outcomes per quantile bin, made monotone
    by isotonic regression and stretched to 0-100, at each bin's mean raw value. None when
    there is too little data or every bin says the same."""
    known = ~np.isnan(raw)
    x, good = raw[known], ~adverse[known]
    count = min(bins, len(x) // min_bin)
    if count < 2 or good.all() or not good.any():
        return None
    edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, count + 1)))
    which = np.searchsorted(edges[1:-1], x, side="right")
    sizes = np.bincount(which, minlength=len(edges) - 1)
    used = sizes > 0
    means = (np.bincount(which, x, minlength=len(sizes)) / np.maximum(sizes, 1))[used]
    rates = (np.bincount(which, good, minlength=len(sizes)) / np.maximum(sizes, 1))[used]
    if len(means) < 2:
        return None
    monotone = IsotonicRegression(increasing="auto").fit(means, rates, sample_weight=sizes[used])
    fitted = monotone.predict(means)
    low, high = float(fitted.min()), float(fitted.max())
    if high - low < 1e-3:
        return None
    subs = np.round(100.0 * (fitted - low) / (high - low), 1)
    points: list[tuple[float, float]] = []
    for i, (mean, sub) in enumerate(zip(means.tolist(), subs.tolist(), strict=True)):
        inner = 0 < i < len(subs) - 1
        if inner and subs[i - 1] == sub == subs[i + 1]:
            continue  # the middle of a plateau adds nothing
        at = float(f"{mean:.6g}")
        if points and at <= points[-1][0]:
            continue
        points.append((at, sub))
    return Piecewise(piecewise=points) if len(points) >= 2 else None


def learn_shapes(
    samples: list[Sample],
    model: Model,
    objective: str,
    factors: list[str],
    notes: list[str] | None = None,
) -> dict[str, Piecewise]:
    """factor -> its learned shape, for the factors the data shapes (csm_sentiment, a
    person's judgement, keeps its own); what the libraries said of each, in `notes`."""
    adverse = np.array([s.adverse for s in samples], dtype=bool)
    shapes = {}
    for name in factors:
        if model.factors[name].csm_sentiment:
            continue
        raw = np.array([_nan(s.raw.get(name)) for s in samples], dtype=float)
        with speaking_for_libraries(f"the shape of {name}", [] if notes is None else notes):
            shape = learn_shape(raw, adverse)
        if shape is not None:
            shapes[name] = shape
    return shapes


def reshaped(samples: list[Sample], objective: str, shapes: dict[str, Piecewise]) -> list[Sample]:
    """The samples with the sub-scores `shapes` give their raw values."""
    out = []
    for s in samples:
        subs = dict(s.sub_scores[objective])
        for name, shape in shapes.items():
            raw = s.raw.get(name)
            subs[name] = None if raw is None else shape(raw)
        out.append(dataclasses.replace(s, sub_scores={**s.sub_scores, objective: subs}))
    return out


def moved_cap(
    cap: dict[str, Any], old: Any, new: Piecewise, raw: NDArray[np.float64]
) -> dict[str, Any]:
    """`cap` with its `below` moved so that it applies to the same raw values under the new
    shape as under the old (as far as the training values tell); unchanged when no threshold
    on the new sub-score separates them."""
    values = np.unique(raw[~np.isnan(raw)])
    capped = np.array([old(v) < cap["below"] for v in values], dtype=bool)
    if capped.all() or not capped.any():
        return cap
    after = np.array([new(v) for v in values])
    highest, lowest = float(after[capped].max()), float(after[~capped].min())
    if highest >= lowest:
        return cap
    below = round((highest + lowest) / 2, 2)
    return {**cap, "below": below if highest < below <= lowest else (highest + lowest) / 2}


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
    shapes: dict[str, Piecewise] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the libraries said, in words


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
    shapes: bool = True,
) -> FittedModel:
    """A copy of the model `document` with `objective`'s shapes (unless `shapes` is off)
    and weights fitted on `train`."""
    spec = model.objectives[objective]
    factors = list(spec.factors)
    notes: list[str] = []
    learned = learn_shapes(train, model, objective, factors, notes) if shapes else {}
    if learned:
        train = reshaped(train, objective, learned)
    with speaking_for_libraries(f"the weights of {objective}", notes):
        base = fit_weights(train, objective, factors, c=c)
    if base is None:
        raise ValueError("the training split needs both churned and retained accounts")
    if not any(base.weights.values()):
        raise ValueError(
            f"every factor of {objective} got weight 0 ({', '.join(base.dropped)}): the data "
            "gives this model nothing to rank by; no model written"
        )
    doc = copy.deepcopy(document)
    doc["name"] = name
    target = doc["objectives"][objective]
    target.update(objective_weights(model, base))
    if learned:
        transforms = target.setdefault("transforms", {})
        for factor, shape in learned.items():
            transforms[factor] = {"piecewise": [list(point) for point in shape.piecewise]}
        target["caps"] = [
            moved_cap(
                cap,
                spec.transforms.get(cap["factor"], model.factors[cap["factor"]].transform),
                learned[cap["factor"]],
                np.array([_nan(s.raw.get(cap["factor"])) for s in train], dtype=float),
            )
            if cap["factor"] in learned
            else cap
            for cap in target.get("caps", [])
        ]
    fits: dict[str, Fit | None] = {}
    for segment in doc.get("segments", []):
        members = [s for s in train if s.segment == segment["name"]]
        churned = sum(s.adverse for s in members)
        fit = None
        if len(members) >= min_segment_samples and churned >= min_segment_churned:
            with speaking_for_libraries(f"the weights of segment {segment['name']}", notes):
                fit = fit_weights(members, objective, factors, c=c)
        fits[segment["name"]] = fit
        overrides = segment.setdefault("objectives", {})
        if fit is None:
            overrides.pop(objective, None)  # too little data: the fitted base weights apply
        else:
            overrides[objective] = objective_weights(model, fit)
        if not overrides:
            segment.pop("objectives")
    return FittedModel(doc, base, fits, learned, notes)


def calibrate(
    fitted: FittedModel,
    events: EventLog,
    outcomes: Outcomes,
    train: list[Sample],
    *,
    objective: str,
    horizon_days: float,
    outcome: str = "churn",
    parts: int = 1,
) -> Model:
    """Store in the fitted document the probability of the outcome within the horizon given
    the fitted model's own score, fitted on the training accounts' samples; the model it makes."""
    horizon = horizon_days * DAY
    accounts = {s.account_id for s in train}
    scored = [
        (score, s.happened(outcome))
        for s in collect(
            events,
            outcomes,
            Model.model_validate(fitted.document),
            sorted({s.as_of for s in train}),
            horizon,
            outcome,
            parts,
        )
        if s.account_id in accounts and (score := s.scores.get(objective)) is not None
    ]
    intercept, slope = platt(
        np.array([score for score, _ in scored]), np.array([c for _, c in scored], dtype=bool)
    )
    fitted.document["objectives"][objective]["calibration"] = {
        "horizon_days": horizon_days,
        "outcome": outcome,
        "intercept": round(intercept, 6),
        "slope": round(slope, 6),
        "fitted": f"Platt scaling on {len(scored)} training samples of {len(accounts)} accounts",
    }
    return Model.model_validate(fitted.document)


def held_out(account_id: str, share: float) -> bool:
    """Whether an account belongs to the test accounts: a stable digest of its id, so the same
    accounts are held out on every run."""
    digest = hashlib.sha256(account_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def split_samples(
    samples: list[Sample], test_from: float, horizon: float, test_share: float
) -> tuple[list[Sample], list[Sample]]:
    """Train and test with no account in both and no training label that looks past the first
    test as-of: training samples are the other accounts' as-of times whose horizon closes by
    `test_from`; test samples the held-out accounts' as-of times from `test_from` on."""
    train = [
        s
        for s in samples
        if not held_out(s.account_id, test_share) and s.as_of + horizon <= test_from
    ]
    test = [s for s in samples if held_out(s.account_id, test_share) and s.as_of >= test_from]
    return train, test


def _figures(metrics: ScoreMetrics | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    headline = metrics.headline()
    keys = ("n", "churned", "roc_auc", "roc_auc_ci95", "brier", "brier_ci95", "brier_skill")
    return {k: headline.get(k) for k in keys}


def compare(
    events: EventLog,
    outcomes: Outcomes,
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
    test_share: float = 0.3,
    outcome: str = "churn",
    shapes: bool = True,
    parts: int = 1,
) -> tuple[FittedModel, Model, dict[str, Any]]:
    """Fit on the training accounts' as-of times whose outcomes are known by `test_from`;
    judge the input model, the fitted one and the recency baseline on the held-out accounts
    from `test_from` on. Refuses (ValueError) to return a model that drops every factor or
    scores no one."""
    horizon = horizon_days * DAY
    samples = collect(events, outcomes, model, as_of, horizon, outcome, parts, factors=True)
    train, test = split_samples(samples, test_from, horizon, test_share)
    if not train or not test:
        raise ValueError(
            "the split leaves no samples on one side: training needs as-of times whose horizon "
            "ends by --test-from, testing needs as-of times from it on"
        )
    fitted = fit_model(
        model,
        document,
        train,
        objective=objective,
        name=name,
        c=c,
        min_segment_samples=min_segment_samples,
        shapes=shapes,
    )
    candidate = calibrate(
        fitted,
        events,
        outcomes,
        train,
        objective=objective,
        horizon_days=horizon_days,
        outcome=outcome,
        parts=parts,
    )
    test_cuts = sorted({s.as_of for s in test})
    tested = {s.account_id for s in test}
    candidate_test = [
        s
        for s in collect(events, outcomes, candidate, test_cuts, horizon, outcome, parts)
        if s.account_id in tested
    ]
    if not any(s.scores.get(objective) is not None for s in candidate_test):
        raise ValueError(f"the fitted model scores no held-out account on {objective}")
    order = [b.name for b in model.objectives[objective].bands]
    input_test = measure(test, objective, order, intervals=True)
    fitted_test = measure(candidate_test, objective, order, intervals=True)
    calibration = candidate.objectives[objective].calibration
    assert calibration is not None
    stated = [
        (calibration.probability(score), s.happened(outcome))
        for s in candidate_test
        if (score := s.scores.get(objective)) is not None
    ]

    def auc(metrics: ScoreMetrics | None) -> float | None:
        return None if metrics is None or metrics.roc_auc is None else round(metrics.roc_auc, 4)

    figures: dict[str, Any] = {
        "objective": objective,
        "outcome": outcome,
        "input_model": model.version,
        "fitted_model": candidate.version,
        "split": (
            f"by account and time: {round(test_share * 100)}% of accounts held out; training "
            f"as-of times whose {horizon_days:g}-day horizon ends by {iso(test_from)}, test "
            "as-of times from then on"
        ),
        "train": {
            "as_of_before": iso(test_from - horizon),
            "samples": len(train),
            "accounts": len({s.account_id for s in train}),
            "adverse": sum(s.adverse for s in train),
        },
        "test": {
            "as_of_from": iso(test_from),
            "samples": len(test),
            "accounts": len(tested),
            "adverse": sum(s.adverse for s in test),
            "input": _figures(input_test),
            "fitted": _figures(fitted_test),
            "baseline_recency": _figures(recency_baseline(test)),
            # the probabilities the fitted model itself states, judged on accounts it never saw
            "calibration": reliability(
                np.array([p for p, _ in stated]), np.array([c for _, c in stated], dtype=bool)
            ),
        },
        "auc_input_test": auc(input_test),
        "auc_fitted_test": auc(fitted_test),
        "auc_input_train": auc(measure(train, objective, order)),
        "regularisation_c": c,
        "base": {"weights": fitted.base.weights, "dropped": fitted.base.dropped},
        "shapes": {
            name: [list(point) for point in shape.piecewise]
            for name, shape in fitted.shapes.items()
        },
        "segments": {
            segment: {"samples": fit.samples, "churned": fit.churned, "dropped": fit.dropped}
            if fit
            else "too little data: base weights"
            for segment, fit in fitted.segments.items()
        },
    }
    figures["recommendation"] = recommend(test, candidate_test, objective)
    skill = (figures["test"]["calibration"] or {}).get("brier_skill")
    factors = len(model.objectives[objective].factors)
    figures["warnings"] = [*fitted.notes, *split_warnings(train, test, factors, outcome, skill)]
    return fitted, candidate, figures


def recommend(
    input_test: list[Sample], fitted_test: list[Sample], objective: str
) -> dict[str, Any]:
    """Which model to use: the fitted one only when it ranks the held-out samples that both
    score better than the input model, by a paired bootstrap interval that excludes no
    difference (accounts resampled)."""
    fitted = {(s.account_id, s.as_of): s.scores.get(objective) for s in fitted_test}
    pairs = [
        (s, other)
        for s in input_test
        if s.scores.get(objective) is not None
        and (other := fitted.get((s.account_id, s.as_of))) is not None
    ]
    measured = (
        auc_difference(
            np.array([100.0 - (s.scores[objective] or 0.0) for s, _ in pairs]),
            np.array([100.0 - other for _, other in pairs]),
            np.array([s.adverse for s, _ in pairs], dtype=bool),
            np.unique([s.account_id for s, _ in pairs], return_inverse=True)[1],
        )
        if pairs
        else None
    )
    if measured is None:
        return {
            "use": "input",
            "because": "the held-out samples both models score do not have both outcomes: "
            "nothing shows that the fitted model is better",
            "roc_auc_difference": None,
            "roc_auc_difference_ci95": None,
        }
    difference, (low, high) = measured
    said = f"ROC AUC {difference:+.3f} [{low:+.3f}, {high:+.3f}] against the input model's"
    if low > 0:
        use, because = "fitted", f"it ranks the held-out accounts better: {said}"
    elif high < 0:
        use, because = "input", f"the fitted model ranks the held-out accounts worse: {said}"
    else:
        use = "input"
        because = f"the fitted model is not shown to rank the held-out accounts better: {said}"
    return {
        "use": use,
        "because": f"{because}, on {len(pairs)} samples",
        "roc_auc_difference": round(difference, 4),
        "roc_auc_difference_ci95": [round(low, 4), round(high, 4)],
    }


def split_warnings(
    train: list[Sample], test: list[Sample], factors: int, outcome: str, skill: float | None
) -> list[str]:
    """What makes the fit's figures less than they seem: too few adverse outcomes to fit
    this many factors, a training base rate far from the test's, stated probabilities worse
    than the base rate."""
    said = []
    adverse = sum(s.adverse for s in train)
    if adverse < EVENTS_PER_FACTOR * factors:
        said.append(
            f"only {adverse} of the training split's {len(train)} samples saw "
            f"{_adverse(outcome)} within the horizon, fewer than {EVENTS_PER_FACTOR} for each "
            f"of the {factors} factors fitted: the weights say more about the regularisation "
            "than about the data"
        )
    rates = adverse / len(train), sum(s.adverse for s in test) / len(test)
    if max(rates) > 0 and min(rates) * BASE_RATE_RATIO < max(rates):
        said.append(
            f"the training split's base rate ({rates[0]:.1%}) is far from the test's "
            f"({rates[1]:.1%}): what is learned on one will not hold on the other; the split "
            "cuts across a change in the data, so choose --as-of and --test-from for both "
            "sides to see the same kind of period"
        )
    if skill is not None and skill < 0:
        said.append(
            "the probabilities it states are worse on the held-out accounts than stating "
            f"their base rate to all (Brier skill {skill:.2f}): do not read them as "
            "probabilities"
        )
    return said


def dump_model(document: dict[str, Any], figures: dict[str, Any], source: str) -> str:
    """The fitted model as YAML, headed by a comment block with how it was fitted."""
    header = [
        f"Fitted by `healthscore fit` from {figures['input_model']} ({source}).",
        f"Objective {figures['objective']}: weights from an L2-regularised logistic regression "
        f"(C={figures['regularisation_c']}) of {_adverse(figures['outcome'])} within the horizon "
        "on factor sub-scores.",
        "Shapes learned from the data (monotone, by isotonic regression over quantile bins): "
        + (", ".join(figures["shapes"]) or "none; the input model's transforms are kept")
        + ".",
        f"Split {figures['split']}.",
        f"Train: {figures['train']['samples']} samples of {figures['train']['accounts']} "
        f"accounts, {figures['train']['adverse']} {_adverse(figures['outcome'])}.",
        f"Test: {figures['test']['samples']} samples of {figures['test']['accounts']} other "
        f"accounts, {figures['test']['adverse']} {_adverse(figures['outcome'])}; ROC AUC "
        f"{_with_ci(figures, 'input')} "
        f"(input model) -> {_with_ci(figures, 'fitted')} (this model); recency alone "
        f"{_with_ci(figures, 'baseline_recency')}.",
        f"Factors given weight 0 by the data: {', '.join(figures['base']['dropped']) or 'none'}.",
        *_calibration_line(figures),
        "Segments: "
        + "; ".join(
            f"{name}: {fit if isinstance(fit, str) else 'fitted on ' + str(fit['samples'])}"
            for name, fit in figures["segments"].items()
        ),
        "Bands are the input model's; caps on reshaped factors keep their raw thresholds. "
        "Review before deploying; deploy as a shadow model first.",
        *_verdict_lines(figures),
    ]
    comment = "\n".join("# " + wrapped for line in header for wrapped in textwrap.wrap(line, 96))
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=100)
    return f"{comment}\n{body}"


def _adverse(outcome: str) -> str:
    """The adverse case the figures count: the outcome, or a favourable one not happening."""
    return f"no {outcome}" if outcome in FAVOURABLE else outcome


def _with_ci(figures: dict[str, Any], which: str) -> str:
    measured = figures["test"].get(which) or {}
    interval = measured.get("roc_auc_ci95")
    return f"{measured.get('roc_auc')}" + (f" [{interval[0]}, {interval[1]}]" if interval else "")


def _calibration_line(figures: dict[str, Any]) -> list[str]:
    stated = figures["test"].get("calibration")
    if not stated:
        return []
    return [
        f"Calibration: {figures['outcome']} probability within the horizon from the score, "
        "fitted on the "
        f"training accounts; on the held-out accounts Brier {stated['brier']}, skill "
        f"{stated['brier_skill']}."
    ]


def _verdict_lines(figures: dict[str, Any]) -> list[str]:
    recommendation = figures.get("recommendation")
    if not recommendation:
        return []
    return [
        f"Recommended: the {recommendation['use']} model, as {recommendation['because']}.",
        *(f"Warning: {w}." for w in figures.get("warnings", [])),
    ]
