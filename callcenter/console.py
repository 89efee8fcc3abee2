"""What the operator console does, without HTTP: claim an alarm, record its outcome, read the
live queue, the screen pop of an elder, and find elders by name, pinyin, phone or serial."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, selectinload

from callcenter import metrics
from callcenter.cases import OPEN_STATES, TransitionError, add_event, cancel_case
from callcenter.db import utcnow
from callcenter.models import (
    PRIORITY_BY_KIND,
    Alarm,
    AlarmKind,
    AlarmSource,
    AlarmStatus,
    Case,
    CaseState,
    Elder,
    Operator,
)
from devices.models import Terminal

RECENT_CASES = 5
UNHANDLED = (AlarmStatus.NEW, AlarmStatus.CLAIMED)  # the alarms in the operators' queue
SEARCH_LIMIT = 20


class Outcome(enum.StrEnum):
    TALKED = "talked"
    NO_ANSWER = "no_answer"
    FALSE_ALARM = "false_alarm"
    CALLED_FAMILY = "called_family"
    CALLED_120 = "called_120"
    SENT_VOLUNTEERS = "sent_volunteers"


class ConsoleError(ValueError):
    """A console action that cannot be done; ``conflict`` when another operator was first."""

    def __init__(self, message: str, *, conflict: bool = False, missing: bool = False) -> None:
        super().__init__(message)
        self.conflict = conflict
        self.missing = missing


def claim_alarm(session: Session, *, alarm_id: int, operator_id: int) -> Alarm:
    """Take an alarm: one conditional UPDATE, so of two operators clicking at once one wins."""
    now = utcnow()
    result = session.execute(
        update(Alarm)
        .where(Alarm.id == alarm_id, Alarm.status == AlarmStatus.NEW)
        .values(status=AlarmStatus.CLAIMED, claimed_by_id=operator_id, claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    alarm = session.get(Alarm, alarm_id, populate_existing=True)
    if alarm is None:
        raise ConsoleError("no such alarm / 无此告警", missing=True)
    won = getattr(result, "rowcount", 0) == 1
    if won:
        metrics.observe_claim(alarm, now)  # once per alarm: only the winning claim
    if not won and alarm.claimed_by_id != operator_id:
        raise ConsoleError("already taken by another operator / 已被其他接警员接听", conflict=True)
    if not won and alarm.status is AlarmStatus.HANDLED:
        raise ConsoleError("already handled / 已处理", conflict=True)
    return alarm


def record_outcome(
    session: Session,
    *,
    alarm_id: int,
    operator_id: int,
    outcome: Outcome,
    note: str = "",
    reason: str = "",
) -> Alarm:
    """Mark the alarm handled with what was done. Only the operator who claimed it (or anyone,
    while it is still unclaimed) may; a false alarm needs a reason and cancels its open case."""
    if outcome is Outcome.FALSE_ALARM and not reason.strip():
        raise ConsoleError("a false alarm needs a reason / 误报须填写原因")
    now = utcnow()
    result = session.execute(
        update(Alarm)
        .where(
            Alarm.id == alarm_id,
            or_(
                Alarm.status == AlarmStatus.NEW,
                (Alarm.status == AlarmStatus.CLAIMED) & (Alarm.claimed_by_id == operator_id),
            ),
        )
        .values(
            status=AlarmStatus.HANDLED,
            outcome=outcome.value,
            handled_at=now,
            claimed_by_id=func.coalesce(Alarm.claimed_by_id, operator_id),
            claimed_at=func.coalesce(Alarm.claimed_at, now),
        )
        .execution_options(synchronize_session=False)
    )
    alarm = session.get(Alarm, alarm_id, populate_existing=True)
    if alarm is None:
        raise ConsoleError("no such alarm / 无此告警", missing=True)
    if getattr(result, "rowcount", 0) != 1:
        raise ConsoleError(
            "handled or taken by another operator / 已被处理或由其他接警员接听", conflict=True
        )
    case = session.get(Case, alarm.case_id) if alarm.case_id else None
    if case is not None:
        actor = f"operator:{operator_id}"
        detail = {"alarm_id": alarm.id, "outcome": outcome.value, "note": note.strip()[:500]}
        if reason.strip():
            detail["reason"] = reason.strip()[:500]
        add_event(session, case, "alarm_outcome", actor=actor, detail=detail)
        if outcome is Outcome.FALSE_ALARM and case.state in (
            CaseState.DISPATCH,
            CaseState.ESCALATED,
        ):
            try:
                cancel_case(session, case, actor=actor, reason=f"误报 false alarm: {reason}")
            except TransitionError as exc:
                raise ConsoleError(str(exc), conflict=True) from None
    return alarm


# How many alarms other than life-safety a console is sent, besides every unhandled life-safety
# alarm (never capped: they are what the queue is for). An operator works the head of the queue:
# a screen shows 30-40 rows and nobody scrolls through thousands; 200 is several screens of the
# most urgent and longest-waiting others. The rest are counted (per kind) and the supervisor view
# has the day's counts. A storm leaves 5,000-28,000 technical alarms waiting: sending them all
# made every change cost the web process seconds and each console a 10 MB event, so life-safety
# alarms reached the consoles 3-13 s late (issue #7, bench/storm_console.py).
QUEUE_OTHERS_SHOWN = 200
LIFE_SAFETY_KINDS = (AlarmKind.LIFE_SAFETY, AlarmKind.UNIDENTIFIED)


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One alarm of the queue, read as columns (no ORM entity: loading entities, with their raw
    JSON and the identity map, was half of the web process's CPU with a long queue)."""

    id: int
    kind: AlarmKind
    priority: int
    status: AlarmStatus
    source: AlarmSource
    caller: str
    received_at: dt.datetime
    elder_id: int | None
    case_id: int | None
    claimed_by_id: int | None
    elder_name: str | None
    terminal_serial: str | None
    case_code: str | None
    claimed_by: str | None
    wait_s: int

    @property
    def life_safety(self) -> bool:
        return self.kind in LIFE_SAFETY_KINDS


