"""The REST API: FastAPI on uvicorn. It reads what the scorer writes and never writes scores.

`create_app(settings)` builds the app; its lifespan owns the SQLAlchemy engine, a plain
asyncpg pool for the hottest read (services/api/health.py) and the cache of its answers
(services/api/cache.py), and refuses to start on an unmigrated database. Two pure-ASGI
middlewares wrap every request: one caps the body size (413 problem), one records request
counts and latency by route template and status. The console's pages (services/api/console/)
and the API's own docs are served beside the API, with everything they load.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api import problems
from services.api.cache import HealthCache
from services.api.console.mount import install_console
from services.api.health import HealthReader
from services.api.routes import (
    accounts,
    children,
    models,
    ops,
    outcomes,
    overrides,
    portfolio,
    webhooks,
)
from shared.config import Settings
from shared.db import create_engine, ensure_migrated
from shared.ops import settle_heap
from shared.outcomes import recorded_counter
from shared.proposals import changed, configured, following

log = structlog.get_logger(__name__)

DESCRIPTION = """Current health scores, their explanations and history, account lists, and
human overrides. Every error is `application/problem+json` (RFC 9457). Authenticate with
`Authorization: Bearer <token>`; reads need the `read` scope, overrides `write`."""


class BodyLimit:
    """Refuse request bodies over `limit` bytes with a 413 problem, streamed or not; paths
    that start with one of `models` (whole model documents) take up to `model_limit`."""

    def __init__(
        self, app: ASGIApp, limit: int, model_limit: int, models: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.limit = limit
        self.model_limit = model_limit
        self.models = models

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.model_limit if scope["path"].startswith(self.models) else self.limit
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, receive, send, limit)
            return
        if declared is not None or b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # the declared length is all that can come
            return
        # Streamed (chunked): read it here, at most `limit` bytes, then hand it on whole. (An
        # error raised while the route reads the body would become a 400 parse error.)
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > limit:
                await self._refuse(scope, receive, send, limit)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        from starlette.requests import Request

        response = problems.problem_response(
            Request(scope), 413, f"request bodies are limited to {limit} bytes"
        )
        await response(scope, receive, send)


class RequestMetrics:
    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "healthscore_api_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "healthscore_api_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            key = (scope["method"], _route(scope), status)
            children = self._children.get(key)
            if children is None:  # labels() is slow-ish: resolve each label set once
                method, template, code = key
                children = (
                    self.requests.labels(method, template, str(code)),
                    self.latency.labels(method, template),
                )
                self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)


def _route(scope: Scope) -> str:
    """The route template a request matched: FastAPI's routes name themselves in the scope;
    the plain routes it adds (/docs, /openapi.json, /redoc) only set an endpoint, and have no
    parameters, so their path is their template."""
    route = scope.get("route")
    if route is not None:
        return str(route.path)
    return str(scope["path"]) if scope.get("endpoint") is not None else "unmatched"


async def _no_reset(connection: asyncpg.Connection) -> None:
    """The hot reads change no session state: skip asyncpg's reset round trip on release."""


def _connect_arguments(settings: Settings) -> dict[str, Any]:
    db = settings.database
    return {
        "host": db.host,
        "port": db.port,
        "user": db.user,
        "password": db.password.get_secret_value(),
        "database": db.name,
    }


async def _read_pool(settings: Settings) -> asyncpg.Pool:
    """A plain asyncpg pool for the hottest read (`GET .../health`): one round trip per
    request, where a SQLAlchemy checkout adds a ping and a reset (two more)."""
    pool = await asyncpg.create_pool(
        **_connect_arguments(settings),
        min_size=1,
        max_size=settings.database.pool_size,
        reset=_no_reset,
    )
    assert pool is not None
    return pool


def _offline_docs(app: FastAPI) -> None:
    """/docs and /redoc with their scripts served from this process (the fastapi-offline
    package ships them), not from a public CDN: they work inside a closed network."""
    import fastapi_offline

    app.mount(
        "/static/docs",
        StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"),
        name="docs-static",
    )

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/static/docs/swagger-ui-bundle.js",
            swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/docs/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            redoc_js_url="/static/docs/redoc.standalone.js",
            redoc_favicon_url="/static/docs/favicon.png",
            with_google_fonts=False,
        )


async def _follow_models(app: FastAPI, engine: Any, settings: Settings) -> None:
    """Serve the active and shadow models of the database as they change (shared/proposals.py):
    what lists, previews and pages evaluate with."""
    while True:
        await asyncio.sleep(settings.scorer.model_follow_seconds)
        served = {role: model.version for role, model in app.state.models.items()}
        try:
            found = await changed(engine, app.state.model_files, served, _now())
        except Exception as exc:  # the database away: keep the models, look again later
            log.warning("api.models_follow_failed", error=repr(exc)[:300])
            continue
        if found is not None:
            app.state.models = found
            log.info("api.models_loaded", models={r: m.version for r, m in found.items()})


def _now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database)
        try:
            await ensure_migrated(engine)
            app.state.models = await following(engine, app.state.model_files, _now())
            app.state.engine = engine
            app.state.reads = await _read_pool(settings)
            app.state.health_reader = HealthReader(app.state.reads, app.state.registry)
            await app.state.health_cache.start()
            settle_heap()
            follower = asyncio.create_task(_follow_models(app, engine, settings))
            try:
                yield
            finally:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
                await app.state.health_cache.close()
                await app.state.reads.close()
        finally:
            await engine.dispose()

    app = FastAPI(
        title="Account Health",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.registry = registry or CollectorRegistry(auto_describe=True)
    app.state.health_cache = HealthCache(
        lambda: asyncpg.connect(**_connect_arguments(settings)),
        settings.api.health_cache_mb * 1024 * 1024,
        app.state.registry,
    )
    # what an empty database is seeded with (and served before migration 0018)
    app.state.model_files = configured(settings.scorer)
    app.state.models = app.state.model_files  # until the database's are read
    app.state.outcomes = recorded_counter(app.state.registry)
    problems.install(app)
    for router in (
        accounts.router,
        children.router,
        models.router,
        overrides.router,
        outcomes.router,
        portfolio.router,
        webhooks.router,
        ops.router,
    ):
        app.include_router(router)
    _offline_docs(app)
    install_console(app)
    app.add_middleware(
        BodyLimit,
        limit=settings.api.max_body_bytes,
        model_limit=settings.api.max_model_bytes,
        models=("/v1/models/proposals", "/console/models"),
    )
    app.add_middleware(RequestMetrics, registry=app.state.registry)
    return app
