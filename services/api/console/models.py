"""The console's model changes: the proposals, a form to propose one (the active model's weights,
bands and advice to edit, or a whole model file), each proposal's impact and diff before
anything changes, and the steps of its review. Proposing and reviewing take the `model` scope,
and the steps go through the API's own functions (services/api/routes/models.py), under the
same rules: never approved by its author, every step audited."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from services.api.console.pages import Page, writers_form
from services.api.problems import Problem
from services.api.routes.models import impact, propose, step_of, transacted
from services.api.schemas import ProposalRequest
from shared import proposals
from shared.scoring.model import Model

router = APIRouter(prefix="/console", include_in_schema=False)


async def _modeller(page: Page) -> tuple[dict[str, str], str] | Response:
    """The posted form and who sent it, when the form is genuine and they may change models."""
    checked = await writers_form(page, "model", "may read models, not propose or review them")
    return checked if isinstance(checked, Response) else (checked[0], checked[1].name)


def _editable(model: Model) -> list[dict[str, Any]]:
    """The objectives' group weights and bands, as the form shows them."""
    return [
        {
            "name": name,
            "groups": spec.groups,
            "bands": sorted(spec.bands, key=lambda b: b.min),
        }
        for name, spec in model.objectives.items()
    ]


def edited(model: Model, form: dict[str, str]) -> dict[str, Any]:
    """`model`'s document with the form's weights, band edges and advice (unparsable numbers
    are left for validation to name)."""
    document = model.model_dump(mode="json", exclude_defaults=True)
    for key, value in form.items():
        kind, _, rest = key.partition(":")
        if kind == "weight":
            objective, _, group = rest.partition(":")
            document["objectives"][objective]["groups"][group] = _number(value)
        elif kind == "band":
            objective, _, band = rest.partition(":")
            for entry in document["objectives"][objective]["bands"]:
                if entry["name"] == band:
                    entry["min"] = _number(value)
        elif kind == "advice" and rest in document["factors"]:
            document["factors"][rest]["advice"] = value.strip()
    return document


def _number(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value


async def _list(
    page: Page,
    form: dict[str, str] | None = None,
    errors: list[str] | None = None,
    status: int = 200,
) -> Response:
    async with page.request.app.state.engine.connect() as conn:
        found = await proposals.listed(conn, limit=100)
    active = page.models["active"]
    return page.render(
        "models.html",
        status,
        proposals=found,
        objectives=_editable(active),
        factors=active.factors,
        active=active,
        form=form or {},
        errors=errors or [],
    )


@router.get("/models")
async def proposals_page(request: Request) -> Response:
    return await _list(Page(request))


@router.post("/models")
async def make_proposal(request: Request) -> Response:
    page = Page(request)
    checked = await _modeller(page)
    if isinstance(checked, Response):
        return checked
    form, author = checked
    upload = (await request.form()).get("file")
    text = form.get("yaml", "").strip()
    if isinstance(upload, UploadFile) and upload.filename:
        text = (await upload.read()).decode("utf-8", errors="replace")
    try:
        body = ProposalRequest(
            yaml=text or None,
            document=None if text else edited(page.models["active"], form),
            reason=form.get("reason", "").strip(),
        )
        made = await propose(request, body, author)
    except ValidationError as exc:
        errors = [f"{'.'.join(map(str, e['loc'])) or 'model'}: {e['msg']}" for e in exc.errors()]
        return await _list(page, form, errors, 422)
    except (Problem, KeyError) as exc:
        detail = exc.detail if isinstance(exc, Problem) else f"no such part of the model: {exc}"
        return await _list(page, form, [detail], 422)
    return RedirectResponse(f"/console/models/{made.proposal_id}", status_code=303)


async def _proposal(
    page: Page, proposal_id: int, errors: list[str] | None = None, status: int = 200
) -> Response:
    request = page.request
    try:
        found = await transacted(request, lambda conn, _: proposals.read(conn, proposal_id))
    except Problem:
        return page.error(404, "No such proposal", f"There is no proposal {proposal_id}.")
    effect = None
    if found.status != "active":  # against itself it would change nothing
        async with request.app.state.engine.connect() as conn:
            effect = await impact(
                conn,
                page.models["active"],
                proposal_id,
                request.app.state.settings.scorer.news_retention_days,
            )
    viewer = page.viewer
    assert viewer is not None
    return page.render(
        "proposal.html",
        status,
        proposal=found,
        impact=effect,
        steps=proposals.steps_from(found.status) if viewer.can_model else (),
        needs_note=proposals.NOTE_NEEDED,
        own=found.author == viewer.name,
        errors=errors or [],
        done=request.query_params.get("done"),
    )


@router.get("/models/{proposal_id}")
async def proposal_page(request: Request, proposal_id: int) -> Response:
    return await _proposal(Page(request), proposal_id)


@router.post("/models/{proposal_id}/{step}")
async def take_step(request: Request, proposal_id: int, step: str) -> Response:
    page = Page(request)
    checked = await _modeller(page)
    if isinstance(checked, Response):
        return checked
    form, actor = checked
    if step not in proposals.STEPS:
        return page.error(404, "No such step", f"{step!r} is not a step of a proposal.")
    try:
        await transacted(request, step_of(step, proposal_id, actor, form.get("note", "").strip()))
    except Problem as exc:
        return await _proposal(page, proposal_id, [exc.detail], exc.status)
    return RedirectResponse(f"/console/models/{proposal_id}?done={step}", status_code=303)