@dataclass(frozen=True, slots=True)
class QueuePage:
    """What a console is shown of the queue: every unhandled life-safety alarm and the first
    others, in the queue's order, and how many unhandled alarms are not shown."""

    rows: list[QueueRow]
    total: int  # unhandled alarms, shown or not
    not_shown_by_kind: dict[str, int]  # kind -> unhandled alarms of that kind not in ``rows``

    @property
    def not_shown(self) -> int:
        return sum(self.not_shown_by_kind.values())


def _queue_rows(session: Session, now: dt.datetime, *, life_safety: bool, limit: int | None,
                claimed_only: bool = False) -> list[QueueRow]:  # fmt: skip
    kinds = Alarm.kind.in_(LIFE_SAFETY_KINDS)
    statuses = [AlarmStatus.CLAIMED] if claimed_only else list(UNHANDLED)
    columns = (Alarm.id, Alarm.kind, Alarm.priority, Alarm.status, Alarm.source, Alarm.caller,
               Alarm.received_at, Alarm.elder_id, Alarm.case_id, Alarm.claimed_by_id,
               Elder.name, Terminal.serial, Case.code, Operator.display_name)  # fmt: skip
    query = (
        select(*columns)
        .outerjoin(Elder, Elder.id == Alarm.elder_id)
        .outerjoin(Terminal, Terminal.id == Alarm.terminal_id)
        .outerjoin(Case, Case.id == Alarm.case_id)
        .outerjoin(Operator, Operator.id == Alarm.claimed_by_id)
        # By the queue index: "!= handled" would scan every alarm ever handled.
        .where(Alarm.status.in_(statuses), kinds if life_safety else ~kinds)
        .order_by(Alarm.priority, Alarm.received_at, Alarm.id)
        .limit(limit)
    )
    rows = []
    for (id_, kind, priority, status, source, caller, received_at, elder_id, case_id,
         claimed_by_id, elder_name, terminal_serial, case_code, claimed_by) in session.execute(
        query
    ):  # fmt: skip
        wait_s = max(0, int((now - received_at).total_seconds()))
        rows.append(QueueRow(id_, kind, priority, status, source, caller, received_at, elder_id,
                             case_id, claimed_by_id, elder_name, terminal_serial, case_code,
                             claimed_by, wait_s))  # fmt: skip
    return rows


def queue(
    session: Session, *, now: dt.datetime | None = None, others: int = QUEUE_OTHERS_SHOWN
) -> QueuePage:
    """Unhandled alarms, most urgent first, then longest waiting first: every life-safety one
    and the first ``others`` of the rest (:data:`QUEUE_OTHERS_SHOWN`), with the counts of what
    is left out. Three short reads however long the queue: life-safety alarms, the others up to
    the limit (both along the queue index's order), and a count per kind of the unhandled."""
    now = now or utcnow()
    life_safety = _queue_rows(session, now, life_safety=True, limit=None)
    rest = _queue_rows(session, now, life_safety=False, limit=others)
    # Claimed alarms stay listed whatever their place: the row is how an operator gets back to
    # the alarm in hand (at most a few per operator, so no cap is needed).
    claimed = _queue_rows(session, now, life_safety=False, limit=None, claimed_only=True)
    merged = {r.id: r for r in life_safety + rest + claimed}
    # The queue's own order (both kinds of life-safety alarm come first by their priority; a
    # merge keeps the order exact whatever the priorities).
    rows = sorted(merged.values(), key=lambda r: (r.priority, r.received_at, r.id))
    by_kind = select(Alarm.kind, func.count()).where(Alarm.status.in_(UNHANDLED))
    counts: dict[AlarmKind, int] = {
        kind: n for kind, n in session.execute(by_kind.group_by(Alarm.kind))
    }
    shown: dict[AlarmKind, int] = {}
    for r in rows:
        shown[r.kind] = shown.get(r.kind, 0) + 1
    # Life-safety alarms are never left out: one counted but not listed arrived between the
    # reads (each statement has its own snapshot at READ COMMITTED) and is in the next event.
    not_shown = {
        kind.value: n - shown.get(kind, 0)
        for kind, n in sorted(counts.items(), key=lambda kv: PRIORITY_BY_KIND[kv[0]])
        if n > shown.get(kind, 0) and kind not in LIFE_SAFETY_KINDS
    }
    # The reads may see slightly different moments (above); max() keeps the total sane.
    return QueuePage(rows=rows, total=max(sum(counts.values()), len(rows)),
                     not_shown_by_kind=not_shown)  # fmt: skip


