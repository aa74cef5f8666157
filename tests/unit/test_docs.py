"""The README, .env.example and docs/schemas say what the code does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
from pydantic import BaseModel

from shared.config import Settings
from shared.events import json_schemas

ROOT = Path(__file__).resolve().parents[2]


def option_names(model: type[BaseModel] = Settings, prefix: str = "HEALTHSCORE_") -> Iterator[str]:
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            yield from option_names(type(default), f"{prefix}{name.upper()}__")
        else:
            yield f"{prefix}{name.upper()}"


def test_every_option_is_in_the_readme_and_env_example() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / ".env.example").read_text()
    names = list(option_names())
    assert len(names) > 40
    for name in names:
        assert f"`{name}`" in readme, name
        assert name + "=" in example, name


def test_json_schemas_in_docs_are_current() -> None:
    for stem, schema in json_schemas().items():
        path = ROOT / "docs" / "schemas" / f"{stem}.schema.json"
        assert orjson.loads(path.read_bytes()) == orjson.loads(orjson.dumps(schema)), (
            f"{path} is stale: run `make schemas`"
        )
