"""A month's visit plan, with the clock moved to the planning day (time-machine)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter

import pytest
import time_machine
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from callcenter import db
from callcenter.models import Elder, RiskLevel
from schedules.holidays import day_info
from schedules.models import Visit, VisitKind, VisitStatus
from schedules.settings import ScheduleSettings
from schedules.visit_planner import plan_cli, plan_period, summary_lines
from schedules.visit_plans import Month, due_reminders, request_extra_visit, weeks_of
from tests.schedules.builders import local, make_elders, make_volunteer

SETTINGS = ScheduleSettings()


def _district(session: Session) -> tuple[list[Elder], list[int]]:
    """Two communities of one street and one of another; volunteers who visit, one who does not."""
    elders = (
        make_elders(session, 6, RiskLevel.MEDIUM)
        + make_elders(session, 2, RiskLevel.HIGH, community="金泰社区")
        + make_elders(session, 3, RiskLevel.LOW, street="珠池街道", community="珠池社区")
    )
    visitors = [make_volunteer(session).id for _ in range(3)]
    visitors.append(make_volunteer(session, "珠池社区").id)
    make_volunteer(session, visits=False)  # cannot do visits: never planned
    return elders, visitors


def _visits(session: Session) -> list[Visit]:
    return list(session.scalars(select(Visit).order_by(Visit.id)))


def test_month_plan_once_for_every_due_elder(session: Session) -> None:
    elders, visitors = _district(session)
    now = local(2026, 11, 25)
    with time_machine.travel(now, tick=False):
        summary = plan_period(session, month="2026-12", now=now, settings=SETTINGS)
    weeks = len(weeks_of(Month(2026, 12)))
    assert weeks == 5  # Thursdays 3, 10, 17, 24, 31 December
    assert summary.elders_due == len(elders)
    assert summary.created == {"monthly": 6, "weekly": 2 * weeks, "quarterly": 3}
    visits = _visits(session)
    assert len(visits) == summary.created_total == 6 + 2 * weeks + 3
    assert {v.volunteer_id for v in visits} <= set(visitors)  # only volunteers who visit
    assert all(v.status is VisitStatus.PLANNED for v in visits)
    # One volunteer per elder for the month: a weekly elder sees the same face every week.
    per_elder: dict[int, set[int | None]] = {v.elder_id: set() for v in visits}
    for v in visits:
        per_elder[v.elder_id].add(v.volunteer_id)
    assert all(len(ids) == 1 for ids in per_elder.values())
    assert max(Counter(v.volunteer_id for v in visits).values()) <= (summary.load_cap or 0)
    quarterly = [v for v in visits if v.kind is VisitKind.QUARTERLY]
    assert {v.window_end for v in quarterly} == {dt.date(2026, 12, 31)}
    # The 珠池 elders get the 珠池 volunteer: community first.
    zhuchi = [v for v in visits if v.kind is VisitKind.QUARTERLY]
    assert {v.volunteer_id for v in zhuchi} == {visitors[3]}

    with time_machine.travel(now + dt.timedelta(days=1), tick=False):
        again = plan_period(session, month="2026-12", now=now + dt.timedelta(days=1))
    assert again.created_total == 0
    assert again.already_planned == len(visits)
    assert len(_visits(session)) == len(visits)


def test_continuity_kept_and_fair_load(session: Session) -> None:
    elders, _ = _district(session)
    with time_machine.travel(local(2026, 10, 25), tick=False):
        plan_period(session, month="2026-11", now=local(2026, 10, 25), settings=SETTINGS)
    november = {v.elder_id: v.volunteer_id for v in _visits(session)}
    for visit in _visits(session):
        visit.status, visit.recorded_at = VisitStatus.DONE, local(2026, 11, 20)
    session.flush()

    with time_machine.travel(local(2026, 11, 25), tick=False):
        summary = plan_period(session, month="2026-12", now=local(2026, 11, 25), settings=SETTINGS)
    december = {
        v.elder_id: v.volunteer_id for v in _visits(session) if v.period.startswith("2026-12")
    }
    monthly = [e.id for e in elders if e.risk_level is RiskLevel.MEDIUM]
    assert all(december[e] == november[e] for e in monthly)
    assert summary.continuity_kept == summary.continuity_possible > 0


def test_continuity_yields_to_fairness(session: Session) -> None:
    elders = make_elders(session, 12, RiskLevel.MEDIUM)
    volunteers = [make_volunteer(session).id for _ in range(3)]
    # Last month one volunteer made every visit.
    for elder in elders:
        session.add(
            Visit(
                elder_id=elder.id,
                volunteer_id=volunteers[0],
                kind=VisitKind.MONTHLY,
                period="2026-11",
                planned_date=dt.date(2026, 11, 10),
                window_end=dt.date(2026, 11, 30),
                status=VisitStatus.DONE,
            )
        )
    session.flush()
    with time_machine.travel(local(2026, 11, 25), tick=False):
        summary = plan_period(session, month="2026-12", now=local(2026, 11, 25), settings=SETTINGS)
    load = Counter(v.volunteer_id for v in _visits(session) if v.period == "2026-12")
    assert summary.load_cap == 5  # 12 visits / 3 volunteers × 1.2, rounded up
    assert load[volunteers[0]] == 5  # keeps as many as fairness allows ...
    assert sum(load.values()) == 12 and max(load.values()) <= 5  # ... the rest spread
    assert summary.continuity_kept == 5


def test_public_holidays_avoided(session: Session) -> None:
    _district(session)
    now = local(2026, 9, 20)
    with time_machine.travel(now, tick=False):
        summary = plan_period(session, month="2026-10", now=now, settings=SETTINGS)
    golden_week = {dt.date(2026, 10, d) for d in range(1, 8)}
    planned = {v.planned_date for v in _visits(session)}
    assert planned and not planned & golden_week
    assert all(day_info(day).working for day in planned)
    assert {name for _, name in summary.holidays} == {"National Day"}
    assert summary.official_schedule_known and summary.on_holiday == 0
    # The week of 1 October belongs to October (its Thursday): planned before the holiday.
    first_week = [v for v in _visits(session) if v.period == "2026-W40"]
    assert first_week and all(v.planned_date <= dt.date(2026, 9, 30) for v in first_week)


def test_january_2027_planned_in_november_with_the_fallback(session: Session) -> None:
    _district(session)
    now = local(2026, 11, 25)
    with time_machine.travel(now, tick=False):
        summary = plan_period(session, month="2027-01", now=now, settings=SETTINGS)
    planned = {v.planned_date for v in _visits(session)}
    assert summary.created_total > 0
    assert dt.date(2027, 1, 1) not in planned
    assert all(day.weekday() < 5 for day in planned)
    assert not summary.official_schedule_known
    text = "\n".join(summary_lines(summary))
    assert "尚未公布" in text and "official holiday schedule is not known" in text
    assert "元旦" in text


def test_weeks_already_over_are_not_planned(session: Session) -> None:
    make_elders(session, 1, RiskLevel.HIGH)
    make_volunteer(session)
    now = local(2026, 12, 15)
    with time_machine.travel(now, tick=False):
        summary = plan_period(session, month="2026-12", now=now, settings=SETTINGS)
    assert summary.window_passed == 2  # the weeks of 3 and 10 December
    assert summary.created == {"weekly": 3}
    assert min(v.planned_date for v in _visits(session)) >= dt.date(2026, 12, 16)


def test_unassigned_when_nobody_can_visit(session: Session) -> None:
    make_elders(session, 2)
    make_volunteer(session, visits=False)
    with time_machine.travel(local(2026, 11, 25), tick=False):
        summary = plan_period(session, month="2026-12", now=local(2026, 11, 25))
    assert summary.unassigned == 2
    assert all(v.volunteer_id is None for v in _visits(session))


def test_extra_visit_within_24_hours_by_the_known_volunteer(session: Session) -> None:
    [elder] = make_elders(session, 1)
    known, _other = make_volunteer(session), make_volunteer(session)
    session.add(
        Visit(
            elder_id=elder.id,
            volunteer_id=known.id,
            kind=VisitKind.MONTHLY,
            period="2026-11",
            planned_date=dt.date(2026, 11, 5),
            window_end=dt.date(2026, 11, 30),
            status=VisitStatus.DONE,
        )
    )
    session.flush()
    at = local(2026, 11, 28, hour=16)
    with time_machine.travel(at, tick=False):
        visit = request_extra_visit(session, elder.id, "hospital_discharge", at)
        again = request_extra_visit(session, elder.id, "hospital_discharge", at)
    assert again.id == visit.id
    assert visit.kind is VisitKind.EXTRA and visit.volunteer_id == known.id
    assert visit.planned_date == dt.date(2026, 11, 28)
    assert visit.window_end == dt.date(2026, 11, 29)  # within 24 hours
    assert "hospital_discharge" in visit.notes
    with time_machine.travel(at, tick=False):
        reminders = due_reminders(session, at)
    assert visit in reminders  # today's visit: its volunteer is reminded


def test_due_reminders_the_day_before(session: Session) -> None:
    make_elders(session, 3)
    make_volunteer(session)
    with time_machine.travel(local(2026, 11, 25), tick=False):
        plan_period(session, month="2026-12", now=local(2026, 11, 25), settings=SETTINGS)
    visits = _visits(session)
    first = min(v.planned_date for v in visits)
    eve = dt.datetime.combine(
        first - dt.timedelta(days=1), dt.time(9), tzinfo=local(2026, 1, 1).tzinfo
    )
    reminders = due_reminders(session, eve, settings=SETTINGS)
    assert reminders and {v.planned_date for v in reminders} == {first}


@pytest.fixture
def global_engine(fresh_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """``hyt visits plan`` uses the process-wide session factory: point it at a fresh database."""
    monkeypatch.setattr(db, "_session_factory", sessionmaker(fresh_engine, expire_on_commit=False))
    return fresh_engine


def test_plan_cli_prints_a_summary(
    global_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    with Session(global_engine) as session:
        make_elders(session, 2)
        make_volunteer(session)
        session.commit()
    with time_machine.travel(local(2026, 11, 25), tick=False):
        assert plan_cli("2026-12") == 0
        assert plan_cli("2026-12") == 0
    out = capsys.readouterr().out
    assert "2026-12 探访计划 visit plan" in out
    assert "新建探访 visits created: 2" in out and "已有计划 already planned: 2" in out
    assert plan_cli("2026/12") == 2
    assert "bad month" in capsys.readouterr().err


def test_two_planners_at_once_make_each_visit_once(fresh_engine: Engine) -> None:
    with Session(fresh_engine) as session:
        make_elders(session, 5)
        make_volunteer(session)
        session.commit()
    now = local(2026, 11, 25)
    first_planned = threading.Event()
    errors: list[BaseException] = []

    def first_planner() -> None:
        try:
            with Session(fresh_engine) as session:
                plan_period(session, month="2026-12", now=now, settings=SETTINGS)
                first_planned.set()
                time.sleep(1)  # still uncommitted while the second one plans
                session.commit()
        except BaseException as exc:
            errors.append(exc)
            first_planned.set()

    thread = threading.Thread(target=first_planner)
    thread.start()
    assert first_planned.wait(60)
    with Session(fresh_engine) as session:
        # PostgreSQL: the INSERT waits for the first transaction, then skips its rows;
        # SQLite: BEGIN IMMEDIATE waits, then the pre-check sees them.
        second = plan_period(session, month="2026-12", now=now, settings=SETTINGS)
        session.commit()
    thread.join(60)
    assert not errors
    assert (second.created_total, second.already_planned) == (0, 5)
    with Session(fresh_engine) as session:
        assert len(_visits(session)) == 5
