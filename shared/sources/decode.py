"""Raw records of any source format -> signals, rejections and skipped messages, per batch.

For a batch: parse every record, translate it with its topic's format and validate each v1
event exactly as a v1 record is validated; events whose account comes from a link wait until
what the batch teaches (user, charge and ticket -> account) is stored and the links they need
are looked up, in one call each. Teaching before looking up means a Segment `group` call
attributes `track` calls of the same batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from shared.events import Signal
from shared.sources.base import Format, Link, LinkKey, Piece
from shared.sources.links import Links
from shared.validate import Limits, Rejection, parse, to_signal

log = structlog.get_logger(__name__)

# The dead-letter reason of a record whose translation or validation raised instead of deciding:
# one poisonous record must not stop the stream.
VALIDATOR_ERROR = "validator_error"
# Refusals a mapping reports as its own failure (`mapping_failed`), with the path it read.
_REFUSALS = frozenset({"schema_violation", "missing_account_id", "unknown_event_type"})


@dataclass(frozen=True, slots=True)
class Skipped:
    reason: str


Result = Signal | Rejection | Skipped


@dataclass(frozen=True, slots=True)
class Outcome:
    value: bytes | None  # what a rejection dead-letters: the record, or its message in a batch
    result: Result


class Decoder:
    def __init__(
        self,
        formats: Mapping[str, Format],
        links: Links,
        *,
        limits: Limits = Limits(),  # noqa: B008 (frozen)
        sentiment: Callable[[str], float] | None = None,
    ) -> None:
        self.formats, self.links, self.limits, self.sentiment = formats, links, limits, sentiment

    async def decode(
        self, records: Sequence[tuple[str, bytes | None]], now: datetime
    ) -> list[list[Outcome]]:
        """What each (topic, value) record becomes, in order: one outcome per message."""
        results: list[dict[int, Outcome]] = [{} for _ in records]

        def keep(index: int, message: int, outcome: Outcome) -> None:
            results[index][message] = outcome

        await self.each(records, now, keep)
        return [[outcomes[m] for m in sorted(outcomes)] for outcomes in results]

    async def each(
        self,
        records: Sequence[tuple[str, bytes | None]],
        now: datetime,
        emit: Callable[[int, int, Outcome], object],
    ) -> None:
        """Call `emit(record index, message index, outcome)` for every message of `records`:
        at once for what
        needs no link (so a caller can encode and drop it: a batch's signals are never all
        alive at once), after the batch's links are stored and looked up for the rest."""
        waiting: list[tuple[int, int, Piece, bool]] = []
        taught: dict[LinkKey, Link] = {}
        for i, (topic, raw) in enumerate(records):
            record = parse(raw, self.limits)
            if isinstance(record, Rejection):
                emit(i, 0, Outcome(raw, record))
                continue
            assert raw is not None
            try:
                translation = self.formats[topic].translate(record, raw)
            except Exception as exc:  # a bug in a format: dead-letter, replay after the fix
                log.exception("ingest.translate_error", topic=topic)
                emit(i, 0, Outcome(raw, Rejection(VALIDATOR_ERROR, repr(exc)[:500])))
                continue
            for link in translation.links:
                held = taught.get(link.key)
                if held is None or link.at >= held.at:
                    taught[link.key] = link
            may_hold_nul = b"\\u0000" in raw
            for j, piece in enumerate(translation.pieces):
                if piece.needs is None:
                    emit(i, j, Outcome(piece.value, self._finish(piece, may_hold_nul, {}, now)))
                else:
                    waiting.append((i, j, piece, may_hold_nul))
        if taught:
            await self.links.learn(list(taught.values()))
        if waiting:
            needed = {piece.needs for _, _, piece, _ in waiting if piece.needs is not None}
            found = await self.links.find(needed)
            for i, j, piece, may_hold_nul in waiting:
                emit(i, j, Outcome(piece.value, self._finish(piece, may_hold_nul, found, now)))

    def _finish(
        self, piece: Piece, may_hold_nul: bool, found: dict[LinkKey, str], now: datetime
    ) -> Result:
        if piece.rejection is not None:
            return piece.rejection
        if piece.skipped is not None or piece.event is None:
            return Skipped(piece.skipped or "empty")
        event = piece.event
        if piece.needs is not None and "account_id" not in event:
            account = found.get(piece.needs)
            if account is None:
                namespace, key = piece.needs
                return Rejection(
                    "unattributed",
                    f"no account is known yet for {namespace} {key!r}"[:300],
                    piece.paths.get("account_id"),
                )
            event["account_id"] = account
        try:
            result = to_signal(
                event,
                now=now,
                limits=self.limits,
                sentiment=self.sentiment,
                may_hold_nul=may_hold_nul,
            )
        except Exception as exc:
            log.exception("ingest.validator_error", kind=event.get("type"))
            return Rejection(VALIDATOR_ERROR, repr(exc)[:500])
        if isinstance(result, Rejection) and result.path is not None:
            source = piece.paths.get(result.path.split(".", 1)[0])
            if source is not None:
                reason = piece.refusal if result.reason in _REFUSALS else result.reason
                return Rejection(reason, result.detail, source)
        return result
