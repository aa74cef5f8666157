"""Writes the legacy fixture: a database written by release 0014 (commit b320f91), the last
release that stored each account's state as a JSON document with its de-duplication memory
inside, and each score's explanation beside it.

It was run once, from a checkout of that release (`python tests/data/legacy/make_fixture.py`),
and its outputs are kept here; the code it calls has changed since, so it is not run again.
Outputs (in this folder):
- release-0014.sql.gz: pg_dump of the database (schema at revision 0014, data);
- release-0014-documents.json.gz: what that release's API answered for every account's
  `GET .../health` and `GET .../health/history`;
- models/: the active and shadow models the scorer ran (the shadow one reads windows,
  lifetime counts, first-seen times and market news, so that every part of a state is there);
- release-0014.tar.gz: the release's code (healthscore/, services/, shared/), which the rolling
  upgrade scenario (tests/reliability) runs as "today's scorers".

What the database holds: 48 simulated accounts over 30 days (5% re-deliveries) scored by the
real scorer with a shadow model; overrides (pin, adjust, sentiment, one revoked) applied as
the API sends them; market news; a catch-up of old signals whose band changes are held; 6
accounts imported from history (their `floor` set); then a sweep.
"""

from __future__ import annotations

import asyncio
import gzip
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import yaml
from prometheus_client import CollectorRegistry

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from healthscore.devstack import postgres_bindir  # noqa: E402
from services.scorer.consume import Scorer  # noqa: E402
from services.scorer.imports import import_history  # noqa: E402
from services.simulator.world import World  # noqa: E402
from shared.config import DEFAULT_MODEL_PATH  # noqa: E402
from shared.db import create_engine, migrate  # noqa: E402
from shared.events import Signal  # noqa: E402
from shared.scoring.model import load_model  # noqa: E402
from tests.support.infra import (  # noqa: E402
    admin_sql,
    connect,
    isolated_settings,
    running,
    running_infrastructure,
)
from tests.support.signals import (  # noqa: E402
    produce_signals,
    signal_of,
    simulated_signals,
    wait_consumed,
)

FAR = datetime(2099, 1, 1, tzinfo=UTC)


def shadow_model_doc() -> dict:
    doc = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    doc["name"] = "legacy-shadow"
    aggregates = doc["aggregates"]
    aggregates["first_session"] = {"kind": "first_seen", "signals": ["session_started"]}
    aggregates["tickets_ever"] = {"kind": "count", "signals": ["ticket_opened"]}
    aggregates["tickets_week"] = {
        "kind": "window_count",
        "signals": ["ticket_opened"],
        "window_days": 7,
    }
    aggregates["features_week"] = {
        "kind": "window_sum",
        "signals": ["feature_used"],
        "field": "count",
        "window_days": 7,
    }
    factors = doc["factors"]
    factors["tenure"] = {
        "group": "usage",
        "days_since": "first_session",
        "transform": {"piecewise": [[0, 0], [365, 100]]},
    }
    factors["lifetime_tickets"] = {
        "group": "support",
        "aggregate": "tickets_ever",
        "transform": {"piecewise": [[0, 100], [50, 0]]},
    }
    factors["tickets_this_week"] = {
        "group": "support",
        "aggregate": "tickets_week",
        "transform": {"piecewise": [[0, 100], [5, 0]]},
    }
    factors["features_this_week"] = {
        "group": "usage",
        "aggregate": "features_week",
        "transform": {"piecewise": [[0, 0], [30, 100]]},
    }
    factors["market_news"] = {
        "group": "market",
        "market": {"half_life_days": 30},
        "transform": {"piecewise": [[-1, 0], [0, 50], [1, 100]]},
    }
    churn = doc["objectives"]["churn_risk"]
    churn["factors"].update(
        tenure=1, lifetime_tickets=1, tickets_this_week=1, features_this_week=1, market_news=2
    )
    churn["groups"]["market"] = 0.2
    return doc


def override(account: str, n: int, action: str, value: float, at: datetime) -> Signal:
    data = {
        "override_id": f"ovr-{n}",
        "action": action,
        "objective": None if action == "sentiment" else "churn_risk",
        "value": value,
        "reason": f"fixture {action}",
        "author": "csm@example.com",
        "expires_at": FAR.isoformat(),
    }
    return Signal(
        signal_id=f"override_set-ovr-{n}",
        account_id=account,
        occurred_at=at,
        source="api",
        kind="override_set",
        data=data,
        ingested_at=at,
    )


