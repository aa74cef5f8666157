"""The console's pages: accounts, one account (explanation, history, overrides), the model,
and back-test reports; sign-in and sign-out. Reads go through the JSON API's own queries;
overrides through the API's own record, revoke and preview functions."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.auth import hash_token, identify
from services.api.console import charts
from services.api.console.session import Session, Viewer, csrf_valid
from services.api.problems import Problem
from services.api.routes.accounts import (
    AccountQuery,
    account_page,
    band_counts,
    read_history,
    score_trends,
)
from services.api.routes.children import read_children
from services.api.routes.overrides import (
    preview_override,
    read_overrides,
    record_override,
    revoke,
)
from services.api.routes.portfolio import BY, read_portfolio
from services.api.schemas import HistoryItemResponse, OverrideRequest, OverrideResponse
from shared.db import AccountRow
from shared.events import Region, Tier
from shared.scoring.engine import UNKNOWN_BAND, factor_weights
from shared.scoring.model import Model, Objective

router = APIRouter(prefix="/console", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.auto_reload = False  # they ship with the code: no stat of each file per render


def _when(value: datetime | str | None) -> Markup:
    """A time as <time>: UTC as written, the viewer's own zone once console.js has run."""
    if value is None:
        return Markup('<span class="muted">never</span>')
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    at = at.astimezone(UTC)
    return Markup('<time datetime="{}">{} UTC</time>').format(
        at.isoformat(), at.strftime("%Y-%m-%d %H:%M")
    )


