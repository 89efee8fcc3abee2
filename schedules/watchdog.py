"""The terminal watchdog: a silent terminal is an elder who cannot call (DOMAIN.md, heartbeats).

Each sweep:

1. closes the "terminal silent" cases of terminals that reported again (their ``last_seen_at`` is
   after the case was opened), through the life cycle's allowed steps, with an event saying so;
   a street's grouped case closes once none of its members is open;
2. marks ``silent`` every active terminal not heard from for its report interval plus a grace,
   in one conditional UPDATE, so a report arriving meanwhile wins;
3. opens one technical case per newly silent terminal, except for mass silence: when a street
   has at least ``HYT_WATCHDOG_GROUP_MIN_TERMINALS`` silent terminals (or the configured share of
   its terminals) within the group window, one grouped case for the street is the parent
   (``Case.parent_id``) of the terminals' cases, so that the console shows one case, not
   hundreds; later silence in that street joins the open group.

Cases are written in bulk (a power cut silences thousands of terminals at once) with the same
rows and events :func:`callcenter.cases.open_case` and :func:`~callcenter.cases.transition` write.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from sqlalchemy import (
    ColumnElement,
    and_,
    distinct,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from callcenter.cases import CODE_ALPHABET, OPEN_STATES
from callcenter.models import (
    PRIORITY_BY_KIND,
    AlarmKind,
    Case,
    CaseEvent,
    CaseKind,
    CaseState,
    Elder,
)
from devices.models import Terminal, TerminalStatus
from schedules.settings import ScheduleSettings, get_schedule_settings

log = structlog.get_logger(__name__)

ACTOR = "watchdog"
SILENT_ITEM = "terminal_silent"
STREET_SILENT_ITEM = "street_silent"
PRIORITY = PRIORITY_BY_KIND[AlarmKind.TECHNICAL]  # never ahead of a life-safety call
CHUNK = 5_000  # ids per IN list: below SQLite's 32,766 bound parameters

T = TypeVar("T")


@dataclass
class WatchdogSummary:
    newly_silent: int = 0
    cases_opened: int = 0
    group_cases_opened: int = 0
    grouped: dict[str, int] = field(default_factory=dict)  # street → terminals grouped now
    cases_closed: int = 0
    group_cases_closed: int = 0
    seconds: float = 0.0


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _fresh_codes(session: Session, count: int) -> list[str]:
    """``count`` unused case codes, checked against the table in bulk, not one query each."""
    codes: set[str] = set()
    while len(codes) < count:
        batch = {
            "".join(secrets.choice(CODE_ALPHABET) for _ in range(5))
            for _ in range(count - len(codes))
        } - codes
        taken: set[str] = set()
        for chunk in _chunks(sorted(batch)):
            taken.update(session.scalars(select(Case.code).where(Case.code.in_(chunk))))
        codes |= batch - taken
    return list(codes)


def _open_cases(session: Session, cases: list[dict[str, Any]], now: dt.datetime) -> list[int]:
    """Open technical cases in bulk: the rows and "opened" events of ``open_case``."""
    if not cases:
        return []
    rows = [
        {
            "code": code,
            "kind": CaseKind.TECHNICAL,
            "state": CaseState.DISPATCH,
            "priority": PRIORITY,
            "elder_id": case.get("elder_id"),
            "terminal_id": case.get("terminal_id"),
            "item_code": case["item_code"],
            "summary": case["summary"],
            "opened_at": now,
            "opened_by": ACTOR,
            "state_changed_at": now,
            "parent_id": case.get("parent_id"),
        }
        for code, case in zip(_fresh_codes(session, len(cases)), cases, strict=True)
    ]
    ids = list(session.scalars(insert(Case).returning(Case.id, sort_by_parameter_order=True), rows))
    _add_events(
        session,
        [
            (
                case_id,
                "opened",
                None,
                CaseState.DISPATCH,
                {"kind": CaseKind.TECHNICAL.value, "priority": PRIORITY, "summary": row["summary"]},
            )
            for case_id, row in zip(ids, rows, strict=True)
        ],
        now,
    )
    return ids


def _add_events(
    session: Session,
    events: Iterable[tuple[int, str, CaseState | None, CaseState | None, dict[str, Any]]],
    now: dt.datetime,
) -> None:
    rows = [
        {
            "case_id": case_id,
            "at": now,
            "actor": ACTOR,
            "event": event,
            "detail": detail,
            "from_state": from_state.value if from_state else None,
            "to_state": to_state.value if to_state else None,
        }
        for case_id, event, from_state, to_state, detail in events
    ]
    if rows:
        session.execute(insert(CaseEvent), rows)


def _move(
    session: Session,
    ids: Sequence[int],
    from_state: CaseState,
    to_state: CaseState,
    now: dt.datetime,
) -> list[int]:
    """Conditionally move cases still in ``from_state``: an operator's step meanwhile wins."""
    moved: list[int] = []
    values: dict[str, Any] = {"state": to_state, "state_changed_at": now}
    if to_state is CaseState.CLOSED:
        values["closed_at"] = now
    for chunk in _chunks(ids):
        moved += session.scalars(
            update(Case)
            .where(Case.id.in_(chunk), Case.state == from_state)
            .values(**values)
            .returning(Case.id)
            .execution_options(synchronize_session=False)
        )
    _add_events(session, [(i, "state_changed", from_state, to_state, {}) for i in moved], now)
    return moved


