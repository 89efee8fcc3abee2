"""Visits not made in time: reassigned once, then escalated to the supervisor; monthly coverage.

A visit is overdue when the day after its window's end comes and it is not recorded. The sweep
gives it to another volunteer with a few more days (``HYT_VISIT_REASSIGN_DAYS``) and marks it
``overdue``; when that runs out too (or there is nobody else), it becomes ``escalated`` and shows
in :func:`escalated_visits`, the supervisor's list. Handed-back visits and visits planned
without a volunteer are (re)assigned by the same sweep while their window is open: a hand-back
is the volunteer's own word, not a missed visit, so it does not use up the reassignment.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import structlog
from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session, aliased

from callcenter.models import Elder
from schedules.holidays import day_info, days_between
from schedules.models import Visit, VisitKind, VisitStatus
from schedules.settings import ScheduleSettings, get_schedule_settings
from schedules.visit_plans import (
    OPEN_STATUSES,
    Month,
    VolunteerPool,
    local_date,
    street_of_communities,
    weeks_of,
)
from volunteers.models import Volunteer

log = structlog.get_logger(__name__)


@dataclass
class OverdueSummary:
    # (visit id, volunteer before, volunteer after): the SMS outbox tells the new volunteer.
    reassigned: list[tuple[int, int | None, int]] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)
    assigned: list[tuple[int, int | None, int]] = field(default_factory=list)


def _next_planned_date(today: dt.date, window_end: dt.date) -> dt.date:
    """The first working day from tomorrow to the window's end, else tomorrow."""
    tomorrow = today + dt.timedelta(days=1)
    for day in days_between(tomorrow, window_end):
        if day_info(day).working:
            return day
    return min(tomorrow, window_end)


def _choose_other(pool: VolunteerPool, visit: Visit, street: str, community: str) -> int | None:
    """Someone other than the current volunteer: within the fair cap if possible, else anyone
    (a late visit matters more than an even load)."""
    exclude = {visit.volunteer_id} if visit.volunteer_id is not None else set()
    for respect_cap in (True, False):
        vid, _ = pool.choose(
            community=community, street=street, exclude=exclude, respect_cap=respect_cap
        )
        if vid is not None:
            return vid
    return None


def sweep_overdue(
    session: Session, *, now: dt.datetime, settings: ScheduleSettings | None = None
) -> OverdueSummary:
    """Reassign or escalate visits past their window; assign handed-back ones. Caller commits."""
    settings = settings or get_schedule_settings()
    today = local_date(now)
    summary = OverdueSummary()
    # Handed back and never taken up again before the window closed is late too.
    late = and_(
        Visit.status.in_((*OPEN_STATUSES, VisitStatus.HANDED_BACK)), Visit.window_end < today
    )
    to_assign = and_(
        Visit.window_end >= today,
        or_(
            Visit.status == VisitStatus.HANDED_BACK,
            and_(Visit.status == VisitStatus.PLANNED, Visit.volunteer_id.is_(None)),
        ),
    )
    rows = session.execute(
        select(Visit, Elder.street, Elder.community)
        .join(Elder, Elder.id == Visit.elder_id)
        .where(or_(late, to_assign))
        .order_by(Visit.window_end, Visit.id)
        .with_for_update(of=Visit, skip_locked=True)
    ).all()
    if not rows:
        return summary
    pool = VolunteerPool.for_month(
        session, Month.of(today), street_of_communities(session), settings=settings
    )
    for visit, street, community in rows:
        before = visit.volunteer_id
        if visit.window_end < today:
            vid = None
            if visit.reassign_count < settings.visit_max_reassign:
                vid = _choose_other(pool, visit, street, community)
            if vid is None:
                visit.status = VisitStatus.ESCALATED
                summary.escalated.append(visit.id)
                log.warning(
                    "visit.escalated",
                    visit_id=visit.id,
                    elder_id=visit.elder_id,
                    volunteer_id=before,
                    window_end=str(visit.window_end),
                )
                continue
            visit.status = VisitStatus.OVERDUE
            visit.reassign_count += 1
            # An extra visit is urgent (within 24 h): its new volunteer gets one day, not several.
            days = 1 if visit.kind is VisitKind.EXTRA else settings.visit_reassign_days
            visit.window_end = today + dt.timedelta(days=days)
            summary.reassigned.append((visit.id, before, vid))
            event = "visit.reassigned"
        else:
            vid = _choose_other(pool, visit, street, community)
            if vid is None:
                continue  # nobody free: tried again next sweep, escalated once late
            if visit.status is VisitStatus.HANDED_BACK:
                visit.status = VisitStatus.PLANNED
            summary.assigned.append((visit.id, before, vid))
            event = "visit.assigned"
        visit.volunteer_id = vid
        visit.planned_date = max(visit.planned_date, _next_planned_date(today, visit.window_end))
        pool.take(vid)
        log.info(event, visit_id=visit.id, elder_id=visit.elder_id, before=before, after=vid)
    session.flush()
    return summary


