"""What a volunteer does with an accepted task: arrive, then report back (处置 → 反馈)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from callcenter.cases import add_event, open_case, transition
from callcenter.db import utcnow
from callcenter.models import Case, CaseKind, CaseState
from volunteers.models import Offer, OfferStatus, Volunteer

MAX_MINUTES = 12 * 60


class TaskError(ValueError):
    pass


def _accepted(session: Session, offer_id: int) -> tuple[Offer, Case]:
    offer = session.get(Offer, offer_id)
    if offer is None or offer.status is not OfferStatus.ACCEPTED:
        raise TaskError("this task is not yours (any more) / 该任务不属于您")
    case = session.get(Case, offer.case_id)
    assert case is not None
    return offer, case


def mark_arrived(session: Session, offer_id: int, *, at: dt.datetime | None = None) -> Case:
    offer, case = _accepted(session, offer_id)
    if case.state is not CaseState.HANDLE:
        raise TaskError(f"case {case.code} is {case.state.value}")
    add_event(session, case, "volunteer_arrived", actor=f"volunteer:{offer.volunteer_id}", at=at)
    return case


def submit_feedback(
    session: Session,
    offer_id: int,
    *,
    what_was_done: str,
    minutes: int,
    worrying: str = "",
    at: dt.datetime | None = None,
) -> Case:
    """反馈: the volunteer reports; hours accumulate; a worrying note opens a follow-up case."""
    at = at or utcnow()
    if not what_was_done.strip():
        raise TaskError("please say what was done / 请填写服务内容")
    if not 1 <= minutes <= MAX_MINUTES:
        raise TaskError(f"time spent must be 1–{MAX_MINUTES} minutes")
    offer, case = _accepted(session, offer_id)
    actor = f"volunteer:{offer.volunteer_id}"
    transition(
        session,
        case,
        CaseState.FEEDBACK,
        actor=actor,
        at=at,
        detail={
            "what_was_done": what_was_done.strip()[:1000],
            "minutes": minutes,
            "worrying": worrying.strip()[:1000],
        },
    )
    offer.status = OfferStatus.COMPLETED
    volunteer = session.get(Volunteer, offer.volunteer_id)
    if volunteer is not None:
        volunteer.hours_served = round(volunteer.hours_served + minutes / 60, 2)
    if worrying.strip():
        follow_up = open_case(
            session,
            kind=CaseKind.CONSULT,
            priority=2,
            actor=actor,
            elder_id=case.elder_id,
            summary=f"志愿者反馈的担忧 volunteer's concern ({case.code}): {worrying.strip()[:300]}",
            at=at,
        )
        follow_up.parent_id = case.id
        add_event(
            session,
            case,
            "follow_up_opened",
            actor=actor,
            at=at,
            detail={"case_id": follow_up.id, "code": follow_up.code},
        )
    return case
