"""The batch path of intake gives what the one-by-one path gives, on random storms.

Each storm runs twice on the same database, in transactions rolled back afterwards: once press
by press through :func:`store_alarm`, once as one batch through :func:`store_alarms`. Alarms,
cases, the case events (the audit trail), the terminals and the answers must be the same.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from callcenter.intake import Press, Recorded, record_alarm, store_alarm
from callcenter.intake_batch import store_alarms
from callcenter.models import Alarm, AlarmKind, AlarmSource, Case, CaseEvent
from devices.models import Terminal
from tests.factories import make_elder, make_terminal

NOW = dt.datetime(2026, 11, 28, 3, 0, tzinfo=dt.UTC)
KINDS = [AlarmKind.LIFE_SAFETY, AlarmKind.SERVICE, AlarmKind.CONSULT, AlarmKind.CANCEL,
         AlarmKind.TECHNICAL, AlarmKind.TEST, AlarmKind.UNIDENTIFIED]  # fmt: skip


def storm(rng: random.Random, terminals: list[tuple[int, int | None]], size: int) -> list[Press]:
    presses = []
    for _ in range(size):
        kind = rng.choice(KINDS)
        terminal_id, elder_id = rng.choice(terminals)
        if kind is AlarmKind.UNIDENTIFIED:
            terminal_id, elder_id = None, None  # type: ignore[assignment]
        presses.append(
            Press(
                source=rng.choice(list(AlarmSource)),
                kind=kind,
                # A small pool of keys and fingerprints: retransmissions and retries happen.
                dedup_key=f"k{rng.randrange(size // 2 + 1)}",
                terminal_id=terminal_id,
                elder_id=elder_id,
                fingerprint=rng.choice(["", "", "fa", "fb"]),
                battery_pct=rng.choice([None, None, 40, 90]),
                raw={"n": rng.randrange(1000)},
            )
        )
    return presses


def dump(session: Session, before: dict[str, int], recorded: list[Recorded]) -> dict[str, Any]:
    # Ids made in the run compare by rank: sequences are not rolled back on PostgreSQL.
    alarm_ids = sorted(session.scalars(select(Alarm.id).where(Alarm.id > before["alarms"])))
    case_ids = sorted(session.scalars(select(Case.id).where(Case.id > before["cases"])))
    a_rank = {v: ("new", i) for i, v in enumerate(alarm_ids)}
    c_rank = {v: ("new", i) for i, v in enumerate(case_ids)}

    def a(value: int | None) -> object:
        return a_rank.get(value or 0, value)

    def c(value: int | None) -> object:
        return c_rank.get(value or 0, value)

    return {
        "alarms": [
            (a(x.id), x.dedup_key, x.kind, c(x.case_id), x.status, x.raw, x.handled_at)
            for x in session.scalars(select(Alarm).order_by(Alarm.id))
        ],
        "cases": [
            (
                c(x.id),
                x.kind,
                x.priority,
                x.elder_id,
                x.terminal_id,
                x.state,
                x.category_code,
                x.opened_by,
                x.opened_at,
            )
            for x in session.scalars(select(Case).order_by(Case.id))
        ],
        "events": [
            (
                c(e.case_id),
                e.event,
                e.actor,
                e.from_state,
                e.to_state,
                {k: (a(v) if k == "alarm_id" else v) for k, v in e.detail.items()},
            )
            for e in session.scalars(select(CaseEvent).order_by(CaseEvent.id))
        ],
        "terminals": [
            (t.id, t.last_seen_at, t.battery_pct, t.status)
            for t in session.scalars(select(Terminal).order_by(Terminal.id))
        ],
        "recorded": [
            (a(r.alarm_id), r.kind, c(r.case_id), r.duplicate, r.attached, r.case_code is None)
            for r in recorded
        ],
    }


def test_a_batch_stores_what_one_by_one_stores(fresh_engine: Engine) -> None:
    rng = random.Random(2026)
    with Session(fresh_engine) as session:
        terminals: list[tuple[int, int | None]] = []
        for i in range(5):
            elder = make_elder(session, name=f"批{i}")
            terminals.append((make_terminal(session, elder).id, elder.id))
        terminals.append((make_terminal(session, None).id, None))  # not yet given to an elder
        session.commit()
        # Earlier traffic: cases open inside and outside the repeat window, unacknowledged
        # alarms inside the retry window.
        for ago in (1200, 60):
            for press in storm(rng, terminals, 12):
                press = dataclasses.replace(press, dedup_key=f"old{ago}{press.dedup_key}")
                record_alarm(session, press, now=NOW - dt.timedelta(seconds=ago))
    for seed in range(25):
        presses = storm(random.Random(seed), terminals, 40)
        results = []
        for one_by_one in (True, False):
            with Session(fresh_engine) as session:
                before = {
                    "alarms": session.scalar(select(func.max(Alarm.id))) or 0,
                    "cases": session.scalar(select(func.max(Case.id))) or 0,
                }
                if one_by_one:
                    recorded = [store_alarm(session, p, now=NOW) for p in presses]
                else:
                    recorded = store_alarms(session, presses, now=NOW)
                results.append(dump(session, before, recorded))
                session.rollback()
        for part in results[0]:
            assert results[1][part] == results[0][part], f"seed {seed}: {part} differ"
