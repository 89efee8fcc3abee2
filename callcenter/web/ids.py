"""Row ids in URL paths: positive and within the database's INTEGER range.

A larger number in a path (``/api/cases/9223372036854775808``) or a body reached the driver and
failed there: SQLite's driver raises OverflowError, a 500. Declared here, FastAPI refuses it with
422 before any query, and the OpenAPI schema says what an id may be.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import Field

MAX_ROW_ID = 2**31 - 1  # PostgreSQL INTEGER, the type of every primary key here

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
# The same in a request body.
BodyRowId = Annotated[int, Field(ge=1, le=MAX_ROW_ID)]
