"""Fixtures of the reliability suite: a fresh migrated database per test module.

The access table sends a few hundred requests that commit through the app's own sessions, so
it cannot share the rolled-back transaction of ``session``; one copy of the migrated template
per module (and database) keeps it fast, and every request acts on objects of its own.
"""

from __future__ import annotations

import shutil
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from callcenter import db
from tests.conftest import _fresh_postgres


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def module_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path_factory.mktemp("module-db") / "module.db"
        shutil.copyfile(template, path)
        engine = db.make_engine(f"sqlite:///{path}")
        yield engine
        engine.dispose()
        return
    urls: Generator[str, None, None] = _fresh_postgres(request.getfixturevalue("postgres_template"))  # type: ignore[assignment]  # typed as an Iterator there
    engine = db.make_engine(next(urls))
    try:
        yield engine
    finally:
        engine.dispose()
        urls.close()  # drops the database


@pytest.fixture
def sqlite_engine(sqlite_template: Path, tmp_path: Path) -> Iterator[Engine]:
    """A fresh migrated SQLite database, for tests of the web layer where the database is not
    what is tested (login limits): running them twice would only double argon2's work."""
    path = tmp_path / "fresh.db"
    shutil.copyfile(sqlite_template, path)
    engine = db.make_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()
