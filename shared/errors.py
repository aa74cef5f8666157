"""One error hierarchy for the whole service, and the one place that classifies failures.

Every failure a worker meets is turned into one of these by `classify`, and what happens next is
read off the result, never decided again elsewhere:
- `retriable` (broker or database unavailable, a serialization conflict, a lost partition):
  back off and try again without committing;
- `RecordRefused` (a value the database refuses, a record the scoring core cannot take): the
  record is isolated, dead-lettered with a reason, counted, and the partition moves on;
- anything else (`Defect`: a bug or a misconfiguration that no record is to blame for): the
  worker stops, and its orchestrator's restarts make it visible.
"""

from __future__ import annotations

import asyncio

import asyncpg
from aiokafka.errors import KafkaError, KafkaTimeoutError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import InterfaceError as SQLAlchemyInterfaceError
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError


class HealthScoreError(Exception):
    """Root of every error this package raises on purpose."""

    retriable = False


class ConfigurationError(HealthScoreError):
    """The settings or a model file are invalid; the process cannot start."""


class DatabaseNotMigrated(HealthScoreError):
    """The database is not at the migration head this build needs."""


class InfrastructureUnavailable(HealthScoreError):
    """Broker or database unreachable, or a conflict a retry resolves: back off, commit
    nothing, try again."""

    retriable = True


class FencedOut(HealthScoreError):
    """This scorer lost a partition to another member; its batch must not be written."""

    retriable = True


class RecordRefused(HealthScoreError):
    """One record cannot be stored or scored, whatever the retries: it goes to the dead-letter
    topic with `reason` (machine-readable) and the underlying message as the detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Defect(HealthScoreError):
    """Neither the infrastructure nor one record: a bug or a misconfiguration. Not retried and
    not blamed on a record: the worker stops."""


# PostgreSQL error classes (the first two characters of SQLSTATE), by what a retry can do.
_TRANSIENT_SQLSTATE = {
    "08",  # connection exception
    "40",  # transaction rollback: serialization failure, deadlock
    "53",  # insufficient resources: disk full, out of memory, too many connections
    "55",  # object not in prerequisite state: lock not available
    "57",  # operator intervention: shutdown, statement timeout, cancelled
    "58",  # system error (I/O)
}
_DATA_SQLSTATE = {
    "22",  # data exception: NUL in text, out-of-range number, invalid encoding or JSON
    "23",  # integrity constraint violation
    "54",  # program limit exceeded: a value or row too large
}


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, raw from asyncpg or wrapped by SQLAlchemy."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str) and len(state) == 5:
            return state
        current = getattr(current, "orig", None) or current.__cause__
    return None


def classify(exc: BaseException) -> HealthScoreError:
    """What a failure is, as a member of this hierarchy (an instance of it is returned as is)."""
    if isinstance(exc, HealthScoreError):
        return exc
    message = f"{type(exc).__name__}: {exc}"[:500]
    state = _sqlstate(exc)
    if state is not None:
        if state[:2] in _DATA_SQLSTATE:
            return RecordRefused("refused_by_database", f"SQLSTATE {state}: {exc}"[:500])
        if state[:2] in _TRANSIENT_SQLSTATE:
            return InfrastructureUnavailable(message)
        return Defect(message)  # e.g. a missing table or column: no retry or record fixes it
    if isinstance(exc, KafkaError):  # a send that timed out is the broker being away
        transient = exc.retriable or isinstance(exc, KafkaTimeoutError)
        return InfrastructureUnavailable(message) if transient else Defect(message)
    if isinstance(
        exc,
        OSError  # connection refused, reset, unreachable
        | asyncio.TimeoutError
        | asyncpg.InterfaceError  # e.g. the connection closed under a transaction
        | SQLAlchemyOperationalError
        | SQLAlchemyInterfaceError,
    ):
        return InfrastructureUnavailable(message)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return InfrastructureUnavailable(message)
    return Defect(message)
