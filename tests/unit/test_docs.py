"""The README, .env.example and docs/schemas say what the code does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, SecretStr, TypeAdapter

from shared.config import Settings
from shared.events import json_schemas
from shared.validate import REASONS

ROOT = Path(__file__).resolve().parents[2]


def options(
    model: type[BaseModel] = Settings, prefix: str = "HEALTHSCORE_"
) -> Iterator[tuple[str, Any, Any]]:
    """(environment name, field annotation, default) of every option."""
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            yield from options(type(default), f"{prefix}{name.upper()}__")
        else:
            yield f"{prefix}{name.upper()}", field.annotation, default


def option_names() -> list[str]:
    return [name for name, _, _ in options()]


def _as_configured(annotation: Any, text: str) -> Any:
    """A value as the settings would read it from the environment."""
    if text.startswith(("[", "{")):
        return orjson.loads(text)
    return TypeAdapter(annotation).validate_python(text)


def _comparable(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path) and value.is_absolute():
        return value.relative_to(ROOT)
    return value


def test_env_example_and_the_configuration_table_give_the_defaults_the_code_has() -> None:
    """Each option's value in .env.example (commented out where it has no literal default) and
    its default in docs/configuration.md are the code's default."""
    example = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"#? ?(HEALTHSCORE_\w+)=(.*)", line)
        if match:
            example[match[1]] = match[2]
    table = read("docs/configuration.md")
    readme = {
        m[1]: m[2] for m in re.finditer(r"^\| `(HEALTHSCORE_\w+)` \| `([^`]*)` \|", table, re.M)
    }
    wrong = []
    for name, annotation, default in options():
        expected = _comparable(default)
        for where, values in ((".env.example", example), ("docs/configuration.md", readme)):
            if name in values:
                text = values[name]
                if default is None and text == "":
                    continue
                if _comparable(_as_configured(annotation, text)) != expected:
                    wrong.append(f"{where}: {name}={text}, the default is {expected!r}")
    assert wrong == []
    assert len(readme) > 40 and len(example) == len(option_names())


def read(name: str) -> str:
    return (ROOT / name).read_text()


def test_the_readme_is_for_users_and_stays_short() -> None:
    """Benchmark narrative and decisions live in docs/, linked from it."""
    readme = read("README.md")
    assert len(readme.encode()) < 25 * 1024
    for linked in (
        "docs/performance.md",
        "docs/scoring-model.md",
        "docs/adr/",
        "docs/runbook.md",
        "docs/metrics.md",
        "docs/configuration.md",
        "docs/sources.md",
    ):
        assert linked in readme and (ROOT / linked).exists(), linked


def test_every_option_is_in_the_configuration_table_and_env_example() -> None:
    readme = (ROOT / "docs" / "configuration.md").read_text()
    example = (ROOT / ".env.example").read_text()
    names = option_names()
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
                if status == "204":  # No Content: there is nothing to show
                    assert "content" not in response, (method, path, status)
                    continue
                bodies = response.get("content", {}).values()
                assert any("example" in b for b in bodies), ("no example", method, path, status)


def _asyncapi_document() -> dict[str, Any]:
    import yaml

    document: dict[str, Any] = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    return document


def test_asyncapi_document_names_every_topic() -> None:
    document = _asyncapi_document()
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
        "segment.events",
        "stripe.events",
        "zendesk.events",
        "crm.outcomes",
        "{topic}",
    }
    reasons = document["channels"]["dlq"]["messages"]["deadLetter"]["headers"]["properties"]
    assert set(REASONS) <= set(reasons["reason"]["enum"])


def _inlined(node: Any, base: Path) -> Any:
    """The document with every reference to a file replaced by the file, as a parser sees it."""
    if isinstance(node, list):
        return [_inlined(item, base) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        return orjson.loads((base / ref).read_bytes())
    return {key: _inlined(value, base) for key, value in node.items()}


def test_asyncapi_document_is_valid_against_the_official_asyncapi_3_schema() -> None:
    """tests/data/asyncapi/3.0.0.schema.json is the AsyncAPI specs package's own schema; with
    the payload files inlined, this also checks every payload as an AsyncAPI Schema Object."""
    import jsonschema

    spec = orjson.loads((ROOT / "tests" / "data" / "asyncapi" / "3.0.0.schema.json").read_bytes())
    document = _inlined(_asyncapi_document(), ROOT / "docs")
    deepest = (
        jsonschema.exceptions.best_match([e])
        for e in jsonschema.Draft7Validator(spec).iter_errors(document)
    )
    errors = sorted(
        f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message[:200]}"
        for e in deepest
        if e is not None
    )
    assert errors == []


