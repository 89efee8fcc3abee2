"""Alarms as they arrived: ``GET /api/alarms``, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.orm import aliased

from callcenter.models import Alarm, AlarmKind, AlarmStatus, Case, Elder, Role
from callcenter.web.auth import require
from callcenter.web.deps import SessionDep
from callcenter.web.ids import MAX_ROW_ID
from callcenter.web.schemas import AlarmOut, CaseRef, ElderRef, TerminalRef
from devices.models import Terminal

router = APIRouter(prefix="/api/alarms", tags=["alarms"], dependencies=[require(Role.OPERATOR)])


@router.get("", response_model=list[AlarmOut])
def list_alarms(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    kind: AlarmKind | None = None,
    status: AlarmStatus | None = None,
    before_id: Annotated[
        int | None, Query(ge=1, le=MAX_ROW_ID, description="page: alarms older than this")
    ] = None,
) -> list[AlarmOut]:
    """Alarms with their elder, terminal and case, newest first."""
    case = aliased(Case)
    query = (
        select(Alarm, Elder, Terminal, case)
        .outerjoin(Elder, Elder.id == Alarm.elder_id)
        .outerjoin(Terminal, Terminal.id == Alarm.terminal_id)
        .outerjoin(case, case.id == Alarm.case_id)
        .order_by(Alarm.id.desc())
        .limit(limit)
    )
    if kind is not None:
        query = query.where(Alarm.kind == kind)
    if status is not None:
        query = query.where(Alarm.status == status)
    if before_id is not None:
        query = query.where(Alarm.id < before_id)
    return [_out(*row) for row in session.execute(query)]


def _out(
    alarm: Alarm, elder: Elder | None, terminal: Terminal | None, case: Case | None
) -> AlarmOut:
    elder_ref = (
        ElderRef(id=elder.id, name=elder.name, street=elder.street, community=elder.community)
        if elder
        else None
    )
    terminal_ref = (
        TerminalRef(id=terminal.id, serial=terminal.serial, model=terminal.model)
        if terminal
        else None
    )
    return AlarmOut(
        id=alarm.id,
        received_at=alarm.received_at,
        kind=alarm.kind.value,
        priority=alarm.priority,
        source=alarm.source.value,
        status=alarm.status.value,
        caller=alarm.caller,
        event_code=alarm.event_code,
        acknowledged_at=alarm.acknowledged_at,
        elder=elder_ref,
        terminal=terminal_ref,
        case=CaseRef(id=case.id, code=case.code, state=case.state.value) if case else None,
    )
