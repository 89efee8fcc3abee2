"""Time the visit reminder step on PostgreSQL: seed the demo district, plan December 2026, then
queue the evening reminders for the busiest day (first run) and run again (idempotent).

    .venv/bin/python bench/visit_reminders.py [--elders 100000]

A fresh database (HYT_TEST_POSTGRES_URL or the local server) is created and dropped. Seeding and
planning are not timed; each reminder run is one session, committed, as the scheduler's job
does. Prints one Markdown table row per run for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HYT_LOG_LEVEL", "WARNING")
os.environ.setdefault("HYT_ENV", "test")
os.environ.setdefault("HYT_SECRET_KEY", "bench-secret-key-0123456789-abcdefghijklmnop")

from callcenter import db, migrate
from callcenter.demo_district import seed_district
from callcenter.logging_setup import configure_logging
from schedules.models import Visit
from schedules.reminders import send_visit_reminders
from schedules.settings import ScheduleSettings
from schedules.visit_planner import plan_period

ADMIN_URL = os.environ.get("HYT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1/test")
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
MONTH = "2026-12"
PLAN_NOW = dt.datetime(2026, 11, 28, 2, 30, tzinfo=SHANGHAI)
REMINDER_TIME = dt.time(18, 0)  # the evening before the visit, Shanghai time


def prepare(engine: Engine, elders: int, settings: ScheduleSettings) -> tuple[dt.date, int]:
    """Seed the district and plan the month (not timed); returns the busiest day and its
    number of visits."""
    with Session(engine) as s:
        seed_district(s, elders=elders)
        s.commit()
    with Session(engine) as s:
        plan_period(s, month=MONTH, now=PLAN_NOW, settings=settings)
        s.commit()
    with Session(engine) as s:
        day, count = s.execute(
            select(Visit.planned_date, func.count())
            .group_by(Visit.planned_date)
            .order_by(func.count().desc())
            .limit(1)
        ).one()
    return day, count


def time_reminders(engine: Engine, elders: int, settings: ScheduleSettings) -> None:
    """Queue the busiest day's reminders twice, printing a table row for each run."""
    day, count = prepare(engine, elders, settings)
    eve = dt.datetime.combine(day - dt.timedelta(days=1), REMINDER_TIME, tzinfo=SHANGHAI)
    for label in ("first run (queues every reminder)", "second run (all already queued)"):
        with Session(engine) as s:
            started = time.perf_counter()
            summary = send_visit_reminders(s, now=eve, settings=settings)
            s.commit()
            took = time.perf_counter() - started
        print(
            f"| {elders:,} elders | {day} ({count:,} visits) | {label} | {took:.2f} s | "
            f"queued {summary.queued:,}, already {summary.already_queued:,} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--elders", type=int, default=100_000, help="size of the district")
    args = parser.parse_args()
    if args.elders < 1:
        parser.error("--elders must be at least 1")
    configure_logging("WARNING")
    name = f"hyt_bench_rem_{uuid.uuid4().hex[:8]}"
    admin = db.make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        engine = db.make_engine(make_url(ADMIN_URL).set(database=name).render_as_string(False))
        try:
            db.use_engine(engine)
            migrate.upgrade(engine)
            db.load_models()
            time_reminders(engine, args.elders, ScheduleSettings())
        finally:
            engine.dispose()
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
