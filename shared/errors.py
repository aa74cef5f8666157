"""One error hierarchy for the whole service.

`retriable` drives what a consumer does with a failure: a retriable error (broker or database
unavailable) means back off and try again without committing; anything else about a record is
invalid input, which is dead-lettered with a reason, counted, and committed.
"""

from __future__ import annotations


class HealthScoreError(Exception):
    """Root of every error this package raises on purpose."""

    retriable = False


class ConfigurationError(HealthScoreError):
    """The settings or a model file are invalid; the process cannot start."""


class DatabaseNotMigrated(HealthScoreError):
    """The database is not at the migration head this build needs."""


class InfrastructureUnavailable(HealthScoreError):
    """Broker or database unreachable: back off and retry, commit nothing."""

    retriable = True


class FencedOut(HealthScoreError):
    """This scorer lost a partition to another member; its batch must not be written."""

    retriable = True
