"""API shapes (Pydantic), separate from the ORM models."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from callcenter.web.input_text import InputText


class LoginIn(BaseModel):
    username: InputText = Field(min_length=1, max_length=64)
    password: InputText = Field(min_length=1, max_length=256)


class UserOut(BaseModel):
    id: int
    username: str
    display_name: str
    role: str


class ElderRef(BaseModel):
    id: int
    name: str
    street: str
    community: str


class TerminalRef(BaseModel):
    id: int
    serial: str
    model: str


class CaseRef(BaseModel):
    id: int
    code: str
    state: str


class AlarmOut(BaseModel):
    id: int
    received_at: dt.datetime
    kind: str
    priority: int
    source: str
    status: str
    caller: str
    event_code: str | None
    acknowledged_at: dt.datetime | None
    elder: ElderRef | None
    terminal: TerminalRef | None
    case: CaseRef | None
