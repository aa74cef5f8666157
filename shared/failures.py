"""The one place that decides what a failure is: `classify` maps any exception a worker meets
(the broker's, the database's, its own) into `shared.errors`, whose `retriable` and type say
what happens next. Kept apart from the hierarchy so that the pure core, which raises those
errors, imports nothing of Kafka or the database.
"""

from __future__ import annotations

import asyncio

import asyncpg
from aiokafka.errors import KafkaError, KafkaTimeoutError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import InterfaceError as SQLAlchemyInterfaceError
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError

from shared.errors import Defect, HealthScoreError, InfrastructureUnavailable, RecordRefused

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
