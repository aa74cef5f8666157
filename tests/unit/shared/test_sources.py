"""Source formats against vendors' published payloads (tests/data/vendor/, each naming the page
it comes from) and hostile variants of them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.config import IngestSettings, Settings
from shared.errors import ConfigurationError
from shared.events import Signal, encode_signal
from shared.sources.decode import Outcome, Skipped
from shared.sources.links import MemoryLinks
from shared.sources.mapping import load_mappings
from shared.sources.segment import MAX_BATCH
from shared.validate import Limits, Rejection
from tests.support.samples import valid_events
from tests.support.vendor import decode, decoder, sample

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)


def signal(outcome: Outcome) -> Signal:
    assert isinstance(outcome.result, Signal), outcome.result
    return outcome.result


def rejection(outcome: Outcome) -> Rejection:
    assert isinstance(outcome.result, Rejection), outcome.result
    return outcome.result


# --- Segment ------------------------------------------------------------------------------


async def test_segment_group_call_becomes_the_account_profile_and_ties_its_user() -> None:
    links = MemoryLinks()
    [out] = await decode(decoder("segment", links=links), sample("segment", "group"), now=NOW)
    profile = signal(out)
    assert (profile.kind, profile.account_id, profile.signal_id) == (
        "account_profile_updated",
        "0e8c78ea9d97a7b8185e8632",
        "022bb90c-bbac-11e4-8dfc-aa07a5b093db",
    )
    assert profile.data == {
        "name": "Initech",
        "industry": "technology",
        "tier": "enterprise",
        "region": None,
        "lifecycle_stage": None,
        "owner": None,
        "parent_account_id": None,
    }
    assert await links.find([("segment:user", "97980cfea0067")]) == {
        ("segment:user", "97980cfea0067"): "0e8c78ea9d97a7b8185e8632"
    }


async def test_segment_track_of_an_unknown_user_is_unattributed_until_a_group_call_ties_it() -> (
    None
):
    dec = decoder("segment")
    track = sample("segment", "track")
    [alone] = await decode(dec, track, now=NOW)
    assert (rejection(alone).reason, rejection(alone).path) == ("unattributed", "userId")
    assert alone.value == orjson.dumps(track)  # the message itself, to replay

    group = {**sample("segment", "group"), "userId": track["userId"]}
    _, used = await decode(dec, group, track, now=NOW)
    assert (signal(used).kind, signal(used).account_id) == ("feature_used", group["groupId"])
    assert signal(used).data == {"user_id": "AiUGstSDIg", "feature": "course_clicked", "count": 1}
    assert signal(used).occurred_at == datetime(2015, 12, 12, 19, 11, 1, 249000, tzinfo=UTC)


async def test_segment_context_group_id_and_a_configured_property_attribute_directly() -> None:
    track = sample("segment", "track")
    track["context"]["groupId"] = "acme"
    [out] = await decode(decoder("segment"), track, now=NOW)
    assert signal(out).account_id == "acme"

    track = {**sample("segment", "track"), "properties": {"account": "globex", "count": 4}}
    cfg = Settings(ingest=IngestSettings(segment_account_property="account"))
    [out] = await decode(decoder("segment", cfg), track, now=NOW)
    assert (signal(out).account_id, signal(out).data["count"]) == ("globex", 4)


async def test_segment_identify_ties_a_user_through_its_company_and_page_views_follow() -> None:
    dec = decoder("segment")
    plain = sample("segment", "identify")
    [out] = await decode(dec, plain, now=NOW)
    assert out.result == Skipped("not_scored")

    company = sample("segment", "identify")
    company["traits"]["company"] = {"id": "initech", "name": "Initech"}
    tied, page = await decode(dec, company, sample("segment", "page"), now=NOW)
    assert tied.result == Skipped("link_only")
    assert (signal(page).kind, signal(page).account_id) == ("page_viewed", "initech")
    assert signal(page).data == {"user_id": "97980cfea0067", "name": "Home"}


async def test_segment_session_events_are_configurable() -> None:
    track = {**sample("segment", "track"), "event": "Signed In", "context": {"groupId": "a"}}
    [out] = await decode(decoder("segment"), track, now=NOW)
    assert signal(out).kind == "session_started"
    cfg = Settings(ingest=IngestSettings(segment_session_events=["Course Clicked"]))
    [out] = await decode(
        decoder("segment", cfg), sample("segment", "track") | {"context": {"groupId": "a"}}, now=NOW
    )
    assert signal(out).kind == "session_started"


async def test_segment_batch_gives_one_outcome_per_message_with_the_batch_context() -> None:
    batch = sample("segment", "batch")
    [*outs] = await decode(decoder("segment"), batch, now=NOW)
    assert [type(o.result).__name__ for o in outs] == [
        "Skipped",
        "Rejection",
        "Skipped",
        "Rejection",
    ]
    assert {rejection(o).reason for o in outs[1::2]} == {"unattributed"}
    # each dead letter is its own message (with the batch context), which replays on its own
    assert orjson.loads(outs[1].value or b"")["event"] == "Song Played"
    assert orjson.loads(outs[1].value or b"")["context"]["device"]["name"] == "Apple iPhone 6"

    batch["context"]["groupId"] = "label-co"
    outs = await decode(decoder("segment"), batch, now=NOW)
    played = [signal(o) for o in outs if isinstance(o.result, Signal)]
    assert [(s.account_id, s.data["feature"]) for s in played] == [("label-co", "song_played")] * 2
    # no messageId in a raw HTTP batch: each message is named by its digest, the same each time
    again = await decode(decoder("segment"), batch, now=NOW)
    assert [s.signal_id for s in played] == [
        signal(o).signal_id for o in again if isinstance(o.result, Signal)
    ]
    assert len({s.signal_id for s in played}) == 2


@pytest.mark.parametrize(
    ("change", "reason", "path"),
    [
        ({"type": "teleport"}, "unknown_event_type", "type"),
        ({"event": None}, "schema_violation", "event"),
        ({"event": "Exp\x00orted"}, "schema_violation", "event"),
        ({"messageId": 42}, "schema_violation", "messageId"),
        ({"timestamp": "yesterday"}, "schema_violation", "timestamp"),
        ({"userId": None, "anonymousId": None}, "schema_violation", "userId"),
        ({"userId": ["a", "b"], "anonymousId": {"x": 1}}, "schema_violation", "userId"),
    ],
)
async def test_segment_hostile_messages_are_refused_with_the_vendor_path(
    change: dict[str, Any], reason: str, path: str
) -> None:
    track = {**sample("segment", "track"), **change}
    track.setdefault("context", {})["groupId"] = "acme"
    [out] = await decode(decoder("segment"), track, now=NOW)
    assert (rejection(out).reason, rejection(out).path) == (reason, path)


async def test_segment_huge_or_malformed_batches_are_refused_whole_or_per_message() -> None:
    dec = decoder("segment")
    message = {"type": "track", "userId": "u", "event": "x", "timestamp": "2026-10-01T00:00:00Z"}
    [out] = await decode(dec, {"batch": [message] * (MAX_BATCH + 1)}, now=NOW)
    assert rejection(out).reason == "too_large"
    [out] = await decode(dec, {"batch": "nope"}, now=NOW)
    assert (rejection(out).reason, rejection(out).path) == ("schema_violation", "batch")
    outs = await decode(dec, {"batch": [7, {**message, "context": {"groupId": "g"}}]}, now=NOW)
    assert rejection(outs[0]).reason == "not_an_object"
    assert signal(outs[1]).account_id == "g"


# --- Stripe -------------------------------------------------------------------------------


async def test_stripe_invoice_events_keep_minor_units_and_the_stripe_event_id() -> None:
    dec = decoder("stripe")
    paid, failed, overdue = await decode(
        dec,
        sample("stripe", "invoice.paid"),
        sample("stripe", "invoice.payment_failed"),
        sample("stripe", "invoice.overdue"),
        now=NOW,
    )
    assert (signal(paid).kind, signal(paid).signal_id, signal(paid).account_id) == (
        "invoice_paid",
        "evt_1NG8Du2eZvKYlo2CUI79vXWy",
        "cus_NeZwdNtLEOXuvB",
    )
    # paid_at 1680657002 - due_date 1680220800 = 5.05 days
    assert signal(paid).data == {
        "invoice_id": "in_1MtHbELkdIwHu7ixl4OzzPMv",
        "amount_cents": 1500,
        "currency": "USD",
        "days_late": 5,
    }
    assert signal(failed).kind == "payment_failed" and signal(failed).data["amount_cents"] == 1500
    assert signal(overdue).data["days_overdue"] == 14
    assert signal(overdue).occurred_at == datetime.fromtimestamp(1681430400, UTC)


async def test_stripe_subscription_events_give_mrr_seats_plan_and_renewal() -> None:
    created = sample("stripe", "customer.subscription.created")
    [out] = await decode(decoder("stripe"), created, now=NOW)
    assert (signal(out).kind, signal(out).account_id) == (
        "subscription_created",
        "cus_Na6dX7aXxi11N4",
    )
    assert signal(out).data == {
        "plan": "price_1mowqulkdiwhu7ixrabm864m",
        "tier": None,
        "mrr_cents": 1000,
        "currency": "USD",
        "seats_purchased": 1,
        "renewal_date": "2023-04-23",
    }
    # a yearly price of 12,000 for 5 seats, tier from the price's metadata
    item = created["data"]["object"]["items"]["data"][0]
    item["quantity"] = 5
    item["price"].update(
        unit_amount=12000, unit_amount_decimal="12000", metadata={"tier": "Growth"}
    )
    item["price"]["recurring"]["interval"] = "year"
    [out] = await decode(decoder("stripe"), created, now=NOW)
    assert signal(out).data["mrr_cents"] == 5000 and signal(out).data["tier"] == "growth"

    [out] = await decode(
        decoder("stripe"), sample("stripe", "customer.subscription.deleted"), now=NOW
    )
    assert signal(out).kind == "subscription_cancelled"
    assert signal(out).data["reason"] == "cancellation_requested"


async def test_stripe_refund_and_a_dispute_found_through_its_charge() -> None:
    dec = decoder("stripe")
    dispute = sample("stripe", "charge.dispute.created")
    [alone] = await decode(dec, dispute, now=NOW)
    assert (rejection(alone).reason, rejection(alone).path) == (
        "unattributed",
        "data.object.charge",
    )

    refunded = sample("stripe", "charge.refunded")
    refunded["data"]["object"]["id"] = dispute["data"]["object"]["charge"]
    refund, disputed = await decode(dec, refunded, dispute, now=NOW)
    assert signal(refund).kind == "refund_issued"
    assert signal(refund).data == {
        "amount_cents": 1099,
        "currency": "USD",
        "reason": "requested_by_customer",
    }
    assert (signal(disputed).kind, signal(disputed).account_id) == (
        "payment_disputed",
        "cus_NeZwdNtLEOXuvB",
    )
    assert signal(disputed).data == {"amount_cents": 1000, "currency": "USD", "reason": "general"}


async def test_stripe_types_without_a_signal_are_skipped_and_metadata_can_name_the_account() -> (
    None
):
    [out] = await decode(decoder("stripe"), sample("stripe", "customer.created"), now=NOW)
    assert out.result == Skipped("not_scored")
    # a customer whose metadata names its owner or parent says whose the account is
    customer = sample("stripe", "customer.created")
    customer["type"] = "customer.updated"
    customer["data"]["object"]["metadata"] = {
        "owner": " dana@example.com",
        "parent_account_id": "acme",
    }
    [out] = await decode(decoder("stripe"), customer, now=NOW)
    assert (signal(out).kind, signal(out).account_id) == (
        "account_profile_updated",
        "cus_NffrFeUfNV2Hib",
    )
    assert (signal(out).data["owner"], signal(out).data["parent_account_id"]) == (
        "dana@example.com",
        "acme",
    )

    cfg = Settings(ingest=IngestSettings(stripe_account_metadata_key="account_id"))
    paid = sample("stripe", "invoice.paid")
    [out] = await decode(decoder("stripe", cfg), paid, now=NOW)
    assert (rejection(out).reason, rejection(out).path) == (
        "unattributed",
        "data.object.metadata.account_id",
    )
    paid["data"]["object"]["metadata"] = {"account_id": "acme"}
    [out] = await decode(decoder("stripe", cfg), paid, now=NOW)
    assert signal(out).account_id == "acme"


async def test_stripe_zero_decimal_currencies_stay_in_their_unit() -> None:
    paid = sample("stripe", "invoice.paid")
    paid["data"]["object"].update(currency="jpy", amount_paid=1500)
    [out] = await decode(decoder("stripe"), paid, now=NOW)
    assert signal(out).data["amount_cents"] == 1500 and signal(out).data["currency"] == "JPY"


@pytest.mark.parametrize(
    ("change", "reason", "path"),
    [
        ({"object": "invoice"}, "schema_violation", "object"),
        ({"data": []}, "schema_violation", "object"),
        ({"id": None}, "schema_violation", "id"),
        ({"created": "soon"}, "schema_violation", "created"),
        (
            {"data": {"object": {"id": "in_1", "customer": "c", "amount_paid": "15.00"}}},
            "schema_violation",
            "data.object.amount_paid",
        ),
        (
            {"data": {"object": {"id": "in_1", "customer": "c", "amount_paid": -5}}},
            "schema_violation",
            "data.object.amount_paid",
        ),
        (
            {"data": {"object": {"id": "in_1", "amount_paid": 5}}},
            "unattributed",
            "data.object.customer",
        ),
        (
            {"data": {"object": {"id": "in_\x00", "customer": "c", "amount_paid": 5}}},
            "schema_violation",
            "invoice_id",
        ),
    ],
)
async def test_stripe_hostile_events_are_refused_with_the_vendor_path(
    change: dict[str, Any], reason: str, path: str
) -> None:
    [out] = await decode(decoder("stripe"), {**sample("stripe", "invoice.paid"), **change}, now=NOW)
    assert (rejection(out).reason, rejection(out).path) == (reason, path)


# --- Zendesk ------------------------------------------------------------------------------


async def test_zendesk_ticket_events_become_support_signals_of_the_organization() -> None:
    created, solved, raised, comment = await decode(
        decoder("zendesk"),
        sample("zendesk", "ticket.created"),
        sample("zendesk", "ticket.status_changed"),
        sample("zendesk", "ticket.priority_changed"),
        sample("zendesk", "ticket.comment_added"),
        now=NOW,
    )
    assert {signal(o).account_id for o in (created, solved, raised, comment)} == {"8447346622462"}
    assert (signal(created).kind, signal(created).data) == (
        "ticket_opened",
        {
            "ticket_id": "5158",
            "priority": "low",
            "subject": "ticket_subject",
            "text": "ticket_description",
        },
    )
    assert signal(solved).kind == "ticket_resolved"
    assert signal(solved).data["resolution_hours"] == pytest.approx(30.55, abs=0.01)
    assert signal(raised).data == {
        "ticket_id": "5158",
        "priority": "urgent",
        "escalated": True,
        "text": "",
    }
    assert signal(comment).kind == "ticket_updated" and signal(comment).sentiment == -0.5


async def test_zendesk_agent_comments_are_not_customer_signals() -> None:
    comment = sample("zendesk", "ticket.comment_added")
    comment["event"]["comment"]["author"]["is_staff"] = True
    [out] = await decode(decoder("zendesk"), comment, now=NOW)
    assert out.result == Skipped("not_scored")


async def test_zendesk_satisfaction_rating_finds_its_account_through_its_ticket() -> None:
    dec = decoder("zendesk")
    rating = sample("zendesk", "satisfaction_rating")
    [alone] = await decode(dec, rating, now=NOW)
    assert (rejection(alone).reason, rejection(alone).path) == (
        "unattributed",
        "satisfaction_rating.ticket_id",
    )
    ticket = sample("zendesk", "ticket.created")
    ticket["detail"]["id"] = "208"
    _, csat = await decode(dec, ticket, rating, now=NOW)
    assert (signal(csat).kind, signal(csat).account_id) == ("csat_submitted", "8447346622462")
    assert signal(csat).data == {"ticket_id": "208", "rating": 5, "comment": ""}


async def test_zendesk_account_from_a_tag_prefix() -> None:
    ticket = sample("zendesk", "ticket.created")
    ticket["detail"]["tags"] = ["vip", "account:acme"]
    cfg = Settings(ingest=IngestSettings(zendesk_account_tag_prefix="account:"))
    [out] = await decode(decoder("zendesk", cfg), ticket, now=NOW)
    assert signal(out).account_id == "acme"


@pytest.mark.parametrize(
    ("change", "reason", "path"),
    [
        ({"type": "ticket.created"}, "unknown_event_type", "type"),
        ({"id": 5}, "schema_violation", "id"),
        ({"time": None}, "schema_violation", "time"),
        (
            {"detail": {"id": "9", "organization_id": None}},
            "unattributed",
            "detail.organization_id",
        ),
        (
            {"detail": {"id": "9", "organization_id": "1", "priority": "SOMETIMES"}},
            "schema_violation",
            "detail.priority",
        ),
    ],
)
async def test_zendesk_hostile_events_are_refused_with_the_vendor_path(
    change: dict[str, Any], reason: str, path: str
) -> None:
    [out] = await decode(
        decoder("zendesk"), {**sample("zendesk", "ticket.created"), **change}, now=NOW
    )
    assert (rejection(out).reason, rejection(out).path) == (reason, path)


# --- mappings -----------------------------------------------------------------------------

MAPPING = """\
mappings:
  hubspot_email:
    rules:
      - when: {$.eventType: [EMAIL_OPEN, EMAIL_CLICK]}
        kind: marketing_engaged
        event_id: $.id
        account_id: $.properties.company_id
        occurred_at: {path: $.created, format: epoch_ms}
        fields:
          channel: {value: email}
          action: {path: $.eventType, map: {EMAIL_OPEN: opened, EMAIL_CLICK: clicked}}
          campaign: $.campaignName
      - when: {$.eventType: REFUND}
        kind: refund_issued
        event_id: $.id
        account_id: $.properties.company_id
        occurred_at: $.at
        fields:
          amount: {path: $.value, unit: minor}
          currency: $.currency
