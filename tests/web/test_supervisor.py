"""The supervisor's view on both databases, with alarms stored by the intake and claimed by the
console at chosen instants: answer-time compliance at the 60 s / 180 s marks to the millisecond,
cases past their target, silent terminals (the watchdog's own condition), volunteers on duty,
escalated visits, unclaimed life-safety alarms flagged in the queue and on the live stream, and
who may see it (operators 403, nobody logged in 401)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import time_machine
import uvicorn
from fastapi.testclient import TestClient
from playwright.sync_api import expect, sync_playwright
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from callcenter import db
from callcenter.case_targets import target_delta
from callcenter.cases import open_case, transition
from callcenter.console import Outcome, claim_alarm, record_outcome
from callcenter.demo import free_port
from callcenter.intake import Press, acknowledge, record_alarm
from callcenter.models import (
    Alarm,
    AlarmKind,
    AlarmSource,
    Case,
    CaseKind,
    CaseState,
    Role,
)
from callcenter.supervision import (
    answer_compliance,
    cases_past_target,
    local_day,
    silent_terminals,
    volunteers_on_duty,
)
from callcenter.web import console_api, live_events
from callcenter.web.app import create_app
from callcenter.web.auth import add_user
from callcenter.web.live_events import AlarmFeed, Snapshot, read_snapshot
from devices.models import Terminal, TerminalStatus
from schedules.models import Visit, VisitKind, VisitStatus
from schedules.settings import ScheduleSettings
from schedules.watchdog import sweep_silent_terminals
from tests.factories import make_elder, make_terminal
from tests.schedules.builders import make_volunteer
from tests.web.clients import PASSWORD, logged_in
from volunteers.models import AvailabilityWindow

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
# The moment the supervisor looks: a Tuesday, 11:00 in Shanghai.
NOW = dt.datetime(2026, 12, 1, 11, 0, tzinfo=SHANGHAI).astimezone(dt.UTC)
MORNING = NOW - dt.timedelta(minutes=50)
S = dt.timedelta(seconds=1)
MS = dt.timedelta(milliseconds=1)


@dataclass
class World:
    engine: Engine
    operator_id: int
    alarms: dict[str, int]


def _press(
    session: Session, name: str, kind: AlarmKind, at: dt.datetime,
    terminal_id: int | None = None, elder_id: int | None = None,
) -> int:  # fmt: skip
    press = Press(source=AlarmSource.DTMF, kind=kind, dedup_key=f"sup-{name}",
                  terminal_id=terminal_id, elder_id=elder_id)  # fmt: skip
    return record_alarm(session, press, now=at).alarm_id


def _claim(session: Session, alarm_id: int, operator_id: int, at: dt.datetime) -> None:
    with time_machine.travel(at, tick=False):
        claim_alarm(session, alarm_id=alarm_id, operator_id=operator_id)
        session.commit()


@pytest.fixture
def world(fresh_engine: Engine) -> Iterator[World]:
    """Today's alarms, each answered (claimed) after an exact delay, on a fresh database."""
    previous = db.get_engine()
    db.use_engine(fresh_engine)
    with Session(fresh_engine, expire_on_commit=False) as s:
        op = add_user(s, username="op1", password=PASSWORD, role=Role.OPERATOR)
        add_user(s, username="sup1", password=PASSWORD, role=Role.SUPERVISOR, display_name="周班长")
        add_user(s, username="adm1", password=PASSWORD, role=Role.ADMIN)
        elders = [make_elder(s, name=f"老人{n}") for n in range(8)]
        terminals = [make_terminal(s, e) for e in elders]
        s.commit()
        ids = {}

        def press(name: str, n: int, kind: AlarmKind, at: dt.datetime) -> int:
            ids[name] = _press(s, name, kind, at, terminal_id=terminals[n].id,
                               elder_id=elders[n].id)  # fmt: skip
            return ids[name]

        # name: kind, received, answer delay (None: still waiting at NOW)
        plan: list[tuple[str, AlarmKind, dt.datetime, dt.timedelta | None]] = [
            ("fast", AlarmKind.LIFE_SAFETY, MORNING, 10 * S),
            ("at60", AlarmKind.LIFE_SAFETY, MORNING + 5 * 60 * S, 60 * S),
            ("past60", AlarmKind.SERVICE, MORNING + 10 * 60 * S, 60 * S + MS),
            ("at180", AlarmKind.SERVICE, MORNING + 15 * 60 * S, 180 * S),
            ("past180", AlarmKind.CONSULT, MORNING + 20 * 60 * S, 180 * S + MS),
            ("waiting61", AlarmKind.LIFE_SAFETY, NOW - 61 * S, None),
            ("waiting30", AlarmKind.SERVICE, NOW - 30 * S, None),
        ]
        for n, (name, kind, at, delay) in enumerate(plan):
            alarm_id = press(name, n, kind, at)
            if delay is not None:
                _claim(s, alarm_id, op.id, at + delay)
        # The terminal was told at once: that is not an answer (the operator took 180.001 s).
        acknowledge(s, ids["past180"], at=MORNING + 20 * 60 * S + S)
        # Handled straight from the queue without a claim: the outcome is the answer.
        ids["unidentified"] = _press(
            s, "unidentified", AlarmKind.UNIDENTIFIED, MORNING + 30 * 60 * S
        )
        with time_machine.travel(MORNING + 30 * 60 * S + 45 * S, tick=False):
            record_outcome(s, alarm_id=ids["unidentified"], operator_id=op.id,
                           outcome=Outcome.CALLED_FAMILY)  # fmt: skip
            s.commit()
        # A periodic test report: stored handled, no operator, not counted.
        ids["test"] = press("test", 7, AlarmKind.TEST, MORNING + 40 * 60 * S)
        # Yesterday evening (local), still waiting: not in today's figures, but flagged.
        ids["yesterday"] = _press(s, "yesterday", AlarmKind.LIFE_SAFETY,
                                  dt.datetime(2026, 11, 30, 23, 0, tzinfo=SHANGHAI))  # fmt: skip
        world = World(fresh_engine, op.id, ids)
    try:
        yield world
    finally:
        db.use_engine(previous)


