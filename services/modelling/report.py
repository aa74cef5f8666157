"""Write a back-test's report: summary.json, report.md, report.html and PNG plots, side by side
per model.

Plots (matplotlib, no display needed): ROC curves, calibration curves, churn rate by band and by
risk decile, accounts per band and the score histogram, one figure each with a line or bar
series per model, for every objective. report.html is report.md rendered, with the plots inside
it: one file to send to whoever must judge the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from services.modelling.metrics import ScoreMetrics

Full = dict[str, dict[str, dict[str, ScoreMetrics]]]  # model label -> objective -> split -> m


def write_report(out: Path, summary: dict[str, Any], full: Full, split: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_bytes(
        orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    plots = _plots(out, full, split)
    markdown = _markdown(summary, split, plots)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(_html(markdown, out))
    return [out / "summary.json", out / "report.md", out / "report.html", *plots]


def _html(markdown: str, folder: Path) -> str:
    """report.md as one self-contained page: its tables rendered, its plots embedded."""
    import base64

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown)
    for plot in folder.glob("*.png"):
        encoded = base64.b64encode(plot.read_bytes()).decode()
        body = body.replace(f'src="{plot.name}"', f'src="data:image/png;base64,{encoded}"')
    style = (
        "body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:"
        ".25em .6em;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}code{font-size:90%}"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Back-test report</title><style>{style}</style></head><body>{body}</body></html>\n"
    )


def _plots(out: Path, full: Full, split: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = sorted({o for per_model in full.values() for o in per_model})
    paths = []
    for objective in objectives:
        per_model = {
            label: m[objective][split] for label, m in full.items() if split in m.get(objective, {})
        }
        if not per_model:
            continue
        fig, axes = plt.subplots(3, 2, figsize=(11, 12))
        roc, calibration, bands, deciles, counts, histogram = axes.flat
        width = 0.8 / len(per_model)
        for i, (label, metrics) in enumerate(per_model.items()):
            if metrics.roc_curve:
                fpr, tpr = zip(*metrics.roc_curve, strict=True)
                roc.plot(fpr, tpr, label=f"{label} (AUC {metrics.roc_auc:.3f})")
            if metrics.calibration:
                calibration.plot(
                    [c["predicted"] for c in metrics.calibration],
                    [c["observed"] for c in metrics.calibration],
                    marker="o",
                    label=label,
                )
            names = [b["band"] for b in metrics.bands]
            bands.set_xticks(range(len(names)), names)
            filled = [(j, b) for j, b in enumerate(metrics.bands) if b["n"]]  # no 0% for empty
            bands.bar(
                [j + i * width for j, _ in filled],
                [b["churn_rate"] for _, b in filled],
                width,
                label=label,
            )
            counts.bar(
                [j + i * width for j in range(len(names))],
                [b["n"] for b in metrics.bands],
                width,
                label=label,
            )
            counts.set_xticks(range(len(names)), names)
            histogram.step(
                [5 * k for k in range(len(metrics.histogram))],
                metrics.histogram,
                where="post",
                label=label,
            )
            held = [d for d in metrics.deciles if d["n"]]  # ties leave some deciles empty
            deciles.bar(
                [d["decile"] + i * width for d in held],
                [d["churn_rate"] for d in held],
                width,
                label=label,
            )
        roc.plot([0, 1], [0, 1], linestyle=":", color="grey")
        roc.set(title="ROC (risk = 100 - score)", xlabel="false positive rate", ylabel="recall")
        top = max((c["predicted"] for m in per_model.values() for c in m.calibration), default=1.0)
        calibration.plot([0, top], [0, top], linestyle=":", color="grey")
        calibration.set(
            title="calibration (deciles)", xlabel="predicted churn", ylabel="observed churn"
        )
        bands.set(title="churn rate by band", ylabel="churn rate")
        counts.set(title="accounts by band", ylabel="samples")
        histogram.set(title="score histogram (5-point bins)", xlabel="score", ylabel="samples")
        deciles.set(
            title="churn rate by risk decile (1 = riskiest)", xlabel="decile", ylabel="churn rate"
        )
        for ax in axes.flat:
            ax.legend(fontsize=8)
        fig.suptitle(f"{objective}: {split} split")
        fig.tight_layout()
        path = out / f"{objective}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _markdown(summary: dict[str, Any], split: str, plots: list[Path]) -> str:
    lines = [
        "# Back-test report",
        "",
        f"- events: {summary['events']['lines']} lines, {summary['events']['signals']} signals, "
        f"rejected {summary['events']['rejected'] or 'none'}",
        f"- accounts: {summary['accounts']}, churned in the data: {summary['churned_accounts']}",
        f"- outcomes in the data (accounts): {_counts(summary.get('outcomes') or {})}",
        f"- predicted: **{summary.get('outcome', 'churn')}** within {summary['horizon_days']} "
        "days of each as-of time"
        + (
            ""
            if summary.get("outcome", "churn") == "churn"
            else " (favourable: the figures below rank its not happening as the adverse case, "
            "so 'churn' in them reads 'no " + summary["outcome"] + "')"
        ),
        f"- as-of times: {', '.join(summary['as_of'])}",
        f"- split shown: **{split}**"
        + (f" (as-of ≥ {summary['test_from']})" if summary.get("test_from") else ""),
        "",
        "Risk is `100 - score`; AUCs say how well it ranks accounts that churn within the "
        "horizon above those that do not. Brier is for a churn probability calibrated on the "
        "score (cross-validated Platt scaling); skill > 0 beats always predicting the base rate. "
        "Brackets: 95% intervals, resampling accounts. Under each model, the same accounts "
        "ranked by recency alone (days since their last signal): a model should beat it.",
        "",
    ]
    objectives = dict.fromkeys(o for m in summary["models"].values() for o in m["objectives"])
    for objective in objectives:
        lines += [f"## {objective}", ""]
        lines += [
            "| model | n | churn rate | ROC AUC | PR AUC | Brier | skill | top-decile lift "
            "| warned before churn | median lead (warned) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for label, model in summary["models"].items():
            entry = model["objectives"].get(objective)
            if entry is None or split not in entry:
                continue
            m, lead = entry[split], entry.get("lead_time") or {}
            unscored = f" (+{m['unscored']} unscored)" if m.get("unscored") else ""
            lines.append(
                f"| {label} `{model['version']}` | {m['n']}{unscored} | {_fmt(m['churn_rate'])} "
                f"| {_ci(m, 'roc_auc')} | {_fmt(m['pr_auc'])} | {_ci(m, 'brier')} "
                f"| {_fmt(m['brier_skill'])} | {_fmt(m['top_decile_lift'])} "
                f"| {_fmt(lead.get('warned_share'))} "
                f"| {_lead(lead)} |"
            )
            stated = m.get("stated_probability")
            if stated:
                lines.append(
                    f"| ↳ its stated probability of {stated['outcome']} within "
                    f"{stated['horizon_days']:g} d | {m['n']} | – | – | – "
                    f"| {_ci(stated, 'brier')} | {_fmt(stated['brier_skill'])} | – | – | – |"
                )
            baseline = m.get("baseline_recency")
            if baseline:
                lines.append(
                    f"| ↳ recency alone, same accounts | {baseline['n']} "
                    f"| {_fmt(baseline['churn_rate'])} | {_ci(baseline, 'roc_auc')} "
                    f"| {_fmt(baseline['pr_auc'])} | {_ci(baseline, 'brier')} "
                    f"| {_fmt(baseline['brier_skill'])} | {_fmt(baseline['top_decile_lift'])} "
                    "| – | – |"
                )
        for label, model in summary["models"].items():
            entry = model["objectives"].get(objective)
            if entry is None or split not in entry:
                continue
            lines += ["", f"### {label}: churn rate by band and decile", ""]
            lines += ["| band | n | churned | churn rate |", "|---|---|---|---|"]
            lines += [
                f"| {b['band']} | {b['n']} | {b['churned']} | {_fmt(b['churn_rate'])} |"
                for b in entry[split]["bands"]
            ]
            lines += ["", "| decile | scores | n | churn rate | lift |", "|---|---|---|---|---|"]
            lines += [
                f"| {d['decile']} | {_range(d['score_min'], d['score_max'])} | {d['n']} "
                f"| {_fmt(d['churn_rate'])} | {_fmt(d['lift'])} |"
                for d in entry[split]["deciles"]
            ]
            lines += ["", "| segment | n | churn rate | ROC AUC | PR AUC |"]
            lines += ["|---|---|---|---|---|"]
            lines += [
                f"| {name} | {m['n']} | {_fmt(m['churn_rate'])} | {_fmt(m['roc_auc'])} "
                f"| {_fmt(m['pr_auc'])} |"
                for name, m in entry["by_segment"].items()
            ]
        lines += _lead_note(summary, objective)
        plot = next((p for p in plots if p.stem == objective), None)
        if plot is not None:
            lines += ["", f"![{objective}]({plot.name})", ""]
    return "\n".join(lines) + "\n"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items()) or "none"


def _lead_note(summary: dict[str, Any], objective: str) -> list[str]:
    """What the lead times were measured on."""
    notes = []
    for label, model in summary["models"].items():
        lead = (model["objectives"].get(objective) or {}).get("lead_time") or {}
        if lead.get("measured_accounts") is not None:
            notes.append(
                f"{label}: lead time measured on {lead['measured_accounts']} of "
                f"{lead['churned_accounts']} churned accounts (a seeded random choice when there "
                f"are many), each scored daily over the {lead['lookback_days']} days before its "
                f"first churn; {lead['warned_whole_lookback']} were warned the whole look-back."
            )
    return ["", *notes] if notes else []


def _lead(lead: dict[str, Any]) -> str:
    """The median lead time, as "≥ look-back" when the look-back caps it."""
    median, cap = lead.get("median_lead_days_warned"), lead.get("lookback_days")
    if median is None:
        return "–"
    return f"≥ {cap} d" if cap is not None and median >= cap else f"{_fmt(median)} d"


def _ci(figures: dict[str, Any], name: str) -> str:
    interval = figures.get(f"{name}_ci95")
    shown = _fmt(figures.get(name))
    return f"{shown} [{_fmt(interval[0])}, {_fmt(interval[1])}]" if interval else shown


def _range(low: float | None, high: float | None) -> str:
    return "empty (ties)" if low is None or high is None else f"{low:.1f}–{high:.1f}"