def queue_marker(session: Session) -> str:
    """A short value that changes whenever an alarm is added (the highest id), claimed (one new
    fewer, one claimed more) or handled (one new or claimed fewer). Read through the primary key
    and the queue index only: each web process reads it every 200 ms, so it must not grow with
    the history of handled alarms (1,000,000 of them made the older form, with counts and
    max(claimed_at)/max(handled_at) over the whole table, take 140 ms on PostgreSQL)."""
    top = session.scalar(select(func.max(Alarm.id)))
    rows = session.execute(
        select(Alarm.status, func.count()).where(Alarm.status.in_(UNHANDLED)).group_by(Alarm.status)
    ).all()
    counts = {status: n for status, n in rows}
    return f"{top}|{counts.get(AlarmStatus.NEW, 0)}|{counts.get(AlarmStatus.CLAIMED, 0)}"


def age_on(birth: dt.date, today: dt.date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def screen_pop(session: Session, *, elder_id: int, today: dt.date) -> dict[str, Any] | None:
    """Everything an operator needs at a glance when an elder calls."""
    elder = session.scalars(
        select(Elder).options(selectinload(Elder.contacts)).where(Elder.id == elder_id)
    ).first()
    if elder is None:
        return None
    terminals = session.scalars(
        select(Terminal).where(Terminal.elder_id == elder.id).order_by(Terminal.id)
    ).all()
    open_cases = session.scalars(
        select(Case)
        .where(Case.elder_id == elder.id, Case.state.in_(OPEN_STATES))
        .order_by(Case.priority, Case.opened_at)
    ).all()
    recent_cases = session.scalars(
        select(Case)
        .where(Case.elder_id == elder.id, Case.state.not_in(OPEN_STATES))
        .order_by(Case.opened_at.desc())
        .limit(RECENT_CASES)
    ).all()
    return {
        "elder": elder,
        "age": age_on(elder.birth_date, today),
        "contacts": sorted(elder.contacts, key=lambda c: (c.call_order, c.id)),
        "terminals": list(terminals),
        "open_cases": list(open_cases),
        "recent_cases": list(recent_cases),
    }


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_elders(session: Session, q: str, *, limit: int = SEARCH_LIMIT) -> list[Elder]:
    """Find elders by name, pinyin initials (``wxy``), full pinyin prefix (``wang``,
    ``wangxiuy``), phone digits (elder or terminal line) or terminal serial."""
    q = q.strip()
    if not q:
        return []
    text = _like_escape(q.lower())
    conditions = [
        Elder.name.contains(q, autoescape=True),
        Elder.code == q,
        Elder.name_initials.startswith(q.lower(), autoescape=True),
        Elder.name_pinyin.startswith(q.lower(), autoescape=True),
        func.replace(Elder.name_pinyin, " ", "").like(text.replace(" ", "") + "%", escape="\\"),
        Elder.id.in_(
            select(Terminal.elder_id).where(
                func.upper(Terminal.serial).startswith(q.upper(), autoescape=True)
            )
        ),
    ]
    digits = "".join(ch for ch in q if ch.isdigit())
    if len(digits) >= 4 and len(digits) >= len(
        q.replace("+", "").replace(" ", "").replace("-", "")
    ):
        conditions.append(Elder.phone.contains(digits, autoescape=True))
        conditions.append(
            Elder.id.in_(
                select(Terminal.elder_id).where(
                    Terminal.caller_id.contains(digits, autoescape=True)
                )
            )
        )
    return list(
        session.scalars(
            select(Elder)
            .where(Elder.active.is_(True), or_(*conditions))
            .order_by(Elder.name_pinyin, Elder.id)
            .limit(limit)
        )
    )


def is_life_safety(alarm: Alarm) -> bool:
    return alarm.kind in LIFE_SAFETY_KINDS
