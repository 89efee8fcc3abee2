"""Benchmark: a month's visit plan and the terminal watchdog sweep on a fresh PostgreSQL database.

    .venv/bin/python bench/visit_planning.py [--elders 13500,100000]

For each size: seed the demo district (elders, one terminal each, volunteers; not timed), then
time `plan_period` for December 2026 (no history), the same month again (idempotent re-run),
January 2027 after every December visit was recorded (continuity path; the fallback holiday
calendar), and watchdog sweeps over all terminals: steady state, 0.1 % scattered silence, one
street-wide outage (grouped), and the street reporting again. Target: a month for 100,000 elders
in under 10 s. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).parents[1]))
os.environ.setdefault("HYT_LOG_LEVEL", "WARNING")

from callcenter import db, migrate
from callcenter.demo_district import seed_district
from callcenter.logging_setup import configure_logging
from callcenter.models import Case, Elder
from devices.models import Terminal
from schedules.models import Visit, VisitStatus
from schedules.settings import ScheduleSettings
from schedules.visit_planner import plan_period
from schedules.watchdog import sweep_silent_terminals

ADMIN_URL = os.environ.get("HYT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1/test")
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
PLAN_NOW = dt.datetime(2026, 11, 25, 3, 0, tzinfo=SHANGHAI)
SWEEP_NOW = dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.UTC)
T = TypeVar("T")


def timed(work: Callable[[Session], T], engine: Engine) -> tuple[T, float]:
    """Run ``work`` in one transaction and commit, timing both: what the scheduler's job does."""
    started = time.perf_counter()
    with Session(engine) as session:
        result = work(session)
        session.commit()
    return result, time.perf_counter() - started


def run(engine: Engine, elders: int) -> list[tuple[str, str, float]]:
    settings = ScheduleSettings()
    started = time.perf_counter()
    with Session(engine) as session:
        seeded = seed_district(session, elders=elders)
        session.commit()
    rows = [
        (
            "seed the district (not the benchmark)",
            f"{seeded.volunteers} volunteers",
            time.perf_counter() - started,
        )
    ]

    def plan(month: str) -> Callable[[Session], str]:
        def work(session: Session) -> str:
            s = plan_period(session, month=month, now=PLAN_NOW, settings=settings)
            return (
                f"{s.created_total:,} created, {s.already_planned:,} existed, "
                f"continuity {s.continuity_kept:,}/{s.continuity_possible:,}, "
                f"max load {s.max_load} (cap {s.load_cap})"
            )

        return work

    for label, month in (
        ("plan 2026-12 (no history)", "2026-12"),
        ("plan 2026-12 again (idempotent)", "2026-12"),
    ):
        detail, seconds = timed(plan(month), engine)
        rows.append((label, detail, seconds))
    with Session(engine) as session:
        session.execute(update(Visit).values(status=VisitStatus.DONE))
        session.commit()
    detail, seconds = timed(plan("2027-01"), engine)
    rows.append(
        ("plan 2027-01 after December done (continuity, fallback calendar)", detail, seconds)
    )

    def sweep_at(now: dt.datetime) -> Callable[[Session], str]:
        def work(session: Session) -> str:
            s = sweep_silent_terminals(session, now=now, settings=settings)
            return (
                f"{s.newly_silent:,} newly silent, {s.cases_opened:,} cases, "
                f"{s.group_cases_opened} grouped, {s.cases_closed + s.group_cases_closed:,} closed"
            )

        return work

    sweep = sweep_at(SWEEP_NOW)

    with Session(engine) as session:
        terminals = session.scalar(select(func.count()).select_from(Terminal)) or 0
        session.execute(update(Terminal).values(last_seen_at=SWEEP_NOW - dt.timedelta(minutes=1)))
        session.commit()
    rows.append((f"watchdog sweep, {terminals:,} terminals all reporting", *timed(sweep, engine)))
    long_ago = SWEEP_NOW - dt.timedelta(days=3)
    with Session(engine) as session:
        session.execute(
            update(Terminal).where(Terminal.id % 1000 == 0).values(last_seen_at=long_ago)
        )
        session.commit()
    rows.append(("watchdog sweep, 0.1 % scattered silence", *timed(sweep, engine)))
    street = "金霞街道"
    in_street = select(Elder.id).where(Elder.street == street)
    with Session(engine) as session:
        session.execute(
            update(Terminal).where(Terminal.elder_id.in_(in_street)).values(last_seen_at=long_ago)
        )
        session.commit()
    rows.append((f"watchdog sweep, {street} outage", *timed(sweep, engine)))
    with Session(engine) as session:
        session.execute(
            update(Terminal)
            .where(Terminal.elder_id.in_(in_street))
            .values(last_seen_at=SWEEP_NOW + dt.timedelta(minutes=5))
        )
        session.commit()
    later = sweep_at(SWEEP_NOW + dt.timedelta(minutes=6))
    rows.append((f"watchdog sweep, {street} reports again", *timed(later, engine)))
    with Session(engine) as session:
        open_top = session.scalar(
            select(func.count()).where(Case.parent_id.is_(None), Case.closed_at.is_(None))
        )
    rows.append(("open top-level cases after the outage", f"{open_top:,}", 0.0))
    return rows


def fresh_database() -> tuple[str, str]:
    name = f"hyt_bench_{uuid.uuid4().hex[:8]}"
    admin = db.make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, make_url(ADMIN_URL).set(database=name).render_as_string(False)


def drop_database(name: str) -> None:
    admin = db.make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--elders", default="13500,100000", help="comma-separated sizes")
    args = parser.parse_args()
    configure_logging("WARNING")
    db.load_models()
    print(f"Command: `.venv/bin/python bench/visit_planning.py --elders {args.elders}`\n")
    print("| elders | step | result | seconds |")
    print("|---|---|---|---|")
    for size in (int(s) for s in args.elders.split(",")):
        name, url = fresh_database()
        engine = db.make_engine(url)
        try:
            migrate.upgrade(engine)
            for step, detail, seconds in run(engine, size):
                print(f"| {size:,} | {step} | {detail} | {seconds:.2f} |", flush=True)
        finally:
            engine.dispose()
            drop_database(name)


if __name__ == "__main__":
    main()
