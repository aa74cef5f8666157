"""schemathesis over the OpenAPI document against the running API (a real uvicorn process).

Bounded: a fixed number of examples per operation. Two checks are left out on purpose:
`positive_data_acceptance` (some schema-valid inputs are rightly refused on facts the schema
cannot state: an expiry in the past, a cursor that was never issued) and
`allow_header_conformance` (Starlette answers 405 with the methods of the first route that
matched the path, not all of them).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.auth import hash_token
from shared.config import Settings
from shared.devstack import free_port
from tests.integration.conftest import healthscore_argv, settings_env
from tests.integration.test_api import seed

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_schemathesis_finds_no_server_errors_or_schema_violations(
    settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    await seed(settings, engine, accounts=10)
    port = free_port()
    env = settings_env(settings)
    env.update(
        HEALTHSCORE_API__PORT=str(port),
        HEALTHSCORE_API__TOKENS=json.dumps(
            [{"name": "fuzzer", "sha256": hash_token("fuzz-token"), "scopes": ["read", "write"]}]
        ),
    )
    api = subprocess.Popen(
        healthscore_argv("api"),
        env=env,
        start_new_session=True,
        stderr=(tmp_path / "api.log").open("wb"),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and api.poll() is None
            time.sleep(0.2)
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"http://127.0.0.1:{port}/openapi.json",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance,allow_header_conformance",
                "-H",
                "Authorization: Bearer fuzz-token",
                "--max-examples",
                "25",
                "--suppress-health-check",
                "all",
                "--seed",
                "7",
                "--workers",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-8000:]
        assert "generated" in result.stdout
    finally:
        api.terminate()
        api.wait(20)
    assert "api.unhandled" not in (tmp_path / "api.log").read_text()
