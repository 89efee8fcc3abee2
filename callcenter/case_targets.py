"""When an open case should be finished by: the one table behind the supervisor's "open cases past
their target".

A case whose catalogue item is known has its own due time (``Case.due_at``: opened + the item's
``response_minutes`` from ``volunteers/catalog.toml``). Every other case (an SOS before the
operator has spoken to the elder, a consultation, a silent terminal, a visit finding) gets the
target of its kind below, tightened by its priority: a service case raised to priority 1 by a
repeat SOS press is held to the life-safety target. These are the centre's defaults; a site
changes them here.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, and_, or_

from callcenter.models import Case, CaseKind

HOUR = dt.timedelta(hours=1)

TARGET_BY_KIND: dict[CaseKind, dt.timedelta] = {
    # An emergency is settled (elder safe, family or 120 reached) within the hour or a
    # supervisor looks at it.
    CaseKind.LIFE_SAFETY: 1 * HOUR,
    # Until the operator picks the item (which sets the case's own due time).
    CaseKind.SERVICE: 24 * HOUR,
    CaseKind.CONSULT: 24 * HOUR,
    # A technician's visit to a faulty or silent terminal.
    CaseKind.TECHNICAL: 48 * HOUR,
    CaseKind.VISIT_FINDING: 72 * HOUR,
}

# A case at this priority or more urgent (lower number) is held to at most this target.
TARGET_BY_PRIORITY: dict[int, dt.timedelta] = {1: 1 * HOUR, 2: 4 * HOUR}


def target_delta(kind: CaseKind, priority: int) -> dt.timedelta:
    """How long a case of ``kind`` at ``priority`` may stay open without its own due time."""
    caps = [limit for rank, limit in TARGET_BY_PRIORITY.items() if priority <= rank]
    return min([TARGET_BY_KIND[kind], *caps])


def target_at(case: Case) -> dt.datetime:
    """The moment ``case`` should be finished by."""
    if case.due_at is not None:
        return case.due_at
    return case.opened_at + target_delta(case.kind, case.priority)


def past_target(now: dt.datetime) -> ColumnElement[bool]:
    """SQL: the case is past its target at ``now`` (open or not: the caller says which).

    One bound threshold per kind and per priority cap, as the watchdog does: no date arithmetic
    in SQL, the same statement on SQLite and PostgreSQL."""
    by_kind = [
        and_(Case.kind == kind, Case.opened_at < now - limit)
        for kind, limit in TARGET_BY_KIND.items()
    ]
    by_priority = [
        and_(Case.priority <= rank, Case.opened_at < now - limit)
        for rank, limit in TARGET_BY_PRIORITY.items()
    ]
    return or_(
        and_(Case.due_at.is_not(None), Case.due_at < now),
        and_(Case.due_at.is_(None), or_(*by_kind, *by_priority)),
    )
