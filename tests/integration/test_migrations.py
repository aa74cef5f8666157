"""The move to the lean store (migrations 0015, 0016) on a database written by release 0014.

tests/data/legacy holds that database (a pg_dump), what release 0014's API answered for each of
its accounts, and the models it ran. Up: every account's answer is what it was, explanations
and freshness now derived from the converted state. Down again: every row is as release 0014
wrote it (the de-duplication memory keeps its ids; their times are those of the periods they
were stored in). Both directions stopped halfway go on where they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

import shared.legacy
from healthscore.devstack import postgres_bindir
from services.api.schemas import AccountHealthResponse
from services.scorer import store
from shared.config import DatabaseSettings
from shared.db import create_engine, migrate
from shared.scoring.document import fingerprint, from_document
from shared.scoring.model import load_model
from tests.support.infra import Infra, admin_sql, connect
from tests.support.signals import health_documents

pytestmark = pytest.mark.asyncio(loop_scope="session")

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy"
MODELS = [load_model(LEGACY / "models" / name) for name in ("default.yaml", "shadow.yaml")]


def restore_legacy(database: DatabaseSettings) -> None:
    """The fixture's database, restored into `database` (which exists, empty)."""
    subprocess.run(
        [
            str(postgres_bindir() / "psql"),
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            database.host,
            "-p",
            str(database.port),
            "-U",
            database.user,
            "-d",
            database.name,
        ],
        input=gzip.decompress((LEGACY / "release-0014.sql.gz").read_bytes()),
        capture_output=True,
        check=True,
        env={"PGPASSWORD": database.password.get_secret_value(), "PATH": "/usr/bin:/bin"},
    )


@contextlib.asynccontextmanager
async def legacy_database(infra: Infra) -> AsyncIterator[DatabaseSettings]:
    name = f"legacy_{uuid.uuid4().hex[:10]}"
    await admin_sql(infra.database, f'CREATE DATABASE "{name}"')
    database = infra.database.model_copy(update={"name": name})
    try:
        await asyncio.to_thread(restore_legacy, database)
        yield database
    finally:
        await admin_sql(infra.database, f'DROP DATABASE "{name}" WITH (FORCE)')


def expected_documents() -> dict[str, Any]:
    documents = orjson.loads(
        gzip.decompress((LEGACY / "release-0014-documents.json.gz").read_bytes())
    )
    return documents["health"]


def normalised(document: dict[str, Any]) -> dict[str, Any]:
    """A health answer as its response model reads it: times compared as times, and without
    the actions (release 0014 had none; they are derived on read, from what is compared)."""
    objectives = [{**o, "actions": []} for o in document["objectives"]]
    # nor whose the account is and its MRR: release 0014 kept none, so a converted account
    # has none until its next profile and subscription events
    unknown = dict.fromkeys(("owner", "parent_account_id", "mrr", "currency"))
    return AccountHealthResponse.model_validate(
        {**unknown, **document, "objectives": objectives}
    ).model_dump()


async def snapshot(database: DatabaseSettings) -> dict[str, Any]:
    """Release 0014's rows: each account's state (its fingerprint, floor and remembered ids),
    freshness and times, and each score's columns with its explanation."""
    conn = await connect(database)
    try:
        accounts = {}
        for r in await conn.fetch(
            "SELECT account_id, state::text, freshness::text, last_event_at, next_review_at,"
            " updated_at FROM accounts"
        ):
            state = from_document(orjson.loads(r["state"]))
            accounts[r["account_id"]] = (
                fingerprint(state),
                state.floor,
                state.memory.seen,
                orjson.loads(r["freshness"]),
                r["last_event_at"],
                r["next_review_at"],
                r["updated_at"],
            )
        scores = {
            (r["account_id"], r["objective"], r["model_role"]): (
                {k: v for k, v in r.items() if k != "explanation"},
                orjson.loads(r["explanation"]),
            )
            for r in await conn.fetch(
                "SELECT account_id, objective, model_role, model_version, score, band,"
                " confidence, probability, industry, region, tier, segment,"
                " explanation::text AS explanation, recorded_score, previous_score,"
                " alert_baseline, held::text, evaluated_at, changed_at, updated_at FROM scores"
            )
        }
        history = await conn.fetch("SELECT * FROM score_history ORDER BY id")
    finally:
        await conn.close()
    return {"accounts": accounts, "scores": scores, "history": [dict(r) for r in history]}


async def register_models(database: DatabaseSettings) -> None:
    """What `healthscore migrate` does once the tables are there: record the models the
    scorers run (here, the fixture's)."""
    engine = create_engine(database)
    try:
        await store.register_models(engine, MODELS, datetime.now(UTC))
    finally:
        await engine.dispose()


def stop_after(chunks: int, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make the conversion named `name` (a function of shared.legacy) fail after `chunks` chunks
    of 10 accounts, as a migration killed halfway."""
    real = getattr(shared.legacy, name)
    done = [0]

    def failing(*args: Any, **kwargs: Any) -> Any:
        if done[0] == chunks:
            raise RuntimeError("stopped halfway")
        done[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(shared.legacy, "CHUNK", 10)
    monkeypatch.setattr(shared.legacy, name, failing)


async def test_release_0014s_database_migrates_up_and_down_and_answers_as_it_did(
    infra: Infra, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = expected_documents()
    async with legacy_database(infra) as database:
        before = await snapshot(database)
        assert len(before["accounts"]) == len(expected) == 54
        await asyncio.to_thread(migrate, database, to="0015")
        await register_models(database)
        with monkeypatch.context() as patch:  # up, stopped after two chunks
            stop_after(2, patch, "convert_parameters")
            with pytest.raises(RuntimeError, match="halfway"):
                await asyncio.to_thread(migrate, database)
        conn = await connect(database)
        try:
            assert await conn.fetchval("SELECT version_num FROM alembic_version") == "0015"
            assert await conn.fetchval("SELECT count(*) FROM account_states") == 20
        finally:
            await conn.close()
        await asyncio.to_thread(migrate, database)  # goes on from there

        documents = await health_documents(database, sorted(expected))
        assert sorted(documents) == sorted(expected)
        for account_id, document in documents.items():
            assert normalised(document) == normalised(expected[account_id]), account_id
        conn = await connect(database)
        try:
            columns = {
                r["column_name"]
                for r in await conn.fetch(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name IN ('accounts', 'scores')"
                )
            }
            assert not columns & {"state", "freshness", "explanation", "next_review_at"}
            assert set(
                await conn.fetchval("SELECT array_agg(DISTINCT store_format) FROM consumer_offsets")
            ) == {3}
        finally:
            await conn.close()

        with monkeypatch.context() as patch:  # down, stopped after three chunks
            stop_after(3, patch, "restore_parameters")
            with pytest.raises(RuntimeError, match="halfway"):
                await asyncio.to_thread(migrate, database, to="0014")
        await asyncio.to_thread(migrate, database, to="0014")  # goes on from there
        after = await snapshot(database)
    assert after["history"] == before["history"]
    assert after["scores"].keys() == before["scores"].keys()
    for key, (columns, explanation) in before["scores"].items():
        assert after["scores"][key][0] == columns, key
        assert after["scores"][key][1] == explanation, key
    for account_id, (printed, floor, seen, *rest) in before["accounts"].items():
        again = after["accounts"][account_id]
        assert again[0] == printed and again[1] == floor, account_id
        # every id remembered, each as of the end of the period it was stored in
        assert again[2].keys() == seen.keys()
        assert all(0 <= again[2][d] - seen[d] <= shared.legacy.SEEN_PERIOD for d in seen)
        assert list(again[3:]) == rest, account_id
