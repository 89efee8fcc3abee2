"""Overdue visits: reassigned once, then escalated; coverage by community and street."""

from __future__ import annotations

import datetime as dt

import time_machine
from sqlalchemy import select
from sqlalchemy.orm import Session

from callcenter.models import RiskLevel
from schedules.models import Visit, VisitKind, VisitStatus
from schedules.overdue import coverage, escalated_visits, sweep_overdue
from schedules.settings import ScheduleSettings
from schedules.visit_planner import plan_period
from tests.factories import make_elder
from tests.schedules.builders import local, make_elders, make_volunteer

SETTINGS = ScheduleSettings(visit_max_reassign=1, visit_reassign_days=3)


def _plan_december(session: Session) -> None:
    with time_machine.travel(local(2026, 11, 25), tick=False):
        plan_period(session, month="2026-12", now=local(2026, 11, 25), settings=SETTINGS)


def _sweep(session: Session, at: dt.datetime) -> tuple[int, int, int]:
    with time_machine.travel(at, tick=False):
        result = sweep_overdue(session, now=at, settings=SETTINGS)
    return len(result.reassigned), len(result.escalated), len(result.assigned)


def test_overdue_visit_reassigned_then_escalated(session: Session) -> None:
    elder = make_elder(session, "陈秀珍")
    first, second = make_volunteer(session), make_volunteer(session)
    _plan_december(session)
    visit = session.scalars(select(Visit)).one()
    original = visit.volunteer_id
    assert original in (first.id, second.id)

    assert _sweep(session, local(2026, 12, 31, hour=23)) == (0, 0, 0)  # still in its window
    assert _sweep(session, local(2027, 1, 1, hour=0)) == (1, 0, 0)  # the window is over
    session.refresh(visit)
    assert visit.status is VisitStatus.OVERDUE and visit.reassign_count == 1
    assert visit.volunteer_id not in (original, None)
    assert visit.window_end == dt.date(2027, 1, 4)
    assert dt.date(2027, 1, 1) < visit.planned_date <= visit.window_end  # not on New Year's Day

    assert _sweep(session, local(2027, 1, 4, hour=22)) == (0, 0, 0)  # the new volunteer's days
    assert _sweep(session, local(2027, 1, 5, hour=1)) == (0, 1, 0)
    session.refresh(visit)
    assert visit.status is VisitStatus.ESCALATED
    [row] = escalated_visits(session)
    assert (row.visit_id, row.elder_name, row.reassign_count) == (visit.id, "陈秀珍", 1)
    assert escalated_visits(session, street="珠池街道") == []
    assert _sweep(session, local(2027, 1, 6)) == (0, 0, 0)  # escalated stays escalated
    assert elder.id == row.elder_id


def test_done_visits_are_left_alone(session: Session) -> None:
    make_elders(session, 2)
    make_volunteer(session), make_volunteer(session)
    _plan_december(session)
    for visit in session.scalars(select(Visit)):
        visit.status = VisitStatus.DONE
    session.flush()
    assert _sweep(session, local(2027, 1, 2)) == (0, 0, 0)


def test_escalated_at_once_when_nobody_else_can_go(session: Session) -> None:
    make_elders(session, 1)
    make_volunteer(session)
    make_volunteer(session, visits=False)
    _plan_december(session)
    assert _sweep(session, local(2027, 1, 1)) == (0, 1, 0)


def test_handed_back_visit_goes_to_someone_else(session: Session) -> None:
    make_elders(session, 1)
    make_volunteer(session), make_volunteer(session)
    _plan_december(session)
    visit = session.scalars(select(Visit)).one()
    before = visit.volunteer_id
    visit.status = VisitStatus.HANDED_BACK
    session.flush()
    assert _sweep(session, local(2026, 12, 10)) == (0, 0, 1)
    session.refresh(visit)
    assert visit.status is VisitStatus.PLANNED and visit.volunteer_id != before
    assert visit.reassign_count == 0  # a hand-back does not use up the overdue reassignment


def test_monthly_coverage_by_community_and_street(session: Session) -> None:
    make_elders(session, 4)
    make_elders(session, 2, community="金泰社区")
    make_elders(session, 3, RiskLevel.LOW, street="珠池街道", community="珠池社区")
    make_volunteer(session)
    _plan_december(session)
    visits = session.scalars(select(Visit).order_by(Visit.id)).all()
    done = {v.id for v in visits[:3]} | {visits[-1].id}  # 3 in 金湖, 1 in 珠池
    for visit in visits:
        if visit.id in done:
            visit.status = VisitStatus.DONE
    session.add(
        Visit(
            elder_id=visits[0].elder_id,
            kind=VisitKind.EXTRA,
            period="E202612051000",
            planned_date=dt.date(2026, 12, 5),
            window_end=dt.date(2026, 12, 6),
            status=VisitStatus.CANCELLED,
        )
    )
    session.flush()
    report = coverage(session, "2026-12")
    rows = {(r.street, r.community): (r.done, r.due) for r in report.communities}
    assert rows == {
        ("金霞街道", "金湖社区"): (3, 4),
        ("金霞街道", "金泰社区"): (0, 2),
        ("珠池街道", "珠池社区"): (1, 3),  # quarterly visits fall due in the quarter's last month
    }
    streets = {r.street: (r.done, r.due) for r in report.streets}
    assert streets == {"金霞街道": (3, 6), "珠池街道": (1, 3)}
    assert (report.total.done, report.total.due) == (4, 9)
    assert coverage(session, "2026-11").total.due == 0