@dataclass(frozen=True)
class EscalatedVisit:
    visit_id: int
    elder_id: int
    elder_name: str
    street: str
    community: str
    kind: str
    period: str
    window_end: dt.date
    volunteer_name: str | None
    reassign_count: int


def escalated_visits(session: Session, *, street: str | None = None) -> list[EscalatedVisit]:
    """The supervisor's list: visits that stayed undone after their reassignment."""
    volunteer = aliased(Volunteer)
    query = (
        select(Visit, Elder.name, Elder.street, Elder.community, volunteer.name)
        .join(Elder, Elder.id == Visit.elder_id)
        .outerjoin(volunteer, volunteer.id == Visit.volunteer_id)
        .where(Visit.status == VisitStatus.ESCALATED)
        .order_by(Elder.street, Elder.community, Visit.window_end, Visit.id)
    )
    if street is not None:
        query = query.where(Elder.street == street)
    return [
        EscalatedVisit(
            visit.id,
            visit.elder_id,
            name,
            elder_street,
            community,
            visit.kind.value,
            visit.period,
            visit.window_end,
            volunteer_name,
            visit.reassign_count,
        )
        for visit, name, elder_street, community, volunteer_name in session.execute(query)
    ]


@dataclass(frozen=True)
class CoverageRow:
    street: str
    community: str  # "" on a street's subtotal and on the total
    due: int
    done: int

    @property
    def ratio(self) -> float:
        return self.done / self.due if self.due else 1.0


@dataclass
class Coverage:
    month: str
    communities: list[CoverageRow]
    streets: list[CoverageRow]
    total: CoverageRow


def _due_in(month: Month) -> ColumnElement[bool]:
    """Visits due in ``month``: those whose period ends in it (a quarter in its last month)."""
    weeks = [key for key, _, _ in weeks_of(month)]
    conditions = [
        and_(Visit.kind == VisitKind.MONTHLY, Visit.period == month.key),
        and_(Visit.kind == VisitKind.WEEKLY, Visit.period.in_(weeks)),
        # Extra visits are named by the local minute of their event: E202612031405.
        and_(Visit.kind == VisitKind.EXTRA, Visit.period.like(f"E{month.key.replace('-', '')}%")),
    ]
    if month.quarter_index == 2:
        conditions.append(
            and_(Visit.kind == VisitKind.QUARTERLY, Visit.period == month.quarter_key)
        )
    return or_(*conditions)


def coverage(session: Session, month: str) -> Coverage:
    """Visits done / due in ``month`` (YYYY-MM), by community and street (cancelled not due)."""
    period = Month.parse(month)
    done = func.sum(case((Visit.status == VisitStatus.DONE, 1), else_=0))
    rows = session.execute(
        select(Elder.street, Elder.community, func.count(), done)
        .join(Elder, Elder.id == Visit.elder_id)
        .where(_due_in(period), Visit.status != VisitStatus.CANCELLED)
        .group_by(Elder.street, Elder.community)
        .order_by(Elder.street, Elder.community)
    ).all()
    communities = [CoverageRow(s, c, int(due), int(d or 0)) for s, c, due, d in rows]
    streets: dict[str, CoverageRow] = {}
    for row in communities:
        prev = streets.get(row.street, CoverageRow(row.street, "", 0, 0))
        streets[row.street] = CoverageRow(row.street, "", prev.due + row.due, prev.done + row.done)
    total = CoverageRow("", "", sum(r.due for r in communities), sum(r.done for r in communities))
    return Coverage(period.key, communities, list(streets.values()), total)
