"""Operations: metrics lint, alert rules and their unit tests, deploy files, DLQ tooling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
import yaml
from alembic import command
from alembic.config import Config

from healthscore.devstack import free_port
from shared.config import Settings
from shared.db import alembic_config
from tests.support.infra import (
    Infra,
    admin_sql,
    healthscore_argv,
    ingest_process,
    run_cli,
    settings_env,
)
from tests.support.kafka_io import header, produce, read_topic
from tests.support.samples import valid_events
from tests.support.signals import produce_signals, simulated_signals

SESSION_LOOP = pytest.mark.asyncio(loop_scope="session")
ROOT = Path(__file__).resolve().parents[2]


def _promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["promtool", *args], input=stdin, capture_output=True, check=False, cwd=ROOT
    )


async def _scrape(port: int, deadline: float, *ready: str) -> bytes:
    """The service's metrics once every one of `ready` has a sample (each appears when the
    service has done what sets it: consumed, looked at its lag, ...)."""
    async with httpx.AsyncClient() as client:
        missing = list(ready)
        while True:
            try:
                body = (await client.get(f"http://127.0.0.1:{port}/metrics")).content
                missing = [r for r in ready if r.encode() not in body]
                if not missing:
                    return body
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no {', '.join(missing)} on :{port} in 60 s"
            await __import__("asyncio").sleep(0.3)


@SESSION_LOOP
async def test_every_service_exposes_lint_clean_metrics_that_rules_and_dashboard_use(
    settings: Settings,
) -> None:
    events = valid_events(datetime.now(UTC))
    await produce(
        settings,
        settings.kafka.topics.usage,
        [(b"acc-1", orjson.dumps(events["session_started"])), (None, b"not json")],
    )
    await produce_signals(settings, simulated_signals(5, 5, seed=1))
    ports = {name: free_port() for name in ("ingest", "scorer", "notify", "api")}
    env = settings_env(settings)
    env.update(
        HEALTHSCORE_INGEST__METRICS_PORT=str(ports["ingest"]),
        HEALTHSCORE_SCORER__METRICS_PORT=str(ports["scorer"]),
        HEALTHSCORE_NOTIFY__METRICS_PORT=str(ports["notify"]),
        HEALTHSCORE_API__PORT=str(ports["api"]),
    )
    procs = [
        subprocess.Popen(
            healthscore_argv(name), env=env, stderr=subprocess.DEVNULL, start_new_session=True
        )
        for name in ports
    ]
    try:
        deadline = time.monotonic() + 60
        exposed = {
            "ingest": await _scrape(
                ports["ingest"],
                deadline,
                "ingest_dlq_records_total{",
                "healthscore_ingest_consumer_lag_records{",
            ),
            "scorer": await _scrape(ports["scorer"], deadline, "healthscore_scorer_accounts{"),
            "notify": await _scrape(ports["notify"], deadline, "healthscore_notify_events_total"),
            "api": await _scrape(ports["api"], deadline, "healthscore_api_requests_total{"),
        }
        for name, port in ports.items():
            health = httpx.get(f"http://127.0.0.1:{port}/healthz")
            assert health.status_code == 200, name
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = {name: proc.wait(30) for name, proc in zip(ports, procs, strict=True)}
        # workers drain and exit 0; uvicorn re-raises SIGTERM after its graceful shutdown
        assert codes == {"ingest": 0, "scorer": 0, "notify": 0, "api": -signal.SIGTERM}
    names: set[str] = set()
    for service, body in exposed.items():
        lint = _promtool("check", "metrics", stdin=body)
        assert lint.returncode == 0 and not lint.stdout.strip(), (service, lint.stdout)
        assert b"_created" not in body
        names |= set(re.findall(rb"^(healthscore_\w+?)(?:_bucket|_count|_sum)?[{ ]", body, re.M))
    exposed_names = {n.decode() for n in names}
    referenced = set(
        re.findall(
            r"healthscore_[a-z_]+",
            (
                (ROOT / "deploy/prometheus/alerts.yml").read_text()
                + (ROOT / "deploy/grafana/dashboards/account-health.json").read_text()
            ),
        )
    )
    referenced = {re.sub(r"_(bucket|count|sum)$", "", n) for n in referenced}
    assert referenced <= exposed_names, referenced - exposed_names
    listed = (ROOT / "docs/metrics.md").read_text()
    assert all(f"`{n}`" in listed for n in exposed_names), exposed_names - set(
        re.findall(r"`(healthscore_[a-z_]+)`", listed)
    )


def test_alert_rules_are_valid_and_their_unit_tests_pass() -> None:
    check = _promtool("check", "rules", "deploy/prometheus/alerts.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    assert b"SUCCESS: 18 rules found" in check.stdout
    unit = _promtool("test", "rules", "tests/promtool/alerts_test.yml")
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert b"SUCCESS" in unit.stdout
    config = _promtool("check", "config", "deploy/prometheus/prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each panel's query, as a recording rule, through promtool's parser."""
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/account-health.json").read_text())
    exprs = [
        target["expr"].replace("$__rate_interval", "1m")
        for panel in dashboard["panels"]
        for target in panel.get("targets", ())
    ]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    check = _promtool("check", "rules", str(path))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(exprs)} rules found".encode() in check.stdout


