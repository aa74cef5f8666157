"""The console's pure parts: its charts' arithmetic and markup, and its signed sessions."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response

from services.api.auth import hash_token
from services.api.console import charts
from services.api.console.session import COOKIE, Session, Sessions, csrf_valid
from shared.config import ApiSettings, ApiToken
from shared.scoring.model import Band, Logistic, LogisticTransform, Piecewise

factor = st.fixed_dictionaries(
    {
        "factor": st.text("abcdefgh", min_size=1, max_size=6),
        "group": st.just("usage"),
        "raw": st.floats(0, 100),
        "sub_score": st.floats(0, 100),
        "weight": st.floats(0.01, 1),
        "status": st.sampled_from(["ok", "ok", "missing", "stale"]),
    }
)


@given(st.lists(factor, min_size=1, max_size=12))
def test_the_bars_add_up_to_the_weighted_score_less_fifty(factors: list[dict]) -> None:  # type: ignore[type-arg]
    ok = [f for f in factors if f["status"] == "ok"]
    total = sum(f["weight"] for f in factors)
    for f in factors:  # weights as the engine gives them: shares of the objective's weight
        f["weight"] /= total
    confidence = sum(f["weight"] for f in ok)
    effects = charts.effects({"factors": factors}, confidence)
    if not ok:
        assert all(e.points == 0 for e in effects)
        return
    weighted = sum(f["weight"] * f["sub_score"] for f in ok) / confidence
    assert sum(e.points for e in effects) == pytest.approx(weighted - 50, abs=0.01 * len(ok))
    left_out = [e.status != "ok" for e in effects]
    assert left_out == sorted(left_out)  # left-out factors come last


def test_a_sparkline_is_a_step_line_on_one_scale_for_every_row() -> None:
    svg = charts.sparkline([(0.0, 100.0), (50.0, 0.0)], start=0.0, end=100.0)
    path = re.search(r'd="([^"]+)"', svg).group(1)  # type: ignore[union-attr]
    # 100 is at the top (y=2), 0 at the bottom (y=22); the score holds until it changes
    assert path == "M0.0,2.0H48.0V22.0H96.0"
    assert 'aria-label="score 100 to 0 over the period"' in svg
    assert "no history" in charts.sparkline([], 0.0, 1.0)


def test_the_history_chart_marks_causes_and_band_changes_and_escapes_text() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    points = [
        charts.Point(start + timedelta(days=10), 40.0, "healthy", "at_risk", "signals", "a<b"),
        charts.Point(start + timedelta(days=20), 45.0, "at_risk", "at_risk", "override", "c&d"),
    ]
    bands = [Band(name="at_risk", min=0), Band(name="healthy", min=60)]
    svg = charts.history_chart(points, bands, start, start + timedelta(days=30), "x", 80.0)
    assert svg.count("<circle") == 1 and svg.count("<rect") == 2 + 1  # two bands, one square
    assert 'r="6"' in svg  # the band change is the larger marker
    assert "<title>a&lt;b</title>" in svg and "<title>c&amp;d</title>" in svg
    path = re.search(r'<path d="([^"]+)"', svg).group(1)  # type: ignore[union-attr]
    assert path.startswith("M34.0,") and path.endswith("H714.0")  # from start, to the end


def test_transform_curves_pass_through_their_points() -> None:
    piecewise = charts.transform_curve(Piecewise(piecewise=[(0, 0), (10, 100)]), "p")
    assert piecewise.count("<circle") == 2 and "0 → 0" in piecewise and "10 → 100" in piecewise
    logistic = charts.transform_curve(
        LogisticTransform(logistic=Logistic(midpoint=5, steepness=-1)), "l"
    )
    ys = [
        float(y)
        for y in re.findall(r"[\d.]+,([\d.]+)", re.search(r'points="([^"]+)"', logistic).group(1))
    ]  # type: ignore[union-attr]
    assert ys == sorted(ys)  # more is worse: the sub-score falls, so y (downwards) rises


def _request(
    cookie: str | None = None,
    *,
    origin: str | None = None,
    client: str = "10.0.0.1",
    headers: dict[str, str] | None = None,
) -> Request:
    raw = [(b"host", b"console.example")]
    if cookie:
        raw.append((b"cookie", f"{COOKIE}={cookie}".encode()))
    if origin:
        raw.append((b"origin", origin.encode()))
    for k, v in (headers or {}).items():
        raw.append((k.lower().encode(), v.encode()))
    return Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/console/x",
            "headers": raw,
            "scheme": "https",
            "server": ("console.example", 443),
            "client": (client, 1),
        }
    )


def _cookie(sessions: Sessions, session: Session) -> str:
    response = Response()
    sessions.save(_request(), response, session)
    header = response.headers["set-cookie"]
    assert "Secure" in header and "HttpOnly" in header  # over TLS
    return header.split(";")[0].split("=", 1)[1]


def test_sessions_are_signed_and_find_the_token_again_each_time() -> None:
    token = ApiToken(name="alice", sha256=hash_token("t1"), scopes=["read", "write"])
    settings = ApiSettings(tokens=[token], session_secret=SecretStr("k" * 32))
    sessions = Sessions(settings)
    cookie = _cookie(sessions, Session(csrf="c1", token_sha256=hash_token("t1")))
    loaded = sessions.load(_request(cookie))
    assert loaded.csrf == "c1" and not loaded.fresh
    viewer = sessions.viewer(_request(cookie), loaded)
    assert viewer is not None and viewer.name == "alice" and viewer.can_write
    # a cookie changed by a byte, or signed with another key, is no session
    assert sessions.load(_request(cookie[:-2] + "AA")).fresh
    other = Sessions(settings.model_copy(update={"session_secret": SecretStr("o" * 32)}))
    assert other.load(_request(cookie)).fresh
    # a token taken out of the configuration ends its sessions
    gone = Sessions(settings.model_copy(update={"tokens": []}))
    assert gone.viewer(_request(cookie), gone.load(_request(cookie))) is None


def test_a_session_ends_after_its_hours(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ApiSettings(session_secret=SecretStr("k" * 32), session_hours=1)
    sessions = Sessions(settings)
    cookie = _cookie(sessions, Session(csrf="c1"))
    later = time.time() + 3601
    monkeypatch.setattr(time, "time", lambda: later)
    assert sessions.load(_request(cookie)).fresh


def test_csrf_needs_the_sessions_own_secret_from_this_site() -> None:
    session = Session(csrf="secret")
    assert csrf_valid(_request(), session, "secret")
    assert csrf_valid(_request(origin="https://console.example"), session, "secret")
    assert not csrf_valid(_request(origin="https://evil.example"), session, "secret")
    assert not csrf_valid(_request(), session, "guess")
    assert not csrf_valid(_request(), session, None)
    assert not csrf_valid(_request(), Session(csrf="secret", fresh=True), "secret")


def test_a_proxys_header_is_believed_only_from_the_proxy() -> None:
    settings = ApiSettings(
        proxy_user_header="X-Forwarded-Email",
        proxy_addresses=["10.0.0.9"],
        proxy_writers=["lead@example.com"],
    )
    sessions = Sessions(settings)
    lead = {"X-Forwarded-Email": "lead@example.com"}
    viewer = sessions.viewer(_request(client="10.0.0.9", headers=lead), Session(csrf="c"))
    assert viewer is not None and viewer.via == "proxy" and viewer.can_write
    reader = sessions.viewer(
        _request(client="10.0.0.9", headers={"X-Forwarded-Email": "ae@example.com"}),
        Session(csrf="c"),
    )
    assert reader is not None and not reader.can_write
    assert sessions.viewer(_request(client="10.0.0.8", headers=lead), Session(csrf="c")) is None


def test_the_console_loads_nothing_from_another_origin() -> None:
    from pathlib import Path

    import services.api.console as console

    folder = Path(console.__file__).parent
    files = [*folder.glob("templates/*.html"), *folder.glob("static/*")]
    assert len(files) >= 8
    for path in files:
        text = path.read_text()
        # every src, href, action and url() points into this site
        for target in re.findall(r'(?:src|href|action)="([^"{]+)"|url\(([^)]+)\)', text):
            address = "".join(target)
            assert not re.match(r"^(https?:)?//", address), f"{path.name}: {address}"
