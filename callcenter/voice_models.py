"""Voice calls between an operator and an elder: the request the console makes, its progress,
and the recording. One row per click on "接通通话 Connect call".

The row is also how the web process asks the call handler to act (see
:mod:`callcenter.voice_calls`): the console inserts it, the handler process that holds the
elder's call (or, if none does, any handler, for a call-back) claims it with one conditional
``UPDATE``.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from callcenter.db import Base, utcnow
from callcenter.models import str_enum


class VoiceCallState(enum.StrEnum):
    REQUESTED = "requested"  # the operator clicked; no handler has taken it yet
    CONNECTING = "connecting"  # a handler took it: the operator's phone is ringing
    CONNECTED = "connected"  # both legs up, audio relayed and recorded
    ENDED = "ended"  # talked, then one side hung up
    FAILED = "failed"  # never connected: ``reason`` says why


ACTIVE_VOICE_STATES = (
    VoiceCallState.REQUESTED,
    VoiceCallState.CONNECTING,
    VoiceCallState.CONNECTED,
)


class VoiceCallMode(enum.StrEnum):
    BRIDGE = "bridge"  # the elder's own call, held since the press, joined to the operator
    CALL_BACK = "call_back"  # the elder's call had ended: the centre called the terminal back


class VoiceCall(Base):
    __tablename__ = "voice_calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id"), index=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id"))
    operator_uri: Mapped[str] = mapped_column(String(128))
    state: Mapped[VoiceCallState] = mapped_column(
        str_enum(VoiceCallState), default=VoiceCallState.REQUESTED
    )
    mode: Mapped[VoiceCallMode | None] = mapped_column(str_enum(VoiceCallMode))
    # The alarm's id while this call is active, NULL after: a unique column, so that a second
    # click (or a second operator) cannot start a second call to the same elder. Unique
    # constraints ignore NULLs on both databases.
    active_alarm_id: Mapped[int | None] = mapped_column(unique=True)
    # Which handler process took it (host:port of its SIP socket): a restarted handler fails
    # what it left half done.
    handler: Mapped[str] = mapped_column(String(128), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    ended_by: Mapped[str | None] = mapped_column(String(16))  # operator, elder or centre
    requested_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[dt.datetime | None]
    connected_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    # The WAV, relative to HYT_RECORDINGS_DIR (the web process serves it from its own setting).
    recording_file: Mapped[str | None] = mapped_column(String(200))
    recording_s: Mapped[float | None]

    __table_args__ = (Index("ix_voice_calls_state", "state", "requested_at"),)