def test_compose_file_is_valid_and_has_the_production_shape() -> None:
    env = {"POSTGRES_PASSWORD": "x", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    result = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {
        "kafka",
        "postgres",
        "migrate",
        "ingest",
        "scorer-1",
        "scorer-2",
        "notify",
        "api",
        "prometheus",
        "grafana",
        "simulator",
    } <= set(services)
    assert services["simulator"]["profiles"] == ["simulator"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER healthscore" in dockerfile and dockerfile.count("FROM ") == 2


def test_kubernetes_manifests_are_complete() -> None:
    documents = [
        d
        for f in sorted((ROOT / "deploy/k8s").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]
    for doc in documents:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    assert set(deployments) == {
        "healthscore-ingest",
        "healthscore-scorer",
        "healthscore-notify",
        "healthscore-api",
    }
    budgets = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for d in documents
        if d["kind"] == "PodDisruptionBudget"
    }
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["requests"]["cpu"]
        assert {r for ref in container["envFrom"] for r in ref} == {"configMapRef", "secretRef"}
        assert name.removeprefix("healthscore-") in budgets


@SESSION_LOOP
async def test_dead_letters_can_be_listed_and_replayed(settings: Settings) -> None:
    good = valid_events(datetime.now(UTC))["session_started"]
    broken = orjson.dumps({**good, "duration_seconds": "long"})
    await produce(settings, settings.kafka.topics.usage, [(b"acc-1", broken), (b"acc-2", b"{oops")])
    with ingest_process(settings):
        assert len(await read_topic(settings, settings.kafka.topics.dlq, expect=2)) == 2
    listed = [
        orjson.loads(line)
        for line in run_cli(settings, "dlq", "list", "--reason", "schema_violation").splitlines()
    ]
    assert len(listed) == 1
    assert listed[0]["path"] == "duration_seconds" and listed[0]["key"] == "acc-1"
    assert listed[0]["source_topic"] == settings.kafka.topics.usage
    assert "dry run: 1" in run_cli(settings, "dlq", "replay", "--reason", "schema_violation")
    position = f"{listed[0]['dlq_partition']}:{listed[0]['dlq_offset']}"
    assert "replayed 1" in run_cli(settings, "dlq", "replay", "--offset", position, "--yes")
    raw = await read_topic(settings, settings.kafka.topics.usage, expect=3)
    replayed = [r for r in raw if header(r, "replayed_from")]
    assert [(r.key, r.value) for r in replayed] == [(b"acc-1", broken)]


@contextlib.asynccontextmanager
async def _database_at(
    infra: Infra, revision: str
) -> AsyncIterator[tuple[asyncpg.Connection, Config]]:
    """A database of its own migrated to `revision`: a connection to it and its Alembic
    configuration (to upgrade and downgrade it further). Dropped after."""
    name = f"migrate_{time.monotonic_ns()}"
    await admin_sql(infra.database, f'CREATE DATABASE "{name}"')
    config = alembic_config(infra.database.url(name=name))
    db = infra.database
    try:
        await asyncio.to_thread(command.upgrade, config, revision)
        conn = await asyncpg.connect(
            host=db.host,
            port=db.port,
            user=db.user,
            password=db.password.get_secret_value(),
            database=name,
        )
        try:
            yield conn, config
        finally:
            await conn.close()
    finally:
        await admin_sql(infra.database, f'DROP DATABASE "{name}" WITH (FORCE)')


@SESSION_LOOP
async def test_migrations_0002_and_0005_make_documents_the_api_reads_as_they_are(
    infra: Infra,
) -> None:
    """A database scored under revision 0001 upgrades to the documents release 0014's API read
    as they were (later revisions derive them: test_migration_0015_...), and downgrades back."""
    async with _database_at(infra, "0001") as (conn, config):
        old = {
            "model_score": 61.5,
            "factors": [
                {"factor": "nps", "contribution": 61.5, "status": "ok"},
                {"factor": "csat", "contribution": 0.0, "last_data_at": 1795000000.5},
            ],
            "caps": [],
            "overrides": [],
            "segment": "default",
            "freshness": {
                "usage": {"last_data_at": 1795000000.5, "stale": False},
                "support": {"last_data_at": None, "stale": True},
            },
        }
        await conn.execute(
            "INSERT INTO accounts (account_id, partition, state, updated_at)"
            " VALUES ('a1', 0, '{\"v\": 2}', now())"
        )
        await conn.execute(
            "INSERT INTO scores (account_id, objective, model_role, model_version, score,"
            " band, confidence, explanation, evaluated_at, changed_at, updated_at)"
            " VALUES ('a1', 'churn_risk', 'active', 'm@1', 61.5, 'neutral', 0.5, $1::jsonb,"
            " now(), now(), now())",
            orjson.dumps(old).decode(),
        )
        await asyncio.to_thread(command.upgrade, config, "0014")
        freshness = orjson.loads(await conn.fetchval("SELECT freshness::text FROM accounts"))
        objective = orjson.loads(await conn.fetchval("SELECT explanation::text FROM scores"))
        usage = freshness.pop("usage")
        assert freshness == {"support": {"last_data_at": None, "stale": True}}
        assert usage["stale"] is False
        assert datetime.fromisoformat(usage["last_data_at"]) == datetime.fromtimestamp(
            1795000000.5, UTC
        )
        assert objective["weighted_score"] == 61.5
        nps, csat = objective["factors"]
        assert nps == old["factors"][0]  # 0005: factor times become RFC 3339
        assert datetime.fromisoformat(csat.pop("last_data_at")) == datetime.fromtimestamp(
            1795000000.5, UTC
        )
        assert csat == {"factor": "csat", "contribution": 0.0}
        assert "freshness" not in objective
        await asyncio.to_thread(command.downgrade, config, "0001")
        back = orjson.loads(await conn.fetchval("SELECT explanation::text FROM scores"))
        assert back == {k: v for k, v in old.items() if k not in ("freshness", "segment")}


@SESSION_LOOP
async def test_migration_0013_copies_the_attributes_the_lists_filter_on_into_scores(
    infra: Infra,
) -> None:
    """Scores stored before 0013 get their account's attributes, which the list indexes end
    with; a downgrade takes them out again."""
    async with _database_at(infra, "0012") as (conn, config):
        await conn.execute(
            "INSERT INTO accounts (account_id, industry, region, tier, segment, partition, state,"
            " updated_at) VALUES ('a1', 'retail', 'emea', 'growth', 'smb', 0, '{}', now()),"
            " ('a2', NULL, NULL, NULL, 'default', 1, '{}', now())"
        )
        for account in ("a1", "a2"):
            for role in ("active", "shadow"):
                await conn.execute(
                    "INSERT INTO scores (account_id, objective, model_role, model_version, score,"
                    " band, confidence, explanation, evaluated_at, changed_at, updated_at)"
                    " VALUES ($1, 'churn_risk', $2, 'm@1', 61.5, 'neutral', 0.5, '{}', now(),"
                    " now(), now())",
                    account,
                    role,
                )
        await asyncio.to_thread(command.upgrade, config, "0013")
        copied = await conn.fetch(
            "SELECT account_id, model_role, industry, region, tier, segment FROM scores"
            " ORDER BY account_id, model_role"
        )
        assert [tuple(r) for r in copied] == [
            ("a1", "active", "retail", "emea", "growth", "smb"),
            ("a1", "shadow", "retail", "emea", "growth", "smb"),
            ("a2", "active", None, None, None, "default"),
            ("a2", "shadow", None, None, None, "default"),
        ]
        indexed = await conn.fetch(
            "SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS definition"
            " FROM pg_index WHERE indrelid = 'scores'::regclass"
        )
        lists = {
            r["name"]: r["definition"]
            for r in indexed
            if "_list_" in r["name"] or "_band_" in r["name"]
        }
        assert len(lists) == 4
        assert all(
            d.endswith("account_id, score, tier, industry, region, segment)")
            for d in lists.values()
        )
        await asyncio.to_thread(command.downgrade, config, "0012")
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'scores'"
        )
        assert not {"industry", "region", "tier", "segment"} & {r["column_name"] for r in columns}
        assert await conn.fetchval("SELECT pg_get_indexdef('ix_scores_list_score'::regclass)") == (
            "CREATE INDEX ix_scores_list_score ON public.scores USING btree (objective,"
            " model_role, COALESCE(score, ('-1'::integer)::double precision), account_id)"
        )


@SESSION_LOOP
async def test_migration_0014_drops_the_tier_index_nothing_reads(infra: Infra) -> None:
    async with _database_at(infra, "0013") as (conn, config):
        index = "SELECT to_regclass('ix_accounts_tier')::text"
        assert await conn.fetchval(index) == "ix_accounts_tier"
        await asyncio.to_thread(command.upgrade, config, "0014")
        assert await conn.fetchval(index) is None
        await asyncio.to_thread(command.downgrade, config, "0013")
        assert await conn.fetchval(index) == "ix_accounts_tier"
