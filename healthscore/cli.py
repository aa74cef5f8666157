"""`healthscore`: one console entry point, a subcommand per process.

Each subcommand builds the settings once, configures logging, and runs one service until
SIGINT/SIGTERM, which triggers a graceful stop (the batch in flight drains, then clients close).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from healthscore.models import models_app
from shared.config import Settings, get_settings
from shared.logging import configure_logging

app = typer.Typer(
    help="Account Health: streaming, explainable account-health scores.",
    no_args_is_help=True,
    add_completion=False,
)


def run_until_signalled(main: Callable[[asyncio.Event], Coroutine[Any, Any, Any]]) -> Any:
    """Run `main(stop)` on uvloop; SIGINT/SIGTERM set `stop` for a graceful shutdown. A crash
    in native code (SIGSEGV, an abort) writes every thread's Python stack to stderr first."""
    import faulthandler

    import uvloop

    faulthandler.enable()

    async def runner() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        return await main(stop)

    return uvloop.run(runner())


def _settings(service: str) -> Settings:
    from prometheus_client import disable_created_metrics

    disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created`: only cardinality
    settings = get_settings()
    configure_logging(settings.log, service=service)
    return settings


@app.command()
def migrate(
    to: Annotated[
        str,
        typer.Option(
            help="the revision to take the database to, up or down (e.g. 0015: the lean store's"
            " first half, for a rolling upgrade; docs/runbook.md)"
        ),
    ] = "head",
) -> None:
    """Apply the database migrations (idempotent); an empty database's model proposals are
    seeded from the configured model files."""
    from shared.db import create_engine
    from shared.db import migrate as apply
    from shared.proposals import configured, following

    settings = _settings("migrate")
    apply(settings.database, to=to)

    async def register() -> None:
        engine = create_engine(settings.database)
        try:
            exists = await _scalar(engine, "SELECT to_regclass('model_proposals') IS NOT NULL")
            if exists:  # from revision 0015 on
                await following(engine, configured(settings.scorer), _now())
        finally:
            await engine.dispose()

    asyncio.run(register())
    typer.echo(f"database migrated to {to}")


async def _scalar(engine: Any, sql: str) -> Any:
    from sqlalchemy import text

    async with engine.connect() as conn:
        return await conn.scalar(text(sql))


def _now() -> datetime:
    return datetime.now(UTC)


@app.command()
def ingest() -> None:
    """Validate raw events into signals; dead-letter what is invalid."""
    from services.ingest.consume import serve

    settings = _settings("ingest")
    run_until_signalled(lambda stop: serve(settings, stop))


@app.command()
def scorer() -> None:
    """Keep every account's health score, history and change events up to date."""
    from services.scorer.consume import serve

    settings = _settings("scorer")
    run_until_signalled(lambda stop: serve(settings, stop))


@app.command()
def notify() -> None:
    """Deliver the change events to webhook subscribers (signed, retried, dead-lettered)."""
    from services.notify.serve import serve

    settings = _settings("notify")
    run_until_signalled(lambda stop: serve(settings, stop))


@app.command()
def api() -> None:
    """Serve the REST API (scores, history, account lists, overrides)."""
    import uvicorn

    from services.api.app import create_app

    settings = _settings("api")
    uvicorn.run(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


@app.command()
def token(
    name: Annotated[str, typer.Option(help="who holds it (shown as override author)")],
    scopes: Annotated[
        str,
        typer.Option(help="comma-separated: read, write, admin (webhooks), model (proposals)"),
    ] = "read",
) -> None:
    """Issue an API token: prints the token once and the entry to add to the settings."""
    import orjson

    from services.api.auth import issue_token

    wanted = sorted({s.strip() for s in scopes.split(",") if s.strip()})
    if not wanted or set(wanted) - {"read", "write", "admin", "model"}:
        raise typer.BadParameter("scopes are read, write, admin and model")
    secret, digest = issue_token()
    typer.echo(f"token (give it to {name}; it is not stored anywhere): {secret}")
    typer.echo(
        "add to HEALTHSCORE_API__TOKENS: "
        + orjson.dumps({"name": name, "sha256": digest, "scopes": wanted}).decode()
    )


@app.command()
def simulate(
    accounts: Annotated[int, typer.Option(help="number of synthetic accounts")] = 2000,
    seed: Annotated[int, typer.Option(help="random seed: same seed, same events")] = 7,
    history_days: Annotated[int, typer.Option(help="days back-filled before going live")] = 30,
    day_seconds: Annotated[float, typer.Option(help="wall seconds per simulated day")] = 60.0,
    rate: Annotated[
        float, typer.Option(help="max events per second once live (0 = unlimited)")
    ] = 2000.0,
    malformed_fraction: Annotated[float, typer.Option(help="share of broken records")] = 0.01,
    max_events: Annotated[int | None, typer.Option(help="stop after this many")] = None,
    intensity: Annotated[float, typer.Option(help="event volume multiplier")] = 1.0,
    out: Annotated[
        Path | None,
        typer.Option(help="write events.jsonl + outcomes.csv here instead of producing to Kafka"),
    ] = None,
    days: Annotated[int, typer.Option(help="days of history written with --out")] = 180,
    start: Annotated[
        str | None,
        typer.Option(help="first day (ISO date) with --out; default: `days` before today"),
    ] = None,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="v1, or vendors' formats to send what they carry in: segment,stripe,zendesk",
        ),
    ] = "v1",
) -> None:
    """Produce realistic raw events for N accounts (or write them to files)."""
    from services.simulator.produce import midnight, produce_live, write_files
    from services.simulator.vendors import Vendors
    from services.simulator.world import World

    settings = _settings("simulate")
    wanted = {f.strip() for f in format.split(",") if f.strip()} - {"v1"}
    try:
        vendors = Vendors(wanted) if wanted else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--format") from exc
    today = midnight(datetime.now(UTC))
    if out is not None:
        first = (
            datetime.fromisoformat(start).replace(tzinfo=UTC)
            if start
            else (today - timedelta(days=days))
        )
        world = World(seed, accounts, start=first, days=days, intensity=intensity)
        events, churned = write_files(world, out, vendors)
        typer.echo(f"wrote {events} events for {accounts} accounts ({churned} churned) to {out}")
        return
    world = World(
        seed,
        accounts,
        # the back-filled history ends now, where the live days take over
        start=datetime.now(UTC) - timedelta(days=history_days),
        days=max(history_days * 3, 30),  # trajectories turn within the first few weeks
        intensity=intensity,
    )
    produced = run_until_signalled(
        lambda stop: produce_live(
            settings,
            world,
            history_days=history_days,
            day_seconds=day_seconds,
            rate=rate,
            malformed_fraction=malformed_fraction,
            max_events=max_events,
            stop=stop,
            vendors=vendors,
        )
    )
    typer.echo(f"produced {produced} events")


dlq_app = typer.Typer(help="Inspect and re-inject dead-lettered raw records.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(models_app, name="models")


def _positions(offsets: list[str]) -> set[tuple[int, int]] | None:
    if not offsets:
        return None
    try:
        return {(int(p), int(o)) for p, o in (item.split(":", 1) for item in offsets)}
    except ValueError as exc:
        raise typer.BadParameter("--offset takes PARTITION:OFFSET of the DLQ topic") from exc


FROM_TOPIC = "only from this topic (a raw topic, or the signals topic)"


@dlq_app.command("list")
def dlq_list(
    reason: Annotated[str | None, typer.Option(help="only this reason")] = None,
    source_topic: Annotated[str | None, typer.Option(help=FROM_TOPIC)] = None,
    limit: Annotated[int, typer.Option(help="at most this many (newest last)")] = 100,
) -> None:
    """Print dead letters as JSON lines: reason, detail, origin, preview."""
    import orjson

    from services.ingest.dlq import dead_letters

    settings = _settings("dlq")
    letters = run_until_signalled(
        lambda stop: dead_letters(settings.kafka, reason=reason, source_topic=source_topic)
    )
    for letter in letters[-limit:]:
        typer.echo(orjson.dumps(letter.describe()).decode())
    typer.echo(f"{len(letters)} dead letters match", err=True)


@dlq_app.command("replay")
def dlq_replay(
    reason: Annotated[str | None, typer.Option(help="only this reason")] = None,
    source_topic: Annotated[str | None, typer.Option(help=FROM_TOPIC)] = None,
    offset: Annotated[
        list[str] | None, typer.Option(help="DLQ PARTITION:OFFSET (repeatable)")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="really send (else: dry run)")] = False,
) -> None:
    """Re-produce matching dead letters, unchanged, to the topic they came from."""
    from services.ingest.dlq import dead_letters, replay

    settings = _settings("dlq")
    letters = run_until_signalled(
        lambda stop: dead_letters(
            settings.kafka,
            reason=reason,
            source_topic=source_topic,
            positions=_positions(offset or []),
        )
    )
    if not yes:
        typer.echo(f"dry run: {len(letters)} dead letters would be replayed (add --yes)")
        return
    sent = run_until_signalled(lambda stop: replay(settings.kafka, letters))
    typer.echo(f"replayed {sent} dead letters to their source topics")


@app.command()
def schemas(out: Annotated[Path, typer.Option()] = Path("docs/schemas")) -> None:
    """Write the JSON Schema files of the v1 events and the signal."""
    import orjson

    from shared.events import json_schemas

    out.mkdir(parents=True, exist_ok=True)
    for stem, schema in json_schemas().items():
        (out / f"{stem}.schema.json").write_bytes(
            orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
    typer.echo(f"wrote {len(json_schemas())} schemas to {out}")


@app.command()
def openapi(out: Annotated[Path, typer.Option()] = Path("docs/openapi.json")) -> None:
    """Write the API's OpenAPI document."""
    import orjson

    from services.api.app import create_app

    document = create_app(get_settings()).openapi()
    out.write_bytes(
        orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    typer.echo(f"wrote {out}")


# --- model refinement (needs the `modelling` extra: pip install '.[modelling]') -------------

Events = Annotated[Path, typer.Option(help="raw events, one v1 JSON event per line")]
Outcomes = Annotated[
    Path,
    typer.Option(
        help="CSV of account_id,event,at (churn, return, renewal, expansion, ...) or of "
        "account_id,churned_at (empty = retained)"
    ),
]
Outcome = Annotated[
    str, typer.Option(help="the outcome to predict: churn, renewal, expansion, or any event")
]
AsOf = Annotated[
    list[str] | None,
    typer.Option(help="score at this ISO time (repeatable); default: every 30 days"),
]
Horizon = Annotated[
    float, typer.Option(help="the outcome within this many days after as-of counts")
]
Jobs = Annotated[
    int | None, typer.Option(help="processes to score accounts in; default: one per core")
]
TestFrom = Annotated[
    str | None,
    typer.Option(help="as-of times from this ISO time on are the test split; default: later half"),
]


def _instant(text: str) -> float:
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not an ISO date or time") from exc
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _replay_inputs(events: Path, outcomes: Path) -> tuple[Any, Any]:
    from services.modelling.replay import load_outcomes
    from shared.event_files import load_events

    return load_events(events), load_outcomes(outcomes)


@app.command()
def backtest(
    events: Events,
    outcomes: Outcomes,
    model: Annotated[
        list[Path] | None,
        typer.Option(help="model file (repeatable: compared side by side); default: active"),
    ] = None,
    as_of: AsOf = None,
    horizon: Horizon = 30.0,
    test_from: TestFrom = None,
    lookback: Annotated[int, typer.Option(help="days before churn scanned for lead time")] = 90,
    out: Annotated[Path, typer.Option(help="report folder")] = Path("reports/backtest"),
    outcome: Outcome = "churn",
    jobs: Jobs = None,
) -> None:
    """Replay events through validation and scoring; measure how well scores predict an
    outcome (churn by default)."""
    import time

    import orjson

    from services.modelling.backtest import backtest as run
    from services.modelling.backtest import default_as_of, default_test_from
    from services.modelling.parts import default_parts
    from services.modelling.report import write_report
    from shared.scoring.model import load_model

    settings = _settings("backtest")
    started = time.perf_counter()
    history, happened = _replay_inputs(events, outcomes)
    models = {}
    for path in model or [settings.scorer.model_path]:
        loaded = load_model(path)
        models[loaded.name if loaded.name not in models else loaded.version] = loaded
    cuts = [_instant(t) for t in as_of] if as_of else default_as_of(history, horizon * 86_400)
    split_at = _instant(test_from) if test_from else default_test_from(cuts)
    parts = jobs or default_parts()
    summary, full = run(
        history, happened, models, cuts, horizon, split_at, lookback, outcome, parts
    )
    summary["seconds"] = round(time.perf_counter() - started, 1)
    written = write_report(out, summary, full, "test" if split_at is not None else "all")
    typer.echo(f"wrote {', '.join(str(p) for p in written)}")
    figures = {
        label: {
            objective: entry.get("test", entry["all"])["roc_auc"]
            for objective, entry in m["objectives"].items()
        }
        for label, m in summary["models"].items()
    }
    typer.echo(
        orjson.dumps(
            {
                "accounts": summary["accounts"],
                "signals": summary["events"]["signals"],
                "roc_auc": figures,
                "seconds": summary["seconds"],
            }
        ).decode()
    )


@app.command("validate")
def validate_files(
    files: Annotated[list[Path], typer.Argument(help="raw records: JSON lines or a JSON array")],
    format: Annotated[
        str, typer.Option("--format", help="v1, segment, stripe, zendesk or mapping:NAME")
    ] = "v1",
    mapping: Annotated[
        Path | None, typer.Option(help="the mappings file that mapping:NAME refers to")
    ] = None,
    any_age: Annotated[
        bool, typer.Option(help="accept events of any date (history), as `import` does")
    ] = False,
) -> None:
    """Dry-run ingest on files: print what each record becomes, then a JSON summary line."""
    import orjson

    from shared.errors import ConfigurationError
    from shared.event_files import REPLAY_LIMITS
    from shared.sources.dryrun import dry_run
    from shared.validate import Limits

    settings = _settings("validate")
    if mapping is not None:
        ingest = settings.ingest.model_copy(update={"mappings_path": mapping})
        settings = settings.model_copy(update={"ingest": ingest})
    cfg = settings.ingest
    limits = (
        REPLAY_LIMITS
        if any_age
        else Limits(
            max_record_bytes=cfg.max_record_bytes,
            max_future_skew=timedelta(seconds=cfg.max_future_skew_seconds),
            max_age=timedelta(days=cfg.max_age_days),
        )
    )

    async def main() -> None:
        async for line in dry_run(format, files, settings, limits):
            typer.echo(orjson.dumps(line).decode())

    try:
        asyncio.run(main())
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command("import")
def import_(
    events: Annotated[
        list[Path], typer.Argument(help="raw event files, one event per line (as ingest takes)")
    ],
    chunk: Annotated[int, typer.Option(help="accounts per transaction")] = 500,
    until: Annotated[
        str | None,
        typer.Option(help="import only events before this time, where the live stream takes over"),
    ] = None,
) -> None:
    """Load history before go-live: score it in event time, write history as of then, send no
    change events. Run it with the scorer stopped; run it again to resume after a crash."""
    import orjson

    from services.scorer.imports import import_history
    from shared.db import create_engine, ensure_migrated
    from shared.proposals import configured, following

    settings = _settings("import")
    files = configured(settings.scorer)

    async def main(stop: asyncio.Event) -> Any:
        engine = create_engine(settings.database)
        try:
            await ensure_migrated(engine)
            return await import_history(
                settings,
                engine,
                events,
                await following(engine, files, _now()),  # the models the scorers serve
                chunk_accounts=chunk,
                until=_instant(until) if until else None,
                stop=stop,
            )
        finally:
            await engine.dispose()

    result = run_until_signalled(main)
    typer.echo(orjson.dumps(result.__dict__ | {"seconds": round(result.seconds, 1)}).decode())


@app.command()
def fit(
    events: Events,
    outcomes: Outcomes,
    out: Annotated[Path, typer.Option(help="where to write the fitted model YAML")],
    model: Annotated[
        Path | None, typer.Option(help="model to start from; default: the active model")
    ] = None,
    name: Annotated[str | None, typer.Option(help="fitted model's name")] = None,
    objective: Annotated[str, typer.Option(help="objective to fit")] = "churn_risk",
    as_of: AsOf = None,
    horizon: Horizon = 30.0,
    test_from: TestFrom = None,
    c: Annotated[float, typer.Option(help="inverse L2 regularisation strength")] = 1.0,
    min_segment_samples: Annotated[
        int, typer.Option(help="training samples a segment needs for weights of its own")
    ] = 500,
    outcome: Outcome = "churn",
    shapes: Annotated[
        bool, typer.Option(help="learn each factor's shape from the data (else keep the model's)")
    ] = True,
    jobs: Jobs = None,
    require_better: Annotated[
        bool,
        typer.Option(
            help="write nothing, and exit 1, unless the fitted model ranks the held-out "
            "accounts better than the input model"
        ),
    ] = False,
) -> None:
    """Fit an objective's shapes and weights from outcomes; write and validate a new model.
    Says on stderr which model to use (the held-out comparison) and what makes the figures
    less than they seem; the JSON on stdout carries both (`recommendation`, `warnings`)."""
    import orjson
    import yaml

    from services.modelling.backtest import default_as_of, default_test_from
    from services.modelling.fit import compare, dump_model
    from services.modelling.parts import default_parts
    from shared.errors import ConfigurationError
    from shared.scoring.model import load_model

    settings = _settings("fit")
    path = model or settings.scorer.model_path
    base = load_model(path)
    if objective not in base.objectives:
        raise typer.BadParameter(f"{path} has no objective {objective!r}")
    history, happened = _replay_inputs(events, outcomes)
    cuts = [_instant(t) for t in as_of] if as_of else default_as_of(history, horizon * 86_400)
    split_at = _instant(test_from) if test_from else default_test_from(cuts)
    if split_at is None:
        raise typer.BadParameter("fitting needs at least two as-of times (train and test)")
    try:
        fitted, candidate, figures = compare(
            history,
            happened,
            base,
            yaml.safe_load(path.read_text()),
            as_of=cuts,
            horizon_days=horizon,
            test_from=split_at,
            objective=objective,
            name=name or f"{base.name}-fitted",
            c=c,
            min_segment_samples=min_segment_samples,
            outcome=outcome,
            shapes=shapes,
            parts=jobs or default_parts(),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    recommendation = figures["recommendation"]
    typer.echo(f"fit: use the {recommendation['use']} model: {recommendation['because']}", err=True)
    for warning in figures["warnings"]:
        typer.echo(f"fit: warning: {warning}", err=True)
    if require_better and recommendation["use"] != "fitted":
        typer.echo(f"fit: --require-better: {out} not written", err=True)
        typer.echo(orjson.dumps(figures).decode())
        raise typer.Exit(1)
    out.parent.mkdir(parents=True, exist_ok=True)
    counted = ", ".join(f"{n} {event}" for event, n in happened.counts().items())
    source = f"{events.name}; {counted or 'no outcomes'}"
    out.write_text(dump_model(fitted.document, figures, source))
    if load_model(out).version != candidate.version:  # the file says what was measured
        raise ConfigurationError(f"{out}: written model differs from the fitted one")
    typer.echo(f"wrote {out} ({candidate.version})")
    typer.echo(orjson.dumps(figures).decode())


@app.command()
def dev(
    accounts: Annotated[int, typer.Option(help="simulated accounts")] = 2000,
    data_dir: Annotated[Path, typer.Option(help="PostgreSQL data and logs")] = Path(".data"),
    simulate: Annotated[bool, typer.Option(help="run the simulator too")] = True,
    format: Annotated[
        str,
        typer.Option("--format", help="what the simulator sends: v1, or vendors' formats"),
    ] = "segment,stripe,zendesk",
) -> None:
    """Run the whole system locally: broker, database, services and simulator."""
    from healthscore.dev import run_dev

    run_dev(accounts=accounts, data_dir=data_dir.resolve(), with_simulator=simulate, formats=format)


if __name__ == "__main__":
    app()
