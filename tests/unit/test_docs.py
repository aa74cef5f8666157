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


def test_openapi_document_in_docs_is_current() -> None:
    from services.api.app import create_app

    committed = orjson.loads((ROOT / "docs" / "openapi.json").read_bytes())
    assert committed == orjson.loads(orjson.dumps(create_app(Settings()).openapi())), (
        "docs/openapi.json is stale: run `make schemas`"
    )
    for path, operations in committed["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                assert response.get("description"), (method, path, status)
                bodies = response.get("content", {}).values()
                assert any("example" in b for b in bodies), ("no example", method, path, status)


def test_asyncapi_document_names_every_topic() -> None:
    import yaml

    document = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    assert document["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in document["channels"].values()}
    topics = Settings().kafka.topics
    assert addresses == {
        topics.usage,
        topics.support,
        topics.billing,
        topics.signals,
        topics.dlq,
        topics.changes,
    }
