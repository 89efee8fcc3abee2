"""API shapes of the operator console."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from callcenter.console import Outcome
from callcenter.web.input_text import InputText


class ClaimOut(BaseModel):
    alarm_id: int
    status: str
    claimed_by_id: int | None
    claimed_at: dt.datetime | None
    elder_id: int | None
    case_id: int | None


class OutcomeIn(BaseModel):
    outcome: Outcome
    note: InputText = Field(default="", max_length=1000)
    reason: InputText = Field(default="", max_length=500, description="required for false_alarm")


class OutcomeOut(BaseModel):
    alarm_id: int
    status: str
    outcome: str | None
    handled_at: dt.datetime | None


class QueueItem(BaseModel):
    id: int
    kind: str
    priority: int
    life_safety: bool
    status: str
    source: str
    caller: str
    received_at: dt.datetime
    wait_s: int
    elder_id: int | None
    elder_name: str | None
    terminal_serial: str | None
    case_id: int | None
    case_code: str | None
    claimed_by_id: int | None
    claimed_by: str | None
    # Shown to supervisors only: a life-safety alarm nobody has claimed past the flag threshold.
    flagged: bool = False


class QueueCounts(BaseModel):
    """What the console is not sent of the queue: every life-safety alarm is sent, the others
    up to a limit (``callcenter.console.QUEUE_OTHERS_SHOWN``), the rest only counted."""

    total: int = Field(description="unhandled alarms, shown or not")
    not_shown: int = Field(description="unhandled alarms not in the list")
    not_shown_by_kind: dict[str, int] = Field(description="alarm kind -> not shown")


class ContactOut(BaseModel):
    name: str
    relation: str
    phone: str
    call_order: int


class TerminalOut(BaseModel):
    id: int
    serial: str
    model: str
    status: str
    battery_pct: int | None
    last_seen_at: dt.datetime | None


class CaseBrief(BaseModel):
    id: int
    code: str
    kind: str
    state: str
    item_code: str | None
    summary: str
    opened_at: dt.datetime


class ScreenPop(BaseModel):
    id: int
    code: str
    name: str
    sex: str
    age: int
    phone: str | None
    address: str
    community: str
    street: str
    access_notes: str
    medical_notes: str
    medications: list[str]
    allergies: list[str]
    mobility: str
    language: str
    lives_alone: bool
    risk_level: str
    contacts: list[ContactOut]
    terminals: list[TerminalOut]
    open_cases: list[CaseBrief]
    recent_cases: list[CaseBrief]


class ElderHit(BaseModel):
    id: int
    name: str
    name_pinyin: str
    phone: str | None
    community: str
    address: str
