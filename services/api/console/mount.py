"""Mount the console on the API app: its pages, static files and error pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.api.console import models, pages, quality
from services.api.console.session import Sessions
from services.api.problems import Problem

STATIC = Path(__file__).parent / "static"


def install_console(app: FastAPI) -> None:
    """Mount the console on `app`, after the API's problem handlers (services/api/problems.py):
    an error inside /console answers as a page, anywhere else as a problem document."""
    app.state.sessions = Sessions(app.state.settings.api)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.include_router(pages.router)
    app.include_router(quality.router)
    app.include_router(models.router)
    app.add_exception_handler(pages.SignInRequired, pages.to_sign_in)  # type: ignore[arg-type]
    for kind in (Problem, StarletteHTTPException):
        app.add_exception_handler(kind, _as_page(app.exception_handlers[kind]))


def _as_page(json_handler: Any) -> Any:
    async def handle(request: Request, exc: Exception) -> Response:
        if not request.url.path.startswith("/console"):
            return await json_handler(request, exc)  # type: ignore[no-any-return]
        if isinstance(exc, Problem):
            return pages.render_error(request, exc.status, exc.detail)
        assert isinstance(exc, StarletteHTTPException)
        return pages.render_error(request, exc.status_code, str(exc.detail))

    return handle
