"""A console is sent every unhandled life-safety alarm and the first others only, with the
counts of the rest (issue #7: a storm's 5,000-28,000 waiting technical alarms made every change
re-read and re-send the whole queue, and life-safety alarms reached the consoles 3-13 s late).
Same for ``GET /api/queue``, the feed's event and a stream's first event, on both databases.
Without the cap each of them carried every waiting alarm; without the marker-only deadline a
slow queue read made the feed tell the consoles "database down"."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

from callcenter import console, db
from callcenter.db import utcnow
from callcenter.models import (
    PRIORITY_BY_KIND,
    Alarm,
    AlarmKind,
    AlarmSource,
    AlarmStatus,
    Role,
)
from callcenter.web import console_api, live_events
from callcenter.web.auth import add_user
from callcenter.web.live_events import read_snapshot
from tests.factories import make_elder
from tests.web.clients import PASSWORD, logged_in

N = console.QUEUE_OTHERS_SHOWN
TECHNICAL = N + 50  # more others than a console is sent
TESTS = 5  # and a kind of lower priority still, none of them shown


@dataclass
class World:
    engine: Engine
    life_safety: list[int]  # in the queue's order
    others: list[int]  # the others in the queue's order


def alarm(kind: AlarmKind, at: dt.datetime, key: str, elder_id: int, **fields: Any) -> Alarm:
    return Alarm(received_at=at, source=AlarmSource.SCAIP, kind=kind,
                 priority=PRIORITY_BY_KIND[kind], elder_id=elder_id, caller="8613800000000",
                 dedup_key=key, **fields)  # fmt: skip


@pytest.fixture
def world(fresh_engine: Engine) -> Iterator[World]:
    """Three life-safety alarms among the first others, two more received after all of them
    (one unidentified, one claimed), one handled (not in the queue), then N + 50 technical and
    5 test alarms waiting."""
    previous = db.get_engine()
    db.use_engine(fresh_engine)
    start = utcnow() - dt.timedelta(hours=1)
    with Session(fresh_engine, expire_on_commit=False) as s:
        op = add_user(s, username="op1", password=PASSWORD, role=Role.OPERATOR)
        add_user(s, username="sup1", password=PASSWORD, role=Role.SUPERVISOR)
        elder = make_elder(s, name="郭阿婆")
        s.flush()
        rows: list[Alarm] = []
        for n in range(TECHNICAL):
            rows.append(alarm(AlarmKind.TECHNICAL, start + n * dt.timedelta(seconds=1),
                              f"tech-{n}", elder.id))  # fmt: skip
            if n in (10, 20, 30):
                rows.append(alarm(AlarmKind.LIFE_SAFETY, start + n * dt.timedelta(seconds=1),
                                  f"ls-{n}", elder.id))  # fmt: skip
        rows += [alarm(AlarmKind.TEST, start, f"test-{n}", elder.id) for n in range(TESTS)]
        late = start + dt.timedelta(minutes=50)
        rows.append(alarm(AlarmKind.UNIDENTIFIED, late, "late-unidentified", elder.id))
        rows.append(alarm(AlarmKind.LIFE_SAFETY, late + dt.timedelta(seconds=1), "late-claimed",
                          elder.id, status=AlarmStatus.CLAIMED, claimed_by_id=op.id,
                          claimed_at=late))  # fmt: skip
        rows.append(alarm(AlarmKind.LIFE_SAFETY, late, "handled", elder.id,
                          status=AlarmStatus.HANDLED, handled_at=late))  # fmt: skip
        s.add_all(rows)
        s.commit()
        waiting = [a for a in rows if a.status is not AlarmStatus.HANDLED]
        waiting.sort(key=lambda a: (a.priority, a.received_at, a.id))
        ls = [a.id for a in waiting if a.kind in console.LIFE_SAFETY_KINDS]
        others = [a.id for a in waiting if a.kind not in console.LIFE_SAFETY_KINDS]
    try:
        yield World(fresh_engine, ls, others)
    finally:
        db.use_engine(previous)


def check_capped(world: World, ids: list[int]) -> None:
    """Every life-safety alarm first, then exactly the first N others."""
    assert len(world.life_safety) == 5 and len(world.others) == TECHNICAL + TESTS
    assert ids == world.life_safety + world.others[:N]


NOT_SHOWN = {"technical": TECHNICAL - N, "test": TESTS}


def test_the_api_sends_every_life_safety_alarm_and_the_first_others(world: World) -> None:
    for user in ("op1", "sup1"):
        response = logged_in(user).get("/api/queue")
        assert response.status_code == 200
        check_capped(world, [i["id"] for i in response.json()])
        assert response.headers["x-queue-total"] == str(5 + TECHNICAL + TESTS)
        assert response.headers["x-queue-not-shown"] == str(TECHNICAL - N + TESTS)
        assert response.headers["x-queue-not-shown-by-kind"] == (
            f"technical={TECHNICAL - N}, test={TESTS}"
        )


def test_a_claimed_alarm_stays_listed_beyond_the_cap(world: World) -> None:
    """The queue row is how an operator gets back to the alarm in hand: a claimed alarm far
    down the queue is listed anyway (the review found it dropped out past the first N)."""
    last = world.others[-1]  # a test alarm, after every technical one
    with Session(world.engine) as s:
        row = s.get(Alarm, last)
        assert row is not None
        row.status, row.claimed_at = AlarmStatus.CLAIMED, utcnow()
        s.commit()
    with db.read_scope() as s:
        page = console.queue(s)
    ids = [r.id for r in page.rows]
    assert last in ids and len(ids) == len(world.life_safety) + N + 1
    assert page.not_shown == TECHNICAL - N + TESTS - 1


def check_event(world: World, data: dict[str, Any]) -> None:
    check_capped(world, [i["id"] for i in data["queue"]])
    assert data["total"] == 5 + TECHNICAL + TESTS
    assert data["not_shown"] == TECHNICAL - N + TESTS
    assert data["not_shown_by_kind"] == NOT_SHOWN


def test_the_feeds_event_is_capped_too(world: World) -> None:
    snapshot = read_snapshot()
    for supervisor in (False, True):
        check_event(world, json.loads(snapshot.data(supervisor)))


def test_a_streams_first_event_is_the_feeds_queue(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A (re)connecting console gets the capped queue at once, without fetching it."""
    monkeypatch.setattr(console_api, "EVENTS_STREAM_S", 0.5)  # a short stream: read it whole
    body = logged_in("op1").get("/api/events").text
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    assert len(events) == 1  # nothing changed meanwhile
    check_event(world, events[0])
    assert 0 <= events[0]["age_s"] < 60


def test_a_slow_queue_read_is_not_the_database_down(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feed judges "database down" by its marker query only: a queue read longer than the
    deadline, with the database answering, still reaches the streams and nobody is told the
    database is down."""
    monkeypatch.setattr(live_events, "READ_DEADLINE_S", 0.3)
    monkeypatch.setattr(live_events, "POLL_S", 0.02)
    real_queue = live_events.queue

    def slow_queue(*args: Any, **kwargs: Any) -> console.QueuePage:
        time.sleep(1.0)
        return real_queue(*args, **kwargs)

    monkeypatch.setattr(live_events, "queue", slow_queue)

    async def main() -> None:
        feed = live_events.current_feed()
        async with feed.listening():
            assert feed.snapshot is not None and not feed.database_down
            check_event(world, json.loads(feed.snapshot.data(False)))

    with capture_logs() as logs:
        asyncio.run(main())
    assert "console.feed.database_down" not in [e["event"] for e in logs]
