"""One error hierarchy for the whole service.

Every failure a worker meets is turned into one of these by `shared.failures.classify`, and
what happens next is read off the result, never decided again elsewhere:
- `retriable` (broker or database unavailable, a serialization conflict, a lost partition):
  back off and try again without committing;
- `RecordRefused` (a value the database refuses, a record the scoring core cannot take): the
  record is isolated, dead-lettered with a reason, counted, and the partition moves on;
- anything else (`Defect`: a bug or a misconfiguration that no record is to blame for): the
  worker stops, and its orchestrator's restarts make it visible.
"""

from __future__ import annotations


class HealthScoreError(Exception):
    """Root of every error this package raises on purpose."""

    retriable = False


class ConfigurationError(HealthScoreError):
    """The settings or a model file are invalid; the process cannot start."""


class DatabaseNotMigrated(HealthScoreError):
    """The database is not at the migration head this build needs."""


class StartupTimedOut(HealthScoreError):
    """A start-up step did not finish in time: the process stops, its supervisor restarts it."""


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
