"""Database kernel: the declarative base, engines and the one place that commits.

The same models run on SQLite (the embedded default for the demo and a small site) and on
PostgreSQL (production and tests). Times are stored in UTC and shown in Asia/Shanghai.
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from sqlalchemy import Connection, DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from callcenter.settings import get_settings

# Stable constraint names, so that Alembic migrations are the same on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use utcnow()")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    """The centre's clock: the time of arrival is always ours, never the terminal's."""
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dt.datetime: UTCDateTime()}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the pysqlite driver, decide when transactions begin; otherwise
    # SAVEPOINT and rollback do not work as written (SQLAlchemy's documented pysqlite recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets the web console read while the call handler writes; foreign keys are off by default.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


# Execution option of a unit of work that only reads (see _sqlite_begin and read_scope).
READ_ONLY = "hyt_read_only"


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock at the start, so two writers wait instead of one failing
    # with "database is locked" half-way through its transaction. A unit of work that only
    # reads begins DEFERRED: under WAL it neither takes nor waits for the write lock, so that
    # 50 consoles reading the queue at once cannot hold up the intake's commit of an alarm.
    read_only = conn.get_execution_options().get(READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url`` (default: ``HYT_DATABASE_URL``) with our per-backend settings."""
    url = url or get_settings().database_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    else:
        kwargs.setdefault("pool_pre_ping", True)
        if kwargs.get("poolclass") is None and "isolation_level" not in kwargs:
            # One connection per database thread of the call handler, plus the web's own.
            kwargs.setdefault("pool_size", get_settings().db_threads + 4)
            kwargs.setdefault("max_overflow", 16)
        engine = create_engine(url, **kwargs)
    return engine


_engine: Engine | None = None
_session_factory: sessionmaker[Session] | None = None


def get_engine() -> Engine:
    global _engine
    if _engine is None:
        _engine = make_engine()
    return _engine


def load_models() -> None:
    """Import every model module: a mapper names tables of other packages by string, and all
    of them must be known before the first query."""
    importlib.import_module("callcenter.all_models")


def session_factory() -> sessionmaker[Session]:
    global _session_factory
    load_models()
    if _session_factory is None:
        _session_factory = sessionmaker(get_engine(), expire_on_commit=False)
    return _session_factory


def use_engine(engine: Engine) -> None:
    """Point this process at ``engine`` (tests and the demo use their own database)."""
    global _engine, _session_factory
    _engine = engine
    _session_factory = sessionmaker(engine, expire_on_commit=False)


@contextmanager
def read_scope() -> Iterator[Session]:
    """A unit of work that only reads (on SQLite it takes no write lock); nothing to commit."""
    session = session_factory()()
    try:
        session.connection(execution_options={READ_ONLY: True})
        yield session
    finally:
        session.close()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A unit of work: commits on success, rolls back on any exception.

    The one place that commits.
    """
    session = session_factory()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
