"""The terminal registry: each elder's remote terminal telephone and pendant."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from callcenter.db import Base, utcnow
from callcenter.models import str_enum


class TerminalProtocol(enum.StrEnum):
    """How a terminal tells which button was pressed (docs/DOMAIN.md, terminal protocols)."""

    EXTENSION = "extension"  # a separate dialled number per button
    DTMF = "dtmf"  # RFC 2833 digits after answer
    CONTACT_ID = "contact_id"  # SIA DC-05 over DTMF
    SCAIP = "scaip"  # SS 91100: SIP MESSAGE with application/scaip+xml


class TerminalStatus(enum.StrEnum):
    ACTIVE = "active"
    SILENT = "silent"  # missed its report window: the elder may be unable to call
    FAULT = "fault"
    RETIRED = "retired"


class Terminal(Base):
    __tablename__ = "terminals"

    id: Mapped[int] = mapped_column(primary_key=True)
    serial: Mapped[str] = mapped_column(String(40), unique=True)
    model: Mapped[str] = mapped_column(String(40))
    protocol: Mapped[TerminalProtocol] = mapped_column(str_enum(TerminalProtocol))
    # The SIP From user the terminal calls with; the caller id is its line number.
    sip_user: Mapped[str | None] = mapped_column(String(64), unique=True)
    caller_id: Mapped[str | None] = mapped_column(String(32), index=True)
    # Contact ID account (4 characters) or SCAIP controller id, when the protocol has one.
    account: Mapped[str | None] = mapped_column(String(32), index=True)
    elder_id: Mapped[int | None] = mapped_column(ForeignKey("elders.id"), index=True)
    # Overrides the model's button map from devices/terminal_models.toml when not empty.
    button_map: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    report_interval_s: Mapped[int] = mapped_column(default=86400)
    last_seen_at: Mapped[dt.datetime | None]
    battery_pct: Mapped[int | None]
    status: Mapped[TerminalStatus] = mapped_column(
        str_enum(TerminalStatus), default=TerminalStatus.ACTIVE
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
