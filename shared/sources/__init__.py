"""Source formats: how a raw topic's records become v1 events (see base.py and decode.py)."""

from __future__ import annotations

from typing import Any

from shared.config import Settings
from shared.errors import ConfigurationError
from shared.sources.base import Format, Piece, Translation
from shared.sources.mapping import load_mappings
from shared.sources.segment import SegmentFormat
from shared.sources.stripe import StripeFormat
from shared.sources.zendesk import ZendeskFormat

LINKED = ("segment", "stripe", "zendesk")  # formats that tie users, charges, tickets to accounts
FORMATS = ("v1", *LINKED, "mapping:NAME")


class V1Format:
    """This project's own envelope: the record is the event."""

    name = "v1"

    def translate(self, record: dict[str, Any], raw: bytes) -> Translation:
        return Translation([Piece(raw, record)])


def format_named(name: str, settings: Settings) -> Format:
    """The format `name` configured by `settings`; mapping files are read and checked here."""
    cfg = settings.ingest
    if name == "v1":
        return V1Format()
    if name == "segment":
        return SegmentFormat(
            account_property=cfg.segment_account_property,
            session_events=tuple(cfg.segment_session_events),
        )
    if name == "stripe":
        return StripeFormat(
            account_metadata_key=cfg.stripe_account_metadata_key,
            tier_metadata_key=cfg.stripe_tier_metadata_key,
        )
    if name == "zendesk":
        return ZendeskFormat(account_tag_prefix=cfg.zendesk_account_tag_prefix)
    if name.startswith("mapping:"):
        if cfg.mappings_path is None:
            raise ConfigurationError(f"format {name} needs HEALTHSCORE_INGEST__MAPPINGS_PATH")
        mappings = load_mappings(cfg.mappings_path)
        wanted = name.split(":", 1)[1]
        if wanted not in mappings:
            raise ConfigurationError(
                f"{cfg.mappings_path}: no mapping {wanted!r} (it has {sorted(mappings)})"
            )
        return mappings[wanted]
    raise ConfigurationError(f"unknown source format {name!r}; formats: {', '.join(FORMATS)}")


def uses_links(settings: Settings) -> bool:
    """Whether any raw topic's format ties users, charges or tickets to accounts."""
    topics = settings.kafka.topics
    return any(topics.format_of(t) in LINKED for t in topics.raw)


def formats_for(settings: Settings) -> dict[str, Format]:
    """The format of every raw topic."""
    topics = settings.kafka.topics
    named: dict[str, Format] = {}
    for topic in topics.raw:
        name = topics.format_of(topic)
        if name not in named:
            named[name] = format_named(name, settings)
    return {topic: named[topics.format_of(topic)] for topic in topics.raw}
