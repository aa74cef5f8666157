"""Ingest against the real broker: signals, dead letters, accounting, crash recovery."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from services.ingest.consume import Ingest
from shared.config import Settings
from shared.events import EVENT_TYPE_SOURCE, Signal, decode_signal
from shared.validate import REASONS
from tests.support.infra import (
    healthscore_argv,
    running,
    settings_env,
    source_topic,
    with_sources,
)
from tests.support.kafka_io import header, produce, read_topic
from tests.support.samples import crafted_rejections, valid_events

pytestmark = pytest.mark.asyncio(loop_scope="session")
EXAMPLE_MAPPINGS = Path(__file__).parents[2] / "docs" / "examples" / "mappings.yaml"


def topic_for(settings: Settings, kind: str) -> str:
    """Any v1 topic takes every v1 type: each goes to the one named after its source."""
    topics = settings.kafka.topics
    return str(getattr(topics, EVENT_TYPE_SOURCE[kind], topics.usage))


@contextlib.asynccontextmanager
async def running_ingest(settings: Settings) -> AsyncIterator[Ingest]:
    async with running(Ingest(settings, registry=CollectorRegistry())) as ingest:
        yield ingest


async def test_every_event_type_becomes_its_signal(settings: Settings) -> None:
    now = datetime.now(UTC)
    events = valid_events(now)
    for kind, event in events.items():
        await produce(
            settings,
            topic_for(settings, kind),
            [(event["account_id"].encode(), orjson.dumps(event))],
        )
    async with running_ingest(settings):
        records = await read_topic(settings, settings.kafka.topics.signals, expect=len(events))
    signals = {s.kind: s for s in (decode_signal(r.value) for r in records)}
    assert set(signals) == set(events)
    assert all(r.key == b"acc-1" for r in records)
    for kind, signal_ in signals.items():
        assert signal_.signal_id == events[kind]["event_id"]
        assert signal_.account_id == "acc-1"
        assert signal_.source == EVENT_TYPE_SOURCE[kind]
        assert signal_.occurred_at == datetime.fromisoformat(events[kind]["occurred_at"])
    assert signals["feature_used"].data == {"user_id": "u1", "feature": "reports", "count": 3}
    assert signals["ticket_opened"].data["priority"] == "high"
    assert signals["ticket_opened"].sentiment is not None
    assert signals["ticket_opened"].sentiment < -0.3
    assert signals["nps_submitted"].sentiment is not None
    assert signals["nps_submitted"].sentiment > 0.5
    assert signals["session_started"].sentiment is None
    sub = signals["subscription_created"].data
    assert sub == {
        "plan": "growth_annual",
        "tier": "growth",
        "mrr_cents": 125050,
        "currency": "USD",
        "seats_purchased": 50,
        "renewal_date": "2027-06-30",
    }
    assert signals["invoice_paid"].data["amount_cents"] == 9999
    assert signals["account_profile_updated"].data == {
        "name": "Acme",
        "industry": "healthcare",
        "region": "emea",
        "tier": "enterprise",
        "lifecycle_stage": "mature",
        "owner": "dana@example.com",
        "parent_account_id": None,
    }


async def test_every_rejection_reason_lands_in_the_dlq_with_the_original_bytes(
    settings: Settings,
) -> None:
    crafted = crafted_rejections(datetime.now(UTC))
    assert set(crafted) == set(REASONS)
    formats = sorted({fmt for fmt, _ in crafted.values()} - {"v1"})
    settings = with_sources(settings, formats, mappings_path=EXAMPLE_MAPPINGS)
    topic_of = {fmt: source_topic(settings, fmt) for fmt in formats}
    topic_of["v1"] = settings.kafka.topics.usage
    for reason, (fmt, raw) in crafted.items():
        await produce(settings, topic_of[fmt], [(reason.encode(), raw)])
    async with running_ingest(settings) as ingest:
        dead = await read_topic(settings, settings.kafka.topics.dlq, expect=len(crafted))
        signals = await read_topic(settings, settings.kafka.topics.signals, settle=0.5)
    assert signals == []
    by_key = {r.key.decode(): r for r in dead}
    assert set(by_key) == set(crafted)
    for reason, record in by_key.items():
        assert header(record, "reason") == reason
        assert record.value == crafted[reason][1], reason
        assert header(record, "source_topic") == topic_of[crafted[reason][0]]
        assert header(record, "source_offset") is not None
        assert int(header(record, "source_partition") or -1) >= 0
        assert datetime.fromisoformat(header(record, "rejected_at") or "").tzinfo is not None
    assert header(by_key["schema_violation"], "path") == "duration_seconds"
    assert header(by_key["unattributed"], "path") == "userId"
    assert header(by_key["mapping_failed"], "path") == "$.contact.company_id"
    assert ingest.metrics.dead_lettered.labels("too_large")._value.get() == 1


HOSTILE_HAND_WRITTEN = [
    b"\xff\xfe\xfa",
    b"",
    b"null",
    b"{}",
    b'{"type": null}',
    b"[" * 5000 + b"]" * 5000,
    b'{"a": NaN}',
    b'{"a": 1e999}',
    b"x" * 2_000_000,
    b'{"event_id": "1", "account_id": "a", "type": "session_started", "schema_version": 1, '
    b'"occurred_at": "2026-01-01T00:00:00Z", "user_id": 123456789012345678901234567890}',
    b'{"event_id": "\'; DROP TABLE accounts; --", "account_id": "<script>alert(1)</script>",'
    b' "type": "session_started", "schema_version": 1, "occurred_at": "not a date"}',
    b'{"event_id": "1", "account_id": "a\\u0000b", "type": "session_started", '
    b'"schema_version": 1, "occurred_at": "2026-01-01T00:00:00Z", "user_id": "u"}',
    b'{"event_id": "1", "account_id": "a", "type": "session_started", "schema_version": true}',
]


def hostile_records(count: int, seed: int) -> list[bytes]:
    """`count` malformed records: hand-written cases plus hypothesis-generated JSON."""
    json_values = st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=12), children, max_size=5)
        ),
        max_leaves=20,
    )
    keys = st.sampled_from(
        ["event_id", "account_id", "occurred_at", "type", "schema_version", "user_id", "count"]
    )
    event_like = st.dictionaries(keys, json_values, max_size=7)
    generated: list[bytes] = []

    def dumps(value: object) -> bytes:  # stdlib: big ints, NaN and Infinity pass through
        return json.dumps(value).encode("utf-8", "surrogatepass")

    @hsettings(
        max_examples=count, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(st.one_of(event_like.map(dumps), st.binary(max_size=64), json_values.map(dumps)))
    def collect(raw: bytes) -> None:
        generated.append(raw)

    collect()
    records = list(HOSTILE_HAND_WRITTEN)
    rng = random.Random(seed)
    while len(records) < count:
        records.append(generated[rng.randrange(len(generated))])
    return records


@pytest.mark.slow
async def test_accounting_valid_plus_hostile_equals_signals_plus_dlq(settings: Settings) -> None:
    now = datetime.now(UTC)
    rng = random.Random(3)
    samples = list(valid_events(now).values())
    valid = []
    for i in range(4000):
        event = {**rng.choice(samples), "event_id": f"v-{i}", "account_id": f"acc-{i % 97}"}
        valid.append((topic_for(settings, event["type"]), orjson.dumps(event)))
    hostile = hostile_records(1200, seed=5)
    topics = settings.kafka.topics
    mixed = valid + [(rng.choice(topics.raw), raw) for raw in hostile]
    rng.shuffle(mixed)
    for topic in topics.raw:
        await produce(settings, topic, [(None, raw) for t, raw in mixed if t == topic])
    total = len(mixed)
    async with running_ingest(settings) as ingest:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            consumed = sum(ingest.metrics.consumed.labels(t)._value.get() for t in topics.raw)
            if consumed >= total:
                break
            await asyncio.sleep(0.2)
    signals = await read_topic(settings, topics.signals, settle=1.0)
    dead = await read_topic(settings, topics.dlq, settle=1.0)
    assert consumed == total
    assert len(signals) + len(dead) == total
    assert len(signals) == len(valid)  # every valid event passes, every hostile one is caught
    assert {decode_signal(r.value).signal_id for r in signals} == {f"v-{i}" for i in range(4000)}
    assert all(header(r, "reason") in REASONS for r in dead)


@pytest.mark.slow
async def test_kill_minus_nine_loses_nothing(settings: Settings) -> None:
    now = datetime.now(UTC)
    template = valid_events(now)["feature_used"]
    count = 30_000
    topic = settings.kafka.topics.usage
    await produce(
        settings,
        topic,
        [
            (
                f"acc-{i % 500}".encode(),
                orjson.dumps({**template, "event_id": f"e-{i}", "account_id": f"acc-{i % 500}"}),
            )
            for i in range(count)
        ],
    )
    env = settings_env(settings)
    env["HEALTHSCORE_INGEST__BATCH_MAX_RECORDS"] = "500"
    proc = subprocess.Popen(
        healthscore_argv("ingest"), env=env, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        # wait until it is part-way through, then kill it without warning
        while len(await read_topic(settings, settings.kafka.topics.signals, settle=0.2)) < 3000:
            assert proc.poll() is None
            await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        partial = len(await read_topic(settings, settings.kafka.topics.signals, settle=0.3))
        assert partial < count
        proc = subprocess.Popen(
            healthscore_argv("ingest"), env=env, stderr=subprocess.DEVNULL, start_new_session=True
        )
        expected = {f"e-{i}" for i in range(count)}
        deadline = time.monotonic() + 180
        ids: set[str] = set()
        while ids != expected and time.monotonic() < deadline:
            records = await read_topic(settings, settings.kafka.topics.signals, settle=0.5)
            ids = {Signal.model_validate_json(r.value).signal_id for r in records}
        assert ids == expected  # at least once: duplicates allowed, nothing missing
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            assert proc.returncode == 0  # SIGTERM drains and exits cleanly