"""


def _mapping_file(tmp_path: Path, text: str = MAPPING) -> Settings:
    path = tmp_path / "mappings.yaml"
    path.write_text(text)
    return Settings(ingest=IngestSettings(mappings_path=path))


async def test_a_mapping_turns_any_json_into_signals(tmp_path: Path) -> None:
    dec = decoder("mapping:hubspot_email", _mapping_file(tmp_path))
    email = {
        "id": "e-1",
        "eventType": "EMAIL_CLICK",
        "created": 1790000000000,
        "campaignName": "Winter webinar",
        "properties": {"company_id": 991},
    }
    refund = {
        "id": "r-1",
        "eventType": "REFUND",
        "at": "2026-10-30T10:00:00Z",
        "value": 250,
        "currency": "JPY",
        "properties": {"company_id": "991"},
    }
    other = {"id": "x", "eventType": "FORM_SUBMIT"}
    opened, refunded, skipped = await decode(dec, email, refund, other, now=NOW)
    assert (signal(opened).kind, signal(opened).account_id, signal(opened).source) == (
        "marketing_engaged",
        "991",
        "engagement",
    )
    assert signal(opened).data == {
        "channel": "email",
        "action": "clicked",
        "campaign": "Winter webinar",
        "user_id": None,
    }
    assert signal(opened).occurred_at == datetime.fromtimestamp(1790000000, UTC)
    assert signal(refunded).data["amount_cents"] == 250
    assert skipped.result == Skipped("not_scored")


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"properties": {}}, "$.properties.company_id"),
        ({"eventType": "EMAIL_OPEN", "created": "tuesday"}, "$.created"),
        ({"campaignName": "x" * 300}, "$.campaignName"),
        ({"id": ""}, "$.id"),
    ],
)
async def test_a_record_a_mapping_cannot_handle_is_mapping_failed_with_the_path(
    tmp_path: Path, change: dict[str, Any], path: str
) -> None:
    dec = decoder("mapping:hubspot_email", _mapping_file(tmp_path))
    email = {
        "id": "e-1",
        "eventType": "EMAIL_OPEN",
        "created": 1790000000000,
        "properties": {"company_id": "a"},
    }
    [out] = await decode(dec, {**email, **change}, now=NOW)
    assert (rejection(out).reason, rejection(out).path) == ("mapping_failed", path)


@pytest.mark.parametrize(
    ("broken", "line", "says"),
    [
        (
            MAPPING.replace("kind: marketing_engaged", "kind: email_opened"),
            5,
            "unknown signal kind",
        ),
        (
            MAPPING.replace(
                "account_id: $.properties.company_id\n        occurred_at: {",
                "account_id: $.properties..company\n        occurred_at: {",
            ),
            7,
            "cannot read",
        ),
        (
            MAPPING.replace(
                "          campaign: $.campaignName\n",
                "          campaign: $.campaignName\n          colour: $.c\n",
            ),
            4,
            "has no field",
        ),
        (
            MAPPING.replace("          amount: {path: $.value, unit: minor}\n", ""),
            13,
            "needs the fields",
        ),
        (
            MAPPING.replace(
                "        fields:\n          amount", "        filds:\n          amount"
            ),
            19,
            "Extra inputs",
        ),
        (
            MAPPING.replace("channel: {value: email}", "channel: {value: email, unit: minor}"),
            4,
            "unit applies",
        ),
    ],
)
def test_an_invalid_mapping_file_is_refused_with_file_line_and_reason(
    tmp_path: Path, broken: str, line: int, says: str
) -> None:
    cfg = _mapping_file(tmp_path, broken)
    with pytest.raises(ConfigurationError) as caught:
        load_mappings(cfg.ingest.mappings_path)  # type: ignore[arg-type]
    message = str(caught.value)
    assert f"mappings.yaml:{line}:" in message and says in message, message


# --- every format: what validates can be stored -------------------------------------------

_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40
) | st.sampled_from(["\x00", "a\x00b", "\ufeff", "\U0001f600", "\\u0000"])


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(sorted(valid_events(NOW))),
    values=st.dictionaries(
        st.sampled_from(
            [
                "subject",
                "text",
                "comment",
                "reason",
                "name",
                "feature",
                "plan",
                "campaign",
                "channel",
                "user_id",
                "ticket_id",
                "account_id",
                "event_id",
            ]
        ),
        _TEXT,
        max_size=4,
    ),
)
async def test_any_record_that_validates_gives_a_signal_postgresql_can_store(
    kind: str, values: dict[str, str]
) -> None:
    event = {**valid_events(NOW)[kind], **values}
    [out] = await decode(decoder("v1"), event, now=NOW)
    if isinstance(out.result, Signal):
        stored = orjson.loads(encode_signal(out.result))
        strings = [v for v in (*stored.values(), *stored["data"].values()) if isinstance(v, str)]
        assert not any("\x00" in v for v in strings)  # PostgreSQL text and jsonb refuse NUL
        for v in strings:
            v.encode("utf-8")  # no unpaired surrogate either


def test_decimal_amounts_are_exact() -> None:
    from shared.events import major_units, minor_units

    for currency in ("USD", "JPY", "KWD"):
        for minor in (0, 1, 99, 123456789):
            assert minor_units(major_units(minor, currency), currency) == minor
    assert major_units(1500, "usd") == Decimal("15.00")


# --- healthscore validate -----------------------------------------------------------------


@pytest.mark.usefixtures("cli_logging")
def test_validate_command_dry_runs_a_vendor_export_with_earlier_records_attributing_later(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from healthscore.cli import app

    track, group = sample("segment", "track"), sample("segment", "group")
    later = {**track, "userId": group["userId"], "messageId": "m-2"}
    export = tmp_path / "export.json"  # a JSON array, as vendors' exports give them
    export.write_bytes(orjson.dumps([track, group, later, {"type": "wat"}]))
    result = CliRunner().invoke(app, ["validate", "--format", "segment", "--any-age", str(export)])
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in result.output.splitlines()]
    assert lines[0]["dead_letter"]["reason"] == "unattributed"
    assert lines[2]["signal"]["account_id"] == group["groupId"]
    assert lines[-1] == {
        "records": 4,
        "signals": 2,
        "dead_letters": {"unattributed": 1, "unknown_event_type": 1},
        "skipped": {},
    }

    lines_file = tmp_path / "events.jsonl"
    lines_file.write_bytes(b"\n".join(orjson.dumps(e) for e in valid_events(NOW).values()))
    result = CliRunner().invoke(app, ["validate", str(lines_file)])
    summary = orjson.loads(result.output.splitlines()[-1])
    assert summary["signals"] == len(valid_events(NOW))  # v1 by default, live limits

    broken = tmp_path / "bad.yaml"
    broken.write_text(MAPPING.replace("kind: marketing_engaged", "kind: nope"))
    result = CliRunner().invoke(
        app,
        ["validate", "--format", "mapping:hubspot_email", "--mapping", str(broken), str(export)],
    )
    assert result.exit_code == 2 and "bad.yaml:5:" in result.output


async def test_nul_in_a_vendors_free_text_is_removed_and_in_its_ids_refused() -> None:
    comment = sample("zendesk", "ticket.comment_added")
    comment["event"]["comment"]["body"] = "still\x00 broken"
    [out] = await decode(decoder("zendesk"), comment, now=NOW)
    assert signal(out).data["text"] == "still broken"
    comment["detail"]["id"] = "51\x0058"
    [out] = await decode(decoder("zendesk"), comment, now=NOW)
    assert (rejection(out).reason, rejection(out).path) == ("schema_violation", "detail.id")


async def test_huge_vendor_arrays_are_bounded_by_the_record_size_limit() -> None:
    created = sample("stripe", "customer.subscription.created")
    item = created["data"]["object"]["items"]["data"][0]
    created["data"]["object"]["items"]["data"] = [item] * 20_000
    [out] = await decode(decoder("stripe", limits=Limits()), created, now=NOW)
    assert rejection(out).reason == "too_large"
    created["data"]["object"]["items"]["data"] = [item] * 100
    [out] = await decode(decoder("stripe"), created, now=NOW)
    assert signal(out).data["seats_purchased"] == 100
