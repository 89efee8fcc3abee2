"""Volunteers, their skills and weekly availability, and the offers made to them."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from callcenter.db import Base, utcnow
from callcenter.models import str_enum


class Volunteer(Base):
    __tablename__ = "volunteers"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    community: Mapped[str | None] = mapped_column(String(48))
    home_latitude: Mapped[float]
    home_longitude: Mapped[float]
    service_radius_m: Mapped[int] = mapped_column(default=3000)
    active: Mapped[bool] = mapped_column(default=True)
    on_duty: Mapped[bool] = mapped_column(default=True)
    max_concurrent_tasks: Mapped[int] = mapped_column(default=2)
    rating: Mapped[float] = mapped_column(default=4.5)
    hours_served: Mapped[float] = mapped_column(default=0.0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    skills: Mapped[list[VolunteerSkill]] = relationship(
        back_populates="volunteer", cascade="all, delete-orphan"
    )
    availability: Mapped[list[AvailabilityWindow]] = relationship(
        back_populates="volunteer",
        cascade="all, delete-orphan",
        order_by="(AvailabilityWindow.weekday, AvailabilityWindow.start_minute)",
    )


class VolunteerSkill(Base):
    """A service category the volunteer can do, at a level (1 basic, 2 trained, 3 certified)."""

    __tablename__ = "volunteer_skills"

    volunteer_id: Mapped[int] = mapped_column(
        ForeignKey("volunteers.id", ondelete="CASCADE"), primary_key=True
    )
    category_code: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    level: Mapped[int] = mapped_column(default=1)

    volunteer: Mapped[Volunteer] = relationship(back_populates="skills")

    __table_args__ = (CheckConstraint("level BETWEEN 1 AND 3", name="level_range"),)


class AvailabilityWindow(Base):
    """A weekly on-duty window in the centre's time zone (Asia/Shanghai)."""

    __tablename__ = "availability_windows"

    id: Mapped[int] = mapped_column(primary_key=True)
    volunteer_id: Mapped[int] = mapped_column(
        ForeignKey("volunteers.id", ondelete="CASCADE"), index=True
    )
    weekday: Mapped[int]  # 0 Monday … 6 Sunday, as datetime.weekday()
    start_minute: Mapped[int]  # minutes after local midnight
    end_minute: Mapped[int]

    volunteer: Mapped[Volunteer] = relationship(back_populates="availability")

    __table_args__ = (
        CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday_range"),
        CheckConstraint(
            "start_minute >= 0 AND end_minute <= 1440 AND start_minute < end_minute",
            name="minute_range",
        ),
    )


class VolunteerDirectoryVersion(Base):
    """One row (id 1) whose ``token`` changes with every write to what matching keeps in memory
    (``volunteers/roster_cache.py``): volunteers' matching columns, skills, weekly windows.

    Database triggers set it (migration 0004), so bulk inserts, raw SQL and other processes
    count too: a random token per row written on SQLite, the writing transaction's id on
    PostgreSQL, so that a rolled-back write's token never returns.
    A SQLite batch migration that copies one of these three tables drops its triggers: re-create
    them there (``tests/volunteers/test_roster_cache.py`` fails if they are missing).
    """

    __tablename__ = "volunteer_directory_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger)


class OfferStatus(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"  # the wave's window passed without an answer
    STOOD_DOWN = "stood_down"  # someone else accepted first: "no longer needed"
    DROPPED = "dropped"  # accepted, then withdrew; the case goes back to matching
    COMPLETED = "completed"


class Offer(Base):
    __tablename__ = "offers"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    volunteer_id: Mapped[int] = mapped_column(ForeignKey("volunteers.id"), index=True)
    wave: Mapped[int] = mapped_column(default=1)
    status: Mapped[OfferStatus] = mapped_column(str_enum(OfferStatus), default=OfferStatus.PENDING)
    score: Mapped[float] = mapped_column(default=0.0)
    sent_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    responded_at: Mapped[dt.datetime | None]

    __table_args__ = (
        UniqueConstraint("case_id", "volunteer_id"),
        # Open offers by expiry (the wave timers), and open or recent ones with what matching
        # reads of them (who, when answered), so that it never visits the table (migration 0004).
        Index("ix_offers_open", "status", "expires_at", "volunteer_id", "responded_at", "sent_at"),
    )
