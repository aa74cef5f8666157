"""Vendors' published sample payloads (tests/data/vendor/, each with the page it comes from)
and a decoder over them, for tests of the source formats."""

from __future__ import annotations

import copy
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from shared.config import Settings
from shared.event_files import REPLAY_LIMITS
from shared.sources import format_named
from shared.sources.decode import Decoder, Outcome
from shared.sources.links import MemoryLinks
from shared.validate import Limits

DATA = Path(__file__).parents[1] / "data" / "vendor"


@cache
def _samples(vendor: str) -> dict[str, Any]:
    return orjson.loads((DATA / f"{vendor}.json").read_bytes())  # type: ignore[no-any-return]


def sample(vendor: str, name: str) -> dict[str, Any]:
    """A fresh copy of one published payload."""
    return copy.deepcopy(_samples(vendor)[name]["payload"])


def sample_names(vendor: str) -> list[str]:
    return sorted(_samples(vendor))


def decoder(
    fmt: str,
    settings: Settings | None = None,
    links: MemoryLinks | None = None,
    limits: Limits = REPLAY_LIMITS,
) -> Decoder:
    """A decoder reading topic `t` in format `fmt` (by default with old sample dates allowed)."""
    return Decoder(
        {"t": format_named(fmt, settings or Settings())},
        links if links is not None else MemoryLinks(),
        limits=limits,
        sentiment=lambda text: -0.5 if "losing" in text or "awful" in text else 0.25,
    )


async def decode(dec: Decoder, *records: dict[str, Any] | bytes, now: datetime) -> list[Outcome]:
    """Every outcome of `records` read as one batch, flattened."""
    raws = [r if isinstance(r, bytes) else orjson.dumps(r) for r in records]
    return [o for outcomes in await dec.decode([("t", r) for r in raws], now) for o in outcomes]
