"""The console's charts as inline SVG, drawn on the server from plain numbers: no script, no
network, the same picture in every browser. Pure functions; each returns markup that is
safe to put in a page (every text in it is escaped) and names itself for screen readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import pairwise

from markupsafe import Markup, escape

from shared.scoring.model import Band, LogisticTransform, Transform

CAUSES = {  # history cause -> (what a person calls it, marker colour)
    "signals": ("new data", "#2563eb"),
    "time": ("silence / time", "#6b7280"),
    "override": ("override", "#9333ea"),
    "model_change": ("model change", "#ea580c"),
}
BAND_FILLS = ("#fee2e2", "#fef3c7", "#dcfce7", "#dbeafe", "#ede9fe")


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def sparkline(points: Sequence[tuple[float, float]], start: float, end: float) -> Markup:
    """Score (0-100, on one scale for every row) over [start, end] as a small line."""
    if not points:
        return Markup('<span class="muted">no history</span>')
    width, height = 96.0, 24.0
    span = max(end - start, 1.0)
    xy = [
        (max(0.0, (t - start) / span) * width, height - 2 - score / 100 * (height - 4))
        for t, score in points
    ]
    if len(xy) == 1 or xy[-1][0] < width:
        xy.append((width, xy[-1][1]))
    # a step line: a score holds until it changes
    path = [f"M{xy[0][0]:.1f},{xy[0][1]:.1f}"]
    for (_, y0), (x1, y1) in pairwise(xy):
        path.append(f"H{x1:.1f}V{y1:.1f}" if y1 != y0 else f"H{x1:.1f}")
    first, last = points[0][1], points[-1][1]
    label = f"score {_num(first)} to {_num(last)} over the period"
    return Markup(
        f'<svg class="spark" viewBox="0 0 {width:.0f} {height:.0f}" width="96" height="24" '
        f'role="img" aria-label="{escape(label)}"><title>{escape(label)}</title>'
        f'<path d="{"".join(path)}" fill="none" stroke="currentColor" stroke-width="1.5"/>'
        f'<circle cx="{xy[-1][0]:.1f}" cy="{xy[-1][1]:.1f}" r="2" fill="currentColor"/></svg>'
    )


@dataclass(frozen=True)
class Effect:
    factor: str
    group: str
    points: float  # points above (+) or below (-) the midpoint this factor moves the score
    raw: float | None
    sub_score: float | None
    weight: float
    status: str
    last_data_at: str | None


def effects(explanation: dict[str, object], confidence: float) -> list[Effect]:
    """Each factor's push on the weighted score, measured from the midpoint (50): a factor of
    weight w (renormalised over the available ones) and sub-score s moves it by w·(s-50).
    The pushes add up exactly to weighted score - 50. Factors left out (missing, stale) push
    nothing and come last."""
    out = []
    for f in explanation.get("factors", []):  # type: ignore[attr-defined]
        ok = f["status"] == "ok" and f["sub_score"] is not None and confidence > 0
        share = f["weight"] / confidence if ok else 0.0
        out.append(
            Effect(
                factor=f["factor"],
                group=f["group"],
                points=round(share * (f["sub_score"] - 50), 2) if ok else 0.0,
                raw=f["raw"],
                sub_score=f["sub_score"],
                weight=f["weight"],
                status=f["status"],
                last_data_at=f.get("last_data_at"),
            )
        )
    return sorted(out, key=lambda e: (e.status != "ok", -abs(e.points), e.factor))


@dataclass(frozen=True)
class Point:
    at: datetime
    score: float | None
    old_band: str | None
    band: str
    cause: str
    summary: str  # what a tooltip says


def _ticks(start: float, end: float, count: int = 5) -> list[float]:
    step = (end - start) / count
    return [start + step * i for i in range(count + 1)]


def history_chart(
    points: Sequence[Point],
    bands: Sequence[Band],
    start: datetime,
    end: datetime,
    label: str,
    initial: float | None = None,
) -> Markup:
    """The score over time with the bands behind it; a marker at each recorded change, shaped
    and coloured by its cause, larger where the band changed. `points` oldest first;
    `initial` is the score at `start` (before the first point)."""
    width, height, left, bottom, top = 720.0, 220.0, 34.0, 22.0, 6.0
    plot_w, plot_h = width - left - 6, height - bottom - top
    t0, t1 = start.timestamp(), max(end.timestamp(), start.timestamp() + 1)

    def x(t: float) -> float:
        return left + (min(max(t, t0), t1) - t0) / (t1 - t0) * plot_w

    def y(score: float) -> float:
        return top + (1 - score / 100) * plot_h

    parts = [
        f'<svg class="history" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>'
    ]
    edges = sorted(bands, key=lambda b: b.min)
    for i, band in enumerate(edges):
        upper = edges[i + 1].min if i + 1 < len(edges) else 100.0
        fill = BAND_FILLS[i % len(BAND_FILLS)]
        parts.append(
            f'<rect x="{left}" y="{y(upper):.1f}" width="{plot_w:.1f}" '
            f'height="{y(band.min) - y(upper):.1f}" fill="{fill}"/>'
            f'<text x="{left + 4}" y="{y(upper) + 11:.1f}" class="band-label">'
            f"{escape(band.name)}</text>"
        )
    for score in (0, 50, 100):
        parts.append(
            f'<text x="{left - 4}" y="{y(score) + 4:.1f}" text-anchor="end">{score}</text>'
        )
    for t in _ticks(t0, t1):
        iso = datetime.fromtimestamp(t, UTC)
        parts.append(
            f'<text x="{x(t):.1f}" y="{height - 6}" text-anchor="middle" class="tick" '
            f'data-date="{iso.isoformat()}">{iso:%b %d}</text>'
        )
    scored = [p for p in points if p.score is not None]
    line: list[tuple[float, float]] = [(t0, initial)] if initial is not None else []
    line += [(p.at.timestamp(), p.score) for p in scored if p.score is not None]
    if line:
        d = [f"M{x(line[0][0]):.1f},{y(line[0][1]):.1f}"]
        for t, value in line[1:]:
            d.append(f"H{x(t):.1f}V{y(value):.1f}")
        d.append(f"H{x(t1):.1f}")
        parts.append(f'<path d="{"".join(d)}" fill="none" stroke="#111827" stroke-width="2"/>')
    for p in scored:
        cx, cy = x(p.at.timestamp()), y(p.score)  # type: ignore[arg-type]
        _, colour = CAUSES.get(p.cause, (p.cause, "#111827"))
        r = 6 if p.old_band != p.band else 3.5
        shape = (
            f'<rect x="{cx - r:.1f}" y="{cy - r:.1f}" width="{2 * r}" height="{2 * r}" '
            if p.cause in ("override", "model_change")
            else f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r}" '
        )
        parts.append(
            f'{shape}fill="{colour}" stroke="#fff" stroke-width="1.5" class="mark">'
            f"<title>{escape(p.summary)}</title></{shape.split()[0][1:]}>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def transform_curve(transform: Transform, label: str) -> Markup:
    """A factor's transform: raw value (x) to sub-score (y, 0-100), over the range its shape
    is drawn in (a piecewise transform's points, a logistic's 1%..99% span)."""
    width, height, left, bottom = 240.0, 120.0, 30.0, 18.0
    if isinstance(transform, LogisticTransform):
        mid, k = transform.logistic.midpoint, transform.logistic.steepness
        half = 4.6 / abs(k) if k else 1.0  # 1% to 99%
        lo, hi = mid - half, mid + half
        xs = [lo + (hi - lo) * i / 40 for i in range(41)]
        corners: list[tuple[float, float]] = []
    else:
        corners = list(transform.piecewise)
        lo, hi = corners[0][0], corners[-1][0]
        margin = (hi - lo) * 0.08
        lo, hi = lo - margin, hi + margin
        xs = [lo, *(c[0] for c in corners), hi]
    span = hi - lo or 1.0

    def px(v: float) -> float:
        return left + (v - lo) / span * (width - left - 6)

    def py(s: float) -> float:
        return 6 + (1 - s / 100) * (height - bottom - 6)

    line = " ".join(f"{px(v):.1f},{py(transform(v)):.1f}" for v in xs)
    dots = "".join(
        f'<circle cx="{px(cx):.1f}" cy="{py(cy):.1f}" r="2.5"><title>'
        f"{escape(_num(cx))} → {escape(_num(cy))}</title></circle>"
        for cx, cy in corners
    )
    return Markup(
        f'<svg class="curve" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>'
        f'<line x1="{left}" y1="{py(0):.1f}" x2="{width - 6}" y2="{py(0):.1f}" class="axis"/>'
        f'<line x1="{left}" y1="{py(0):.1f}" x2="{left}" y2="{py(100):.1f}" class="axis"/>'
        f'<text x="{left - 3}" y="{py(100) + 4:.1f}" text-anchor="end">100</text>'
        f'<text x="{left - 3}" y="{py(0) + 4:.1f}" text-anchor="end">0</text>'
        f'<text x="{left}" y="{height - 4}">{escape(_num(lo))}</text>'
        f'<text x="{width - 6}" y="{height - 4}" text-anchor="end">{escape(_num(hi))}</text>'
        f'<polyline points="{line}" fill="none" stroke="#2563eb" stroke-width="2"/>{dots}</svg>'
    )


BAND_LINES = ("#6b7280", "#dc2626", "#d97706", "#16a34a", "#2563eb", "#7c3aed")


TREND_BOX = (720.0, 200.0, 44.0, 22.0, 8.0)  # width, height, left, bottom and top margins


def _trend_open(classes: str, label: str) -> str:
    width, height = TREND_BOX[:2]
    return (
        f'<svg class="{classes}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>'
    )


def _trend_empty(parts: list[str], text: str) -> Markup:
    width, height = TREND_BOX[:2]
    parts.append(
        f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">{escape(text)}</text></svg>'
    )
    return Markup("".join(parts))


def band_trend(
    days: Sequence[tuple[date, dict[str, int]]], bands: Sequence[str], label: str
) -> Markup:
    """Accounts per band by day: a line per band (`bands` worst first, coloured from grey and
    red to green), oldest day left."""
    width, height, left, bottom, top = TREND_BOX
    plot_w, plot_h = width - left - 90, height - bottom - top
    parts = [_trend_open("trend", label)]
    if not days:
        return _trend_empty(parts, "no day recorded yet")
    peak = max([1, *(n for _, counts in days for n in counts.values())])

    def x(i: int) -> float:
        return left + (i / max(len(days) - 1, 1)) * plot_w

    def y(n: float) -> float:
        return top + (1 - n / peak) * plot_h

    for n in (0, peak):
        parts.append(f'<text x="{left - 4}" y="{y(n) + 4:.1f}" text-anchor="end">{n}</text>')
    for i in sorted({0, len(days) - 1}):
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - 6}" text-anchor="middle" class="tick">'
            f"{days[i][0]:%b %d}</text>"
        )
    shown = [b for b in bands if any(counts.get(b) for _, counts in days)]
    for k, band in enumerate(shown):
        colour = BAND_LINES[bands.index(band) % len(BAND_LINES)]
        points = " ".join(f"{x(i):.1f},{y(c.get(band, 0)):.1f}" for i, (_, c) in enumerate(days))
        last = days[-1][1].get(band, 0)
        dots = "".join(  # each day marked: a single day is a point, not a line
            f'<circle cx="{x(i):.1f}" cy="{y(c.get(band, 0)):.1f}" r="2.5" fill="{colour}"/>'
            for i, (_, c) in enumerate(days)
        )
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2" '
            f'data-band="{escape(band)}"><title>{escape(band)}</title></polyline>{dots}'
            f'<text x="{left + plot_w + 8}" y="{top + 14 * (k + 1)}" fill="{colour}" '
            f'class="legend">{escape(band)} {last}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def quality_trend(
    points: Sequence[tuple[datetime, float | None, float | None, float | None, float | None]],
    label: str,
) -> Markup:
    """A model's ROC AUC by measurement: realised (with its 95% interval shaded) and expected
    (dashed), on 0.5 (a coin) to 1.0; points are (measured, realised, low, high, expected)."""
    width, height, left, bottom, top = TREND_BOX
    plot_w, plot_h = width - left - 110, height - bottom - top
    parts = [_trend_open("trend quality", label)]
    if not points:
        return _trend_empty(parts, "not measured yet")

    def x(i: int) -> float:
        return left + (i / max(len(points) - 1, 1)) * plot_w

    def y(v: float) -> float:
        return top + (1 - (min(max(v, 0.5), 1.0) - 0.5) / 0.5) * plot_h

    for v in (0.5, 0.75, 1.0):
        parts.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            'stroke="#e5e7eb"/>'
        )
    for i in sorted({0, len(points) - 1}):
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - 6}" text-anchor="middle" class="tick">'
            f"{points[i][0]:%b %d %H:%M}</text>"
        )
    band = [(i, low, high) for i, (_, _, low, high, _) in enumerate(points) if low and high]
    if band:
        outline = [f"{x(i):.1f},{y(high):.1f}" for i, _, high in band]
        outline += [f"{x(i):.1f},{y(low):.1f}" for i, low, _ in reversed(band)]
        parts.append(
            f'<polygon points="{" ".join(outline)}" fill="#dbeafe" class="interval">'
            "<title>95% interval</title></polygon>"
        )
    series = (
        ("realised", "#2563eb", "", [p[1] for p in points]),
        ("expected", "#6b7280", ' stroke-dasharray="5 4"', [p[4] for p in points]),
    )
    for k, (name, colour, dash, values) in enumerate(series):
        known = [(i, v) for i, v in enumerate(values) if v is not None]
        if not known:
            continue
        line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in known)
        dots = "".join(
            f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"/>' for i, v in known
        )
        parts.append(
            f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"{dash} '
            f'data-series="{name}"><title>{name}</title></polyline>{dots}'
            f'<text x="{left + plot_w + 8}" y="{top + 14 * (k + 1)}" fill="{colour}" '
            f'class="legend">{name} {known[-1][1]:.3f}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