def test_payload_schemas_accept_what_ingest_accepts() -> None:
    """Every v1 sample and every vendor sample validates against its payload schema."""
    import jsonschema

    from tests.support.samples import valid_events
    from tests.support.vendor import sample, sample_names

    schemas = {
        path.name.removesuffix(".schema.json"): orjson.loads(path.read_bytes())
        for path in (ROOT / "docs" / "schemas").glob("*.schema.json")
    }
    for schema in schemas.values():
        jsonschema.Draft7Validator.check_schema(schema)
    from datetime import UTC, datetime

    from shared.events import EVENT_MODEL, EVENT_TYPE_SOURCE

    for kind, event in valid_events(datetime.now(UTC)).items():
        # in the form a producer is asked for (ingest also takes upper case and padding)
        canonical = EVENT_MODEL[kind].model_validate(event).model_dump(mode="json")
        schema = schemas[f"{EVENT_TYPE_SOURCE[kind]}.events.v1"]
        jsonschema.validate(canonical, schema, format_checker=jsonschema.FormatChecker())
    for vendor, stem in (
        ("segment", "segment.message"),
        ("stripe", "stripe.event"),
        ("zendesk", "zendesk.event"),
    ):
        for name in sample_names(vendor):
            jsonschema.validate(sample(vendor, name), schemas[stem])


# --- the names on-call reads in the docs are the names the code uses --------------------------

CODE = ("services", "shared", "healthscore")
OPERATOR_DOCS = (
    "README.md",
    "docs/*.md",
    "deploy/**/*.yml",
    "deploy/**/*.yaml",
    "deploy/**/*.json",
)
LOG_EVENT = re.compile(r"`((?:ingest|scorer|api|import|relay|startup|console)\.[a-z_]+)`")
METRIC = re.compile(r"\bhealthscore_[a-z0-9_]+")
HEALTH_PREFIX = re.compile(r"health\.register\(.*?\"(healthscore_[a-z_]+)\"\)")
SUFFIX = re.compile(r"_(total|bucket|count|sum|created)$")  # a sample's, beyond its metric's


def _texts(patterns: tuple[str, ...]) -> Iterator[tuple[Path, str]]:
    for pattern in patterns:
        for path in sorted(ROOT.glob(pattern)):
            yield path, path.read_text()


def _code() -> str:
    return "\n".join(
        path.read_text() for folder in CODE for path in sorted((ROOT / folder).rglob("*.py"))
    )


def test_every_log_event_the_docs_name_is_logged() -> None:
    code = _code()
    named = {
        (event, path.relative_to(ROOT).as_posix())
        for path, text in _texts(OPERATOR_DOCS)
        for event in LOG_EVENT.findall(text)
    }
    assert named, "the docs name log events (the runbook does)"
    missing = sorted((e, p) for e, p in named if f'"{e}"' not in code)
    assert not missing, f"named in the docs, logged nowhere: {missing}"


def test_every_metric_the_docs_dashboards_and_alerts_name_is_exported() -> None:
    from prometheus_client import CollectorRegistry

    from shared.ops import Health

    code = _code()
    names = set(METRIC.findall(code))
    for prefix in set(HEALTH_PREFIX.findall(code)):  # the names a service's Health builds
        registry = CollectorRegistry()
        Health(stall_after=1.0).register(registry, prefix)
        names |= {family.name for family in registry.collect()}
    exported = {SUFFIX.sub("", name) for name in names}
    expected = {"healthscore_scorer_seconds_since_progress", "healthscore_ingest_records_consumed"}
    assert expected <= exported
    named = {
        (name, path.relative_to(ROOT).as_posix())
        for path, text in _texts(OPERATOR_DOCS)
        for name in METRIC.findall(text)
    }
    missing = sorted((n, p) for n, p in named if SUFFIX.sub("", n) not in exported)
    assert not missing, f"named in the docs, exported by no service: {missing}"
