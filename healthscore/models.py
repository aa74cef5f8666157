"""`healthscore models`: model changes proposed, reviewed, promoted and restored from a shell,
with the same rules as the console and the API (shared/proposals.py). Each command prints the
proposal it leaves, as JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.config import get_settings
from shared.logging import configure_logging

models_app = typer.Typer(
    help="Propose, review, promote and restore model versions (every scorer follows).",
    no_args_is_help=True,
)

By = Annotated[str, typer.Option("--by", help="who takes this step (recorded in the audit)")]
Note = Annotated[str, typer.Option(help="why (recorded in the audit)")]


def _run(step: Callable[[Any, datetime], Coroutine[Any, Any, Any]]) -> Any:
    """Run one step in a transaction of its own; a refused step exits 1 with its reason."""
    from shared.db import create_engine, ensure_migrated
    from shared.proposals import ProposalRefused

    settings = get_settings()
    configure_logging(settings.log, service="models")

    async def main() -> Any:
        engine = create_engine(settings.database)
        try:
            await ensure_migrated(engine)
            async with engine.begin() as conn:
                return await step(conn, datetime.now(UTC))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except ProposalRefused as exc:
        typer.echo(f"refused ({exc.why}): {exc.detail}", err=True)
        raise typer.Exit(1) from exc


def _echo(found: Any) -> None:
    import orjson

    typer.echo(orjson.dumps(asdict(found), option=orjson.OPT_INDENT_2).decode())


@models_app.command("list")
def list_(
    status: Annotated[
        list[str] | None, typer.Option(help="only these statuses (repeatable)")
    ] = None,
) -> None:
    """The proposals, newest first: one line each."""
    from shared import proposals

    found = _run(lambda conn, _: proposals.listed(conn, status))
    for p in found:
        typer.echo(f"{p.proposal_id}\t{p.status}\t{p.version}\t{p.author}\t{p.reason[:60]}")


@models_app.command()
def show(proposal_id: int) -> None:
    """One proposal with every step taken on it."""
    from shared import proposals

    _echo(_run(lambda conn, _: proposals.read(conn, proposal_id)))


@models_app.command()
def propose(
    path: Annotated[Path, typer.Argument(help="a model file (YAML)")],
    by: By,
    reason: Annotated[str, typer.Option(help="what the change is for")],
) -> None:
    """Propose the model in a file; someone else approves it."""
    from shared import proposals
    from shared.errors import ConfigurationError
    from shared.scoring.model import load_model

    try:
        model = load_model(path)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc), param_hint="PATH") from exc
    _echo(_run(lambda conn, at: proposals.propose(conn, model, by, reason, at)))


@models_app.command()
def approve(proposal_id: int, by: By, note: Note = "") -> None:
    """Approve someone else's proposal: it starts as the shadow model."""
    from shared import proposals

    _echo(_run(lambda conn, at: proposals.approve(conn, proposal_id, by, note, at)))


@models_app.command()
def reject(proposal_id: int, by: By, note: Note) -> None:
    """Turn a proposal down (or withdraw your own)."""
    from shared import proposals

    _echo(_run(lambda conn, at: proposals.reject(conn, proposal_id, by, note, at)))


@models_app.command()
def promote(proposal_id: int, by: By, note: Note = "") -> None:
    """Make an approved proposal the active model; the active one is retired."""
    from shared import proposals

    _echo(_run(lambda conn, at: proposals.promote(conn, proposal_id, by, note, at)))


@models_app.command()
def restore(proposal_id: int, by: By, note: Note) -> None:
    """Make a retired model active again; the active one is retired."""
    from shared import proposals

    _echo(_run(lambda conn, at: proposals.restore(conn, proposal_id, by, note, at)))
