"""Offers to volunteers in waves, and the race to accept: first to accept wins.

- A service case is offered to the top K matched volunteers at once (K=3, as GoodSAM does).
- If nobody accepts within the category's window, the next wave goes out; after the category's
  last wave, the case is escalated to the operator queue.
- The winner is decided by one conditional UPDATE of the case row
  (``… WHERE assigned_volunteer_id IS NULL AND state = 'dispatch'``); its row count tells the
  loser. PostgreSQL locks the row, so the second UPDATE re-reads it after the first commits;
  SQLite runs one writer at a time. The same code is right on both.
- When one accepts, every other pending offer is stood down at once, with an SMS.
- A volunteer can decline, or drop out after accepting: the case goes back to matching.
- Every timer is a row (``offers.expires_at``): a restart resumes where it was.

The functions do not commit: the caller's unit of work does (the web request, the job run), so
that the decision, its events and its SMS rows are written together or not at all.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal, cast

import structlog
from sqlalchemy import CursorResult, Result, select, update
from sqlalchemy.orm import Session

from callcenter.cases import add_event, transition
from callcenter.db import utcnow
from callcenter.models import Case, CaseState, Elder
from volunteers import sms, sms_texts
from volunteers.catalog import get_catalog
from volunteers.links import link_url
from volunteers.matching import match_volunteers
from volunteers.models import Offer, OfferStatus, Volunteer

log = structlog.get_logger(__name__)

WAVE_SIZE = 3


class DispatchError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class WaveResult:
    case_id: int
    wave: int
    offered: list[int]  # volunteer ids
    escalated: bool


AcceptOutcome = Literal["accepted", "taken", "not_pending"]


def _rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE changed: the answer to "did I win?"."""
    return cast(CursorResult[Any], result).rowcount


def _offers(session: Session, case_id: int) -> list[Offer]:
    return list(session.scalars(select(Offer).where(Offer.case_id == case_id).order_by(Offer.id)))


def send_wave(
    session: Session, case: Case, *, actor: str, at: dt.datetime | None = None
) -> WaveResult:
    """Offer ``case`` to the next best volunteers not yet asked; escalate when none are left."""
    at = at or utcnow()
    if case.state is not CaseState.DISPATCH:
        raise DispatchError(f"case {case.code} is {case.state.value}, not waiting for dispatch")
    if not case.item_code or case.elder_id is None:
        raise DispatchError(f"case {case.code} needs a service item and an elder to dispatch")
    catalog = get_catalog()
    item = catalog.item(case.item_code)
    category = catalog.category(item.category_code)
    if category.operator_first and not actor.startswith("operator:"):
        # Life safety: an operator first, never volunteers alone (they may still send them).
        raise DispatchError(f"{category.code} cases are dispatched by an operator only")
    previous = _offers(session, case.id)
    wave = max((o.wave for o in previous), default=0) + 1
    if wave > category.max_waves:
        _escalate(session, case, actor="system", reason="no_volunteer_after_waves", at=at)
        return WaveResult(case.id, wave - 1, [], escalated=True)
    candidates = match_volunteers(
        session,
        item_code=item.code,
        elder_id=case.elder_id,
        at=at,
        limit=WAVE_SIZE,
        exclude_volunteer_ids=[o.volunteer_id for o in previous],
    )
    if not candidates:
        _escalate(session, case, actor="system", reason="no_candidates", at=at)
        return WaveResult(case.id, wave, [], escalated=True)
    expires = at + dt.timedelta(seconds=category.offer_window_seconds)
    elder = session.get(Elder, case.elder_id)
    community = elder.community if elder else ""
    offered = []
    for candidate in candidates:
        offer = Offer(
            case_id=case.id,
            volunteer_id=candidate.volunteer_id,
            wave=wave,
            score=candidate.score,
            sent_at=at,
            expires_at=expires,
        )
        session.add(offer)
        session.flush()
        volunteer = session.get(Volunteer, candidate.volunteer_id)
        assert volunteer is not None
        sms.queue_sms(
            session,
            to=volunteer.phone,
            body=sms_texts.offer_text(
                case.code,
                item=item.name_zh,
                community=community,
                link=link_url("offer", offer.id, case.id),
            ),
            key=f"offer:{offer.id}",
            case_id=case.id,
        )
        offered.append(candidate.volunteer_id)
    add_event(
        session,
        case,
        "offers_sent",
        actor=actor,
        at=at,
        detail={
            "wave": wave,
            "volunteers": offered,
            "scores": [round(c.score, 3) for c in candidates],
            "expires_at": expires.isoformat(),
        },
    )
    log.info("dispatch.wave_sent", case=case.code, wave=wave, volunteers=len(offered))
    return WaveResult(case.id, wave, offered, escalated=False)


