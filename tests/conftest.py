"""Test fixtures: a real database per run (SQLite file and PostgreSQL), one rolled-back transaction
per test, so that tests never see each other's rows.

PostgreSQL is the one at HYT_TEST_POSTGRES_URL (default: the machine's 127.0.0.1:5432, database
``test``). Each run (and each xdist worker) creates its own database there and drops it after.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

# Before any project import reads the settings.
os.environ.setdefault("HYT_ENV", "test")
os.environ.setdefault("HYT_SECRET_KEY", "test-secret-key-0123456789-abcdefghijklmnop")

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from callcenter import db, migrate

POSTGRES_ADMIN_URL = os.environ.get(
    "HYT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _create_postgres_database() -> tuple[str, str]:
    name = f"hyt_test_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{uuid.uuid4().hex[:8]}"
    admin = db.make_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # any failure to reach the server is fatal: PG is not optional
        raise pytest.UsageError(
            f"PostgreSQL at {POSTGRES_ADMIN_URL} is needed by the tests and is not reachable: "
            f"{exc}. Start it with: pg_ctlcluster --skip-systemctl-redirect "
            "$(ls /etc/postgresql) main start"
        ) from exc
    finally:
        admin.dispose()
    return name, make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(False)


def _drop_postgres_database(name: str) -> None:
    admin = db.make_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    name, url = _create_postgres_database()
    try:
        yield url
    finally:
        _drop_postgres_database(name)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'hyt.db'}"


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def migrated_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An engine on a database migrated with ``alembic upgrade head`` (migrations tested here)."""
    url = request.getfixturevalue(f"{request.param}_url")
    engine = db.make_engine(url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(migrated_engine: Engine) -> Engine:
    return migrated_engine


@pytest.fixture
def session(migrated_engine: Engine) -> Iterator[Session]:
    """A session whose commits are savepoints inside one transaction rolled back after the test."""
    with migrated_engine.connect() as conn:
        outer = conn.begin()
        sess = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
        try:
            yield sess
        finally:
            sess.close()
            outer.rollback()


@pytest.fixture(scope="session")
def postgres_template(postgres_url: str) -> Iterator[str]:
    """A migrated database to clone: CREATE DATABASE … TEMPLATE is much faster than migrating."""
    name, url = _create_postgres_database()
    engine = db.make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    try:
        yield name
    finally:
        _drop_postgres_database(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = db.make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A brand-new migrated database for one test, for code that commits through its own
    sessions (other processes, thread pools) and so cannot share the rolled-back transaction."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "fresh.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
    else:
        yield from _fresh_postgres(request.getfixturevalue("postgres_template"))


@pytest.fixture
def fresh_postgres_url(postgres_template: str) -> Iterator[str]:
    """As ``fresh_url``, PostgreSQL only: for process-level tests where the database is not
    what is being tested, so that they do not run twice."""
    yield from _fresh_postgres(postgres_template)


def _fresh_postgres(template_name: str) -> Iterator[str]:
    name = f"hyt_fresh_{uuid.uuid4().hex[:10]}"
    admin = db.make_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"'))
    admin.dispose()
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(False)
    finally:
        _drop_postgres_database(name)


@pytest.fixture
def fresh_engine(fresh_url: str) -> Iterator[Engine]:
    engine = db.make_engine(fresh_url)
    yield engine
    engine.dispose()
