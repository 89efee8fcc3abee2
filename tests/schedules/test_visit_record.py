"""A recorded visit: a need opens a case for an operator; a clean visit opens none."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from callcenter.models import CaseKind, CaseState
from schedules.models import Visit, VisitKind, VisitStatus
from schedules.visit_record import VisitRecordError, record_visit
from tests.factories import make_elder

ALL_FINE = {"health": True, "mood": True, "food": True, "utilities_safe": True,
            "terminal_tested": True, "terminal_worn": True}  # fmt: skip


def visit(session: Session) -> Visit:
    row = Visit(elder_id=make_elder(session).id, kind=VisitKind.MONTHLY, period="2026-12",
                planned_date=dt.date(2026, 12, 3), window_end=dt.date(2026, 12, 31))  # fmt: skip
    session.add(row)
    session.flush()
    return row


def test_clean_visit_opens_no_case(session: Session) -> None:
    finding = record_visit(session, visit(session).id, seen_in_person=True, checklist=ALL_FINE)
    assert finding.case is None
    assert session.get(Visit, finding.visit_id).status is VisitStatus.DONE  # type: ignore[union-attr]


def test_a_need_and_a_worry_open_a_case(session: Session) -> None:
    finding = record_visit(session, visit(session).id, seen_in_person=True,
                           checklist={**ALL_FINE, "utilities_safe": False},
                           needs="厨房燃气软管老化需更换")  # fmt: skip
    assert finding.case is not None and finding.case.kind is CaseKind.VISIT_FINDING
    assert finding.case.state is CaseState.DISPATCH and finding.case.priority == 2
    assert "燃气软管" in finding.case.summary and finding.worrying == ["utilities_safe"]


def test_recorded_twice_is_refused(session: Session) -> None:
    row = visit(session)
    record_visit(session, row.id, seen_in_person=True, checklist=ALL_FINE)
    with pytest.raises(VisitRecordError):
        record_visit(session, row.id, seen_in_person=True, checklist=ALL_FINE)
    with pytest.raises(VisitRecordError, match="unknown checklist"):
        record_visit(session, visit(session).id, seen_in_person=True, checklist={"wifi": True})
