"""API abuse against a real uvicorn process: missing and wrong credentials on every write
route, oversize bodies, injection strings in every parameter, and schemathesis.

No request may get a 5xx, and no request without the write scope may change any data.
schemathesis leaves out two checks on purpose: `positive_data_acceptance` (some schema-valid
inputs are rightly refused on facts the schema cannot state: an expiry in the past, a cursor
that was never issued) and `allow_header_conformance` (Starlette answers 405 with the methods of
the first route that matched the path, not all of them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from healthscore.devstack import free_port
from services.api.auth import hash_token
from shared.config import Settings
from tests.reliability.conftest import Scale
from tests.support.hostile import INJECTIONS
from tests.support.infra import healthscore_argv, settings_env
from tests.support.pipeline import Outcome
from tests.support.signals import seed

pytestmark = pytest.mark.asyncio(loop_scope="session")

READER, WRITER = "abuse-reader-token", "abuse-writer-token"
TABLES = (
    "accounts",
    "scores",
    "score_history",
    "overrides",
    "override_audit",
    "outbox",
    "outcomes",
)
MORE_INJECTIONS = (*INJECTIONS, "' OR '1'='1", "1; SELECT pg_sleep(5)", "%", "\\", "a" * 5000)


# schemathesis's own list of the statuses that reject invalid data, and 413
NEGATIVE_DATA_REJECTED = (400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429)


@contextlib.contextmanager
def running_api(settings: Settings, log: Path, max_body: int = 4096) -> Iterator[str]:
    port = free_port()
    env = settings_env(settings)
    env.update(
        HEALTHSCORE_API__PORT=str(port),
        HEALTHSCORE_API__MAX_BODY_BYTES=str(max_body),
        HEALTHSCORE_API__TOKENS=json.dumps(
            [
                {"name": "reader", "sha256": hash_token(READER), "scopes": ["read"]},
                {"name": "writer", "sha256": hash_token(WRITER), "scopes": ["read", "write"]},
            ]
        ),
    )
    api = subprocess.Popen(
        healthscore_argv("api"), env=env, start_new_session=True, stderr=log.open("wb")
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            assert time.monotonic() < deadline and api.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
        yield base
        assert api.poll() is None, "the API died under abuse"
    finally:
        api.terminate()
        api.wait(20)
    assert "api.unhandled" not in log.read_text()


async def snapshot(engine: AsyncEngine) -> dict[str, str]:
    """A digest of every table a write could touch."""
    digests = {}
    async with engine.connect() as conn:
        for table in TABLES:
            rows = await conn.execute(text(f"SELECT t::text FROM {table} t ORDER BY 1"))
            digests[table] = hashlib.sha256("\n".join(r[0] for r in rows).encode()).hexdigest()
    return digests


def operations(base: str) -> list[tuple[str, str, dict[str, Any]]]:
    spec = httpx.get(f"{base}/openapi.json").json()
    return [
        (method.upper(), path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def override_body() -> dict[str, Any]:
    return {
        "action": "adjust",
        "value": -10,
        "reason": "abuse test",
        "expires_at": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
    }


def fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


async def test_api_abuse_changes_nothing_without_the_write_scope_and_never_fails(
    settings: Settings, engine: AsyncEngine, scale: Scale, report, tmp_path: Path
) -> None:
    outcome = report(Outcome("API abuse"))
    started = time.monotonic()
    accounts = await seed(settings, engine, accounts=10)
    statuses: list[int] = []
    unauthorised_changes = 0
    with running_api(settings, tmp_path / "api.log") as base, httpx.Client(base_url=base) as http:
        writer = {"Authorization": f"Bearer {WRITER}"}
        created = http.post(
            f"/v1/accounts/{accounts[0]}/overrides", json=override_body(), headers=writer
        )
        assert created.status_code in (201, 202), created.text
        ids = {"account_id": accounts[0], "override_id": created.json()["override_id"]}
        ops = operations(base)
        writes = [(m, p) for m, p, _ in ops if m != "GET"]
        assert len(writes) >= 2  # POST and DELETE overrides at least

        # 1. every write route, without credentials, with garbage and with the read scope
        before = await snapshot(engine)
        for method, path in writes:
            for headers, expected in (
                ({}, 401),
                ({"Authorization": "Bearer not-a-token"}, 401),
                ({"Authorization": "Basic YWRtaW46YWRtaW4="}, 401),
                ({"Authorization": f"Bearer {READER}"}, 403),
            ):
                response = http.request(
                    method, fill(path, ids), json=override_body(), headers=headers
                )
                statuses.append(response.status_code)
                outcome.faults["unauthorised write"] += 1
                assert response.status_code == expected, (method, path, headers, response.text)
                assert response.headers["content-type"] == "application/problem+json"
        unauthorised_changes = sum(
            before[t] != after for t, after in (await snapshot(engine)).items()
        )
        assert unauthorised_changes == 0

        # 2. oversize bodies, declared and streamed (chunked)
        big = b'{"reason": "' + b"x" * 10_000 + b'"}'
        for body in (big, iter([big[:2000], big[2000:]])):
            response = http.post(
                f"/v1/accounts/{accounts[0]}/overrides",
                content=body,
                headers={**writer, "Content-Type": "application/json"},
            )
            statuses.append(response.status_code)
            outcome.faults["oversize body"] += 1
            assert response.status_code == 413, response.text

        # 3. injection strings in every path and query parameter of every operation
        for method, path, op in ops:
            for parameter in op.get("parameters", []):
                for injection in MORE_INJECTIONS:
                    values = {**ids, parameter["name"]: injection}
                    query = {parameter["name"]: injection} if parameter["in"] == "query" else {}
                    url = fill(path, {k: quote(v, safe="") for k, v in values.items()})
                    response = http.request(
                        method,
                        url,
                        params=query,
                        json=override_body() if method == "POST" else None,
                        headers=writer,
                    )
                    statuses.append(response.status_code)
                    outcome.faults["injection"] += 1
                    assert response.status_code < 500, (method, path, injection, response.text)
        async with engine.connect() as conn:  # nothing was dropped or emptied
            assert await conn.scalar(text("SELECT count(*) FROM accounts")) == len(accounts)

        # 4. schemathesis; a body over MAX_BODY_BYTES is refused before it is read (413): for
        # invalid data that is a rejection like any other 4xx
        config = tmp_path / "schemathesis.toml"
        config.write_text(
            "[checks.negative_data_rejection]\nexpected-statuses = "
            + json.dumps([*map(str, NEGATIVE_DATA_REJECTED), "5xx"])
            + "\n"
        )
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "--config-file",
                str(config),
                "run",
                f"{base}/openapi.json",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance,allow_header_conformance",
                "-H",
                f"Authorization: Bearer {WRITER}",
                "--max-examples",
                str(scale.schemathesis_examples),
                "--suppress-health-check",
                "all",
                "--seed",
                "7",
                "--workers",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-8000:]
        assert "generated" in result.stdout
        outcome.faults[f"schemathesis ×{scale.schemathesis_examples}/operation"] += 1
    outcome.events_in = len(statuses)
    outcome.mismatches = sum(s >= 500 for s in statuses) + unauthorised_changes
    outcome.seconds = time.monotonic() - started
    assert outcome.mismatches == 0
