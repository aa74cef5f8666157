"""Unauthenticated operations endpoints and the model description."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.api import examples
from services.api.auth import Reader
from services.api.problems import problem_response, problem_responses
from services.api.schemas import ModelResponse, ModelsResponse
from shared.db import ensure_migrated
from shared.errors import DatabaseNotMigrated

router = APIRouter(tags=["operations"])
METRICS_EXAMPLE = 'healthscore_api_requests_total{method="GET",route="/healthz",status="200"} 3.0\n'


@router.get("/healthz", response_model=dict[str, str], responses=examples.ok({"status": "ok"}))
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={**problem_responses(503), **examples.ok({"ready": True})})
async def readyz(request: Request) -> JSONResponse:
    """The database is reachable and migrated."""
    try:
        await ensure_migrated(request.app.state.engine)
    except DatabaseNotMigrated as exc:
        return problem_response(request, 503, str(exc), slug="not-ready")
    except Exception as exc:  # unreachable, refused, timed out
        return problem_response(
            request, 503, f"database unavailable: {type(exc).__name__}", slug="not-ready"
        )
    return JSONResponse({"ready": True})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"example": METRICS_EXAMPLE}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/v1/models",
    tags=["models"],
    responses={**problem_responses(401, 403), **examples.ok(examples.MODELS)},
)
async def models(request: Request, caller: Reader) -> ModelsResponse:
    """The active model (and any shadow): factors, weights, segments, bands and caps."""
    return ModelsResponse(
        models=[
            ModelResponse(
                role=role, version=model.version, definition=model.model_dump(mode="json")
            )
            for role, model in request.app.state.models.items()
        ]
    )
