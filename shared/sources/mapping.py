"""Mappings: any other JSON event turned into signals by a reviewed YAML file, without code.

A mapping file holds named mappings; a raw topic configured as `mapping:NAME` is read with
that mapping. A mapping is a list of rules; the first rule whose `when` matches a record
decides what it becomes (a record no rule matches is skipped, and counted):

    mappings:
      hubspot_email:
        rules:
          - when: {$.eventType: [EMAIL_OPEN, EMAIL_CLICK]}
            kind: marketing_engaged
            event_id: $.id
            account_id: $.properties.company_id
            occurred_at: {path: $.created, format: epoch_ms}
            fields:
              channel: {value: email}
              action: {path: $.eventType, map: {EMAIL_OPEN: opened, EMAIL_CLICK: clicked}}
              campaign: $.campaignName

A value is a path (`$.a.b[0]`), or `{path, default, map, format, unit}`, or `{value}`: a
constant. `format` reads a time as `iso` (the default), `epoch_s` or `epoch_ms`; `unit: minor`
reads money in the currency's minor units (cents), `major` (the default) in whole units. The
file is checked when it is loaded: the kind, its required fields, every path; a problem is
reported with the file, the line and the reason. A record that a rule cannot turn into a valid
signal is dead-lettered as `mapping_failed`, with the path that failed.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.errors import ConfigurationError
from shared.events import EVENT_MODEL, major_units
from shared.sources.base import NOT_SCORED, Piece, Translation, iso, rejected, skipped
from shared.sources.paths import MISSING, Path
from shared.validate import ENVELOPE

MONEY = frozenset({"amount", "mrr"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Value(_Strict):
    path: str | None = None
    value: Any = None
    default: Any = None
    map: dict[str, Any] | None = None
    format: Literal["iso", "epoch_s", "epoch_ms"] = "iso"
    unit: Literal["major", "minor"] = "major"

    @field_validator("path")
    @classmethod
    def _path(cls, text: str | None) -> str | None:
        if text is not None:
            Path.parse(text)
        return text


def _value(spec: Any) -> Any:
    return {"path": spec} if isinstance(spec, str) else spec


class Rule(_Strict):
    when: dict[str, Any | list[Any]] = {}
    kind: str
    event_id: Value
    account_id: Value
    occurred_at: Value
    fields: dict[str, Value] = {}

    @field_validator("event_id", "account_id", "occurred_at", mode="before")
    @classmethod
    def _spec(cls, spec: Any) -> Any:
        return _value(spec)

    @field_validator("fields", mode="before")
    @classmethod
    def _specs(cls, fields: Any) -> Any:
        return {k: _value(v) for k, v in fields.items()} if isinstance(fields, dict) else fields

    @field_validator("when")
    @classmethod
    def _when(cls, when: dict[str, Any]) -> dict[str, Any]:
        for path in when:
            Path.parse(path)
        return when

    @field_validator("kind")
    @classmethod
    def _kind(cls, kind: str) -> str:
        if kind not in EVENT_MODEL:
            raise ValueError(
                f"unknown signal kind {kind!r}; known: {', '.join(sorted(EVENT_MODEL))}"
            )
        return kind

    def check(self) -> None:
        model = EVENT_MODEL[self.kind]
        own = set(model.model_fields) - ENVELOPE
        unknown = set(self.fields) - own
        if unknown:
            raise ValueError(
                f"{self.kind} has no field {sorted(unknown)}; its fields: {sorted(own)}"
            )
        required = {n for n in own if model.model_fields[n].is_required()} - set(self.fields)
        if required:
            raise ValueError(f"{self.kind} needs the fields {sorted(required)}")
        for name, spec in self.fields.items():
            if spec.unit == "minor" and name not in MONEY:
                raise ValueError(f"fields.{name}: unit applies to money fields {sorted(MONEY)}")
        for name, spec in {
            **self.fields,
            "event_id": self.event_id,
            "account_id": self.account_id,
            "occurred_at": self.occurred_at,
        }.items():
            if spec.path is None and spec.value is None:
                raise ValueError(f"{name}: give a path or a value")


class Mapping(_Strict):
    rules: Annotated[list[Rule], Field(min_length=1)]


class MappingFile(_Strict):
    mappings: dict[str, Mapping]


def _lines(node: yaml.Node, at: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out[at] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            out[(*at, key_node.value)] = key_node.start_mark.line + 1
            _lines(value_node, (*at, key_node.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*at, i), out)


def load_mappings(path: FilePath) -> dict[str, MappingFormat]:
    """Every mapping of a file, checked; ConfigurationError names the file, line and reason."""
    try:
        source = path.read_text()
        document = yaml.safe_load(source)
        tree = yaml.compose(source)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{path}: cannot read mappings: {exc}") from exc
    lines: dict[tuple[Any, ...], int] = {}
    if tree is not None:
        _lines(tree, (), lines)

    def where(loc: tuple[Any, ...]) -> str:
        for end in range(len(loc), -1, -1):
            if loc[:end] in lines:
                return f"{path}:{lines[loc[:end]]}"
        return str(path)

    try:
        parsed = MappingFile.model_validate(document)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = tuple(err["loc"])
        shown = ".".join(str(p) for p in loc) or "(top level)"
        raise ConfigurationError(f"{where(loc)}: {shown}: {err['msg']}") from exc
    for name, mapping in parsed.mappings.items():
        for i, rule in enumerate(mapping.rules):
            try:
                rule.check()
            except ValueError as exc:
                loc = ("mappings", name, "rules", i)
                raise ConfigurationError(f"{where(loc)}: mappings.{name}.rules.{i}: {exc}") from exc
    return {name: MappingFormat(name, mapping) for name, mapping in parsed.mappings.items()}


class _Failed(Exception):
    def __init__(self, path: str, detail: str) -> None:
        self.path, self.detail = path, detail


class _Compiled:
    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.when = [
            (Path.parse(p), v if isinstance(v, list) else [v]) for p, v in rule.when.items()
        ]
        self.specs = {
            "event_id": rule.event_id,
            "account_id": rule.account_id,
            "occurred_at": rule.occurred_at,
            **rule.fields,
        }
        self.paths = {n: Path.parse(s.path) for n, s in self.specs.items() if s.path is not None}
        self.required = {"event_id", "account_id", "occurred_at"} | {
            n for n in rule.fields if EVENT_MODEL[rule.kind].model_fields[n].is_required()
        }

    def matches(self, record: dict[str, Any]) -> bool:
        return all(path.get(record) in values for path, values in self.when)

    def event(self, record: dict[str, Any]) -> dict[str, Any]:
        event: dict[str, Any] = {"type": self.rule.kind, "schema_version": 1}
        for name, spec in self.specs.items():
            value = self._read(name, spec, record)
            if value is not MISSING:
                event[name] = value
        for name in MONEY & event.keys():
            if self.specs[name].unit == "minor":
                currency = (
                    event.get("currency") if isinstance(event.get("currency"), str) else "USD"
                )
                if not isinstance(event[name], int) or isinstance(event[name], bool):
                    raise _Failed(
                        str(self.paths.get(name, name)),
                        "an amount in minor units must be an integer",
                    )
                event[name] = major_units(event[name], str(currency))
        return event

    def _read(self, name: str, spec: Value, record: dict[str, Any]) -> Any:
        if spec.path is None:
            return spec.value
        value = self.paths[name].get(record)
        if value is None or value is MISSING:
            if spec.default is not None:
                return spec.default
            if name in self.required:
                raise _Failed(spec.path, f"{spec.path} is missing (for {name})")
            return MISSING
        if name.endswith("_id") and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # vendors' numeric ids
        if spec.map is not None:
            mapped = spec.map.get(str(value), MISSING)
            if mapped is MISSING:
                raise _Failed(
                    spec.path, f"{str(value)[:64]!r} is not one of {sorted(spec.map)[:10]}"
                )
            value = mapped
        if spec.format != "iso":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _Failed(spec.path, f"{spec.format} time must be a number")
            seconds = value / 1000 if spec.format == "epoch_ms" else value
            try:
                value = iso(seconds)
            except (OverflowError, OSError, ValueError) as exc:
                raise _Failed(spec.path, f"time out of range: {exc}") from exc
        return value


class MappingFormat:
    def __init__(self, name: str, mapping: Mapping) -> None:
        self.name = f"mapping:{name}"
        self.rules = [_Compiled(rule) for rule in mapping.rules]

    def translate(self, record: dict[str, Any], raw: bytes) -> Translation:
        for rule in self.rules:
            if not rule.matches(record):
                continue
            try:
                event = rule.event(record)
            except _Failed as failed:
                return Translation([rejected(raw, "mapping_failed", failed.detail, failed.path)])
            paths = {n: rule.specs[n].path or f"(value of {n})" for n in rule.specs}
            return Translation([Piece(raw, event, paths=paths, refusal="mapping_failed")])
        return Translation([skipped(raw, NOT_SCORED)])
