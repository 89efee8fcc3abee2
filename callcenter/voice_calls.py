"""Voice calls in the database: how the console asks a call handler to connect an operator to an
elder, and how the handler reports back. Knows nothing of HTTP or SIP.

Why a table and not a direct call: the web process and the call handler are one process in
``hyt serve`` but separate ones at a site (``hyt web`` + ``hyt sip``, maybe several handlers
behind the SIP edge), and only the handler whose sockets carry the elder's call can join it.
So the console inserts a ``voice_calls`` row; every handler polls for new rows (and one in the
same process is woken at once, :func:`wake_local_handlers`); the handler holding the elder's
call claims the row with one conditional ``UPDATE``; if none holds it (the elder hung up), any
handler claims it after a short grace and calls the elder back. The same path works in both
layouts, and the row is the record of what happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from callcenter.cases import add_event
from callcenter.db import utcnow
from callcenter.models import Alarm, AlarmStatus, Case, Operator
from callcenter.settings import Settings
from callcenter.voice_models import (
    ACTIVE_VOICE_STATES,
    VoiceCall,
    VoiceCallMode,
    VoiceCallState,
)
from devices.models import Terminal

log = structlog.get_logger(__name__)

# A handler that does not hold the elder's call waits this long before calling back, so that
# the handler that does hold it (polling just as often) always wins.
CALL_BACK_GRACE_S = 1.5


HANDLER_RESTARTED = "呼叫处理进程重启 / the call handler restarted during the call"


class VoiceError(ValueError):
    """A connect request that cannot be made; ``status`` is the HTTP answer it deserves."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# -- the console's side ----------------------------------------------------------------------


def operator_phone(operator: Operator, settings: Settings) -> str:
    """The SIP URI to ring for ``operator``: their own, else the site's one desk phone."""
    return (operator.sip_uri or "").strip() or settings.operator_phone_uri


