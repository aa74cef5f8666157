"""`healthscore validate`: a dry run of ingest on files of raw records, before connecting a topic.

Reads JSON Lines, or a JSON array (as vendors' exports give them), and decodes every record in
order exactly as ingest would on a topic of the given format, with an in-memory link store:
an earlier record's links attribute later ones (a Segment `group` call, then that user's
`track` calls). Yields one line per outcome, then the totals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from shared.config import Settings
from shared.errors import ConfigurationError
from shared.sources import format_named
from shared.sources.decode import Decoder, Skipped
from shared.sources.links import MemoryLinks
from shared.validate import Limits, Rejection, Sentiment


def records_of(path: Path) -> Iterator[bytes]:
    """The raw records of a file: the elements of a top-level JSON array, or its lines."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc}") from exc
    if data.lstrip()[:1] == b"[":
        try:
            items = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ConfigurationError(f"{path}: not a JSON array: {exc}") from exc
        yield from (orjson.dumps(item) for item in items)
        return
    for line in data.splitlines():
        if line.strip():
            yield line


async def dry_run(
    fmt: str, paths: list[Path], settings: Settings, limits: Limits
) -> AsyncIterator[dict[str, Any]]:
    decoder = Decoder(
        {"dry-run": format_named(fmt, settings)},
        MemoryLinks(),
        limits=limits,
        sentiment=Sentiment(),
    )
    records = signals = 0
    dead: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for path in paths:
        for raw in records_of(path):
            records += 1
            # one record at a time: what ingest learns from a record attributes later ones
            [outcomes] = await decoder.decode([("dry-run", raw)], datetime.now(UTC))
            for outcome in outcomes:
                result = outcome.result
                line: dict[str, Any] = {"record": records}
                if isinstance(result, Rejection):
                    dead[result.reason] += 1
                    line["dead_letter"] = {
                        "reason": result.reason,
                        "detail": result.detail,
                        "path": result.path,
                    }
                elif isinstance(result, Skipped):
                    skipped[result.reason] += 1
                    line["skipped"] = result.reason
                else:
                    signals += 1
                    line["signal"] = result.model_dump(mode="json", exclude={"ingested_at"})
                yield line
    yield {
        "records": records,
        "signals": signals,
        "dead_letters": dict(sorted(dead.items())),
        "skipped": dict(sorted(skipped.items())),
    }
