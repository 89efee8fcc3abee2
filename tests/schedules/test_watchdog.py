"""The terminal watchdog: silent terminals raise a technical case that clears itself."""

from __future__ import annotations

import datetime as dt

import time_machine
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from callcenter.cases import OPEN_STATES, transition
from callcenter.models import Case, CaseEvent, CaseKind, CaseState
from devices.models import Terminal, TerminalStatus
from devices.registry import touch
from schedules.settings import ScheduleSettings
from schedules.watchdog import SILENT_ITEM, STREET_SILENT_ITEM, WatchdogSummary
from schedules.watchdog import sweep_silent_terminals as sweep_at
from tests.factories import make_elder, make_terminal

SETTINGS = ScheduleSettings(
    watchdog_grace_s=600,
    watchdog_group_min_terminals=20,
    watchdog_group_min_share=0.5,
    watchdog_group_floor=3,
    watchdog_group_window_s=900,
)
T0 = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def _sweep(session: Session, at: dt.datetime) -> WatchdogSummary:
    with time_machine.travel(at, tick=False):
        return sweep_at(session, now=at, settings=SETTINGS)


def _terminals(session: Session, count: int, street: str, *, seen: dt.datetime) -> list[Terminal]:
    return [
        make_terminal(
            session, make_elder(session, street=street), report_interval_s=3600, last_seen_at=seen
        )
        for _ in range(count)
    ]


def _open_cases(session: Session, item: str) -> list[Case]:
    return list(
        session.scalars(
            select(Case)
            .where(Case.item_code == item, Case.state.in_(OPEN_STATES))
            .order_by(Case.id)
        )
    )


def test_silent_terminal_raises_a_case_and_clears_it(session: Session) -> None:
    [terminal] = _terminals(session, 1, "金霞街道", seen=T0)
    # Interval 1 h plus grace 10 min: not yet silent one second before, silent one second after.
    assert _sweep(session, T0 + HOUR + dt.timedelta(seconds=599)).newly_silent == 0
    result = _sweep(session, T0 + HOUR + dt.timedelta(seconds=601))
    assert (result.newly_silent, result.cases_opened, result.group_cases_opened) == (1, 1, 0)
    [case] = _open_cases(session, SILENT_ITEM)
    assert case.kind is CaseKind.TECHNICAL and case.terminal_id == terminal.id
    assert case.elder_id == terminal.elder_id and case.parent_id is None
    assert "terminal silent" in case.summary
    session.refresh(terminal)
    assert terminal.status is TerminalStatus.SILENT
    assert _sweep(session, T0 + 3 * HOUR).cases_opened == 0  # one case, however long the silence

    reported = T0 + 3 * HOUR + dt.timedelta(minutes=5)
    touch(session, terminal.id, reported)
    result = _sweep(session, reported + dt.timedelta(minutes=1))
    assert result.cases_closed == 1
    session.refresh(case)
    session.refresh(terminal)
    assert case.state is CaseState.CLOSED and case.closed_at is not None
    assert terminal.status is TerminalStatus.ACTIVE
    events = session.scalars(select(CaseEvent.event).where(CaseEvent.case_id == case.id)).all()
    assert events == ["opened", "terminal_reported", "state_changed"]

    # Silent again later: a new case, the closed one stays closed.
    assert _sweep(session, reported + 2 * HOUR).cases_opened == 1
    assert len(_open_cases(session, SILENT_ITEM)) == 1


def test_a_case_being_handled_closes_through_feedback(session: Session) -> None:
    [terminal] = _terminals(session, 1, "金霞街道", seen=T0)
    _sweep(session, T0 + 2 * HOUR)
    [case] = _open_cases(session, SILENT_ITEM)
    transition(session, case, CaseState.HANDLE, actor="op1", at=T0 + 2 * HOUR)
    session.flush()
    touch(session, terminal.id, T0 + 3 * HOUR)
    assert _sweep(session, T0 + 3 * HOUR + dt.timedelta(minutes=1)).cases_closed == 1
    session.refresh(case)
    assert case.state is CaseState.CLOSED
    steps = session.execute(
        select(CaseEvent.from_state, CaseEvent.to_state)
        .where(CaseEvent.case_id == case.id, CaseEvent.event == "state_changed")
        .order_by(CaseEvent.id)
    ).all()
    assert [tuple(s) for s in steps] == [
        ("dispatch", "handle"),
        ("handle", "feedback"),
        ("feedback", "closed"),
    ]


def test_street_wide_outage_is_one_grouped_case(session: Session) -> None:
    outage = _terminals(session, 25, "金霞街道", seen=T0)
    _terminals(session, 2, "珠池街道", seen=T0)  # two lone silences elsewhere ...
    reporting = _terminals(session, 8, "珠池街道", seen=T0 + 2 * HOUR)  # ... street still reports
    result = _sweep(session, T0 + 2 * HOUR)
    assert result.newly_silent == 27
    assert (result.group_cases_opened, result.grouped) == (1, {"金霞街道": 25})
    [group] = _open_cases(session, STREET_SILENT_ITEM)
    members = _open_cases(session, SILENT_ITEM)
    assert sum(c.parent_id == group.id for c in members) == 25
    # What the console lists: the top-level open cases, one for the street, two single ones.
    top_level = session.scalar(
        select(func.count()).where(Case.state.in_(OPEN_STATES), Case.parent_id.is_(None))
    )
    assert top_level == 3
    assert "金霞街道" in group.summary and "25" in group.summary

    # More of the street falls silent later: they join the open group.
    late = _terminals(session, 3, "金霞街道", seen=T0 + HOUR)
    result = _sweep(session, T0 + 3 * HOUR)
    assert (result.newly_silent, result.group_cases_opened) == (3, 0)
    assert result.grouped == {"金霞街道": 3}
    assert len(_open_cases(session, STREET_SILENT_ITEM)) == 1

    # Power back: every member reports, the members and then the group close themselves.
    back = T0 + 4 * HOUR
    for terminal in [*outage, *late, *reporting]:
        touch(session, terminal.id, back)
    result = _sweep(session, back + dt.timedelta(minutes=1))
    assert (result.cases_closed, result.group_cases_closed) == (28, 1)
    session.refresh(group)
    assert group.state is CaseState.CLOSED
    assert len(_open_cases(session, SILENT_ITEM)) == 2  # 珠池 stays silent


def test_half_of_a_small_street_is_grouped(session: Session) -> None:
    _terminals(session, 4, "新溪街道", seen=T0)
    _terminals(session, 3, "新溪街道", seen=T0 + 2 * HOUR)
    result = _sweep(session, T0 + 2 * HOUR)
    assert (result.newly_silent, result.group_cases_opened) == (4, 1)


def test_silence_spread_over_two_sweeps_in_the_window_is_grouped(session: Session) -> None:
    _terminals(session, 2, "鸥汀街道", seen=T0)
    _terminals(session, 2, "鸥汀街道", seen=T0 + dt.timedelta(minutes=5))
    _terminals(session, 2, "鸥汀街道", seen=T0 + 3 * HOUR)
    first = T0 + HOUR + dt.timedelta(minutes=11)
    assert _sweep(session, first).cases_opened == 2  # 2 of 6: not yet mass silence
    result = _sweep(session, first + dt.timedelta(minutes=5))
    assert (result.newly_silent, result.group_cases_opened) == (2, 1)
    [group] = _open_cases(session, STREET_SILENT_ITEM)
    children = [c for c in _open_cases(session, SILENT_ITEM) if c.parent_id == group.id]
    assert len(children) == 4  # the earlier two were put under the group