def _age(value: datetime | str | None) -> str:
    """How long ago, in the largest unit that says it (needs no time zone)."""
    if value is None:
        return "no data"
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    seconds = max((_now() - at).total_seconds(), 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return "just now"


def _number(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


templates.env.filters.update(when=_when, age=_age, number=_number)
TIERS = Tier.__origin__.__args__  # type: ignore[attr-defined]
REGIONS = Region.__origin__.__args__  # type: ignore[attr-defined]
SORTS = {
    "score": "score, lowest first",
    "-score": "score, highest first",
    "change": "biggest drop first",
    "-change": "biggest rise first",
    "-updated": "changed most recently",
    "updated": "changed longest ago",
}
CHANGED = {"1d": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
PERIODS = (30, 90, 365)
PAGE_SIZE = 50
# a headers' set for every console answer: no caching of personal pages, nothing framed,
# scripts and styles from this origin only (inline style attributes draw the bars)
SECURITY = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; frame-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class SignInRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


async def to_sign_in(request: Request, exc: SignInRequired) -> Response:
    return RedirectResponse(f"/console/sign-in?next={quote(exc.next_path)}", status_code=303)


# --- the frame of every page ------------------------------------------------------------


class Page:
    """One request's session and viewer, and the rendering that sets the cookie it needs."""

    def __init__(self, request: Request, *, signed_in: bool = True) -> None:
        self.request = request
        self.session: Session = request.app.state.sessions.load(request)
        self.viewer: Viewer | None = request.app.state.sessions.viewer(request, self.session)
        if signed_in and self.viewer is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise SignInRequired(target)

    @property
    def models(self) -> dict[str, Model]:
        models: dict[str, Model] = self.request.app.state.models
        return models

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        response = templates.TemplateResponse(
            self.request,
            template,
            {"viewer": self.viewer, "csrf": self.session.csrf, "now": _now(), **context},
            status_code=status,
            headers=SECURITY,
        )
        if self.session.fresh:
            self.request.app.state.sessions.save(self.request, response, self.session)
        return response

    def error(self, status: int, title: str, detail: str) -> Response:
        return self.render("error.html", status, title=title, detail=detail)

    async def form(self) -> dict[str, str] | None:
        """The posted form, or None when its CSRF field does not match the session's."""
        form = await self.request.form()
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        if not csrf_valid(self.request, self.session, values.get("csrf")):
            return None
        return values


def _now() -> datetime:
    return datetime.now(UTC)


def forged(page: Page) -> Response:
    return page.error(
        403,
        "This form cannot be accepted",
        "It did not come from this console, or your session changed since the page was "
        "loaded. Go back, reload the page and send it again.",
    )


def render_error(request: Request, status: int, detail: str) -> Response:
    """An error inside /console as a page, not a problem document."""
    page = Page(request, signed_in=False)
    titles = {404: "Not found", 403: "Not allowed", 409: "Already done", 422: "Not accepted"}
    return page.error(status, titles.get(status, "Something went wrong"), detail)


# --- sign-in ----------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/console") and not value.startswith("//"):
        return value
    return "/console/portfolio"


@router.get("")
async def home() -> Response:
    """The first page: the portfolio, over time, and who got worse this week."""
    return RedirectResponse("/console/portfolio", status_code=303)


@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    page = Page(request, signed_in=False)
    next_path = _safe_next(request.query_params.get("next"))
    if page.viewer is not None and page.viewer.via == "proxy":
        return RedirectResponse(next_path, status_code=303)
    return page.render("sign_in.html", next=next_path, message=None)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    page = Page(request, signed_in=False)
    form = await page.form()
    if form is None:
        return forged(page)
    next_path = _safe_next(form.get("next"))
    token = form.get("token", "").strip()
    caller = identify(token, request.app.state.settings.api.tokens) if token else None
    if caller is None:
        page.viewer = None
        return page.render(
            "sign_in.html",
            401,
            next=next_path,
            message="That token is not valid. Paste the whole token (it starts with hs_), "
            "or ask whoever runs Account Health for one.",
        )
    # a new CSRF secret with the new identity: nothing from before sign-in carries over
    session = Session(csrf=secrets.token_urlsafe(24), token_sha256=hash_token(token), fresh=True)
    response = RedirectResponse(next_path, status_code=303)
    request.app.state.sessions.save(request, response, session)
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    page = Page(request, signed_in=False)
    if await page.form() is None:
        return forged(page)
    response = RedirectResponse("/console/sign-in?signed_out=1", status_code=303)
    request.app.state.sessions.clear(response)
    return response


# --- accounts -----------------------------------------------------------------------------


async def _industries(request: Request) -> list[str]:
    """The industries accounts have, for the filter; read at most once a minute per process."""
    at, known = getattr(request.app.state, "console_industries", (0.0, []))
    if _now().timestamp() - at > 60:
        engine: AsyncEngine = request.app.state.engine
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(AccountRow.industry)
                .where(AccountRow.industry.is_not(None))
                .group_by(AccountRow.industry)
                .order_by(AccountRow.industry)
                .limit(200)
            )
            known = [str(r[0]) for r in rows]
        request.app.state.console_industries = (_now().timestamp(), known)
    return list(known)


def _one(params: Any, name: str, allowed: Any = None) -> str | None:
    value = (params.get(name) or "").strip()
    if not value:
        return None
    if allowed is not None and value not in allowed:
        raise Problem(422, f"{name} {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _objective(page: Page) -> tuple[Model, str]:
    """The active model and the objective the page asks for (its first one by default)."""
    model = page.models["active"]
    named = _one(page.request.query_params, "objective", list(model.objectives))
    return model, named or next(iter(model.objectives))


@router.get("/accounts")
async def accounts(request: Request) -> Response:
    page = Page(request)
    model, objective = _objective(page)
    params = request.query_params
    spec = model.objectives[objective]
    bands = [b.name for b in sorted(spec.bands, key=lambda b: b.min)] + [UNKNOWN_BAND]
    changed = _one(params, "changed", CHANGED)
    query = AccountQuery(
        objective=objective,
        band=tuple(b for b in params.getlist("band") if b),
        segment=_one(params, "segment"),
        industry=_one(params, "industry"),
        tier=_one(params, "tier", TIERS),
        region=_one(params, "region", REGIONS),
        stale_only=params.get("stale") == "1",
        changed_since=_now() - CHANGED[changed] if changed else None,
        q=(_one(params, "q") or "")[:128] or None,
        owner=(_one(params, "owner") or "")[:200] or None,
        sort=_one(params, "sort", SORTS) or "score",  # type: ignore[arg-type]
    )
    engine: AsyncEngine = request.app.state.engine
    cursor = _one(params, "cursor")
    async with engine.connect() as conn:
        counts = await band_counts(conn, model, query)
        found = await account_page(conn, model, query, PAGE_SIZE, cursor)
        ids = [item.account_id for item in found.items]
        start = _now() - timedelta(days=90)
        trends = await score_trends(conn, ids, objective, start)
    end = _now().timestamp()
    sparks = {
        item.account_id: charts.sparkline(
            trends.get(item.account_id)
            or ([(start.timestamp(), item.score)] if item.score is not None else []),
            start.timestamp(),
            end,
        )
        for item in found.items
    }
    kept = [(k, v) for k, v in params.multi_items() if k != "cursor"]
    next_link = (
        f"?{urlencode([*kept, ('cursor', found.next_cursor)])}" if found.next_cursor else None
    )
    return page.render(
        "accounts.html",
        model=model,
        objective=objective,
        query=query,
        changed=changed,
        bands=bands,
        counts=counts,
        total=sum(counts.values()),
        items=found.items,
        sparks=sparks,
        next_link=next_link,
        first_link=f"?{urlencode(kept)}" if cursor else None,
        band_link=lambda band: (
            "?" + urlencode([*((k, v) for k, v in kept if k != "band"), ("band", band)])
        ),
        segments=[s.name for s in model.segments] + ["default"],
        industries=await _industries(request),
        tiers=TIERS,
        regions=REGIONS,
        sorts=SORTS,
        filtered=any(v for k, v in kept if k not in ("objective", "sort")),
        mine=page.viewer is not None and (query.owner or "").lower() == page.viewer.name.lower(),
    )


# --- one account --------------------------------------------------------------------------


def _top_movers(movers: list[dict[str, Any]]) -> str:
    return ", ".join(f"{m['factor']} {m['delta']:+.1f}" for m in movers) or "—"


def _pending(
    rows: list[OverrideResponse], state_overrides: dict[str, Any], now: datetime
) -> list[str]:
    """Overrides saved or revoked in the last minutes that the scorer has not applied yet."""
    recent = now - timedelta(minutes=10)
    waiting = []
    for row in rows:
        applied = state_overrides.get(row.override_id)
        if row.revoked_at is not None:
            if row.revoked_at >= recent and not (applied or {}).get("revoked"):
                waiting.append(f"revoking {row.action} {row.override_id[:8]}")
        elif row.created_at >= recent and applied is None and row.expires_at > now:
            waiting.append(f"{row.action} {row.override_id[:8]}")
    return waiting


async def _account_page(
    page: Page,
    account_id: str,
    *,
    form: dict[str, str] | None = None,
    errors: list[str] | None = None,
    previewed: Any = None,
    status: int = 200,
) -> Response:
    request = page.request
    model = page.models["active"]
    params = request.query_params
    days = int(params.get("days", "90")) if params.get("days", "90") in map(str, PERIODS) else 90
    now = _now()
    start = now - timedelta(days=days)
    engine: AsyncEngine = request.app.state.engine
    # the account and its explanations as `GET .../health` answers them (services/api/health.py)
    health = await request.app.state.health_reader.read(account_id)
    if health is None:
        return page.error(
            404,
            "No such account",
            f"There is no account {account_id!r}. Search for it on the Accounts page; an "
            "account appears once its first event has been scored.",
        )
    account = health.document
    scores = [o for o in account["objectives"] if o["model_role"] == "active"]
    history = (await read_history(engine, account_id, from_=start, limit=1000)).items
    overrides = await read_overrides(engine, account_id, now)
    by_objective = {s["objective"]: {"probability": None, **s} for s in scores}
    objectives = [
        _panel(name, spec, by_objective.get(name), history, start, now, days)
        for name, spec in model.objectives.items()
    ]
    return page.render(
        "account.html",
        status,
        account=account,
        children=await read_children(engine, model, account_id, None, 500),
        model=model,
        objectives=objectives,
        days=days,
        periods=PERIODS,
        overrides=overrides,
        active=[o for o in overrides if o.status == "active"],
        past=[o for o in overrides if o.status != "active"],
        pending=_pending(overrides, health.state.overrides, now),
        saved=params.get("saved"),
        revoked=params.get("revoked"),
        form=form or {"action": "pin", "objective": "", "days": "14"},
        errors=errors or [],
        previewed=previewed,
        max_days=request.app.state.settings.api.max_override_days,
        top_movers=_top_movers,
        causes=charts.CAUSES,
    )


def _panel(
    name: str,
    spec: Objective,
    score: dict[str, Any] | None,
    history: list[HistoryItemResponse],
    start: datetime,
    now: datetime,
    days: int,
) -> dict[str, Any]:
    """One objective on the account page: its score and explanation, and its history chart
    with every change marked by cause."""
    rows = [h for h in history if h.objective == name]
    points = [
        charts.Point(
            at=h.at,
            score=h.new_score,
            old_band=h.old_band,
            band=h.new_band,
            cause=h.cause,
            summary=f"{h.at:%Y-%m-%d %H:%M} UTC: {_fmt(h.old_score)} → {_fmt(h.new_score)}"
            f"{f', {h.old_band} → {h.new_band}' if h.old_band != h.new_band else ''}; "
            f"{charts.CAUSES.get(h.cause, (h.cause,))[0]}; {_top_movers(h.top_movers)}",
        )
        for h in reversed(rows)
    ]
    initial = rows[-1].old_score if rows else (score["score"] if score else None)
    explanation = score or {}
    return {
        "name": name,
        "spec": spec,
        "score": score,
        "effects": charts.effects(explanation, score["confidence"] if score else 0.0),
        "explanation": explanation,
        "chart": charts.history_chart(
            points,
            spec.bands,
            start,
            now,
            f"{name} score over the last {days} days",
            initial=initial,
        ),
        "changes": rows[:15],
    }


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


@router.get("/accounts/{account_id}")
async def account(request: Request, account_id: str) -> Response:
    return await _account_page(Page(request), account_id)


def _override_request(
    form: dict[str, str], now: datetime, longest: int
) -> OverrideRequest | list[str]:
    """The form as the API's override request, or what is wrong with it, in words."""
    problems = []
    try:
        value = float(form.get("value", ""))
    except ValueError:
        problems.append("Value: enter a number.")
        value = 0.0
    try:
        days = int(form.get("days", ""))
    except ValueError:
        problems.append("Expires after: enter a whole number of days.")
        days = 0
    else:
        if not 1 <= days <= longest:
            problems.append(f"Expires after: from 1 to {longest} days.")
    if not form.get("reason", "").strip():
        problems.append("Reason: say why, for whoever reads this score next.")
    if problems:
        return problems
    action = form.get("action", "")
    try:
        return OverrideRequest(
            action=action,
            objective=(form.get("objective") or None) if action != "sentiment" else None,
            value=value,
            reason=form.get("reason", "").strip(),
            expires_at=now + timedelta(days=days),
        )
    except ValidationError as exc:
        return [str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()]


async def writers_form(
    page: Page,
    scope: str = "write",
    not_allowed: str = "may read scores, not set or revoke overrides",
) -> tuple[dict[str, str], Viewer] | Response:
    """The posted form and who sent it, when the form is genuine and they hold `scope`."""
    form = await page.form()
    if form is None:
        return forged(page)
    viewer = page.viewer
    assert viewer is not None
    if scope not in viewer.scopes:
        return page.error(403, "Read only", f"{viewer.name} {not_allowed}.")
    return form, viewer


@router.post("/accounts/{account_id}/overrides")
async def save_override(request: Request, account_id: str) -> Response:
    page = Page(request)
    checked = await writers_form(page)
    if isinstance(checked, Response):
        return checked
    form, viewer = checked
    body = _override_request(form, _now(), request.app.state.settings.api.max_override_days)
    if isinstance(body, list):
        return await _account_page(page, account_id, form=form, errors=body, status=422)
    try:
        if form.get("intent") == "preview":
            found = await preview_override(request, account_id, body, viewer.name)
            return await _account_page(page, account_id, form=form, previewed=found)
        override_id = await record_override(request, account_id, body, viewer.name)
    except Problem as exc:
        if exc.status == 404:
            raise
        return await _account_page(page, account_id, form=form, errors=[exc.detail], status=422)
    return RedirectResponse(
        f"/console/accounts/{quote(account_id)}?saved={override_id}#overrides", status_code=303
    )


@router.post("/accounts/{account_id}/overrides/{override_id}/revoke")
async def revoke_override(request: Request, account_id: str, override_id: str) -> Response:
    page = Page(request)
    checked = await writers_form(page)
    if isinstance(checked, Response):
        return checked
    form, viewer = checked
    await revoke(request, account_id, override_id, viewer.name, form.get("reason", "")[:1000])
    return RedirectResponse(
        f"/console/accounts/{quote(account_id)}?revoked={override_id}#overrides", status_code=303
    )


# --- the portfolio ------------------------------------------------------------------------


@router.get("/portfolio")
async def portfolio_page(request: Request) -> Response:
    page = Page(request)
    model, objective = _objective(page)
    by = _one(request.query_params, "by", BY) or "owner"
    found = await read_portfolio(request.app.state.engine, model, objective, by, 90, 7, PAGE_SIZE)
    days = [(day.day, {f.band: f.accounts for f in day.bands}) for day in found.days]
    return page.render(
        "portfolio.html",
        model=model,
        objective=objective,
        by=by,
        bys=BY,
        portfolio=found,
        trend=charts.band_trend(days, found.bands, f"{objective}: accounts per band by day"),
    )


# --- the model ----------------------------------------------------------------------------


def _inputs(model: Model, name: str) -> list[dict[str, Any]]:
    factor = model.factors[name]
    return [
        {"name": a, **model.aggregates[a].model_dump(exclude_defaults=True)} for a in factor.reads
    ]


@router.get("/model")
async def model_page(request: Request) -> Response:
    page = Page(request)
    role = request.query_params.get("role", "active")
    if role not in page.models:
        return page.error(404, "No such model", f"There is no {role} model. Try the active one.")
    model = page.models[role]
    segments: list[Any] = [None, *model.segments]
    objectives = []
    for name, spec in model.objectives.items():
        weights = {
            (segment.name if segment else "default"): factor_weights(
                spec, segment.objectives.get(name) if segment else None, model
            )
            for segment in segments
        }
        objectives.append({"name": name, "spec": spec, "weights": weights})
    curves = {
        name: charts.transform_curve(f.transform, f"{name}: raw value to sub-score")
        for name, f in model.factors.items()
    }
    own = [  # transforms an objective or a segment gives a factor instead of its own
        {
            "where": where,
            "factor": factor,
            "curve": charts.transform_curve(t, f"{factor} in {where}: raw value to sub-score"),
        }
        for where, transforms in [
            *((f"objective {n}", o.transforms) for n, o in model.objectives.items()),
            *((f"segment {s.name}", s.transforms) for s in model.segments),
        ]
        for factor, t in transforms.items()
    ]
    return page.render(
        "model.html",
        role=role,
        roles=list(page.models),
        model=model,
        objectives=objectives,
        segments=[s.name if s else "default" for s in segments],
        curves=curves,
        own=own,
        inputs={name: _inputs(model, name) for name in model.factors},
    )


# --- back-tests ---------------------------------------------------------------------------


def _reports(root: Path) -> list[dict[str, Any]]:
    found = []
    for summary in [*root.glob("*/summary.json"), *root.glob("*/*/summary.json")]:
        try:
            data = json.loads(summary.read_text())
        except (OSError, ValueError):
            continue
        folder = summary.parent
        models = {}
        for name, m in (data.get("models") or {}).items():
            figures = {}
            for objective, o in (m.get("objectives") or {}).items():
                part = o.get("test") or o.get("all") or {}
                figures[objective] = part.get("roc_auc")
            models[name] = figures
        found.append(
            {
                "path": folder.relative_to(root).as_posix(),
                "modified": datetime.fromtimestamp(summary.stat().st_mtime, UTC),
                "accounts": data.get("accounts"),
                "events": (data.get("events") or {}).get("signals"),
                "outcome": data.get("outcome", "churn"),
                "models": models,
                "has_html": (folder / "report.html").is_file(),
            }
        )
    return sorted(found, key=lambda r: r["modified"], reverse=True)


def _report_folder(request: Request, path: str) -> Path | None:
    root = Path(request.app.state.settings.api.reports_dir).resolve()
    folder = (root / path).resolve()
    if not folder.is_relative_to(root) or not (folder / "summary.json").is_file():
        return None
    return folder


@router.get("/backtests")
async def backtests(request: Request) -> Response:
    page = Page(request)
    root = Path(request.app.state.settings.api.reports_dir)
    return page.render("backtests.html", reports=_reports(root), root=root)


@router.get("/backtests/{path:path}/report.html")
async def backtest_html(request: Request, path: str) -> Response:
    Page(request)
    folder = _report_folder(request, path)
    if folder is None or not (folder / "report.html").is_file():
        raise Problem(404, f"no back-test report {path!r}")
    # written by `healthscore backtest`: shown framed in the console, with no script at all
    return FileResponse(
        folder / "report.html",
        media_type="text/html",
        headers={
            "Content-Security-Policy": "default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'; frame-ancestors 'self'",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


@router.get("/backtests/{path:path}")
async def backtest(request: Request, path: str) -> Response:
    page = Page(request)
    folder = _report_folder(request, path)
    if folder is None:
        return page.error(
            404, "No such report", f"There is no back-test report {path!r}. See the list."
        )
    return page.render("backtest.html", path=path, has_html=(folder / "report.html").is_file())
