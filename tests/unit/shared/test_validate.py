from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from shared.config import IngestSettings, Settings
from shared.events import Signal, decode_signal, encode_signal
from shared.validate import REASONS, Limits, Rejection, validate
from tests.support.samples import crafted_rejections, valid_events
from tests.support.vendor import decode, decoder

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
EXAMPLE_MAPPINGS = Path(__file__).parents[3] / "docs" / "examples" / "mappings.yaml"


@pytest.mark.parametrize("kind", sorted(valid_events(NOW)))
def test_every_sample_event_is_valid(kind: str) -> None:
    event = valid_events(NOW)[kind]
    signal = validate(orjson.dumps(event), now=NOW)
    assert isinstance(signal, Signal)
    assert (signal.kind, signal.signal_id, signal.account_id) == (kind, event["event_id"], "acc-1")


@pytest.mark.parametrize("reason", REASONS)
async def test_each_reason_is_detected(reason: str) -> None:
    fmt, raw = crafted_rejections(NOW)[reason]
    settings = Settings(ingest=IngestSettings(mappings_path=EXAMPLE_MAPPINGS))
    [outcome] = await decode(decoder(fmt, settings, limits=Limits()), raw, now=NOW)
    assert isinstance(outcome.result, Rejection)
    assert outcome.result.reason == reason


def test_normalisation_trims_lowercases_and_converts_to_utc() -> None:
    event = {
        **valid_events(NOW)["ticket_opened"],
        "event_id": "  e-9 ",
        "account_id": " a1 ",
        "occurred_at": "2026-11-01T04:30:00-05:00",
        "priority": " Urgent ",
    }
    signal = validate(orjson.dumps(event), now=NOW)
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
    signal = validate(orjson.dumps(legacy), now=NOW)
    assert isinstance(signal, Signal)
    assert (signal.signal_id, signal.account_id) == ("old-1", "acc-7")
    assert signal.occurred_at == NOW - timedelta(days=1)


def test_schema_violation_names_the_field_path() -> None:
    event = {**valid_events(NOW)["csat_submitted"], "rating": 9}
    outcome = validate(orjson.dumps(event), now=NOW)
    assert outcome == Rejection(
        "schema_violation", "Input should be less than or equal to 5", "rating"
    )


def test_limits_are_configurable() -> None:
    event = orjson.dumps(valid_events(NOW)["session_started"])
    tight = Limits(
        max_record_bytes=1024, max_future_skew=timedelta(0), max_age=timedelta(minutes=30)
    )
    outcome = validate(event, now=NOW, limits=tight)
    assert isinstance(outcome, Rejection) and outcome.reason == "occurred_at_too_old"


def test_sentiment_is_recorded_only_for_text() -> None:
    events = valid_events(NOW)
    calls: list[str] = []

    def fake(text: str) -> float:
        calls.append(text)
        return -0.5

    opened = validate(orjson.dumps(events["ticket_opened"]), now=NOW, sentiment=fake)
    session = validate(orjson.dumps(events["session_started"]), now=NOW, sentiment=fake)
    assert isinstance(opened, Signal) and isinstance(session, Signal)
    assert opened.sentiment == -0.5 and session.sentiment is None
    assert calls == ["Broken The dashboard is broken and we are very frustrated."]


def test_a_time_past_the_calendar_once_in_utc_is_a_schema_violation() -> None:
    event = {**valid_events(NOW)["session_started"], "occurred_at": "9999-12-31T23:59:59-23:59"}
    outcome = validate(orjson.dumps(event), now=NOW)
    assert isinstance(outcome, Rejection)
    assert (outcome.reason, outcome.path) == ("schema_violation", "occurred_at")


