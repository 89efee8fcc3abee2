"""Cases for operators: list, open, see candidates with their scores, dispatch, close, cancel."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import select

from callcenter.cases import (
    TransitionError,
    add_event,
    cancel_case,
    close_case,
    open_case,
    transition,
)
from callcenter.models import Alarm, Case, CaseEvent, CaseKind, CaseState, Elder, Operator, Role
from callcenter.web.auth import require
from callcenter.web.case_schemas import (
    CancelIn,
    CandidateOut,
    CaseDetailOut,
    CaseEventOut,
    CaseIn,
    CaseItemIn,
    CaseOut,
    CloseIn,
    OfferOut,
    WaveOut,
)
from callcenter.web.deps import SessionDep
from callcenter.web.ids import RowId
from volunteers.catalog import PRIORITY_RANK, get_catalog
from volunteers.matching import match_volunteers
from volunteers.models import Offer, Volunteer
from volunteers.offers import DispatchError, send_wave

router = APIRouter(prefix="/api/cases", tags=["cases"])
OperatorDep = Annotated[Operator, require(Role.OPERATOR)]


def _case_or_404(session: SessionDep, case_id: int) -> Case:
    case = session.get(Case, case_id)
    if case is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such case / 无此工单")
    return case


def _out(case: Case, elder_name: str | None) -> CaseOut:
    return CaseOut(
        id=case.id,
        code=case.code,
        kind=case.kind.value,
        state=case.state.value,
        priority=case.priority,
        elder_id=case.elder_id,
        elder_name=elder_name,
        category_code=case.category_code,
        item_code=case.item_code,
        summary=case.summary,
        opened_at=case.opened_at,
        opened_by=case.opened_by,
        due_at=case.due_at,
        closed_at=case.closed_at,
        assigned_volunteer_id=case.assigned_volunteer_id,
    )


@router.get("", response_model=list[CaseOut])
def list_cases(
    session: SessionDep,
    _user: OperatorDep,
    state: CaseState | None = None,
    kind: CaseKind | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[CaseOut]:
    """Cases, most urgent first, then oldest first."""
    query = (
        select(Case, Elder.name)
        .outerjoin(Elder, Elder.id == Case.elder_id)
        .order_by(Case.priority, Case.opened_at)
        .limit(limit)
    )
    if state is not None:
        query = query.where(Case.state == state)
    if kind is not None:
        query = query.where(Case.kind == kind)
    return [_out(case, name) for case, name in session.execute(query)]


@router.get("/{case_id}", response_model=CaseDetailOut)
def get_case(case_id: RowId, session: SessionDep, _user: OperatorDep) -> CaseDetailOut:
    """One case with its whole audit trail and every offer made."""
    case = _case_or_404(session, case_id)
    elder = session.get(Elder, case.elder_id) if case.elder_id else None
    events = session.scalars(
        select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)
    )
    offers = session.execute(
        select(Offer, Volunteer.name)
        .join(Volunteer, Volunteer.id == Offer.volunteer_id)
        .where(Offer.case_id == case.id)
        .order_by(Offer.id)
    )
    return CaseDetailOut(
        **_out(case, elder.name if elder else None).model_dump(),
        events=[
            CaseEventOut(
                at=e.at,
                actor=e.actor,
                event=e.event,
                from_state=e.from_state,
                to_state=e.to_state,
                detail=e.detail,
            )
            for e in events
        ],
        offers=[
            OfferOut(
                id=o.id,
                volunteer_id=o.volunteer_id,
                volunteer_name=name,
                wave=o.wave,
                status=o.status.value,
                score=o.score,
                sent_at=o.sent_at,
                expires_at=o.expires_at,
                responded_at=o.responded_at,
            )
            for o, name in offers
        ],
    )


@router.post("", response_model=CaseOut, status_code=201)
def create_case(body: CaseIn, session: SessionDep, user: OperatorDep) -> CaseOut:
    """Open a service case for an elder with an item from the catalogue."""
    catalog = get_catalog()
    try:
        item = catalog.item(body.item_code)
    except KeyError:
        raise HTTPException(422, f"unknown service item {body.item_code!r}") from None
    elder = session.get(Elder, body.elder_id)
    if elder is None:
        raise HTTPException(422, "no such elder / 无此老人")
    now = dt.datetime.now(dt.UTC)
    actor = f"operator:{user.id}"
    kind = CaseKind.LIFE_SAFETY if item.priority == "life_safety" else CaseKind.SERVICE
    case = open_case(
        session,
        kind=kind,
        priority=PRIORITY_RANK[item.priority],
        actor=actor,
        elder_id=elder.id,
        category_code=item.category_code,
        item_code=item.code,
        summary=body.summary,
        due_at=now + dt.timedelta(minutes=item.response_minutes),
        at=now,
    )
    if body.alarm_id is not None:
        alarm = session.get(Alarm, body.alarm_id)
        if alarm is None:
            raise HTTPException(422, "no such alarm")
        add_event(session, case, "from_alarm", actor=actor, detail={"alarm_id": alarm.id})
    return _out(case, elder.name)


@router.patch("/{case_id}", response_model=CaseOut)
def set_item(case_id: RowId, body: CaseItemIn, session: SessionDep, user: OperatorDep) -> CaseOut:
    """Say what the elder needs (after talking to them): the catalogue item sets the category,
    priority and target time of the case."""
    case = _case_or_404(session, case_id)
    if case.state not in (CaseState.DISPATCH, CaseState.ESCALATED):
        raise HTTPException(409, f"case {case.code} is already {case.state.value}")
    try:
        item = get_catalog().item(body.item_code)
    except KeyError:
        raise HTTPException(422, f"unknown service item {body.item_code!r}") from None
    case.category_code, case.item_code = item.category_code, item.code
    case.priority = min(case.priority, PRIORITY_RANK[item.priority])
    case.due_at = case.opened_at + dt.timedelta(minutes=item.response_minutes)
    if body.summary is not None:
        case.summary = body.summary
    add_event(
        session,
        case,
        "item_set",
        actor=f"operator:{user.id}",
        detail={"item_code": item.code, "summary": case.summary[:200]},
    )
    return _out(case, None)


@router.get("/{case_id}/candidates", response_model=list[CandidateOut])
def candidates(
    case_id: RowId, session: SessionDep, _user: OperatorDep,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> list[CandidateOut]:  # fmt: skip
    """Ranked volunteers for the case, each with the parts of its score (why this one)."""
    case = _case_or_404(session, case_id)
    if not case.item_code or case.elder_id is None:
        raise HTTPException(409, "the case has no service item yet / 工单尚未选择服务项目")
    found = match_volunteers(session, item_code=case.item_code, elder_id=case.elder_id, limit=limit)
    return [
        CandidateOut(
            volunteer_id=c.volunteer_id,
            name=c.name,
            distance_m=c.distance_m,
            skill_level=c.skill_level,
            score=c.score,
            reasons=c.reasons,
            explain_zh=c.explain_zh(),
            explain_en=c.explain_en(),
        )
        for c in found
    ]


@router.post("/{case_id}/dispatch", response_model=WaveOut)
def dispatch(case_id: RowId, session: SessionDep, user: OperatorDep) -> WaveOut:
    """Offer the case to the best volunteers now (one wave); later waves follow by timer."""
    case = _case_or_404(session, case_id)
    actor = f"operator:{user.id}"
    try:
        if case.state is CaseState.ESCALATED:  # the operator tries volunteers again
            transition(session, case, CaseState.DISPATCH, actor=actor)
        result = send_wave(session, case, actor=actor)
    except (DispatchError, TransitionError) as exc:
        raise HTTPException(409, str(exc)) from None
    return WaveOut(
        wave=result.wave, offered_volunteer_ids=result.offered, escalated=result.escalated
    )


@router.post("/{case_id}/close", response_model=CaseOut)
def close(case_id: RowId, body: CloseIn, session: SessionDep, user: OperatorDep) -> CaseOut:
    """办结 after the feedback, once the elder's satisfaction was confirmed."""
    case = _case_or_404(session, case_id)
    try:
        close_case(
            session, case, actor=f"operator:{user.id}", satisfied=body.satisfied, note=body.note
        )
    except TransitionError as exc:
        raise HTTPException(409, str(exc)) from None
    return _out(case, None)


@router.post("/{case_id}/cancel", response_model=CaseOut)
def cancel(case_id: RowId, body: CancelIn, session: SessionDep, user: OperatorDep) -> CaseOut:
    """Cancel or mark a false alarm; the reason is required and kept."""
    case = _case_or_404(session, case_id)
    try:
        cancel_case(session, case, actor=f"operator:{user.id}", reason=body.reason)
    except TransitionError as exc:
        raise HTTPException(409, str(exc)) from None
    return _out(case, None)
