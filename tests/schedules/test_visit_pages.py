"""The volunteer's visit page from the signed link: confirm, hand back (reassigned, or escalated
when nobody else can go), record (a need opens a case; the terminal test counts), and refusals
for expired, forged, foreign and repeated use. Real app, real database, time travel."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import time_machine
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from callcenter import db
from callcenter.models import Case, CaseKind, CaseState, OutboxMessage
from callcenter.web.app import create_app
from devices.models import Terminal, TerminalStatus
from schedules.models import Visit, VisitKind, VisitStatus
from schedules.overdue import escalated_visits
from schedules.settings import ScheduleSettings
from schedules.watchdog import sweep_silent_terminals
from tests.factories import make_elder, make_terminal
from tests.schedules.builders import SHANGHAI, make_volunteer
from volunteers.links import make_token
from volunteers.models import Volunteer
from volunteers.visit_links import visit_link

NOW = dt.datetime(2026, 12, 2, 19, 0, tzinfo=SHANGHAI)  # the evening before the visit
ALL_FINE = {"health": "ok", "mood": "ok", "food": "ok", "utilities_safe": "ok",
            "terminal_tested": "ok", "terminal_worn": "ok"}  # fmt: skip


@dataclass
class World:
    client: TestClient
    engine: Engine
    visit_id: int
    elder_id: int
    terminal_id: int
    first: int  # the volunteer the visit is planned for
    second: int  # another volunteer of the same community who can do visits
    path: str  # the first volunteer's link, without the host

    def visit(self) -> Visit:
        with Session(self.engine) as s:
            return s.get_one(Visit, self.visit_id)

    def path_for(self, volunteer_id: int, visit_id: int | None = None) -> str:
        """A link as the centre would have sent it the evening before."""
        with time_machine.travel(NOW, tick=False):
            link = visit_link(visit_id or self.visit_id, volunteer_id)
        return "/v/" + link.split("/v/", 1)[1]


@pytest.fixture
def world(fresh_engine: Engine) -> Iterator[World]:
    previous = db.get_engine()
    db.use_engine(fresh_engine)
    with Session(fresh_engine, expire_on_commit=False) as s:
        elder = make_elder(
            s,
            name="翁淑珍",
            address="金砂东路88号3栋402室",
            medical_notes="高血压，服用硝苯地平",
            access_notes="门铃坏了请敲门",
        )
        silent_since = NOW - dt.timedelta(days=3)
        terminal = make_terminal(s, elder, status=TerminalStatus.SILENT, last_seen_at=silent_since)
        first, second = make_volunteer(s), make_volunteer(s, name="陈志明")
        make_volunteer(s, visits=False, name="不做探访")  # cannot take a visit
        visit = Visit(elder_id=elder.id, volunteer_id=first.id, kind=VisitKind.MONTHLY,
                      period="2026-12", planned_date=dt.date(2026, 12, 3),
                      window_end=dt.date(2026, 12, 31))  # fmt: skip
        s.add(visit)
        s.commit()
        ids = visit.id, elder.id, terminal.id, first.id, second.id
    world = World(TestClient(create_app()), fresh_engine, *ids, path="")
    world.path = world.path_for(world.first)
    try:
        yield world
    finally:
        db.use_engine(previous)


def post(world: World, path: str, data: dict[str, str] | None = None) -> Response:
    with time_machine.travel(NOW + dt.timedelta(minutes=5), tick=False):
        return world.client.post(path, data=data or {}, follow_redirects=False)


def get(world: World, path: str) -> Response:
    with time_machine.travel(NOW + dt.timedelta(minutes=6), tick=False):
        return world.client.get(path)


def test_page_shows_the_visit_with_minimum_data_and_confirm_reveals_the_address(
    world: World,
) -> None:
    page = get(world, world.path)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    text = page.text
    assert f"上门探访 V{world.visit_id}" in text and "2026年12月3日（周四）" in text
    assert "翁奶奶" in text and "金湖社区" in text
    for private in ("淑珍", "金砂东路", "高血压", "硝苯地平", "门铃"):
        assert private not in text, private
    response = post(world, world.path + "/confirm")
    assert response.status_code == 303 and response.headers["location"].endswith("msg=confirmed")
    assert world.visit().status is VisitStatus.CONFIRMED
    confirmed = get(world, world.path).text
    assert "翁淑珍" in confirmed and "金砂东路88号3栋402室" in confirmed and "门铃坏了" in confirmed
    assert "高血压" not in confirmed and "硝苯地平" not in confirmed
    assert post(world, world.path + "/confirm").status_code == 303  # twice: still confirmed


def test_hand_back_goes_to_another_volunteer_who_is_told_by_sms(world: World) -> None:
    response = post(world, world.path + "/handback")
    assert response.status_code == 303
    visit = world.visit()
    assert visit.volunteer_id == world.second and visit.status is VisitStatus.PLANNED
    assert visit.handed_back_by == [world.first]
    with Session(world.engine) as s:
        [sms] = s.scalars(select(OutboxMessage)).all()
        second_phone = s.get_one(Volunteer, world.second).phone
    assert sms.to == second_phone and sms.idempotency_key.startswith(f"visit_assigned:{visit.id}:")
    assert f"V{visit.id}" in sms.body and "/v/visit/" in sms.body and "淑珍" not in sms.body
    # The first volunteer's link no longer acts; the second's does.
    gone = get(world, world.path)
    assert gone.status_code == 410 and "您已交回此探访" in gone.text
    assert post(world, world.path + "/confirm").status_code == 410
    second_path = "/v/" + sms.body.rsplit("/v/", 1)[1]
    assert get(world, second_path).status_code == 200
    assert post(world, second_path + "/confirm").status_code == 303
    assert world.visit().status is VisitStatus.CONFIRMED


def test_hand_back_with_nobody_else_is_escalated_to_the_supervisor(world: World) -> None:
    assert post(world, world.path + "/handback").status_code == 303
    second_path = world.path_for(world.second)
    # The second volunteer hands it back too: the first already did, so nobody is left.
    assert post(world, second_path + "/handback").status_code == 303
    visit = world.visit()
    assert visit.status is VisitStatus.ESCALATED and visit.volunteer_id is None
    assert visit.handed_back_by == sorted([world.first, world.second])
    with Session(world.engine) as s:
        assert [e.visit_id for e in escalated_visits(s)] == [world.visit_id]
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) == 1  # to the second


def test_record_from_the_link_marks_done_opens_a_case_and_tests_the_terminal(
    world: World,
) -> None:
    form = {**ALL_FINE, "seen_in_person": "yes", "utilities_safe": "problem",
            "needs": "厨房燃气软管老化，需要更换", "notes": "老人精神很好"}  # fmt: skip
    response = post(world, world.path + "/record", form)
    assert response.status_code == 303
    assert response.headers["location"].endswith("msg=recorded_case")
    visit = world.visit()
    assert visit.status is VisitStatus.DONE and visit.seen_in_person is True
    assert visit.checklist["utilities_safe"] is False and visit.checklist["terminal_tested"]
    assert visit.checklist["needs"] == "厨房燃气软管老化，需要更换"
    with Session(world.engine) as s:
        [case] = s.scalars(select(Case)).all()
        terminal = s.get_one(Terminal, world.terminal_id)
    assert case.kind is CaseKind.VISIT_FINDING and case.elder_id == world.elder_id
    assert "燃气软管" in case.summary
    # Pressing the terminal's button during the visit counts as its periodic test.
    assert terminal.last_seen_at == NOW + dt.timedelta(minutes=5)
    assert terminal.status is TerminalStatus.ACTIVE
    assert "已记录" in get(world, world.path).text

    again = post(world, world.path + "/record", form)
    assert again.status_code == 409 and "不能重复记录" in again.text
    with Session(world.engine) as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 1
    assert world.visit().recorded_at == visit.recorded_at


def test_a_record_without_the_terminal_test_leaves_the_terminal_alone(world: World) -> None:
    form = {**ALL_FINE, "seen_in_person": "yes", "terminal_tested": "problem"}
    assert post(world, world.path + "/record", form).headers["location"].endswith("=recorded")
    with Session(world.engine) as s:
        terminal = s.get_one(Terminal, world.terminal_id)
        assert s.scalar(select(func.count()).select_from(Case)) == 0
    assert terminal.status is TerminalStatus.SILENT
    assert terminal.last_seen_at == NOW - dt.timedelta(days=3)


def test_an_unreadable_form_is_refused_and_nothing_is_written(world: World) -> None:
    bad = post(world, world.path + "/record", {**ALL_FINE, "seen_in_person": "maybe"})
    assert bad.status_code == 422 and "是否见到老人本人" in bad.text
    odd = post(world, world.path + "/record", {"seen_in_person": "yes", "mood": "great"})
    assert odd.status_code == 422 and "情绪" in odd.text
    assert world.visit().status is VisitStatus.PLANNED


def test_an_expired_link_is_refused(world: World) -> None:
    # Made the evening before the visit; 35 days (HYT_VISIT_LINK_MAX_AGE_DAYS) later it is gone.
    with time_machine.travel(NOW + dt.timedelta(days=34), tick=False):
        assert world.client.get(world.path).status_code == 200
    with time_machine.travel(NOW + dt.timedelta(days=36), tick=False):
        page = world.client.get(world.path)
        confirm = world.client.post(world.path + "/confirm", follow_redirects=False)
    assert page.status_code == 410 and "链接已过期" in page.text
    assert confirm.status_code == 410 and world.visit().status is VisitStatus.PLANNED


def test_forged_foreign_and_wrong_purpose_links_are_refused(world: World) -> None:
    token = world.path.rsplit("/", 1)[1]
    payload, stamp, signature = token.split(".")
    forged = f"/v/visit/{payload}.{stamp}.{signature[::-1]}"
    with time_machine.travel(NOW, tick=False):  # signed by us, for another purpose
        offer_token = make_token("offer", world.visit_id, world.first)
    for path in (forged, f"/v/visit/{offer_token}", "/v/visit/not-a-token"):
        refused = get(world, path)
        assert refused.status_code == 403 and "链接无效" in refused.text, path
        assert post(world, path + "/confirm").status_code == 403
    # Another visit's payload under this link's signature: refused, and neither visit changes.
    with Session(world.engine, expire_on_commit=False) as s:
        other = Visit(
            elder_id=make_elder(s).id,
            volunteer_id=world.first,
            kind=VisitKind.MONTHLY,
            period="2026-12",
            planned_date=dt.date(2026, 12, 4),
            window_end=dt.date(2026, 12, 31),
        )
        s.add(other)
        s.commit()
    other_payload = world.path_for(world.first, other.id).rsplit("/", 1)[1].split(".")[0]
    spliced = f"/v/visit/{other_payload}.{stamp}.{signature}"
    assert post(world, spliced + "/confirm").status_code == 403
    # A genuine link of the same volunteer for the other visit acts on that visit only.
    assert post(world, world.path_for(world.first, other.id) + "/confirm").status_code == 303
    with Session(world.engine) as s:
        assert s.get_one(Visit, other.id).status is VisitStatus.CONFIRMED
    assert world.visit().status is VisitStatus.PLANNED
    # The other volunteer's link to this visit: not theirs.
    assert post(world, world.path_for(world.second) + "/confirm").status_code == 410


def test_the_visits_terminal_test_closes_a_terminal_silent_case(world: World) -> None:
    """The watchdog opened a "terminal silent" case; the visit's test counts as the terminal's
    periodic test, so the next sweep closes the case by itself."""
    settings = ScheduleSettings()
    with Session(world.engine) as s:
        s.get_one(Terminal, world.terminal_id).status = TerminalStatus.ACTIVE
        assert sweep_silent_terminals(s, now=NOW, settings=settings).cases_opened == 1
        s.commit()
    form = {**ALL_FINE, "seen_in_person": "yes"}
    assert post(world, world.path + "/record", form).headers["location"].endswith("=recorded")
    with Session(world.engine) as s:
        later = NOW + dt.timedelta(minutes=10)
        assert sweep_silent_terminals(s, now=later, settings=settings).cases_closed == 1
        s.commit()
        [case] = s.scalars(select(Case).where(Case.terminal_id == world.terminal_id)).all()
    assert case.state is CaseState.CLOSED


def test_a_terminal_heard_from_after_the_visit_keeps_its_later_time(world: World) -> None:
    later = NOW + dt.timedelta(hours=1)
    with Session(world.engine) as s:
        s.get_one(Terminal, world.terminal_id).last_seen_at = later
        s.commit()
    form = {**ALL_FINE, "seen_in_person": "yes"}
    assert post(world, world.path + "/record", form).status_code == 303
    with Session(world.engine) as s:
        assert s.get_one(Terminal, world.terminal_id).last_seen_at == later