async def test_a_validator_that_raises_dead_letters_the_record_instead_of_stopping_ingest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiokafka import ConsumerRecord
    from prometheus_client import CollectorRegistry

    from services.ingest import consume
    from shared.config import Settings
    from shared.sources import decode

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(decode, "to_signal", broken)
    ingest = consume.Ingest(Settings(), registry=CollectorRegistry())
    record = ConsumerRecord("usage.events", 2, 41, 0, 0, b"k", b"{}", None, 2, 2, [])
    [(topic, key, value, headers)], counted = await ingest.router.route([record], NOW)
    assert (topic, key, value) == ("account-health.dlq", b"k", b"{}")
    assert counted == {("dlq", "validator_error"): 1}
    assert dict(headers)["reason"] == b"validator_error"
    assert dict(headers)["source_offset"] == b"41"


FREE_TEXT = {"subject", "text", "comment", "reason", "name", "campaign", "owner"}


def _string_fields() -> list[tuple[str, str]]:
    return [
        (kind, name)
        for kind, event in sorted(valid_events(NOW).items())
        for name, value in event.items()
        if isinstance(value, str) and name not in {"type", "occurred_at"}
    ]


@pytest.mark.parametrize(("kind", "name"), _string_fields())
def test_nul_is_removed_from_free_text_and_refused_with_its_path_anywhere_else(
    kind: str, name: str
) -> None:
    """PostgreSQL text cannot hold NUL: a record carrying one would be refused downstream."""
    event = valid_events(NOW)[kind]
    original = event[name]
    event[name] = original[:1] + "\x00" + original[1:]
    outcome = validate(orjson.dumps(event), now=NOW)
    if name in FREE_TEXT:
        assert isinstance(outcome, Signal)
        assert "\x00" not in orjson.dumps(outcome.data).decode()
        assert outcome.data[name] == original.strip()
    else:
        assert isinstance(outcome, Rejection)
        assert outcome.reason == "schema_violation" and outcome.path == name


def test_an_unpaired_surrogate_cannot_get_past_parsing() -> None:
    raw = orjson.dumps(valid_events(NOW)["ticket_opened"]).replace(b"Broken", b"Bro\\ud800ken")
    outcome = validate(raw, now=NOW)
    assert isinstance(outcome, Rejection) and outcome.reason == "invalid_json"


def test_minor_units_follow_the_currency() -> None:
    base = valid_events(NOW)["invoice_paid"]
    amounts = {}
    for currency, amount in (("USD", "12.34"), ("JPY", "1234"), ("KWD", "1.234")):
        signal = validate(orjson.dumps({**base, "currency": currency, "amount": amount}), now=NOW)
        assert isinstance(signal, Signal)
        amounts[currency] = signal.data["amount_cents"]
    assert amounts == {"USD": 1234, "JPY": 1234, "KWD": 1234}


@pytest.mark.parametrize("kind", sorted(valid_events(NOW)))
def test_built_signals_are_what_pydantic_makes_and_writes(kind: str) -> None:
    """Ingest builds and encodes signals around pydantic's slow paths: the same result."""
    signal = validate(orjson.dumps(valid_events(NOW)[kind]), now=NOW)
    assert isinstance(signal, Signal)
    constructed = Signal.model_construct(**signal.__dict__)
    assert signal == constructed and signal.model_fields_set == constructed.model_fields_set
    assert encode_signal(signal) == signal.model_dump_json().encode()
    assert decode_signal(encode_signal(signal)) == signal


def test_an_outcome_a_crm_knows_becomes_a_signal_of_its_own_source() -> None:
    told = {
        "event_id": "sf-1",
        "account_id": "acc-1",
        "occurred_at": "2026-10-30T00:00:00Z",
        "type": "outcome_recorded",
        "schema_version": 1,
        "outcome": "Renewal",
        "system": "Salesforce",
    }
    signal = validate(orjson.dumps(told), now=NOW)
    assert isinstance(signal, Signal)
    assert (signal.source, signal.kind) == ("outcomes", "outcome_recorded")
    assert signal.data == {
        "outcome": "renewal",
        "system": "salesforce",
        "outcome_id": None,
        "note": "",
    }
    for wrong, path in (({"system": "stream"}, "$"), ({"outcome": "re newal!"}, "outcome")):
        refused = validate(orjson.dumps({**told, **wrong}), now=NOW)
        assert isinstance(refused, Rejection)
        assert (refused.reason, refused.path) == ("schema_violation", path)