def accept_offer(
    session: Session, offer_id: int, *, at: dt.datetime | None = None
) -> AcceptOutcome:
    """The volunteer behind ``offer_id`` says yes. Exactly one acceptance per case wins."""
    at = at or utcnow()
    offer = session.get(Offer, offer_id)
    if offer is None or offer.status is not OfferStatus.PENDING:
        return "not_pending"
    # The race is decided here, by the database, in one statement.
    won = _rowcount(
        session.execute(
            update(Case)
            .where(
                Case.id == offer.case_id,
                Case.assigned_volunteer_id.is_(None),
                Case.state == CaseState.DISPATCH,
            )
            .values(assigned_volunteer_id=offer.volunteer_id)
            .execution_options(synchronize_session=False)
        )
    )
    case = session.get(Case, offer.case_id)
    assert case is not None
    session.refresh(case)
    if won != 1:
        offer.status = OfferStatus.STOOD_DOWN
        offer.responded_at = at
        add_event(
            session,
            case,
            "offer_accept_too_late",
            actor=f"volunteer:{offer.volunteer_id}",
            at=at,
            detail={"offer_id": offer.id},
        )
        return "taken"
    offer.status = OfferStatus.ACCEPTED
    offer.responded_at = at
    transition(
        session,
        case,
        CaseState.HANDLE,
        actor=f"volunteer:{offer.volunteer_id}",
        at=at,
        detail={"offer_id": offer.id},
    )
    _stand_down_others(session, case, winner=offer, at=at)
    log.info("dispatch.offer_accepted", case=case.code, volunteer_id=offer.volunteer_id)
    return "accepted"


def _stand_down_others(session: Session, case: Case, *, winner: Offer, at: dt.datetime) -> None:
    for other in _offers(session, case.id):
        if other.id == winner.id or other.status is not OfferStatus.PENDING:
            continue
        other.status = OfferStatus.STOOD_DOWN
        other.responded_at = at
        volunteer = session.get(Volunteer, other.volunteer_id)
        if volunteer is not None:
            sms.queue_sms(
                session,
                to=volunteer.phone,
                body=sms_texts.stood_down_text(case.code),
                key=f"stood_down:{other.id}",
                case_id=case.id,
            )
    add_event(
        session,
        case,
        "others_stood_down",
        actor="system",
        at=at,
        detail={"winner_offer_id": winner.id},
    )


def decline_offer(session: Session, offer_id: int, *, at: dt.datetime | None = None) -> bool:
    at = at or utcnow()
    changed = _rowcount(
        session.execute(
            update(Offer)
            .where(Offer.id == offer_id, Offer.status == OfferStatus.PENDING)
            .values(status=OfferStatus.DECLINED, responded_at=at)
            .execution_options(synchronize_session=False)
        )
    )
    if changed != 1:
        return False
    offer = session.get(Offer, offer_id)
    assert offer is not None
    session.refresh(offer)
    case = session.get(Case, offer.case_id)
    assert case is not None
    add_event(
        session,
        case,
        "offer_declined",
        actor=f"volunteer:{offer.volunteer_id}",
        at=at,
        detail={"offer_id": offer.id},
    )
    # Everyone in this wave said no: no need to wait for the window to pass.
    if case.state is CaseState.DISPATCH and not any(
        o.status is OfferStatus.PENDING for o in _offers(session, case.id)
    ):
        send_wave(session, case, actor="system", at=at)
    return True


def drop_out(
    session: Session, offer_id: int, *, at: dt.datetime | None = None, reason: str = ""
) -> bool:
    """An accepted volunteer cannot go after all: the case goes back to matching."""
    at = at or utcnow()
    offer = session.get(Offer, offer_id)
    if offer is None or offer.status is not OfferStatus.ACCEPTED:
        return False
    case = session.get(Case, offer.case_id)
    assert case is not None
    if case.state is not CaseState.HANDLE or case.assigned_volunteer_id != offer.volunteer_id:
        return False
    offer.status = OfferStatus.DROPPED
    offer.responded_at = at
    case.assigned_volunteer_id = None
    transition(
        session,
        case,
        CaseState.DISPATCH,
        actor=f"volunteer:{offer.volunteer_id}",
        at=at,
        detail={"offer_id": offer.id, "reason": reason[:200]},
    )
    session.flush()
    send_wave(session, case, actor="system", at=at)
    return True


def expire_and_advance(session: Session, *, now: dt.datetime | None = None) -> int:
    """Timer job: expire overdue offers; send the next wave or escalate. Returns cases moved.

    Runs from the scheduler every few seconds; all state is in the offers table, so a restart
    (or a second run) picks up exactly where it was.
    """
    now = now or utcnow()
    due_case_ids = set(
        session.scalars(
            select(Offer.case_id)
            .join(Case, Case.id == Offer.case_id)
            .where(
                Offer.status == OfferStatus.PENDING,
                Offer.expires_at <= now,
                Case.state == CaseState.DISPATCH,
            )
        )
    )
    moved = 0
    for case_id in sorted(due_case_ids):
        case = session.get(Case, case_id)
        if case is None:
            continue
        session.execute(
            update(Offer)
            .where(
                Offer.case_id == case_id,
                Offer.status == OfferStatus.PENDING,
                Offer.expires_at <= now,
            )
            .values(status=OfferStatus.EXPIRED)
            .execution_options(synchronize_session=False)
        )
        if not any(o.status is OfferStatus.PENDING for o in _offers(session, case_id)):
            send_wave(session, case, actor="system", at=now)
            moved += 1
        session.commit()
    return moved


def _escalate(session: Session, case: Case, *, actor: str, reason: str, at: dt.datetime) -> None:
    transition(session, case, CaseState.ESCALATED, actor=actor, at=at, detail={"reason": reason})
    log.warning("dispatch.escalated", case=case.code, reason=reason)
