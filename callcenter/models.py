"""ORM models of the centre itself: elders, operators, alarms, cases and the outbox.

Terminals live in :mod:`devices.models`, volunteers and offers in :mod:`volunteers.models`,
visits in :mod:`schedules.models`; :mod:`callcenter.all_models` imports them all.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from callcenter.db import Base, utcnow


def str_enum(enum_cls: type[enum.Enum]) -> Enum:
    """Store an enum as its value in a VARCHAR: portable, and new values need no DDL."""
    return Enum(
        enum_cls,
        native_enum=False,
        create_constraint=False,
        length=24,
        values_callable=lambda e: [m.value for m in e],
    )


class Sex(enum.StrEnum):
    FEMALE = "F"
    MALE = "M"


class RiskLevel(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Mobility(enum.StrEnum):
    INDEPENDENT = "independent"
    WALKING_AID = "walking_aid"
    WHEELCHAIR = "wheelchair"
    BEDRIDDEN = "bedridden"


class SupportStatus(enum.StrEnum):
    """Social support the elder receives; 低保 is the minimum living allowance."""

    NONE = "none"
    DIBAO = "dibao"  # 低保 minimum living allowance
    TEKUN = "tekun"  # 特困 extreme-poverty support
    LOW_INCOME = "low_income"  # 低收入
    WUBAO = "wubao"  # 五保 five guarantees (rural)


class Elder(Base):
    __tablename__ = "elders"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The street office's own identifier, used to match re-imports and terminals to elders.
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    name_pinyin: Mapped[str] = mapped_column(String(128), index=True)
    name_initials: Mapped[str] = mapped_column(String(16), index=True)
    sex: Mapped[Sex] = mapped_column(str_enum(Sex))
    birth_date: Mapped[dt.date]
    phone: Mapped[str | None] = mapped_column(String(20), index=True)
    district: Mapped[str] = mapped_column(String(32))
    street: Mapped[str] = mapped_column(String(32))
    community: Mapped[str] = mapped_column(String(48))
    grid: Mapped[str | None] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(200))
    latitude: Mapped[float]
    longitude: Mapped[float]
    lives_alone: Mapped[bool] = mapped_column(default=False)
    low_income: Mapped[bool] = mapped_column(default=False)
    support_status: Mapped[SupportStatus] = mapped_column(
        str_enum(SupportStatus), default=SupportStatus.NONE
    )
    risk_level: Mapped[RiskLevel] = mapped_column(str_enum(RiskLevel), default=RiskLevel.MEDIUM)
    medical_notes: Mapped[str] = mapped_column(Text, default="")
    medications: Mapped[list[str]] = mapped_column(JSON, default=list)
    allergies: Mapped[list[str]] = mapped_column(JSON, default=list)
    mobility: Mapped[Mobility] = mapped_column(str_enum(Mobility), default=Mobility.INDEPENDENT)
    language: Mapped[str] = mapped_column(String(24), default="普通话")
    access_notes: Mapped[str] = mapped_column(Text, default="")
    consent: Mapped[bool] = mapped_column(default=False)
    consent_at: Mapped[dt.datetime | None]
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    contacts: Mapped[list[EmergencyContact]] = relationship(
        back_populates="elder",
        order_by="EmergencyContact.call_order",
        cascade="all, delete-orphan",
    )

    __table_args__ = (Index("ix_elders_street_community", "street", "community"),)


class EmergencyContact(Base):
    __tablename__ = "emergency_contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    elder_id: Mapped[int] = mapped_column(ForeignKey("elders.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    relation: Mapped[str] = mapped_column(String(24))
    phone: Mapped[str] = mapped_column(String(20))
    call_order: Mapped[int] = mapped_column(default=1)

    elder: Mapped[Elder] = relationship(back_populates="contacts")


class Role(enum.StrEnum):
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class Operator(Base):
    """A console user. Supervisors and admins can do everything an operator can."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    role: Mapped[Role] = mapped_column(str_enum(Role), default=Role.OPERATOR)
    password_hash: Mapped[str] = mapped_column(String(256))
    sip_uri: Mapped[str | None] = mapped_column(String(128))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[dt.datetime | None]


class AlarmKind(enum.StrEnum):
    LIFE_SAFETY = "life_safety"
    SERVICE = "service"
    CONSULT = "consult"
    TECHNICAL = "technical"
    TEST = "test"
    CANCEL = "cancel"
    UNIDENTIFIED = "unidentified"


class AlarmSource(enum.StrEnum):
    EXTENSION = "extension"  # the dialled number told the button
    DTMF = "dtmf"  # RFC 2833 digits after answer
    CONTACT_ID = "contact_id"  # SIA DC-05 over DTMF
    SCAIP = "scaip"  # SIP MESSAGE application/scaip+xml
    OPERATOR = "operator"  # entered by hand at the console
    WATCHDOG = "watchdog"  # raised by the centre itself (silent terminal)