async def main() -> None:
    models = HERE / "models"
    models.mkdir(exist_ok=True)
    (models / "default.yaml").write_text(DEFAULT_MODEL_PATH.read_text())
    (models / "shadow.yaml").write_text(yaml.safe_dump(shadow_model_doc(), sort_keys=False))
    with tempfile.TemporaryDirectory() as work, running_infrastructure(Path(work)) as infra:
        tag = uuid.uuid4().hex[:8]
        name = "legacy_0014"
        await admin_sql(infra.database, f'CREATE DATABASE "{name}"')
        settings = isolated_settings(
            infra,
            tag,
            name,
            scorer={
                "metrics_port": 0,
                "shadow_model_path": str(models / "shadow.yaml"),
                "replay_hold_seconds": 10 * 365 * 86400.0,  # held changes stay held
                "sweep_interval_seconds": 3600,
            },
        )
        await asyncio.to_thread(migrate, settings.database)
        engine = create_engine(settings.database)
        now = datetime.now(UTC)
        signals = simulated_signals(
            48, 30, seed=14, end=now - timedelta(hours=2), duplicate_share=0.05
        )
        accounts = sorted({s.account_id for s in signals})
        # overrides as the API records them: a row each, and the signal the scorer applies
        overrides = [
            (accounts[0], 1, "pin", 20.0),
            (accounts[1], 2, "adjust", -10.0),
            (accounts[2], 3, "sentiment", 85.0),
            (accounts[3], 4, "pin", 90.0),
        ]
        conn = await connect(settings.database)
        try:
            for account, n, action, value in overrides:
                await conn.execute(
                    "INSERT INTO overrides (override_id, account_id, action, objective, value,"
                    " reason, author, created_at, expires_at, revoked_at, revoked_by,"
                    " revoke_reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    f"ovr-{n}",
                    account,
                    action,
                    None if action == "sentiment" else "churn_risk",
                    value,
                    f"fixture {action}",
                    "csm@example.com",
                    now - timedelta(hours=1),
                    FAR,
                    now - timedelta(minutes=30) if n == 4 else None,
                    "lead@example.com" if n == 4 else None,
                    "fixture revoke" if n == 4 else None,
                )
        finally:
            await conn.close()
        stream = list(signals)
        stream += [override(a, n, act, v, now - timedelta(hours=1)) for a, n, act, v in overrides]
        stream.append(
            Signal(
                signal_id="override_revoked-ovr-4",
                account_id=accounts[3],
                occurred_at=now - timedelta(minutes=30),
                source="api",
                kind="override_revoked",
                data={
                    "override_id": "ovr-4",
                    "author": "lead@example.com",
                    "reason": "fixture revoke",
                },
                ingested_at=now - timedelta(minutes=30),
            )
        )
        industry = next(s.data["industry"] for s in signals if s.kind == "account_profile_updated")
        stream.append(
            signal_of(
                {
                    "event_id": "news-fixture",
                    "type": "market_event",
                    "schema_version": 1,
                    "occurred_at": (now - timedelta(days=2)).isoformat(),
                    "scope": {"industry": industry},
                    "topic": "regulatory_change",
                    "impact": -0.8,
                    "title": "A fixture's market news",
                },
                now - timedelta(minutes=20),
            )
        )
        total = await produce_signals(settings, stream)
        async with running(Scorer(settings, engine, registry=CollectorRegistry())) as scorer:
            await wait_consumed(engine, settings, total, timeout=300)
            await scorer.sweep()
        # a catch-up of old signals: cancellations a day old, whose band changes are held
        late = [
            Signal(
                signal_id=f"late-{account}",
                account_id=account,
                occurred_at=now - timedelta(days=1),
                source="billing",
                kind="subscription_cancelled",
                data={"subscription_id": f"sub-{account}"},
                ingested_at=now - timedelta(minutes=5),
            )
            for account in accounts[10:16]
        ]
        total += await produce_signals(settings, late)
        async with running(Scorer(settings, engine, registry=CollectorRegistry())):
            await wait_consumed(engine, settings, total, timeout=300)
        # history imported for accounts of their own (their ids prefixed `imp-`)
        events = Path(work) / "import-events.jsonl"
        world = World(15, 6, start=now - timedelta(days=22), days=20)
        with events.open("wb") as out:
            for day in range(20):
                for account in world.accounts:
                    for event in world.day_events(account, day):
                        event["account_id"] = "imp-" + event["account_id"]
                        event["event_id"] = "imp-" + event["event_id"]
                        out.write(orjson.dumps(event) + b"\n")
        await import_history(
            settings,
            engine,
            [events],
            {
                "active": load_model(models / "default.yaml"),
                "shadow": load_model(models / "shadow.yaml"),
            },
        )
        await engine.dispose()
        await write_documents(settings)
        dump = subprocess.run(
            [
                str(postgres_bindir() / "pg_dump"),
                "--no-owner",
                "--no-privileges",
                "-h",
                settings.database.host,
                "-p",
                str(settings.database.port),
                "-U",
                settings.database.user,
                name,
            ],
            capture_output=True,
            check=True,
        ).stdout
        (HERE / "release-0014.sql.gz").write_bytes(gzip.compress(dump, mtime=0))
    code = subprocess.run(
        ["git", "archive", "--format=tar.gz", "HEAD", "healthscore", "services", "shared"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    (HERE / "release-0014.tar.gz").write_bytes(code)


async def write_documents(settings) -> None:  # type: ignore[no-untyped-def]
    from services.api.routes.accounts import HEALTH_SQL

    conn = await connect(settings.database)
    try:
        ids = [r[0] for r in await conn.fetch("SELECT account_id FROM accounts ORDER BY 1")]
        health = {a: orjson.loads((await conn.fetchrow(HEALTH_SQL, a))[0]) for a in ids}
        history = {
            a: [
                dict(r)
                for r in await conn.fetch(
                    "SELECT * FROM score_history WHERE account_id = $1 ORDER BY at, id", a
                )
            ]
            for a in ids
        }
    finally:
        await conn.close()
    document = orjson.dumps(
        {"health": health, "history": history},
        option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NAIVE_UTC,
        default=str,
    )
    (HERE / "release-0014-documents.json.gz").write_bytes(gzip.compress(document, mtime=0))


if __name__ == "__main__":
    asyncio.run(main())
