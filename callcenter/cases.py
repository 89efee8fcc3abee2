"""The case life cycle: 派遣 dispatch → 处置 handle → 反馈 feedback → 办结 close.

Explicit states, allowed transitions only, and an append-only event per step (the audit trail;
the grid-governance habit of 一图一账一日志 the seed article describes).
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from callcenter.db import utcnow
from callcenter.models import Case, CaseEvent, CaseKind, CaseState

OPEN_STATES = (CaseState.DISPATCH, CaseState.HANDLE, CaseState.FEEDBACK, CaseState.ESCALATED)

ALLOWED: dict[CaseState, frozenset[CaseState]] = {
    CaseState.DISPATCH: frozenset(
        {CaseState.HANDLE, CaseState.ESCALATED, CaseState.CANCELLED, CaseState.CLOSED}
    ),
    CaseState.HANDLE: frozenset(
        {CaseState.FEEDBACK, CaseState.DISPATCH, CaseState.ESCALATED, CaseState.CANCELLED}
    ),
    CaseState.FEEDBACK: frozenset({CaseState.CLOSED, CaseState.HANDLE, CaseState.ESCALATED}),
    CaseState.ESCALATED: frozenset(
        {CaseState.DISPATCH, CaseState.HANDLE, CaseState.CANCELLED, CaseState.CLOSED}
    ),
    CaseState.CLOSED: frozenset(),
    CaseState.CANCELLED: frozenset(),
}

# Case codes are read over the phone and typed into SMS replies: no 0/O, 1/I/L.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"


class TransitionError(ValueError):
    """A state change the life cycle does not allow."""


def new_case_code(session: Session) -> str:
    for _ in range(10):
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(5))
        if session.scalar(select(Case.id).where(Case.code == code)) is None:
            return code
    raise RuntimeError("could not find a free case code")  # 31^5 codes: practically unreachable


def add_event(
    session: Session,
    case: Case,
    event: str,
    *,
    actor: str,
    detail: dict[str, Any] | None = None,
    from_state: CaseState | None = None,
    to_state: CaseState | None = None,
    at: dt.datetime | None = None,
) -> CaseEvent:
    row = CaseEvent(
        case_id=case.id,
        at=at or utcnow(),
        actor=actor,
        event=event,
        from_state=from_state.value if from_state else None,
        to_state=to_state.value if to_state else None,
        detail=detail or {},
    )
    session.add(row)
    return row


def open_case(
    session: Session,
    *,
    kind: CaseKind,
    priority: int,
    actor: str,
    elder_id: int | None = None,
    terminal_id: int | None = None,
    category_code: str | None = None,
    item_code: str | None = None,
    summary: str = "",
    due_at: dt.datetime | None = None,
    at: dt.datetime | None = None,
) -> Case:
    at = at or utcnow()
    case = Case(
        code=new_case_code(session),
        kind=kind,
        state=CaseState.DISPATCH,
        priority=priority,
        elder_id=elder_id,
        terminal_id=terminal_id,
        category_code=category_code,
        item_code=item_code,
        summary=summary,
        opened_at=at,
        opened_by=actor,
        due_at=due_at,
        state_changed_at=at,
    )
    session.add(case)
    session.flush()
    add_event(
        session,
        case,
        "opened",
        actor=actor,
        to_state=CaseState.DISPATCH,
        at=at,
        detail={"kind": kind.value, "priority": priority, "summary": summary},
    )
    return case


def transition(
    session: Session,
    case: Case,
    to_state: CaseState,
    *,
    actor: str,
    detail: dict[str, Any] | None = None,
    at: dt.datetime | None = None,
) -> None:
    """Move ``case`` to ``to_state`` if the life cycle allows it, with its event."""
    if to_state not in ALLOWED[case.state]:
        raise TransitionError(
            f"case {case.code}: {case.state.value} → {to_state.value} not allowed"
        )
    at = at or utcnow()
    from_state = case.state
    case.state = to_state
    case.state_changed_at = at
    if to_state in (CaseState.CLOSED, CaseState.CANCELLED):
        case.closed_at = at
    add_event(
        session,
        case,
        "state_changed",
        actor=actor,
        detail=detail,
        from_state=from_state,
        to_state=to_state,
        at=at,
    )


def close_case(
    session: Session,
    case: Case,
    *,
    actor: str,
    satisfied: bool,
    note: str = "",
    at: dt.datetime | None = None,
) -> None:
    """办结: the operator confirmed with the elder (or their family) after the feedback."""
    add_event(
        session,
        case,
        "satisfaction_confirmed",
        actor=actor,
        at=at,
        detail={"satisfied": satisfied, "note": note[:500]},
    )
    transition(session, case, CaseState.CLOSED, actor=actor, at=at)


def cancel_case(
    session: Session, case: Case, *, actor: str, reason: str, at: dt.datetime | None = None
) -> None:
    """Cancel (or false alarm): never without a reason, which stays in the audit trail."""
    if not reason.strip():
        raise TransitionError("a cancellation needs a reason")
    transition(
        session,
        case,
        CaseState.CANCELLED,
        actor=actor,
        at=at,
        detail={"reason": reason.strip()[:500]},
    )
