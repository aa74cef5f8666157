"""An account's state as the JSON document releases up to 0014 stored it (version 3; the
memory of versions 1 and 2 is read too): for their migration (shared/legacy.py), the API's
reads of an account not yet converted, and `fingerprint`, the canonical bytes by which two
folds of the same signals are compared."""

from __future__ import annotations

import base64
import struct
from array import array
from typing import Any

import orjson

from shared.scoring import decay
from shared.scoring.seen import SeenIds, id_digest, whole_seconds
from shared.scoring.state import AccountState


def to_document(state: AccountState) -> dict[str, Any]:
    return {
        "v": 3,
        "decayed": {k: decay.encode(v) for k, v in sorted(state.decayed.items())},
        "latest": {k: list(v) for k, v in sorted(state.latest.items())},
        "last": dict(sorted(state.last.items())),
        "sources": dict(sorted(state.sources.items())),
        "attributes": {k: list(v) for k, v in sorted(state.attributes.items())},
        "overrides": dict(sorted(state.overrides.items())),
        "seen": _seen_to_json(state.memory),
        "newest": state.newest,
        "floor": state.floor,
        # only when a model reads them, so older documents and fingerprints stay the same
        **({"first": dict(sorted(state.first.items()))} if state.first else {}),
        **({"counts": dict(sorted(state.counts.items()))} if state.counts else {}),
        **(
            {
                "windows": {
                    k: {"window": w, "days": {str(d): n for d, n in sorted(days.items())}}
                    for k, (w, days) in sorted(state.windows.items())
                }
            }
            if state.windows
            else {}
        ),
    }


def from_document(doc: dict[str, Any]) -> AccountState:
    return AccountState(
        decayed={k: decay.decode(v) for k, v in doc["decayed"].items()},
        latest={k: (v[0], v[1], v[2]) for k, v in doc["latest"].items()},
        last=dict(doc["last"]),
        first=dict(doc.get("first", {})),
        counts=dict(doc.get("counts", {})),
        windows={
            k: (v["window"], {int(d): n for d, n in v["days"].items()})
            for k, v in doc.get("windows", {}).items()
        },
        sources=dict(doc["sources"]),
        attributes={k: (v[0], v[1], v[2]) for k, v in doc["attributes"].items()},
        overrides=dict(doc["overrides"]),
        newest=doc["newest"],
        floor=doc.get("floor"),
        memory=_seen_from_json(doc["seen"]),
    )


_SEEN = struct.Struct(">QI")  # id digest, ingested at (epoch seconds)


def _seen_to_json(memory: SeenIds) -> str:
    """The memory as the documents held it: (digest, ingested at) pairs, in base64."""
    return base64.b64encode(b"".join(_SEEN.pack(*pair) for pair in memory.seen.items())).decode()


def _seen_from_json(seen: str | dict[str, float]) -> SeenIds:
    if isinstance(seen, dict):  # version 1 documents: {signal id: ingested at}
        pairs = {id_digest(signal_id): whole_seconds(t) for signal_id, t in seen.items()}
    else:
        pairs = dict(_SEEN.iter_unpack(base64.b64decode(seen)))
    return SeenIds(bytearray(b"".join(d.to_bytes(8) for d in pairs)), array("I", pairs.values()))


def fingerprint(state: AccountState) -> bytes:
    """Canonical bytes of everything but the de-duplication memory (`seen`, `floor`)."""
    doc = to_document(state)
    del doc["seen"], doc["floor"]
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
