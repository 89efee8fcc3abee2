"""The operator console's API on both databases: claim race, outcomes, queue, screen pop,
elder search, and that nothing answers without a login."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from callcenter import db
from callcenter.cases import open_case
from callcenter.console import queue_marker
from callcenter.intake import Press, record_alarm
from callcenter.models import (
    Alarm,
    AlarmKind,
    AlarmSource,
    Case,
    CaseKind,
    CaseState,
    EmergencyContact,
    Role,
)
from callcenter.web.app import create_app
from callcenter.web.auth import add_user
from devices.models import TerminalProtocol
from tests.factories import make_elder, make_terminal
from tests.web.clients import PASSWORD, logged_in


@dataclass
class World:
    engine: Engine
    elder_id: int
    terminal_serial: str
    service_alarm: int
    sos_alarm: int


@pytest.fixture
def world(fresh_engine: Engine) -> Iterator[World]:
    previous = db.get_engine()
    db.use_engine(fresh_engine)
    with Session(fresh_engine, expire_on_commit=False) as s:
        add_user(s, username="op1", password=PASSWORD, role=Role.OPERATOR, display_name="张接警")
        add_user(s, username="op2", password=PASSWORD, role=Role.OPERATOR, display_name="李接警")
        elder = make_elder(
            s,
            name="王秀英",
            phone="+8613800138000",
            medical_notes="高血压，糖尿病",
            medications=["二甲双胍", "氨氯地平"],
            allergies=["青霉素"],
            access_notes="钥匙在邻居302室",
            language="潮汕话",
        )
        elder.contacts.append(
            EmergencyContact(name="王强", relation="儿子", phone="+8613700000001", call_order=0)
        )
        other = make_elder(s, name="陈来顺", name_pinyin="chen lai shun", name_initials="cls")
        other_terminal = make_terminal(s, other, TerminalProtocol.DTMF)
        terminal = make_terminal(s, elder, TerminalProtocol.DTMF, battery_pct=76)
        closed = open_case(s, kind=CaseKind.SERVICE, priority=3, actor="test", elder_id=elder.id,
                           summary="上月修水管")  # fmt: skip
        closed.state = CaseState.CLOSED
        s.commit()
        service = record_alarm(s, Press(source=AlarmSource.DTMF, kind=AlarmKind.SERVICE,
                                        dedup_key="svc", terminal_id=terminal.id,
                                        elder_id=elder.id))  # fmt: skip
        sos = record_alarm(s, Press(source=AlarmSource.DTMF, kind=AlarmKind.LIFE_SAFETY,
                                    dedup_key="sos", terminal_id=other_terminal.id,
                                    elder_id=other.id))  # fmt: skip
        world = World(fresh_engine, elder.id, terminal.serial, service.alarm_id, sos.alarm_id)
    try:
        yield world
    finally:
        db.use_engine(previous)


def test_claim_race_one_operator_wins(world: World) -> None:
    clients = [logged_in("op1"), logged_in("op2")]
    barrier = threading.Barrier(2)

    def claim(client: TestClient) -> int:
        barrier.wait()
        return client.post(f"/api/alarms/{world.service_alarm}/claim").status_code

    with ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(claim, clients))
    assert codes == [200, 409]
    with Session(world.engine) as s:
        alarm = s.get(Alarm, world.service_alarm)
        assert alarm is not None and alarm.status.value == "claimed"
        winner_id = alarm.claimed_by_id
    winner, loser = clients if clients[0].get("/api/session").json()["id"] == winner_id else (
        clients[::-1]
    )  # fmt: skip
    # Claiming again is harmless for the winner and still refused for the other.
    assert winner.post(f"/api/alarms/{world.service_alarm}/claim").status_code == 200
    again = loser.post(f"/api/alarms/{world.service_alarm}/claim")
    assert again.status_code == 409 and "已被" in again.json()["detail"]
    # The loser cannot record the outcome of an alarm the winner holds.
    taken = loser.post(f"/api/alarms/{world.service_alarm}/outcome", json={"outcome": "talked"})
    assert taken.status_code == 409
    assert winner.post("/api/alarms/999999/claim").status_code == 404


def test_outcome_false_alarm_needs_a_reason_and_cancels_the_case(world: World) -> None:
    client = logged_in("op1")
    assert client.post(f"/api/alarms/{world.sos_alarm}/claim").status_code == 200
    no_reason = client.post(f"/api/alarms/{world.sos_alarm}/outcome",
                            json={"outcome": "false_alarm", "note": "老人误按"})  # fmt: skip
    assert no_reason.status_code == 422
    unknown = client.post(f"/api/alarms/{world.sos_alarm}/outcome", json={"outcome": "maybe"})
    assert unknown.status_code == 422
    done = client.post(
        f"/api/alarms/{world.sos_alarm}/outcome",
        json={"outcome": "false_alarm", "note": "回电确认", "reason": "老人打扫时碰到按钮"},
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "handled" and done.json()["outcome"] == "false_alarm"
    twice = client.post(f"/api/alarms/{world.sos_alarm}/outcome", json={"outcome": "talked"})
    assert twice.status_code == 409
    with Session(world.engine) as s:
        alarm = s.get(Alarm, world.sos_alarm)
        assert alarm is not None and alarm.case_id is not None
        case = s.get(Case, alarm.case_id)
        assert case is not None and case.state is CaseState.CANCELLED
        events = [(e.event, e.detail) for e in case.events]
    expected = {"alarm_id": world.sos_alarm, "outcome": "false_alarm", "note": "回电确认",
                "reason": "老人打扫时碰到按钮"}  # fmt: skip
    assert ("alarm_outcome", expected) in events


def test_queue_orders_by_priority_then_wait_and_drops_handled(world: World) -> None:
    client = logged_in("op1")
    items = client.get("/api/queue").json()
    assert [i["id"] for i in items] == [world.sos_alarm, world.service_alarm]
    sos, service = items
    assert sos["life_safety"] and sos["elder_name"] == "陈来顺" and sos["kind"] == "life_safety"
    assert service["elder_name"] == "王秀英" and service["terminal_serial"] == world.terminal_serial
    assert service["case_code"] and service["wait_s"] >= 0 and not service["life_safety"]
    client.post(f"/api/alarms/{world.service_alarm}/claim")
    claimed = client.get("/api/queue").json()[1]
    assert claimed["status"] == "claimed" and claimed["claimed_by"] == "张接警"
    handled = client.post(
        f"/api/alarms/{world.service_alarm}/outcome",
        json={"outcome": "sent_volunteers", "note": "换灯泡"},
    )
    assert handled.status_code == 200
    assert [i["id"] for i in client.get("/api/queue").json()] == [world.sos_alarm]


def test_queue_marker_changes_on_claim(world: World) -> None:
    with Session(world.engine) as s:
        before = queue_marker(s)
    logged_in("op1").post(f"/api/alarms/{world.sos_alarm}/claim")
    with Session(world.engine) as s:
        assert queue_marker(s) != before


def test_screen_pop(world: World) -> None:
    client = logged_in("op1")
    pop = client.get(f"/api/elders/{world.elder_id}").json()
    today = dt.date.today()
    assert pop["name"] == "王秀英" and pop["age"] in (today.year - 1944 - 1, today.year - 1944)
    assert pop["address"].startswith("金砂东路") and pop["access_notes"] == "钥匙在邻居302室"
    assert pop["medical_notes"] == "高血压，糖尿病" and pop["medications"] == [
        "二甲双胍",
        "氨氯地平",
    ]
    assert pop["allergies"] == ["青霉素"] and pop["language"] == "潮汕话"
    assert [c["name"] for c in pop["contacts"]] == ["王强", "李梅"]  # in call order
    (terminal,) = pop["terminals"]
    assert terminal["serial"] == world.terminal_serial and terminal["battery_pct"] == 76
    assert terminal["status"] == "active" and terminal["last_seen_at"]  # the press touched it
    assert [c["state"] for c in pop["open_cases"]] == ["dispatch"]
    assert [c["summary"] for c in pop["recent_cases"]] == ["上月修水管"]
    assert client.get("/api/elders/999999").status_code == 404


@pytest.mark.parametrize(
    "query", ["wxy", "WXY", "wang", "wangxiuy", "wang xiu", "王秀", "13800138000", "+86138001"]
)
def test_search_finds_wang_xiuying(world: World, query: str) -> None:
    hits = logged_in("op1").get("/api/elders", params={"q": query}).json()
    assert [h["name"] for h in hits] == ["王秀英"]


def test_search_by_terminal_serial_and_nothing_else(world: World) -> None:
    client = logged_in("op1")
    hits = client.get("/api/elders", params={"q": world.terminal_serial.lower()}).json()
    assert [h["name"] for h in hits] == ["王秀英"]
    assert client.get("/api/elders", params={"q": "cls"}).json()[0]["name"] == "陈来顺"
    assert client.get("/api/elders", params={"q": "%"}).json() == []
    assert client.get("/api/elders", params={"q": "zzz"}).json() == []
    assert client.get("/api/elders", params={"q": ""}).json() == []


def test_catalog(world: World) -> None:
    catalog = logged_in("op1").get("/api/catalog").json()
    items = {i["code"] for c in catalog["categories"] for i in c["items"]}
    assert "appliances.replace_bulb" in items


CONSOLE_ROUTES = [
    ("POST", "/api/alarms/1/claim"),
    ("POST", "/api/alarms/1/outcome"),
    ("GET", "/api/queue"),
    ("GET", "/api/elders/1"),
    ("GET", "/api/elders?q=wxy"),
    ("GET", "/api/events"),
    ("GET", "/api/catalog"),
]


def test_every_console_route_needs_a_login(world: World) -> None:
    anonymous = TestClient(create_app())
    for method, path in CONSOLE_ROUTES:
        response = anonymous.request(method, path, json={"outcome": "talked"})
        assert response.status_code == 401, (method, path)
        forged = anonymous.request(method, path, headers={"Authorization": "Bearer forged"})
        assert forged.status_code == 401, (method, path)
    page = anonymous.get("/console", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    assert anonymous.get("/login").status_code == 200


def test_pages_escape_and_switch_language(world: World) -> None:
    with Session(world.engine) as s:
        add_user(s, username="op3", password=PASSWORD, role=Role.OPERATOR,
                 display_name="<script>alert(1)</script>")  # fmt: skip
        s.commit()
    client = logged_in("op3")
    html = client.get("/console").text
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "待处理告警" in html and 'lang="zh-CN"' in html
    english = client.get("/console", params={"lang": "en"})
    assert "Alarm queue" in english.text and english.cookies.get("hyt_lang") == "en"
    assert "Alarm queue" in client.get("/console").text  # remembered in the cookie
    assert "登录" in TestClient(create_app()).get("/login").text
    with Session(world.engine) as s:
        assert s.scalar(select(Alarm.id).where(Alarm.id == world.sos_alarm)) is not None
