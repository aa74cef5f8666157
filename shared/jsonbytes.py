"""JSON documents held as bytes, right-sized.

From 3.12 on, `orjson.dumps` returns bytes that keep the whole buffer it wrote into: at least
4 KiB, doubled as it grows, whatever the document's length (a 1.4 kB explanation holds 8 KiB,
a 5 kB state 32 KiB). That is no matter for bytes sent at once, but the scorer holds a batch's
documents until its commit. `dumps` copies them into bytes of their own length (a fraction of a
microsecond each); see ijl/orjson's byteswriter and home-assistant/core#181240.
"""

from __future__ import annotations

from typing import Any

import orjson


def dumps(value: Any, option: int | None = None) -> bytes:
    return bytes(memoryview(orjson.dumps(value, option=option)))
