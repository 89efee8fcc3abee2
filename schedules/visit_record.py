"""Recording a home visit: seen in person or not, a short checklist, notes.

A "needs" finding opens a service case (kind ``visit_finding``) for an operator to dispatch; a
worrying one (health, mood, safety) also flags the elder's case as urgent. The checklist follows
the Chinese practice in docs/DOMAIN.md: health, mood, food, water/power/gas safety, terminal
tested and worn, needs.

"Terminal tested" seen in person counts as the terminal's periodic test (issue 6): the elder's
terminals are marked as heard from at the time of the visit (:func:`devices.registry.touch`), so
the watchdog's clock restarts and an open "terminal silent" case closes itself. A press that
reached the centre during the visit already did so through intake; this covers the volunteer's
word for it too. A terminal already heard from later is left as it is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from callcenter.cases import add_event, open_case
from callcenter.db import utcnow
from callcenter.models import Case, CaseKind
from devices.models import Terminal, TerminalStatus
from devices.registry import touch
from schedules.models import Visit, VisitStatus

CHECKLIST_ITEMS = ("health", "mood", "food", "utilities_safe", "terminal_tested", "terminal_worn")
WORRYING = frozenset({"health", "mood", "utilities_safe"})
RECORDABLE = (
    VisitStatus.PLANNED,
    VisitStatus.CONFIRMED,
    VisitStatus.OVERDUE,
    VisitStatus.ESCALATED,
)


class VisitRecordError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class VisitFinding:
    visit_id: int
    case: Case | None  # opened for a need or a worry, else None
    worrying: list[str]
    terminals_tested: tuple[int, ...] = ()  # terminal ids whose periodic test this visit was


def record_visit(
    session: Session,
    visit_id: int,
    *,
    seen_in_person: bool,
    checklist: dict[str, bool],
    needs: str = "",
    notes: str = "",
    at: dt.datetime | None = None,
) -> VisitFinding:
    """Record the visit; ``checklist`` maps each item to True (fine) or False (a problem)."""
    at = at or utcnow()
    visit = session.get(Visit, visit_id)
    if visit is None:
        raise VisitRecordError("no such visit / 无此探访")
    if visit.status not in RECORDABLE:
        raise VisitRecordError(f"visit is {visit.status.value}; it cannot be recorded again")
    unknown = set(checklist) - set(CHECKLIST_ITEMS)
    if unknown:
        raise VisitRecordError(f"unknown checklist items {sorted(unknown)}")
    visit.status = VisitStatus.DONE
    visit.recorded_at = at
    visit.seen_in_person = seen_in_person
    visit.checklist = {**checklist, "needs": needs.strip()[:500]}
    visit.notes = notes.strip()[:2000]
    worrying = sorted(k for k, fine in checklist.items() if not fine and k in WORRYING)
    case = None
    if needs.strip() or worrying or not seen_in_person:
        summary = "；".join(
            part
            for part in (
                f"探访发现需求 need: {needs.strip()[:300]}" if needs.strip() else "",
                f"需关注 worrying: {', '.join(worrying)}" if worrying else "",
                "未见到老人本人 elder not seen in person" if not seen_in_person else "",
            )
            if part
        )
        case = open_case(
            session,
            kind=CaseKind.VISIT_FINDING,
            # A worry or an elder not seen goes to an operator before routine needs.
            priority=2 if (worrying or not seen_in_person) else 3,
            actor=f"volunteer:{visit.volunteer_id}" if visit.volunteer_id else "system",
            elder_id=visit.elder_id,
            summary=summary,
            at=at,
        )
        add_event(session, case, "from_visit", actor="system", at=at,
                  detail={"visit_id": visit.id, "worrying": worrying})  # fmt: skip
    tested: tuple[int, ...] = ()
    if seen_in_person and checklist.get("terminal_tested") is True:
        tested = _count_as_periodic_test(session, visit.elder_id, at)
    session.flush()
    return VisitFinding(visit.id, case, worrying, tested)


def _count_as_periodic_test(session: Session, elder_id: int, at: dt.datetime) -> tuple[int, ...]:
    terminal_ids = tuple(
        session.scalars(
            select(Terminal.id).where(
                Terminal.elder_id == elder_id,
                Terminal.status != TerminalStatus.RETIRED,
                or_(Terminal.last_seen_at.is_(None), Terminal.last_seen_at < at),
            )
        )
    )
    for terminal_id in terminal_ids:
        touch(session, terminal_id, at)
    return terminal_ids
