"""JSONPath-like paths into a decoded JSON record: `$.data.object.customer`, `$.items[0].id`,
`$['key with spaces']`. Only member and index steps, one value per path: what a mapping needs
to say where a field is, and fast enough to run on every record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_STEP = re.compile(
    r"""\.([A-Za-z_$][\w$-]*)|\[(-?\d+)\]|\['((?:[^'\\]|\\.)*)'\]|\["((?:[^"\\]|\\.)*)"\]"""
)


class Missing:
    """What `Path.get` gives when the record has no value there."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = Missing()


@dataclass(frozen=True, slots=True)
class Path:
    text: str
    steps: tuple[str | int, ...]

    @classmethod
    def parse(cls, text: str) -> Path:
        """Raises ValueError naming the position of the first step it cannot read."""
        if not isinstance(text, str) or not text.startswith("$"):
            raise ValueError(f"path {text!r} must start with '$'")
        steps: list[str | int] = []
        at = 1
        while at < len(text):
            match = _STEP.match(text, at)
            if match is None:
                raise ValueError(f"path {text!r}: cannot read from character {at + 1}")
            name, index, single, double = match.groups()
            if index is not None:
                steps.append(int(index))
            else:
                steps.append(
                    name if name is not None else (single or double or "").replace("\\", "")
                )
            at = match.end()
        return cls(text, tuple(steps))

    def get(self, record: Any) -> Any:
        value = record
        for step in self.steps:
            if isinstance(step, int):
                if not isinstance(value, list) or not -len(value) <= step < len(value):
                    return MISSING
                value = value[step]
            else:
                if not isinstance(value, dict) or step not in value:
                    return MISSING
                value = value[step]
        return value

    def __str__(self) -> str:
        return self.text
