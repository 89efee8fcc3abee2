"""Many alarms in one transaction with a handful of statements: the storm path of intake.

:func:`callcenter.intake.store_alarm` costs about ten statements an alarm (duplicate check,
retry check, insert, terminal touch, elder lock, open-case lookup, case, events). At 500 SCAIP
messages/s that is 5,000 round trips a second on one connection. :func:`store_alarms` gives
exactly the same result for a list of presses, taken in order, with a fixed number of
statements per batch: one lookup each for duplicates, retries, elder locks and open cases, one
batched insert per table, one batched terminal update.

It does not commit; :class:`callcenter.alarm_writer.AlarmWriter` does, and answers every caller
only after that. ``tests/test_intake_batch.py`` checks it against :func:`store_alarm` press by
press on random storms.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.orm import Session

from callcenter.cases import CODE_ALPHABET, OPEN_STATES, add_event
from callcenter.db import utcnow
from callcenter.intake import CASE_KIND_FOR, Press, Recorded, new_alarm
from callcenter.models import (
    Alarm,
    AlarmKind,
    Case,
    CaseKind,
    CaseState,
    Elder,
)
from devices.models import Terminal, TerminalStatus

RETRY_CANDIDATES = 20  # as store_alarm: the newest twenty unacknowledged alarms of a terminal


@dataclass(slots=True)
class _Outcome:
    alarm: Alarm
    duplicate: bool
    attached: bool
    case: Case | None = None  # the case linked in this batch (opened or attached to)
    opened: bool = False
    priority_raised_from: int | None = None


def store_alarms(
    session: Session,
    presses: Sequence[Press],
    *,
    repeat_window_s: int = 900,
    retry_window_s: int = 180,
    now: dt.datetime | None = None,
) -> list[Recorded]:
    """Store ``presses`` in order, as :func:`store_alarm` would one after another; no commit."""
    if not presses:
        return []
    now = now or utcnow()
    by_key = _stored_by_key(session, presses)
    unacked = _unacknowledged_by_terminal(session, presses, now, retry_window_s)
    cases_by_elder = _lock_elders_and_open_cases(session, presses)
    new_codes = _free_codes(session, len(presses))
    outcomes: list[_Outcome] = []
    touches: dict[int, int | None] = {}
    new_alarms: list[Alarm] = []
    new_cases: list[Case] = []
    made_here: dict[int, _Outcome] = {}  # id() of an alarm made in this batch → its outcome
    for press in presses:
        existing = by_key.get(press.dedup_key)
        if existing is None and press.fingerprint and press.terminal_id is not None:
            recent = unacked[press.terminal_id][:RETRY_CANDIDATES]
            existing = next(
                (a for a in recent if a.raw.get("fingerprint") == press.fingerprint), None
            )
        if existing is not None:
            first = made_here.get(id(existing))
            if first is not None:  # a retransmission within the batch: its case is not set yet
                outcomes.append(_Outcome(existing, True, first.case is not None, case=first.case))
            else:
                outcomes.append(_Outcome(existing, True, existing.case_id is not None))
            continue
        alarm = new_alarm(press, now)
        new_alarms.append(alarm)
        by_key[press.dedup_key] = alarm
        if press.terminal_id is not None:
            unacked[press.terminal_id].insert(0, alarm)
            if press.battery_pct is not None or press.terminal_id not in touches:
                touches[press.terminal_id] = press.battery_pct
        outcome = made_here[id(alarm)] = _Outcome(alarm, duplicate=False, attached=False)
        _link(outcome, press, now, repeat_window_s, cases_by_elder, new_codes, new_cases)
        outcomes.append(outcome)
    session.add_all(new_cases)
    session.add_all(new_alarms)
    session.flush()  # ids for alarms and cases: one batched INSERT … RETURNING per table
    for press, outcome in zip(presses, outcomes, strict=True):
        if not outcome.duplicate:
            _write_events(session, press, outcome, now)
    _touch_terminals(session, touches, now)
    session.flush()
    return _recorded(session, outcomes)


# -- the few statements ------------------------------------------------------------------------


def _stored_by_key(session: Session, presses: Sequence[Press]) -> dict[str, Alarm]:
    keys = {p.dedup_key for p in presses}
    return {a.dedup_key: a for a in session.scalars(select(Alarm).where(Alarm.dedup_key.in_(keys)))}


def _unacknowledged_by_terminal(
    session: Session, presses: Sequence[Press], now: dt.datetime, retry_window_s: int
) -> defaultdict[int, list[Alarm]]:
    """Per terminal, its unacknowledged alarms of the retry window, newest first."""
    found: defaultdict[int, list[Alarm]] = defaultdict(list)
    terminals = {p.terminal_id for p in presses if p.fingerprint and p.terminal_id is not None}
    if terminals:
        rows = session.scalars(
            select(Alarm)
            .where(
                Alarm.terminal_id.in_(terminals),
                Alarm.received_at >= now - dt.timedelta(seconds=retry_window_s),
                Alarm.acknowledged_at.is_(None),
            )
            .order_by(Alarm.id.desc())
        )
        for alarm in rows:
            found[alarm.terminal_id or 0].append(alarm)
    return found


def _needs_case(press: Press) -> bool:
    return press.kind not in (AlarmKind.TEST, AlarmKind.UNIDENTIFIED) and press.elder_id is not None


def _lock_elders_and_open_cases(
    session: Session, presses: Sequence[Press]
) -> defaultdict[int, list[Case]]:
    """Lock the elders (in id order: two batches never wait on each other in a circle) and load
    their open cases, newest first."""
    found: defaultdict[int, list[Case]] = defaultdict(list)
    elders = sorted({p.elder_id for p in presses if _needs_case(p) and p.elder_id is not None})
    if not elders:
        return found
    session.execute(
        select(Elder.id).where(Elder.id.in_(elders)).order_by(Elder.id).with_for_update()
    )
    rows = session.scalars(
        select(Case)
        .where(Case.elder_id.in_(elders), Case.state.in_(OPEN_STATES))
        .order_by(Case.opened_at.desc(), Case.id.desc())
    )
    for row in rows:
        found[row.elder_id or 0].append(row)
    return found


def _free_codes(session: Session, count: int) -> list[str]:
    """Case codes not in use, as many as the batch could need (one query for all)."""
    wanted: set[str] = set()
    while len(wanted) < count:
        wanted.add("".join(secrets.choice(CODE_ALPHABET) for _ in range(5)))
    taken = set(session.scalars(select(Case.code).where(Case.code.in_(wanted))))
    free = [c for c in wanted if c not in taken]
    return free if len(free) == count else free + _free_codes(session, count - len(free))


def _touch_terminals(session: Session, touches: dict[int, int | None], now: dt.datetime) -> None:
    """As :func:`devices.registry.touch` for each terminal: one statement, executed many times
    in terminal order."""
    if not touches:
        return
    terminals = Terminal.__table__
    statement = (
        update(terminals)  # type: ignore[arg-type]  # a Table, typed as FromClause
        .where(terminals.c.id == bindparam("tid"))
        .values(
            last_seen_at=bindparam("at"),
            status=case(
                (terminals.c.status == TerminalStatus.SILENT, TerminalStatus.ACTIVE.value),
                else_=terminals.c.status,
            ),
            battery_pct=func.coalesce(bindparam("battery"), terminals.c.battery_pct),
        )
    )
    rows = [{"tid": t, "at": now, "battery": b} for t, b in sorted(touches.items())]
    session.connection().execute(statement, rows)


# -- one press, in memory ----------------------------------------------------------------------


def _open_case_for(
    press: Press, now: dt.datetime, repeat_window_s: int, cases: list[Case]
) -> Case | None:
    """As :func:`callcenter.intake._open_case_for`, over the cases loaded for the batch."""
    for row in cases:
        if press.kind is AlarmKind.TECHNICAL:
            if row.kind is CaseKind.TECHNICAL and row.terminal_id == press.terminal_id:
                return row
            continue
        if row.kind is CaseKind.TECHNICAL:
            continue
        if press.kind is AlarmKind.CANCEL or row.opened_at >= now - dt.timedelta(
            seconds=repeat_window_s
        ):
            return row
    return None


def _link(
    outcome: _Outcome,
    press: Press,
    now: dt.datetime,
    repeat_window_s: int,
    cases_by_elder: defaultdict[int, list[Case]],
    codes: list[str],
    new_cases: list[Case],
) -> None:
    if not _needs_case(press) or press.elder_id is None:
        return
    cases = cases_by_elder[press.elder_id]
    found = _open_case_for(press, now, repeat_window_s, cases)
    alarm = outcome.alarm
    if found is not None:
        outcome.case, outcome.attached = found, True
        if alarm.priority < found.priority:
            outcome.priority_raised_from = found.priority
            found.priority = alarm.priority
            if press.kind is AlarmKind.LIFE_SAFETY:
                found.kind = CaseKind.LIFE_SAFETY
        return
    if press.kind is AlarmKind.CANCEL:
        return
    actor = _actor(press)
    opened = Case(
        code=codes.pop(),
        kind=CASE_KIND_FOR[press.kind],
        state=CaseState.DISPATCH,
        priority=alarm.priority,
        elder_id=press.elder_id,
        terminal_id=press.terminal_id,
        category_code="emergency" if press.kind is AlarmKind.LIFE_SAFETY else None,
        item_code=None,
        summary="",
        opened_at=now,
        opened_by=actor,
        state_changed_at=now,
    )
    new_cases.append(opened)
    cases.insert(0, opened)  # the newest open case of this elder, for later presses of the batch
    outcome.case, outcome.opened = opened, True


def _actor(press: Press) -> str:
    return f"terminal:{press.terminal_id}" if press.terminal_id else "system"


def _write_events(session: Session, press: Press, outcome: _Outcome, now: dt.datetime) -> None:
    """The case's audit trail, in the order :func:`store_alarm` writes it."""
    found, alarm = outcome.case, outcome.alarm
    if found is None:
        return
    alarm.case_id = found.id
    actor = _actor(press)
    detail = {"alarm_id": alarm.id, "kind": press.kind.value, "source": press.source.value}
    if outcome.opened:
        add_event(session, found, "opened", actor=actor, to_state=CaseState.DISPATCH, at=now,
                  detail={"kind": CASE_KIND_FOR[press.kind].value, "priority": alarm.priority,
                          "summary": ""})  # fmt: skip
        add_event(session, found, "alarm_attached", actor=actor, at=now, detail=detail)
        return
    event = "cancel_requested" if press.kind is AlarmKind.CANCEL else "alarm_attached"
    add_event(session, found, event, actor=actor, detail=detail, at=now)
    if outcome.priority_raised_from is not None:
        add_event(session, found, "priority_raised", actor=actor, at=now,
                  detail={"from": outcome.priority_raised_from, "to": alarm.priority})  # fmt: skip


def _recorded(session: Session, outcomes: list[_Outcome]) -> list[Recorded]:
    missing = {o.alarm.case_id for o in outcomes if o.case is None and o.alarm.case_id is not None}
    codes: dict[int, str] = {}
    if missing:
        rows = session.execute(select(Case.id, Case.code).where(Case.id.in_(missing)))
        codes = {case_id: code for case_id, code in rows}
    results = []
    for o in outcomes:
        code = o.case.code if o.case is not None else codes.get(o.alarm.case_id or 0)
        results.append(
            Recorded(o.alarm.id, o.alarm.kind, o.alarm.case_id, code, o.duplicate, o.attached)
        )
    return results
