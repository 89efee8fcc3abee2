"""Follow-up home visits: one row per elder and period, so planning twice creates nothing twice."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from callcenter.db import Base, utcnow
from callcenter.models import str_enum


class VisitKind(enum.StrEnum):
    MONTHLY = "monthly"
    WEEKLY = "weekly"
    QUARTERLY = "quarterly"
    EXTRA = "extra"  # within 24 h of a hospital discharge, bereavement …


class VisitStatus(enum.StrEnum):
    PLANNED = "planned"
    CONFIRMED = "confirmed"
    HANDED_BACK = "handed_back"
    DONE = "done"
    OVERDUE = "overdue"
    ESCALATED = "escalated"
    CANCELLED = "cancelled"


class Visit(Base):
    __tablename__ = "visits"

    id: Mapped[int] = mapped_column(primary_key=True)
    elder_id: Mapped[int] = mapped_column(ForeignKey("elders.id"), index=True)
    volunteer_id: Mapped[int | None] = mapped_column(ForeignKey("volunteers.id"), index=True)
    kind: Mapped[VisitKind] = mapped_column(str_enum(VisitKind))
    # "2026-12" for a month, "2026-W49" for a week, "2026-Q4" for a quarter, an id for extras.
    period: Mapped[str] = mapped_column(String(24))
    planned_date: Mapped[dt.date]
    window_end: Mapped[dt.date]
    status: Mapped[VisitStatus] = mapped_column(str_enum(VisitStatus), default=VisitStatus.PLANNED)
    reassign_count: Mapped[int] = mapped_column(default=0)
    # Volunteers who handed this visit back from their link: never offered it again.
    handed_back_by: Mapped[list[int]] = mapped_column(JSON, default=list, server_default="[]")
    recorded_at: Mapped[dt.datetime | None]
    seen_in_person: Mapped[bool | None]
    checklist: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("elder_id", "kind", "period"),
        Index("ix_visits_due", "status", "window_end"),
    )


class JobOutcome(enum.StrEnum):
    RUNNING = "running"
    OK = "ok"
    ERROR = "error"
    # Claimed by a leader that died before finishing: the next leader runs the slot again.
    INTERRUPTED = "interrupted"


class SchedulerJobRun(Base):
    """One run of a scheduled job for one slot of its trigger: the scheduler's memory.

    The unique (job, slot) row is the claim: whoever inserts it runs the slot, so a job is never
    run twice for one slot, and after downtime the next leader sees which slots were missed.
    """

    __tablename__ = "scheduler_job_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_name: Mapped[str] = mapped_column(String(64))
    scheduled_for: Mapped[dt.datetime]
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    outcome: Mapped[JobOutcome] = mapped_column(str_enum(JobOutcome), default=JobOutcome.RUNNING)
    attempts: Mapped[int] = mapped_column(default=1)
    # Earlier slots (missed during downtime) that this run covered: sweeps catch up in one go.
    missed: Mapped[int] = mapped_column(default=0)
    runner: Mapped[str] = mapped_column(String(128))  # host:pid
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (UniqueConstraint("job_name", "scheduled_for"),)
