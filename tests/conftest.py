"""Fixtures of every test tier: the session's real broker and PostgreSQL (tests/support/infra.py
starts them, or takes the ones the environment names), and per test fresh topics, consumer
groups and a migrated database."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import Settings
from shared.db import create_engine
from tests.support.infra import Infra, create_template, fresh_settings, running_infrastructure


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    # the servers stop first, then their data goes with the directory
    with (
        tempfile.TemporaryDirectory(prefix="healthscore-test-", ignore_cleanup_errors=True) as work,
        running_infrastructure(Path(work)) as infra,
    ):
        create_template(infra.database)
        yield infra


@pytest.fixture
async def settings(infra: Infra) -> AsyncIterator[Settings]:
    async with fresh_settings(infra) as settings:
        yield settings


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.database)
    yield engine
    await engine.dispose()


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """Commands configure structlog onto CliRunner's stream; undo that afterwards."""
    import structlog

    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