def _close(
    session: Session,
    cases: Sequence[tuple[int, CaseState]],
    event: dict[int, dict[str, Any]],
    name: str,
    now: dt.datetime,
) -> int:
    """Close open cases by the allowed path (handle → feedback → closed), with ``name`` events."""
    _add_events(session, [(i, name, None, None, event.get(i, {})) for i, _ in cases], now)
    by_state: dict[CaseState, list[int]] = defaultdict(list)
    for case_id, state in cases:
        by_state[state].append(case_id)
    by_state[CaseState.FEEDBACK] += _move(
        session, by_state.pop(CaseState.HANDLE, []), CaseState.HANDLE, CaseState.FEEDBACK, now
    )
    return sum(
        len(_move(session, ids, state, CaseState.CLOSED, now)) for state, ids in by_state.items()
    )


def _close_recovered(session: Session, now: dt.datetime, summary: WatchdogSummary) -> None:
    recovered = session.execute(
        select(Case.id, Case.state, Case.terminal_id, Terminal.last_seen_at)
        .join(Terminal, Terminal.id == Case.terminal_id)
        .where(
            Case.item_code == SILENT_ITEM,
            Case.state.in_(OPEN_STATES),
            Terminal.last_seen_at > Case.opened_at,
        )
    ).all()
    if recovered:
        details = {row.id: {"last_seen_at": row.last_seen_at.isoformat()} for row in recovered}
        cases = [(row.id, row.state) for row in recovered]
        summary.cases_closed = _close(session, cases, details, "terminal_reported", now)
        terminal_ids = [row.terminal_id for row in recovered]
        for chunk in _chunks(terminal_ids):
            session.execute(
                update(Terminal)
                .where(Terminal.id.in_(chunk), Terminal.status == TerminalStatus.SILENT)
                .values(status=TerminalStatus.ACTIVE)
                .execution_options(synchronize_session=False)
            )
    child = aliased(Case)
    open_child = (
        select(child.id).where(child.parent_id == Case.id, child.state.in_(OPEN_STATES)).exists()
    )
    empty_groups = session.execute(
        select(Case.id, Case.state).where(
            Case.item_code == STREET_SILENT_ITEM, Case.state.in_(OPEN_STATES), ~open_child
        )
    ).all()
    if empty_groups:
        groups = [(row.id, row.state) for row in empty_groups]
        summary.group_cases_closed = _close(session, groups, {}, "all_terminals_reported", now)


def late_condition(intervals: Iterable[int], now: dt.datetime, grace_s: int) -> ColumnElement[bool]:
    """SQL: the terminal has not reported for its report interval plus ``grace_s`` at ``now``
    (never reported: counted from when it was registered). ``intervals`` are the report
    intervals to cover (the distinct values in the table); the supervisor's view uses it too."""
    seen = func.coalesce(Terminal.last_seen_at, Terminal.created_at)
    # One bound threshold per report interval: no date arithmetic in SQL, same on both databases.
    # (false() first: no intervals, no terminal is late.)
    return or_(
        false(),
        *(
            and_(
                Terminal.report_interval_s == interval,
                seen < now - dt.timedelta(seconds=interval + grace_s),
            )
            for interval in intervals
        ),
    )


def _mark_silent(
    session: Session, now: dt.datetime, grace_s: int
) -> list[tuple[int, str, int | None, str | None]]:
    """Mark newly silent terminals; (id, serial, elder id, street) of each one marked."""
    intervals = session.scalars(
        select(distinct(Terminal.report_interval_s)).where(Terminal.status == TerminalStatus.ACTIVE)
    ).all()
    if not intervals:
        return []
    late = late_condition(intervals, now, grace_s)
    candidates = session.execute(
        select(Terminal.id, Terminal.serial, Terminal.elder_id, Elder.street)
        .outerjoin(Elder, Elder.id == Terminal.elder_id)
        .where(Terminal.status == TerminalStatus.ACTIVE, late)
    ).all()
    marked: set[int] = set()
    for chunk in _chunks([row.id for row in candidates]):
        # The condition again: a terminal that reported since the SELECT stays active.
        marked.update(
            session.scalars(
                update(Terminal)
                .where(Terminal.id.in_(chunk), Terminal.status == TerminalStatus.ACTIVE, late)
                .values(status=TerminalStatus.SILENT)
                .returning(Terminal.id)
                .execution_options(synchronize_session=False)
            )
        )
    return [(r.id, r.serial, r.elder_id, r.street) for r in candidates if r.id in marked]


