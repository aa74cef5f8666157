"""The console's model quality page: how well each served model's scores foresaw the outcomes
that followed them, its trend, and the outcomes themselves, which a person with the `write`
scope can add to (a renewal, a churn the billing system does not show). It reads and records
through the API's own functions (services/api/routes/outcomes.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from services.api.console import charts
from services.api.console.pages import Page, writers_form
from services.api.problems import Problem
from services.api.routes.outcomes import read_outcomes, read_quality, store_outcome
from services.api.schemas import OutcomeRequest

router = APIRouter(prefix="/console", include_in_schema=False)
OUTCOMES = ("churn", "renewal", "expansion", "return")
TREND_DAYS = 90


async def _page(
    page: Page,
    form: dict[str, str] | None = None,
    errors: list[str] | None = None,
    status: int = 200,
) -> Response:
    engine = page.request.app.state.engine
    measured = await read_quality(engine, TREND_DAYS)
    items = [
        {
            "item": item,
            "trend": charts.quality_trend(
                [
                    (p.measured_at, p.roc_auc, p.roc_auc_low, p.roc_auc_high, p.expected_roc_auc)
                    for p in item.trend
                ],
                f"{item.objective}, {item.model_role} model: ROC AUC by measurement",
            ),
        }
        for item in measured.items
    ]
    return page.render(
        "quality.html",
        status,
        items=items,
        outcomes=(await read_outcomes(engine, limit=50)).items,
        kinds=OUTCOMES,
        every=page.request.app.state.settings.scorer.quality.every_minutes,
        form=form or {},
        errors=errors or [],
        saved=page.request.query_params.get("saved"),
    )


@router.get("/quality")
async def quality_page(request: Request) -> Response:
    return await _page(Page(request))


def _outcome_request(form: dict[str, str]) -> OutcomeRequest | list[str]:
    """The form as the API's request, or what is wrong with it, in words."""
    try:
        day = datetime.combine(
            datetime.strptime(form.get("day", ""), "%Y-%m-%d").date(), time(12), UTC
        )
    except ValueError:
        return ["When: enter a date."]
    try:
        return OutcomeRequest(
            account_id=form.get("account_id", "").strip(),
            outcome=form.get("outcome", ""),
            at=day,
            source="console",
            note=form.get("note", "").strip(),
        )
    except ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]


@router.post("/quality/outcomes")
async def record(request: Request) -> Response:
    page = Page(request)
    checked = await writers_form(page)
    if isinstance(checked, Response):
        return checked
    form, viewer = checked
    body = _outcome_request(form)
    if isinstance(body, list):
        return await _page(page, form, body, 422)
    try:
        recorded, _ = await store_outcome(request, body, viewer.name)
    except Problem as exc:
        return await _page(page, form, [exc.detail], 422)
    saved: Any = recorded.outcome_id
    return RedirectResponse(f"/console/quality?saved={saved}#outcomes", status_code=303)
