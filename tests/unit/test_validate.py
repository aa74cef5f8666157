from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from shared.events import EVENT_TYPE_SOURCE, Signal
from shared.validate import REASONS, Limits, Rejection, validate
from tests.support.samples import crafted_rejections, valid_events

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize("kind", sorted(valid_events(NOW)))
def test_every_sample_event_is_valid(kind: str) -> None:
    event = valid_events(NOW)[kind]
    signal = validate(orjson.dumps(event), source=EVENT_TYPE_SOURCE[kind], now=NOW)
    assert isinstance(signal, Signal)
    assert (signal.kind, signal.signal_id, signal.account_id) == (kind, event["event_id"], "acc-1")


@pytest.mark.parametrize("reason", REASONS)
def test_each_reason_is_detected(reason: str) -> None:
    source, raw = crafted_rejections(NOW)[reason]
    outcome = validate(raw, source=source, now=NOW)  # type: ignore[arg-type]
    assert isinstance(outcome, Rejection)
    assert outcome.reason == reason


def test_normalisation_trims_lowercases_and_converts_to_utc() -> None:
    event = {
        **valid_events(NOW)["ticket_opened"],
        "event_id": "  e-9 ",
        "account_id": " a1 ",
        "occurred_at": "2026-11-01T04:30:00-05:00",
        "priority": " Urgent ",
    }
    signal = validate(orjson.dumps(event), source="support", now=NOW)
    assert isinstance(signal, Signal)
    assert (signal.signal_id, signal.account_id) == ("e-9", "a1")
    assert signal.occurred_at == datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
    assert signal.data["priority"] == "urgent"


def test_version_zero_envelope_is_upgraded() -> None:
    ts = int((NOW - timedelta(days=1)).timestamp() * 1000)
    legacy = {
        "id": "old-1",
        "account": "acc-7",
        "ts": ts,
        "type": "session_started",
        "schema_version": 0,
        "user_id": "u",
    }
    signal = validate(orjson.dumps(legacy), source="usage", now=NOW)
    assert isinstance(signal, Signal)
    assert (signal.signal_id, signal.account_id) == ("old-1", "acc-7")
    assert signal.occurred_at == NOW - timedelta(days=1)


def test_schema_violation_names_the_field_path() -> None:
    event = {**valid_events(NOW)["csat_submitted"], "rating": 9}
    outcome = validate(orjson.dumps(event), source="support", now=NOW)
    assert outcome == Rejection(
        "schema_violation", "Input should be less than or equal to 5", "rating"
    )


def test_limits_are_configurable() -> None:
    event = orjson.dumps(valid_events(NOW)["session_started"])
    tight = Limits(
        max_record_bytes=1024, max_future_skew=timedelta(0), max_age=timedelta(minutes=30)
    )
    outcome = validate(event, source="usage", now=NOW, limits=tight)
    assert isinstance(outcome, Rejection) and outcome.reason == "occurred_at_too_old"


def test_sentiment_is_recorded_only_for_text() -> None:
    events = valid_events(NOW)
    calls: list[str] = []

    def fake(text: str) -> float:
        calls.append(text)
        return -0.5

    opened = validate(
        orjson.dumps(events["ticket_opened"]), source="support", now=NOW, sentiment=fake
    )
    session = validate(
        orjson.dumps(events["session_started"]), source="usage", now=NOW, sentiment=fake
    )
    assert isinstance(opened, Signal) and isinstance(session, Signal)
    assert opened.sentiment == -0.5 and session.sentiment is None
    assert calls == ["Broken The dashboard is broken and we are very frustrated."]


def test_a_time_past_the_calendar_once_in_utc_is_a_schema_violation() -> None:
    event = {**valid_events(NOW)["session_started"], "occurred_at": "9999-12-31T23:59:59-23:59"}
    outcome = validate(orjson.dumps(event), source="usage", now=NOW)
    assert isinstance(outcome, Rejection)
    assert (outcome.reason, outcome.path) == ("schema_violation", "occurred_at")


def test_a_validator_that_raises_dead_letters_the_record_instead_of_stopping_ingest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiokafka import ConsumerRecord
    from prometheus_client import CollectorRegistry

    from services.ingest import consume
    from shared.config import Settings

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(consume, "validate", broken)
    ingest = consume.Ingest(Settings(), registry=CollectorRegistry())
    record = ConsumerRecord("usage.events", 2, 41, 0, 0, b"k", b"{}", None, 2, 2, [])
    (topic, key, value, headers), counted = ingest.route(record, NOW)
    assert (topic, key, value) == ("account-health.dlq", b"k", b"{}")
    assert counted == "dlq:validator_error"
    assert dict(headers)["reason"] == b"validator_error"
    assert dict(headers)["source_offset"] == b"41"


def _string_fields() -> list[tuple[str, str]]:
    return [
        (kind, name)
        for kind, event in sorted(valid_events(NOW).items())
        for name, value in event.items()
        if isinstance(value, str) and name not in {"type", "occurred_at"}
    ]


@pytest.mark.parametrize(("kind", "name"), _string_fields())
def test_a_nul_character_in_any_text_or_attribute_field_is_refused_with_its_path(
    kind: str, name: str
) -> None:
    """PostgreSQL text cannot hold NUL: a record carrying one would be refused downstream."""
    event = valid_events(NOW)[kind]
    event[name] = event[name][:1] + "\x00" + event[name][1:]
    outcome = validate(orjson.dumps(event), source=EVENT_TYPE_SOURCE[kind], now=NOW)
    assert isinstance(outcome, Rejection)
    assert outcome.reason == "schema_violation" and outcome.path == name