def request_voice_call(
    session: Session, *, alarm_id: int, operator: Operator, settings: Settings
) -> VoiceCall:
    """Ask for the operator to be connected to the elder of ``alarm_id``. Only the operator who
    claimed the alarm may; one active call per alarm. Flushes; the caller commits."""
    alarm = session.get(Alarm, alarm_id)
    if alarm is None:
        raise VoiceError("no such alarm / 无此告警", 404)
    if settings.sip_backend == "pyvoip":
        # PYVOIP.md: pyVoIP's outgoing calls send a broken ACK and drop after ~30 s.
        raise VoiceError(
            "此呼叫处理后端（pyvoip）不能外呼，请使用默认后端 / the pyvoip call handler cannot "
            "place outgoing calls; use the default aiosipua backend",
            409,
        )
    if alarm.status is AlarmStatus.HANDLED:
        raise VoiceError("告警已处理 / the alarm is already handled", 409)
    if alarm.claimed_by_id is None:
        raise VoiceError("请先接听该告警 / claim the alarm first", 409)
    if alarm.claimed_by_id != operator.id:
        raise VoiceError("该告警由其他接警员处理 / another operator has this alarm", 403)
    phone = operator_phone(operator, settings)
    if not phone:
        raise VoiceError(
            "未配置接警员话机（账号 SIP 地址或 HYT_OPERATOR_PHONE_URI）/ no SIP phone is "
            "configured for you (your account's SIP URI or HYT_OPERATOR_PHONE_URI)",
            409,
        )
    row = VoiceCall(
        alarm_id=alarm.id,
        case_id=alarm.case_id,
        operator_id=operator.id,
        operator_uri=phone,
        active_alarm_id=alarm.id,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise VoiceError(
            "该告警的通话正在接通或进行中 / a call for this alarm is already being connected",
            409,
        ) from None
    log.info("voice.requested", voice_call_id=row.id, alarm_id=alarm.id, operator_id=operator.id)
    return row


# Handlers in this process (``hyt serve``) want to hear of a new request at once rather than
# at their next poll. Process-local on purpose: other processes poll.
_local_wakers: list[Callable[[], object]] = []


def add_local_waker(wake: Callable[[], object]) -> Callable[[], None]:
    """Call ``wake`` (thread-safe, cheap) on every new request; returns the remover."""
    _local_wakers.append(wake)
    return lambda: _local_wakers.remove(wake)


def wake_local_handlers() -> None:
    for wake in list(_local_wakers):
        wake()


# -- the call handler's side -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingVoiceCall:
    id: int
    alarm_id: int
    operator_uri: str
    age_s: float


@dataclass(frozen=True, slots=True)
class CallBackTarget:
    """Where to call the elder's terminal: the Request-URI, and where to send the INVITE."""

    uri: str
    destination: str  # host:port


def pending_voice_calls(session: Session, *, limit: int = 20) -> list[PendingVoiceCall]:
    now = utcnow()
    rows = session.execute(
        select(VoiceCall.id, VoiceCall.alarm_id, VoiceCall.operator_uri, VoiceCall.requested_at)
        .where(VoiceCall.state == VoiceCallState.REQUESTED)
        .order_by(VoiceCall.requested_at)
        .limit(limit)
    )
    return [
        PendingVoiceCall(id, alarm_id, uri, (now - at).total_seconds())
        for id, alarm_id, uri, at in rows
    ]


def claim_voice_call(
    session: Session, *, voice_call_id: int, handler: str, mode: VoiceCallMode
) -> bool:
    """Take the request: one conditional UPDATE, so of several handlers exactly one does."""
    result = session.execute(
        update(VoiceCall)
        .where(VoiceCall.id == voice_call_id, VoiceCall.state == VoiceCallState.REQUESTED)
        .values(state=VoiceCallState.CONNECTING, handler=handler, mode=mode, claimed_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return getattr(result, "rowcount", 0) == 1


def call_back_target(session: Session, *, alarm_id: int, edge: str) -> CallBackTarget | None:
    """Where the elder's terminal can be called, if anywhere: through the SIP edge (it knows
    the terminal's registration) or, without an edge, back to where its call came from."""
    alarm = session.get(Alarm, alarm_id)
    if alarm is None:
        return None
    terminal = session.get(Terminal, alarm.terminal_id) if alarm.terminal_id else None
    raw: dict[str, Any] = alarm.raw or {}
    user = (terminal.sip_user if terminal else None) or alarm.caller
    if edge:
        # The edge's own address, port included: Kamailio's `uri == myself` then looks the
        # terminal's registration up (deploy/kamailio, route FROM_HANDLER).
        return CallBackTarget(f"sip:{user}@{edge}", edge) if user else None
    source = str(raw.get("source") or "")
    if not source or ":" not in source:
        return None
    contact = str(raw.get("contact") or "")
    uri = contact if contact.startswith("sip:") else f"sip:{user or 'terminal'}@{source}"
    # To the address the call came from, not the Contact's host: behind NAT only the
    # source is reachable (the same reasoning as RFC 3581's rport).
    return CallBackTarget(uri, source)


def fail_voice_call(
    session: Session,
    *,
    voice_call_id: int,
    reason: str,
    only_if: tuple[VoiceCallState, ...] = ACTIVE_VOICE_STATES,
) -> bool:
    """Mark the call failed (never connected) with ``reason``; notes it on the case."""
    result = session.execute(
        update(VoiceCall)
        .where(VoiceCall.id == voice_call_id, VoiceCall.state.in_(only_if))
        .values(
            state=VoiceCallState.FAILED,
            reason=reason[:500],
            active_alarm_id=None,
            ended_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    failed = getattr(result, "rowcount", 0) == 1
    if failed:
        row = session.get(VoiceCall, voice_call_id, populate_existing=True)
        if row is not None:
            _note_on_case(session, row, "voice_call_failed", {"reason": reason[:500]})
        log.warning("voice.failed", voice_call_id=voice_call_id, reason=reason)
    session.commit()
    return failed


def mark_connected(session: Session, *, voice_call_id: int, mode: VoiceCallMode) -> None:
    session.execute(
        update(VoiceCall)
        .where(VoiceCall.id == voice_call_id)
        .values(state=VoiceCallState.CONNECTED, mode=mode, connected_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()


def finish_voice_call(
    session: Session,
    *,
    voice_call_id: int,
    ended_by: str,
    recording_file: str | None,
    recording_s: float | None,
    reason: str = "",
) -> None:
    """The call is over: keep who hung up and the recording, and attach it to the case."""
    row = session.get(VoiceCall, voice_call_id)
    if row is None:
        return
    now = utcnow()
    row.state = VoiceCallState.ENDED
    row.active_alarm_id = None
    row.ended_at = now
    row.ended_by = ended_by
    row.recording_file = recording_file
    row.recording_s = recording_s
    row.reason = reason[:500]
    talked_s = (now - row.connected_at).total_seconds() if row.connected_at else 0.0
    detail: dict[str, Any] = {
        "ended_by": ended_by,
        "talked_s": round(talked_s, 1),
        "recording": f"/api/recordings/{row.id}" if recording_file else None,
        "recording_s": round(recording_s, 1) if recording_s is not None else None,
    }
    _note_on_case(session, row, "voice_call", detail)
    session.commit()
    log.info("voice.ended", voice_call_id=row.id, ended_by=ended_by, recording=recording_file)


def _note_on_case(session: Session, row: VoiceCall, event: str, detail: dict[str, Any]) -> None:
    case = session.get(Case, row.case_id) if row.case_id else None
    if case is None:
        return
    add_event(
        session,
        case,
        event,
        actor=f"operator:{row.operator_id}",
        detail={
            "voice_call_id": row.id,
            "alarm_id": row.alarm_id,
            "mode": row.mode.value if row.mode else None,
            **detail,
        },
    )


def fail_abandoned(session: Session, *, handler: str) -> list[int]:
    """Calls this handler left half done when it stopped (a crash, a restart). Those still
    ringing fail, so that the alarm can be connected again; the ids of those that were
    connected are returned, to be finished with whatever audio reached the disk."""
    rows = session.execute(
        select(VoiceCall.id, VoiceCall.state).where(
            VoiceCall.handler == handler,
            VoiceCall.state.in_((VoiceCallState.CONNECTING, VoiceCallState.CONNECTED)),
        )
    ).all()
    for voice_call_id, state in rows:
        if state is VoiceCallState.CONNECTING:
            fail_voice_call(session, voice_call_id=voice_call_id, reason=HANDLER_RESTARTED)
    return [id for id, state in rows if state is VoiceCallState.CONNECTED]


def voice_calls_of_alarm(session: Session, alarm_id: int) -> list[VoiceCall]:
    return list(
        session.scalars(
            select(VoiceCall).where(VoiceCall.alarm_id == alarm_id).order_by(VoiceCall.id)
        )
    )
