"""Text typed into the API or a form: anything a person can type, except NUL.

PostgreSQL cannot store U+0000 in a text column; a NUL in a case summary or a login name reached
the driver and came back as a 500. Refused here, it is a 422 naming the field (SQLite would have
kept it, so both databases now agree). Everything else is kept exactly as typed: markup and SQL
are only text, escaped where they are shown.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text may not contain NUL (U+0000) / 文本不能包含空字符")
    return value


InputText = Annotated[str, AfterValidator(_no_nul)]