def _open_groups(session: Session, streets: Iterable[str]) -> dict[str, int]:
    """street → its open grouped case, found through the members' elders."""
    child = aliased(Case)
    rows = session.execute(
        select(Elder.street, func.max(Case.id))
        .join(child, child.parent_id == Case.id)
        .join(Terminal, Terminal.id == child.terminal_id)
        .join(Elder, Elder.id == Terminal.elder_id)
        .where(
            Case.item_code == STREET_SILENT_ITEM,
            Case.state.in_(OPEN_STATES),
            Elder.street.in_(list(streets)),
        )
        .group_by(Elder.street)
    ).all()
    return {street: case_id for street, case_id in rows}


def _recent_singles(
    session: Session, streets: Iterable[str], since: dt.datetime
) -> dict[str, list[int]]:
    """street → open ungrouped silent-terminal cases opened within the group window."""
    rows = session.execute(
        select(Elder.street, Case.id)
        .join(Terminal, Terminal.id == Case.terminal_id)
        .join(Elder, Elder.id == Terminal.elder_id)
        .where(
            Case.item_code == SILENT_ITEM,
            Case.state.in_(OPEN_STATES),
            Case.parent_id.is_(None),
            Case.opened_at >= since,
            Elder.street.in_(list(streets)),
        )
    ).all()
    singles: dict[str, list[int]] = defaultdict(list)
    for street, case_id in rows:
        singles[street].append(case_id)
    return singles


def _street_sizes(session: Session, streets: Iterable[str]) -> dict[str, int]:
    rows = session.execute(
        select(Elder.street, func.count(Terminal.id))
        .join(Elder, Elder.id == Terminal.elder_id)
        .where(Terminal.status != TerminalStatus.RETIRED, Elder.street.in_(list(streets)))
        .group_by(Elder.street)
    ).all()
    return {street: count for street, count in rows}


def _is_mass_silence(count: int, size: int, settings: ScheduleSettings) -> bool:
    return count >= settings.watchdog_group_min_terminals or (
        count >= settings.watchdog_group_floor and count >= settings.watchdog_group_min_share * size
    )


def sweep_silent_terminals(
    session: Session, *, now: dt.datetime, settings: ScheduleSettings | None = None
) -> WatchdogSummary:
    """One watchdog sweep at ``now``; the caller commits."""
    started = time.perf_counter()
    settings = settings or get_schedule_settings()
    summary = WatchdogSummary()
    _close_recovered(session, now, summary)
    silent = _mark_silent(session, now, settings.watchdog_grace_s)
    summary.newly_silent = len(silent)
    by_street: dict[str | None, list[tuple[int, str, int | None, str | None]]] = defaultdict(list)
    for row in silent:
        by_street[row[3]].append(row)
    streets = [street for street in by_street if street is not None]
    groups = _open_groups(session, streets) if streets else {}
    since = now - dt.timedelta(seconds=settings.watchdog_group_window_s)
    singles = _recent_singles(session, streets, since) if streets else {}
    sizes = _street_sizes(session, streets) if streets else {}
    cases: list[dict[str, Any]] = []
    for street, terminals in by_street.items():
        parent = groups.get(street) if street else None
        earlier = singles.get(street, []) if street else []
        count = len(terminals) + len(earlier)
        if street and parent is None and _is_mass_silence(count, sizes.get(street, 0), settings):
            summary_text = f"{street} 终端大面积静默 mass terminal silence: {count} 台 terminals"
            [parent] = _open_cases(
                session, [{"item_code": STREET_SILENT_ITEM, "summary": summary_text}], now
            )
            summary.group_cases_opened += 1
            _group(session, earlier, parent, now)
            log.warning("watchdog.street_silent", street=street, terminals=count, case_id=parent)
        if parent is not None and street:
            summary.grouped[street] = len(terminals) + len(earlier)
        cases += [
            {
                "item_code": SILENT_ITEM,
                "terminal_id": tid,
                "elder_id": elder_id,
                "parent_id": parent,
                "summary": f"终端静默 terminal silent: {serial}",
            }
            for tid, serial, elder_id, _ in terminals
        ]
    summary.cases_opened = len(_open_cases(session, cases, now))
    session.flush()
    summary.seconds = time.perf_counter() - started
    if summary.newly_silent or summary.cases_closed or summary.group_cases_closed:
        log.info(
            "watchdog.swept",
            newly_silent=summary.newly_silent,
            cases_opened=summary.cases_opened,
            grouped=summary.grouped,
            cases_closed=summary.cases_closed,
            group_cases_closed=summary.group_cases_closed,
        )
    return summary


def _group(session: Session, case_ids: list[int], parent: int, now: dt.datetime) -> None:
    """Put the street's recent single cases under its new grouped case."""
    for chunk in _chunks(case_ids):
        session.execute(
            update(Case)
            .where(Case.id.in_(chunk), Case.parent_id.is_(None))
            .values(parent_id=parent)
            .execution_options(synchronize_session=False)
        )
    _add_events(session, [(i, "grouped", None, None, {"parent_id": parent}) for i in case_ids], now)
