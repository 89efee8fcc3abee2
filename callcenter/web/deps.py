"""The one session dependency: commits on success, rolls back on error (STYLE.md §3)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from callcenter import db


def get_session() -> Iterator[Session]:
    with db.session_scope() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_read_session(session: SessionDep) -> Session:
    """The request's session, begun as a read-only unit of work (on SQLite it takes no write
    lock: ``db.READ_ONLY``). Declare it before any other dependency that queries, so that it
    begins the transaction; the user lookup of the role check then shares it."""
    session.connection(execution_options={db.READ_ONLY: True})
    return session


ReadSessionDep = Annotated[Session, Depends(get_read_session)]
