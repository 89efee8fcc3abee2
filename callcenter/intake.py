"""Alarm intake: every press or message becomes an alarm row, committed before any acknowledgement.

Shared by the call handler (both SIP backends) and the SCAIP ingress. The functions here are
synchronous and run on a thread pool: the SIP event loop never waits on the database.

Rules (docs/DESIGN.md):
- the alarm row is committed before the terminal is acknowledged;
- a retransmitted request carries the same ``dedup_key``: it never makes a second alarm;
- a terminal that got no acknowledgement retries: the same content from the same terminal within
  ``retry_window_s`` whose earlier alarm was never acknowledged is that alarm, stored once;
- repeat presses of one elder within ``repeat_window_s`` attach to the elder's open case;
- heartbeats and periodic tests update the terminal's last seen and open no case.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from callcenter.cases import OPEN_STATES, add_event, open_case
from callcenter.db import utcnow
from callcenter.models import (
    PRIORITY_BY_KIND,
    Alarm,
    AlarmKind,
    AlarmSource,
    AlarmStatus,
    Case,
    CaseKind,
    Elder,
)
from devices.registry import touch

log = structlog.get_logger(__name__)

CASE_KIND_FOR: dict[AlarmKind, CaseKind] = {
    AlarmKind.LIFE_SAFETY: CaseKind.LIFE_SAFETY,
    AlarmKind.SERVICE: CaseKind.SERVICE,
    AlarmKind.CONSULT: CaseKind.CONSULT,
    AlarmKind.TECHNICAL: CaseKind.TECHNICAL,
}


@dataclass(frozen=True, slots=True)
class Press:
    """One alarm as it arrived, before it is stored."""

    source: AlarmSource
    kind: AlarmKind
    dedup_key: str
    caller: str = ""
    terminal_id: int | None = None
    elder_id: int | None = None
    event_code: str | None = None
    device_time: str | None = None
    # Identical content from the same terminal (a retry) has the same fingerprint.
    fingerprint: str = ""
    battery_pct: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Recorded:
    alarm_id: int
    kind: AlarmKind
    case_id: int | None
    case_code: str | None
    duplicate: bool  # a retransmission or retry of an alarm already stored
    attached: bool  # joined an open case rather than opening one


def record_alarm(
    session: Session,
    press: Press,
    *,
    repeat_window_s: int = 900,
    retry_window_s: int = 180,
    now: dt.datetime | None = None,
) -> Recorded:
    """Store ``press`` (or find it stored already) and link it to a case; commits."""
    try:
        recorded = store_alarm(
            session, press, repeat_window_s=repeat_window_s, retry_window_s=retry_window_s, now=now
        )
    except IntegrityError:
        # A retransmission raced us on another thread or process: theirs is the alarm.
        session.rollback()
        stored = session.scalars(select(Alarm).where(Alarm.dedup_key == press.dedup_key)).one()
        return _recorded(session, stored, duplicate=True, attached=stored.case_id is not None)
    session.commit()
    log_stored(press, recorded)
    return recorded


def store_alarm(
    session: Session,
    press: Press,
    *,
    repeat_window_s: int = 900,
    retry_window_s: int = 180,
    now: dt.datetime | None = None,
) -> Recorded:
    """Store ``press`` (or find it stored already) and link it to a case, without committing:
    :class:`callcenter.alarm_writer.AlarmWriter` commits many in one transaction.

    Raises :class:`IntegrityError` when another transaction stored the same ``dedup_key`` first;
    the caller rolls back and finds that alarm.
    """
    now = now or utcnow()
    existing = _already_stored(session, press, now, retry_window_s)
    if existing is not None:
        return _recorded(session, existing, duplicate=True, attached=existing.case_id is not None)
    alarm = new_alarm(press, now)
    session.add(alarm)
    session.flush()
    if press.terminal_id is not None:
        touch(session, press.terminal_id, now, press.battery_pct)
    attached = _link_case(session, alarm, press, now, repeat_window_s)
    return _recorded(session, alarm, duplicate=False, attached=attached)


def new_alarm(press: Press, now: dt.datetime) -> Alarm:
    """The row for ``press``, not yet added to a session (both intake paths build it here)."""
    alarm = Alarm(
        received_at=now,
        source=press.source,
        kind=press.kind,
        priority=PRIORITY_BY_KIND[press.kind],
        terminal_id=press.terminal_id,
        elder_id=press.elder_id,
        caller=press.caller[:128],
        event_code=press.event_code,
        device_time=press.device_time,
        raw={**press.raw, "fingerprint": press.fingerprint} if press.fingerprint else press.raw,
        dedup_key=press.dedup_key,
        status=AlarmStatus.NEW,
    )
    if press.kind is AlarmKind.TEST:
        alarm.status = AlarmStatus.HANDLED  # nothing for an operator to do
        alarm.handled_at = now
    return alarm


def log_stored(press: Press, recorded: Recorded) -> None:
    """After the commit, not before: a log line saying "stored" must be true."""
    if recorded.duplicate:
        log.info("alarm.duplicate", alarm_id=recorded.alarm_id, dedup_key=press.dedup_key)
        return
    log.info(
        "alarm.stored",
        alarm_id=recorded.alarm_id,
        kind=recorded.kind.value,
        source=press.source.value,
        case_id=recorded.case_id,
        attached=recorded.attached,
    )


def acknowledge(session: Session, alarm_id: int, *, at: dt.datetime | None = None) -> None:
    """The terminal has been told: a later identical call is a new press, not a retry."""
    session.execute(
        update(Alarm)
        .where(Alarm.id == alarm_id, Alarm.acknowledged_at.is_(None))
        .values(acknowledged_at=at or utcnow())
    )
    session.commit()


def _already_stored(
    session: Session, press: Press, now: dt.datetime, retry_window_s: int
) -> Alarm | None:
    same = session.scalars(select(Alarm).where(Alarm.dedup_key == press.dedup_key)).first()
    if same is not None or not press.fingerprint or press.terminal_id is None:
        return same
    candidates = session.scalars(
        select(Alarm)
        .where(
            Alarm.terminal_id == press.terminal_id,
            Alarm.received_at >= now - dt.timedelta(seconds=retry_window_s),
            Alarm.acknowledged_at.is_(None),
        )
        .order_by(Alarm.id.desc())
        .limit(20)
    ).all()
    return next((a for a in candidates if a.raw.get("fingerprint") == press.fingerprint), None)


def _recorded(session: Session, alarm: Alarm, *, duplicate: bool, attached: bool) -> Recorded:
    code = (
        session.scalar(select(Case.code).where(Case.id == alarm.case_id)) if alarm.case_id else None
    )
    return Recorded(alarm.id, alarm.kind, alarm.case_id, code, duplicate, attached)


def _link_case(
    session: Session, alarm: Alarm, press: Press, now: dt.datetime, repeat_window_s: int
) -> bool:
    """Attach to the elder's open case or open one. Returns True when attached."""
    if press.kind in (AlarmKind.TEST, AlarmKind.UNIDENTIFIED) or press.elder_id is None:
        return False  # an operator handles unidentified callers from the alarm queue
    # Serialise presses of one elder (no two cases from two simultaneous presses).
    session.execute(select(Elder.id).where(Elder.id == press.elder_id).with_for_update())
    open_case_row = _open_case_for(session, press, now, repeat_window_s)
    actor = f"terminal:{press.terminal_id}" if press.terminal_id else "system"
    if open_case_row is not None:
        alarm.case_id = open_case_row.id
        detail = {"alarm_id": alarm.id, "kind": press.kind.value, "source": press.source.value}
        if press.kind is AlarmKind.CANCEL:
            add_event(
                session, open_case_row, "cancel_requested", actor=actor, detail=detail, at=now
            )
        else:
            add_event(session, open_case_row, "alarm_attached", actor=actor, detail=detail, at=now)
        if alarm.priority < open_case_row.priority:
            # A life-safety press on an open service case makes the whole case life-safety.
            add_event(
                session,
                open_case_row,
                "priority_raised",
                actor=actor,
                at=now,
                detail={"from": open_case_row.priority, "to": alarm.priority},
            )
            open_case_row.priority = alarm.priority
            if press.kind is AlarmKind.LIFE_SAFETY:
                open_case_row.kind = CaseKind.LIFE_SAFETY
        return True
    if press.kind is AlarmKind.CANCEL:
        return False  # nothing open to cancel; the alarm still reaches an operator to confirm
    case = open_case(
        session,
        kind=CASE_KIND_FOR[press.kind],
        priority=alarm.priority,
        actor=actor,
        elder_id=press.elder_id,
        terminal_id=press.terminal_id,
        category_code="emergency" if press.kind is AlarmKind.LIFE_SAFETY else None,
        at=now,
    )
    alarm.case_id = case.id
    add_event(
        session,
        case,
        "alarm_attached",
        actor=actor,
        at=now,
        detail={"alarm_id": alarm.id, "kind": press.kind.value, "source": press.source.value},
    )
    return False


def _open_case_for(
    session: Session, press: Press, now: dt.datetime, repeat_window_s: int
) -> Case | None:
    query = select(Case).where(Case.elder_id == press.elder_id, Case.state.in_(OPEN_STATES))
    if press.kind is AlarmKind.TECHNICAL:
        # A low battery does not belong on the elder's fall case: technical with technical.
        query = query.where(Case.kind == CaseKind.TECHNICAL, Case.terminal_id == press.terminal_id)
    else:
        query = query.where(Case.kind != CaseKind.TECHNICAL)
        if press.kind is not AlarmKind.CANCEL:
            # Presses attach within the window; a cancel attaches to whatever is still open.
            query = query.where(Case.opened_at >= now - dt.timedelta(seconds=repeat_window_s))
    return session.scalars(query.order_by(Case.opened_at.desc()).limit(1)).first()