# Lower is more urgent. A flood of technical alarms never delays a life-safety one.
PRIORITY_BY_KIND: dict[AlarmKind, int] = {
    AlarmKind.LIFE_SAFETY: 1,
    AlarmKind.UNIDENTIFIED: 1,
    AlarmKind.SERVICE: 2,
    AlarmKind.CONSULT: 3,
    AlarmKind.CANCEL: 3,
    AlarmKind.TECHNICAL: 4,
    AlarmKind.TEST: 5,
}


class AlarmStatus(enum.StrEnum):
    NEW = "new"
    CLAIMED = "claimed"
    HANDLED = "handled"


class Alarm(Base):
    """One press or message, exactly as it arrived: raw and append-only."""

    __tablename__ = "alarms"

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    source: Mapped[AlarmSource] = mapped_column(str_enum(AlarmSource))
    kind: Mapped[AlarmKind] = mapped_column(str_enum(AlarmKind))
    priority: Mapped[int]
    terminal_id: Mapped[int | None] = mapped_column(ForeignKey("terminals.id"), index=True)
    elder_id: Mapped[int | None] = mapped_column(ForeignKey("elders.id"), index=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    caller: Mapped[str] = mapped_column(String(128), default="")
    event_code: Mapped[str | None] = mapped_column(String(16))
    # The terminal's own clock, kept as data only (clock skew: we trust ours).
    device_time: Mapped[str | None] = mapped_column(String(32))
    raw: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # A retransmitted SIP request or re-sent SCAIP message carries the same key: never two alarms.
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[AlarmStatus] = mapped_column(str_enum(AlarmStatus), default=AlarmStatus.NEW)
    claimed_by_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id"))
    claimed_at: Mapped[dt.datetime | None]
    handled_at: Mapped[dt.datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(32))
    # When the terminal was told (kiss-off, 200 to MESSAGE, prompt played). An alarm never
    # acknowledged may come again as the terminal's retry: it is then the same alarm.
    acknowledged_at: Mapped[dt.datetime | None]

    __table_args__ = (
        Index("ix_alarms_queue", "status", "priority", "received_at"),
        Index("ix_alarms_terminal_received", "terminal_id", "received_at"),
    )


class CaseState(enum.StrEnum):
    """派遣 dispatch → 处置 handle → 反馈 feedback → 办结 closed, plus cancelled and escalated."""

    DISPATCH = "dispatch"
    HANDLE = "handle"
    FEEDBACK = "feedback"
    CLOSED = "closed"
    CANCELLED = "cancelled"
    ESCALATED = "escalated"


class CaseKind(enum.StrEnum):
    LIFE_SAFETY = "life_safety"
    SERVICE = "service"
    CONSULT = "consult"
    TECHNICAL = "technical"
    VISIT_FINDING = "visit_finding"


class Case(Base):
    """The unit of work; repeat presses of one elder within a window attach to the open case."""

    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Short, unambiguous code for SMS and phone calls (no 0/O, 1/I).
    code: Mapped[str] = mapped_column(String(12), unique=True)
    kind: Mapped[CaseKind] = mapped_column(str_enum(CaseKind))
    state: Mapped[CaseState] = mapped_column(str_enum(CaseState), default=CaseState.DISPATCH)
    priority: Mapped[int]
    elder_id: Mapped[int | None] = mapped_column(ForeignKey("elders.id"), index=True)
    terminal_id: Mapped[int | None] = mapped_column(ForeignKey("terminals.id"), index=True)
    category_code: Mapped[str | None] = mapped_column(String(32))
    item_code: Mapped[str | None] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text, default="")
    opened_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    opened_by: Mapped[str] = mapped_column(String(64))
    due_at: Mapped[dt.datetime | None]
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[dt.datetime | None]
    assigned_volunteer_id: Mapped[int | None] = mapped_column(ForeignKey("volunteers.id"))
    # Grouped cases (e.g. a street-wide outage) point their members at one parent.
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))

    events: Mapped[list[CaseEvent]] = relationship(
        back_populates="case", order_by="CaseEvent.id", cascade="all, delete-orphan"
    )

    __table_args__ = (Index("ix_cases_elder_state", "elder_id", "state"),)


class CaseEvent(Base):
    """The case's audit trail: rows are only ever added, never changed."""

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(48))
    from_state: Mapped[str | None] = mapped_column(String(24))
    to_state: Mapped[str | None] = mapped_column(String(24))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    case: Mapped[Case] = relationship(back_populates="events")


class OutboxStatus(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"


class OutboxMessage(Base):
    """A message to send, written in the same transaction as the change that causes it."""

    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), default="sms")
    to: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    # Whatever causes the message names it, so that a retry of the cause cannot queue it twice.
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[OutboxStatus] = mapped_column(
        str_enum(OutboxStatus), default=OutboxStatus.QUEUED
    )
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    provider_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    provider_status: Mapped[str | None] = mapped_column(String(24))
    last_error: Mapped[str | None] = mapped_column(Text)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None]

    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)
