"""API shapes for cases, offers and volunteers."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from callcenter.web.ids import BodyRowId
from callcenter.web.input_text import InputText


class CaseEventOut(BaseModel):
    at: dt.datetime
    actor: str
    event: str
    from_state: str | None
    to_state: str | None
    detail: dict[str, Any]


class OfferOut(BaseModel):
    id: int
    volunteer_id: int
    volunteer_name: str
    wave: int
    status: str
    score: float
    sent_at: dt.datetime
    expires_at: dt.datetime
    responded_at: dt.datetime | None


class CaseOut(BaseModel):
    id: int
    code: str
    kind: str
    state: str
    priority: int
    elder_id: int | None
    elder_name: str | None
    category_code: str | None
    item_code: str | None
    summary: str
    opened_at: dt.datetime
    opened_by: str
    due_at: dt.datetime | None
    closed_at: dt.datetime | None
    assigned_volunteer_id: int | None


class CaseDetailOut(CaseOut):
    events: list[CaseEventOut]
    offers: list[OfferOut]


class CaseIn(BaseModel):
    elder_id: BodyRowId
    item_code: str = Field(min_length=3, max_length=64, examples=["appliances.replace_bulb"])
    summary: InputText = Field(default="", max_length=1000)
    alarm_id: BodyRowId | None = Field(default=None, description="the alarm this case answers")


class CaseItemIn(BaseModel):
    item_code: str = Field(min_length=3, max_length=64, examples=["appliances.replace_bulb"])
    summary: InputText | None = Field(default=None, max_length=1000)


class CloseIn(BaseModel):
    satisfied: bool
    note: InputText = Field(default="", max_length=500)


class CancelIn(BaseModel):
    reason: InputText = Field(min_length=2, max_length=500)


class CandidateOut(BaseModel):
    volunteer_id: int
    name: str
    distance_m: float
    skill_level: int
    score: float
    reasons: dict[str, float]
    explain_zh: str
    explain_en: str


class WaveOut(BaseModel):
    wave: int
    offered_volunteer_ids: list[int]
    escalated: bool