def shares(compliance: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    return [(t["within_s"], t["met"], t["missed"], t["pending"]) for t in compliance["thresholds"]]


def test_compliance_at_the_60_and_180_second_marks(world: World) -> None:
    with Session(world.engine) as s:
        day = local_day(NOW, SHANGHAI)
        everything, life_safety = answer_compliance(s, day, now=NOW, within=(60, 180))
    # 60 s: met fast, at60 (inclusive), unidentified (45 s); missed past60, at180, past180 and
    # waiting61 (already past 60 s); waiting30 not judged yet.
    assert [(t.within_s, t.met, t.missed, t.pending) for t in everything.thresholds] == [
        (60, 3, 4, 1),
        (180, 5, 1, 2),
    ]
    assert everything.thresholds[0].share == pytest.approx(3 / 7)
    assert everything.thresholds[1].share == pytest.approx(5 / 6)
    assert (everything.alarms, everything.answered, everything.waiting) == (8, 6, 2)
    assert everything.max_answer_s == pytest.approx(180.001)
    assert [(t.met, t.missed, t.pending) for t in life_safety.thresholds] == [(3, 1, 0), (3, 0, 1)]
    assert life_safety.thresholds[1].share == 1.0


def test_supervisor_api_with_the_clock_at_now(world: World) -> None:
    with time_machine.travel(NOW, tick=False):
        client = logged_in("sup1")
        body = client.get("/api/supervisor").json()
    assert body["day"] == "2026-12-01" and body["answer_within_s"] == [60, 180]
    everything = next(c for c in body["compliance"] if c["group"] == "all")
    assert shares(everything) == [(60, 3, 4, 1), (180, 5, 1, 2)]
    assert everything["thresholds"][0]["share"] == pytest.approx(3 / 7)
    alarms = {k["kind"]: k for k in body["alarms"]}
    assert alarms["life_safety"]["by_state"] == {"claimed": 2, "new": 1}  # not yesterday's
    assert alarms["test"]["by_state"] == {"handled": 1}
    assert alarms["unidentified"]["by_state"] == {"handled": 1}
    cases = {k["kind"]: k["total"] for k in body["cases"]}
    assert cases == {"life_safety": 3, "service": 3, "consult": 1}
    waiting = [(a["id"], a["wait_s"]) for a in body["unclaimed_life_safety"]]
    assert [a for a, _ in waiting] == [world.alarms["yesterday"], world.alarms["waiting61"]]
    assert waiting[1][1] == 61 and body["flag_after_s"] == 60


def test_flagged_in_the_queue_for_supervisors_only(world: World) -> None:
    with time_machine.travel(NOW, tick=False):
        supervisor = {i["id"]: i["flagged"] for i in logged_in("sup1").get("/api/queue").json()}
        operator = {i["id"]: i["flagged"] for i in logged_in("op1").get("/api/queue").json()}
        flagged = read_snapshot().flagged
    assert {i for i, f in supervisor.items() if f} == {
        world.alarms["yesterday"],
        world.alarms["waiting61"],
    }
    assert world.alarms["waiting30"] in supervisor and not supervisor[world.alarms["waiting30"]]
    assert operator.keys() == supervisor.keys() and not any(operator.values())
    assert set(flagged) == {world.alarms["yesterday"], world.alarms["waiting61"]}
    # One second earlier the 61 s alarm had waited exactly 60 s: not yet flagged.
    with time_machine.travel(NOW - 1 * S, tick=False):
        assert read_snapshot().flagged == (world.alarms["yesterday"],)


def _events(client: TestClient) -> list[dict[str, Any]]:
    body = client.get("/api/events").text
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


def test_the_live_stream_pushes_flagged_alarms_to_supervisors(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_api, "EVENTS_STREAM_S", 0.5)  # a short stream: read it whole
    with time_machine.travel(NOW, tick=True):
        supervisor_events = _events(logged_in("sup1"))
        operator_events = _events(logged_in("op1"))
    # A new stream's first event is the feed's current queue (the console fetches nothing after
    # a reconnection), flags included for a supervisor.
    first_sup, first_op = supervisor_events[0], operator_events[0]
    assert first_sup["marker"] == first_op["marker"]
    assert [i["id"] for i in first_sup["queue"]] == [i["id"] for i in first_op["queue"]]
    assert first_sup["flagged"] == sorted([world.alarms["yesterday"], world.alarms["waiting61"]])
    assert "flagged" not in first_op and not any(i["flagged"] for i in first_op["queue"])
    assert first_op["age_s"] >= 0 and first_op["not_shown"] == 0
    assert len(supervisor_events) == len(operator_events) == 1  # nothing changed meanwhile


def test_a_change_reaches_open_streams_with_the_queue(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream open when a life-safety alarm passes 60 s unclaimed gets an event carrying the
    queue, flags included for a supervisor; an operator's stream stays quiet (no queue change)."""
    monkeypatch.setattr(console_api, "EVENTS_STREAM_S", 5.0)
    monkeypatch.setattr(live_events, "POLL_S", 0.05)
    with time_machine.travel(NOW - 4 * S, tick=False):
        supervisor, operator = logged_in("sup1"), logged_in("op1")
    # waiting61 came in at NOW - 61 s: it passes 60 s at NOW - 1 s, two seconds into the streams.
    with time_machine.travel(NOW - 3 * S, tick=True), ThreadPoolExecutor(2) as pool:
        streams = [pool.submit(_events, c) for c in (supervisor, operator)]
        supervisor_events, operator_events = (f.result(30) for f in streams)
    flagged = sorted([world.alarms["yesterday"], world.alarms["waiting61"]])
    assert [e.get("flagged") for e in supervisor_events] == [[world.alarms["yesterday"]], flagged]
    change = supervisor_events[1]
    assert sorted(i["id"] for i in change["queue"] if i["flagged"]) == flagged
    assert {i["id"] for i in change["queue"]} >= {world.alarms["waiting30"]}
    assert len(operator_events) == 1  # its first event, the queue as the stream opened


def test_one_poller_serves_every_stream() -> None:
    reads = 0
    version = 0

    def read(previous: Snapshot | None) -> Snapshot:
        nonlocal reads
        reads += 1
        return Snapshot(str(version), ())

    async def main() -> tuple[list[bool], int]:
        nonlocal version
        feed = AlarmFeed(read, poll_s=0.02)

        async def stream() -> bool:
            async with feed.listening():
                seen = feed.version
                woken = await feed.wait(seen, timeout=5.0)
                return woken and feed.snapshot is not None and feed.snapshot.marker == "1"

        tasks = [asyncio.create_task(stream()) for _ in range(50)]
        await asyncio.sleep(0.2)
        version = 1
        woken = await asyncio.gather(*tasks)
        return woken, reads

    woken, reads = asyncio.run(main())
    assert all(woken) and len(woken) == 50
    # About one read per interval for all 50 streams (0.2 s / 0.02 s), not one per stream.
    assert reads < 40


def test_cases_past_their_target(session: Session) -> None:
    elder = make_elder(session)
    hour = dt.timedelta(hours=1)

    def case(kind: CaseKind, opened_ago: dt.timedelta, priority: int = 3, **fields: object) -> Case:
        c = open_case(session, kind=kind, priority=priority, actor="test", elder_id=elder.id,
                      at=NOW - opened_ago)  # fmt: skip
        for name, value in fields.items():
            setattr(c, name, value)
        return c

    late = {
        case(CaseKind.SERVICE, 2 * hour, due_at=NOW - S).code,  # its catalogue item's due time
        case(CaseKind.LIFE_SAFETY, hour + S, priority=1).code,
        case(CaseKind.CONSULT, 24 * hour + S).code,
        case(CaseKind.SERVICE, 2 * hour, priority=1).code,  # raised to life-safety by a press
    }
    on_time = [
        case(CaseKind.SERVICE, 30 * hour, due_at=NOW + S),  # its own due time wins
        case(CaseKind.LIFE_SAFETY, hour - S, priority=1),
        case(CaseKind.TECHNICAL, 47 * hour, priority=4),
    ]
    done = case(CaseKind.SERVICE, 5 * hour, due_at=NOW - hour)
    transition(session, done, CaseState.CANCELLED, actor="test")
    parent = case(CaseKind.TECHNICAL, 72 * hour, priority=4)
    case(CaseKind.TECHNICAL, 72 * hour, priority=4, parent_id=parent.id)  # counted in its group
    session.flush()
    count, rows = cases_past_target(session, now=NOW)
    assert {r.code for r in rows} == late | {parent.code} and count == 5
    first = rows[0]
    assert first.priority == 1 and first.late_s > 0
    assert target_delta(CaseKind.SERVICE, 1) == hour
    assert not {c.code for c in on_time} & {r.code for r in rows}


def test_silent_terminals_are_the_watchdogs(session: Session) -> None:
    grace = 600
    elder = make_elder(session, name="许阿婆")
    interval = 3600
    late = make_terminal(session, elder, report_interval_s=interval,
                         last_seen_at=NOW - (interval + grace) * S - MS)  # fmt: skip
    just_in_time = make_terminal(session, elder, report_interval_s=interval,
                                 last_seen_at=NOW - (interval + grace) * S)  # fmt: skip
    never = make_terminal(session, None, created_at=NOW - 2 * 86400 * S)  # daily report
    make_terminal(session, None, status=TerminalStatus.RETIRED, last_seen_at=NOW - 9 * 86400 * S)
    count, rows = silent_terminals(session, now=NOW, grace_s=grace)
    assert count == 2 and [r.serial for r in rows] == [never.serial, late.serial]
    assert rows[1].elder_name == "许阿婆" and rows[1].silent_s == interval + grace
    # The watchdog's sweep at the same instant marks exactly these.
    sweep_silent_terminals(session, now=NOW, settings=ScheduleSettings(watchdog_grace_s=grace))
    silent = set(
        session.scalars(select(Terminal.id).where(Terminal.status == TerminalStatus.SILENT))
    )
    assert silent == {late.id, never.id} and just_in_time.id not in silent


def test_volunteers_on_duty_now(session: Session) -> None:
    local = NOW.astimezone(SHANGHAI)  # Tuesday 11:00
    minute = local.hour * 60 + local.minute

    def volunteer(community: str, start: int, end: int, **fields: object) -> None:
        v = make_volunteer(session, community)
        v.availability = [AvailabilityWindow(weekday=local.weekday(), start_minute=start,
                                             end_minute=end)]  # fmt: skip
        for name, value in fields.items():
            setattr(v, name, value)

    volunteer("金湖社区", minute, minute + 60)  # starts now: on duty
    volunteer("金湖社区", 0, 1440)
    volunteer("丹霞社区", 480, 1080)
    volunteer("丹霞社区", minute - 60, minute)  # ended now: off
    volunteer("丹霞社区", 0, 1440, on_duty=False)
    volunteer("丹霞社区", 0, 1440, active=False)
    session.flush()
    on_duty = volunteers_on_duty(session, now=NOW, tz=SHANGHAI)
    assert on_duty.total == 3 and on_duty.by_community == {"丹霞社区": 1, "金湖社区": 2}


def test_escalated_visits_and_the_rest_through_the_api(world: World) -> None:
    with Session(world.engine) as s:
        elder = make_elder(s, name="蔡阿公")
        s.add(Visit(elder_id=elder.id, kind=VisitKind.MONTHLY, period="2026-11",
                    planned_date=dt.date(2026, 11, 20), window_end=dt.date(2026, 11, 30),
                    status=VisitStatus.ESCALATED, reassign_count=1))  # fmt: skip
        volunteer = make_volunteer(s, "金湖社区")
        volunteer.availability = [AvailabilityWindow(weekday=1, start_minute=0, end_minute=1440)]
        s.commit()
    with time_machine.travel(NOW, tick=False):
        body = logged_in("adm1").get("/api/supervisor").json()
    assert body["escalated_visits_count"] == 1
    assert body["escalated_visits"][0]["elder_name"] == "蔡阿公"
    assert body["on_duty"] == {"total": 1, "by_community": {"金湖社区": 1}}
    # Each of today's cases is still open with no due time, within its kind's target.
    assert body["late_cases_count"] == 0
    # Every test terminal is new and reports daily: none silent yet.
    assert body["silent_terminals_count"] == 0


# The keys of /api/supervisor, in the order the API answers them (the page and any client
# generated from the OpenAPI schema read these).
KIND_COUNTS = ["kind", "total", "by_state"]
SHAPE: dict[str, list[str]] = {
    "": ["now", "day", "alarms", "cases", "compliance", "answer_within_s", "late_cases_count",
         "late_cases", "silent_terminals_count", "silent_terminals", "escalated_visits_count",
         "escalated_visits", "on_duty", "unclaimed_life_safety", "flag_after_s"],
    "alarms": KIND_COUNTS,
    "cases": KIND_COUNTS,
    "compliance": ["group", "alarms", "answered", "waiting", "median_answer_s", "max_answer_s",
                   "thresholds"],
    "compliance.thresholds": ["within_s", "met", "missed", "pending", "share"],
    "late_cases": ["id", "code", "kind", "state", "priority", "elder_name", "summary",
                   "opened_at", "target_at", "late_s"],
    "silent_terminals": ["id", "serial", "status", "elder_name", "street", "community",
                         "last_seen_at", "report_interval_s", "silent_s"],
    "escalated_visits": ["visit_id", "elder_id", "elder_name", "street", "community", "kind",
                         "period", "window_end", "volunteer_name", "reassign_count"],
    "on_duty": ["total", "by_community"],
    "unclaimed_life_safety": ["id", "kind", "elder_name", "caller", "received_at", "wait_s"],
}  # fmt: skip


def _objects(value: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every JSON object in ``value`` with its path (list items share their list's path)."""
    if isinstance(value, list):
        for item in value:
            yield from _objects(item, path)
    elif isinstance(value, dict) and path not in ("alarms.by_state", "cases.by_state",
                                                  "on_duty.by_community"):  # fmt: skip
        yield path, value
        for key, item in value.items():
            yield from _objects(item, f"{path}.{key}".lstrip("."))


def _documented(openapi: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_the_api_answer_keeps_its_shape(world: World) -> None:
    """The JSON the page reads, pinned: keys and their order, types, the formats of times, dates
    and shares, kinds and states by their values; and every key documented, and required, in
    the OpenAPI schema."""
    with Session(world.engine) as s:
        elder = make_elder(s, name="蔡阿公")
        s.add(Visit(elder_id=elder.id, kind=VisitKind.MONTHLY, period="2026-11",
                    planned_date=dt.date(2026, 11, 20), window_end=dt.date(2026, 11, 30),
                    status=VisitStatus.ESCALATED, reassign_count=1))  # fmt: skip
        late = open_case(s, kind=CaseKind.CONSULT, priority=3, actor="test", elder_id=elder.id,
                         summary="问询", at=NOW - 3 * 86400 * S)  # fmt: skip
        make_terminal(s, elder, last_seen_at=NOW - 3 * 86400 * S - 250 * MS)
        s.commit()
        case_code = late.code
    with time_machine.travel(NOW, tick=False):
        client = logged_in("sup1")
        body = client.get("/api/supervisor").json()
        openapi = client.get("/openapi.json").json()

    seen = {path for path, _ in _objects(body)}
    assert seen == set(SHAPE)  # every kind of object present, so each is checked below
    for path, obj in _objects(body):
        assert list(obj) == SHAPE[path], path
    assert body["now"] == "2026-12-01T03:00:00Z" and body["day"] == "2026-12-01"
    assert body["answer_within_s"] == [60, 180] and body["flag_after_s"] == 60
    assert body["alarms"][0] == {"kind": "consult", "total": 1, "by_state": {"claimed": 1}}
    everything = body["compliance"][0]
    assert everything["group"] == "all" and everything["max_answer_s"] == 180.001
    assert everything["median_answer_s"] == 60.0005
    assert everything["thresholds"][0] == {
        "within_s": 60, "met": 3, "missed": 4, "pending": 1, "share": 3 / 7
    }  # fmt: skip
    assert (body["late_cases_count"], body["silent_terminals_count"]) == (1, 1)
    case = body["late_cases"][0]
    assert {k: case[k] for k in ("code", "kind", "state", "priority", "elder_name", "summary")} == {
        "code": case_code, "kind": "consult", "state": "dispatch", "priority": 3,
        "elder_name": "蔡阿公", "summary": "问询",
    }  # fmt: skip
    assert case["opened_at"] == "2026-11-28T03:00:00Z"
    assert case["target_at"] == "2026-11-29T03:00:00Z" and case["late_s"] == 2 * 86400
    terminal = body["silent_terminals"][0]
    assert terminal["last_seen_at"] == "2026-11-28T02:59:59.750000Z"
    assert terminal["status"] == "active" and terminal["silent_s"] == 3 * 86400
    assert (terminal["street"], terminal["community"]) == ("金霞街道", "金湖社区")
    visit = body["escalated_visits"][0]
    assert {k: v for k, v in visit.items() if k not in ("visit_id", "elder_id")} == {
        "elder_name": "蔡阿公", "street": "金霞街道", "community": "金湖社区",
        "kind": "monthly", "period": "2026-11", "window_end": "2026-11-30",
        "volunteer_name": None, "reassign_count": 1,
    }  # fmt: skip
    assert body["on_duty"] == {"total": 0, "by_community": {}}
    yesterday = body["unclaimed_life_safety"][0]
    assert yesterday["id"] == world.alarms["yesterday"] and yesterday["kind"] == "life_safety"
    assert yesterday["received_at"] == "2026-11-30T15:00:00Z"
    assert yesterday["wait_s"] == 12 * 3600 and yesterday["elder_name"] is None

    # The OpenAPI schema documents every key, each required (never left out of an answer).
    answer = openapi["paths"]["/api/supervisor"]["get"]["responses"]["200"]["content"]
    top = _documented(openapi, answer["application/json"]["schema"])
    for path, keys in SHAPE.items():
        schema = top
        for step in path.split(".") if path else []:
            schema = _documented(openapi, schema["properties"][step])
            schema = _documented(openapi, schema.get("items", schema))
        assert list(schema["properties"]) == keys, path
        assert sorted(schema["required"]) == sorted(keys), path


def test_queue_and_view_reads_never_wait_for_the_write_lock(world: World) -> None:
    """50 consoles read the queue at once after every alarm: on SQLite those reads must not take
    the write lock the intake needs to commit the next alarm (nor wait for it)."""
    client = logged_in("sup1")
    with world.engine.connect() as writer:
        writer.begin()  # SQLite: BEGIN IMMEDIATE, the write lock, held as a committing intake
        writer.execute(
            update(Alarm).where(Alarm.id == world.alarms["waiting30"]).values(outcome="held")
        )
        started = time.monotonic()
        assert client.get("/api/queue").status_code == 200
        assert client.get("/api/supervisor").status_code == 200
        assert read_snapshot().marker
        elapsed = time.monotonic() - started
        writer.rollback()
    assert elapsed < 5.0  # SQLite's busy timeout is 10 s: a waiting read would take that long


SUPERVISOR_ROUTES = [("GET", "/api/supervisor")]


def test_who_may_see_it(world: World) -> None:
    anonymous = TestClient(create_app())
    for method, path in SUPERVISOR_ROUTES:
        assert anonymous.request(method, path).status_code == 401
        forged = anonymous.request(method, path, headers={"Authorization": "Bearer forged"})
        assert forged.status_code == 401
        assert logged_in("op1").request(method, path).status_code == 403
        assert logged_in("sup1").request(method, path).status_code == 200
        assert logged_in("adm1").request(method, path).status_code == 200
    page = anonymous.get("/supervisor", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/supervisor"
    operator_page = logged_in("op1").get("/supervisor")
    assert operator_page.status_code == 403 and "仅班长和管理员可查看此页" in operator_page.text
    assert "supervisor.js" not in operator_page.text
    # The console links to the view for supervisors only.
    assert 'id="nav-supervisor"' in logged_in("sup1").get("/console").text
    assert 'id="nav-supervisor"' not in logged_in("op1").get("/console").text


def test_page_in_chinese_first_then_english(world: World) -> None:
    client = logged_in("sup1")
    html = client.get("/supervisor").text
    assert 'lang="zh-CN"' in html and "班长看板" in html and "接听及时率" in html
    assert "60 秒内接听" in html and "180 秒内接听" in html
    english = client.get("/supervisor", params={"lang": "en"})
    assert "Supervisor view" in english.text and "answered within 180 s" in english.text
    assert english.cookies.get("hyt_lang") == "en"
    with Session(world.engine) as s:
        assert s.get(Alarm, world.alarms["fast"]) is not None


# -- in the browser ------------------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


@pytest.fixture
def served(sqlite_template: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The web app alone (uvicorn in a thread) on a fresh SQLite database with a life-safety
    alarm waiting for 90 s and one answered in 20 s; yields the base URL and the elder's name."""
    path = tmp_path / "supervisor.db"
    shutil.copyfile(sqlite_template, path)
    engine = db.make_engine(f"sqlite:///{path}")
    previous = db.get_engine()
    db.use_engine(engine)
    now = dt.datetime.now(dt.UTC)
    with Session(engine, expire_on_commit=False) as s:
        op = add_user(s, username="op1", password=PASSWORD, role=Role.OPERATOR)
        add_user(s, username="sup1", password=PASSWORD, role=Role.SUPERVISOR, display_name="周班长")
        waiting, answered = make_elder(s, name="郑阿婆"), make_elder(s, name="林阿公")
        s.commit()
        _press(s, "b-wait", AlarmKind.LIFE_SAFETY, now - 90 * S, elder_id=waiting.id)
        done = _press(s, "b-done", AlarmKind.SERVICE, now - 300 * S, elder_id=answered.id)
        _claim(s, done, op.id, now - 280 * S)
    port = free_port(socket.SOCK_STREAM)
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, name="web", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "web did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", waiting.name
    finally:
        server.should_exit = True
        thread.join(20)
        db.use_engine(previous)
        engine.dispose()


@pytest.mark.slow
def test_supervisor_sees_the_view_in_chinese_in_the_browser(served: tuple[str, str]) -> None:
    base, waiting_elder = served
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="zh-CN")
            page.set_default_timeout(15_000)
            expect.set_options(timeout=15_000)
            page.goto(base + "/supervisor")
            expect(page).to_have_url(f"{base}/login?next=/supervisor")
            page.fill("#username", "sup1")
            page.fill("#password", PASSWORD)
            page.click("#login-button")
            expect(page).to_have_url(f"{base}/supervisor")
            expect(page.locator("h1")).to_contain_text("班长看板")
            expect(page.locator("#live")).to_have_text("实时")
            flagged = page.locator("#unclaimed tbody tr.flagged-alarm")
            expect(flagged).to_have_count(1)
            expect(flagged).to_contain_text(waiting_elder)
            expect(flagged).to_contain_text("紧急求助")
            everything = page.locator("#compliance tbody tr[data-group=all]")
            expect(everything).to_contain_text("全部告警")
            # One answered in 20 s, one waiting 90 s: 1 of 2 within 60 s, 1 of 1 within 180 s.
            expect(everything.locator("td[data-within-s='60']")).to_contain_text("50.0% (1/2)")
            expect(everything.locator("td[data-within-s='180']")).to_contain_text("100.0% (1/1)")
            expect(page.locator("#today-alarms")).to_contain_text("生活服务")
            page.screenshot(path=str(SCREENSHOTS / "supervisor-view.png"), full_page=True)

            # The live queue flags the same alarm for the supervisor.
            page.click("#nav-console")
            expect(page).to_have_url(f"{base}/console")
            expect(page.locator("#flag-banner")).to_contain_text("1 条紧急告警超过 60 秒无人接听")
            expect(page.locator("#queue-body tr.flagged")).to_contain_text(waiting_elder)
            page.click("#switch-lang")
            expect(page.locator("#flag-banner")).to_contain_text(
                "1 life-safety alarms unclaimed for more than 60 s"
            )
        finally:
            browser.close()
