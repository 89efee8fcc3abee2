"""What a volunteer does with a visit from the link: confirm it, or hand it back.

A hand-back is reassigned at once to another volunteer who can do visits, chosen as the overdue
sweep chooses (:class:`~schedules.visit_plans.VolunteerPool`: the elder's community, then street,
then district, least loaded first, within the fair cap if anyone fits), never to someone who
handed this visit back before; the new volunteer is told by SMS with their own link. With nobody
left it is escalated to the supervisor's list (:func:`schedules.overdue.escalated_visits`). A
visit whose window has already closed is late: it is marked handed back and the overdue sweep
reassigns it once or escalates it, as for any late visit.

Each action locks the visit row first (``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE``
serialises writers), so a confirmation racing a hand-back, or two hand-backs, change it once.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from callcenter.models import Elder
from schedules.models import Visit, VisitStatus
from schedules.overdue import _next_planned_date  # the sweep's rule for a new planned date
from schedules.settings import ScheduleSettings, get_schedule_settings
from schedules.visit_plans import Month, VolunteerPool, local_date, street_of_communities
from volunteers import sms_texts
from volunteers.models import Volunteer
from volunteers.sms import queue_sms
from volunteers.visit_links import visit_code, visit_link

log = structlog.get_logger(__name__)

CONFIRMABLE = (VisitStatus.PLANNED, VisitStatus.OVERDUE)
HANDBACKABLE = (VisitStatus.PLANNED, VisitStatus.CONFIRMED, VisitStatus.OVERDUE)


class VisitActionError(ValueError):
    """The visit cannot take this action now; ``reason`` says why (for the page)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # "not_yours" or "wrong_status"


class HandBackOutcome(enum.StrEnum):
    REASSIGNED = "reassigned"
    ESCALATED = "escalated"  # nobody else can take it: the supervisor's list
    LATE = "late"  # window closed: the overdue sweep reassigns or escalates it


@dataclass(frozen=True, slots=True)
class HandBack:
    visit_id: int
    outcome: HandBackOutcome
    new_volunteer_id: int | None


def lock_visit(session: Session, visit_id: int) -> Visit | None:
    """The visit, read afresh and locked for the rest of the caller's transaction."""
    return session.scalar(
        select(Visit)
        .where(Visit.id == visit_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def _mine(session: Session, visit_id: int, volunteer_id: int) -> Visit:
    visit = lock_visit(session, visit_id)
    if visit is None or visit.volunteer_id != volunteer_id:
        raise VisitActionError("not_yours", "this visit is not (or no longer) yours")
    return visit


def confirm_visit(session: Session, visit_id: int, volunteer_id: int) -> bool:
    """Confirm the visit; False if it already was. Raises :class:`VisitActionError`."""
    visit = _mine(session, visit_id, volunteer_id)
    if visit.status is VisitStatus.CONFIRMED:
        return False
    if visit.status not in CONFIRMABLE:
        raise VisitActionError("wrong_status", f"visit is {visit.status.value}")
    visit.status = VisitStatus.CONFIRMED
    session.flush()
    log.info("visit.confirmed", visit_id=visit.id, volunteer_id=volunteer_id)
    return True


def hand_back_visit(
    session: Session,
    visit_id: int,
    volunteer_id: int,
    *,
    now: dt.datetime,
    settings: ScheduleSettings | None = None,
) -> HandBack:
    """The volunteer cannot make the visit: give it to someone else, or escalate it."""
    settings = settings or get_schedule_settings()
    visit = _mine(session, visit_id, volunteer_id)
    if visit.status not in HANDBACKABLE:
        raise VisitActionError("wrong_status", f"visit is {visit.status.value}")
    # A new list: the JSON column notices assignment, not in-place appends.
    visit.handed_back_by = sorted({*visit.handed_back_by, volunteer_id})
    today = local_date(now)
    if visit.window_end < today:
        # The volunteer stays named, so that the sweep chooses someone else.
        visit.status = VisitStatus.HANDED_BACK
        session.flush()
        log.info("visit.handed_back", visit_id=visit.id, volunteer_id=volunteer_id, late=True)
        return HandBack(visit.id, HandBackOutcome.LATE, None)
    elder = session.get_one(Elder, visit.elder_id)
    pool = VolunteerPool.for_month(
        session, Month.of(today), street_of_communities(session), settings=settings
    )
    chosen: int | None = None
    for respect_cap in (True, False):  # fairness if possible; a visit made matters more
        chosen, _ = pool.choose(
            community=elder.community,
            street=elder.street,
            exclude=set(visit.handed_back_by),
            respect_cap=respect_cap,
        )
        if chosen is not None:
            break
    if chosen is None:
        visit.status = VisitStatus.ESCALATED
        visit.volunteer_id = None
        session.flush()
        log.warning("visit.escalated", visit_id=visit.id, elder_id=visit.elder_id,
                    handed_back_by=volunteer_id, reason="nobody else can visit")  # fmt: skip
        return HandBack(visit.id, HandBackOutcome.ESCALATED, None)
    visit.volunteer_id = chosen
    if visit.status is not VisitStatus.OVERDUE:  # a late visit stays marked late
        visit.status = VisitStatus.PLANNED
    visit.planned_date = max(visit.planned_date, _next_planned_date(today, visit.window_end))
    session.flush()
    _tell_new_volunteer(session, visit, elder.community)
    log.info("visit.handed_back", visit_id=visit.id, volunteer_id=volunteer_id, new=chosen)
    return HandBack(visit.id, HandBackOutcome.REASSIGNED, chosen)


def _tell_new_volunteer(session: Session, visit: Visit, community: str) -> None:
    assert visit.volunteer_id is not None
    volunteer = session.get_one(Volunteer, visit.volunteer_id)
    text = sms_texts.visit_assigned_text(
        when=sms_texts.day_text(visit.planned_date),
        community=community,
        link=visit_link(visit.id, volunteer.id),
        code=visit_code(visit.id),
    )
    key = f"visit_assigned:{visit.id}:{volunteer.id}:{visit.planned_date:%Y%m%d}"
    queue_sms(session, to=volunteer.phone, body=text, key=key)
