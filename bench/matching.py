"""Benchmark: `match_volunteers` with 10,000 volunteers, on PostgreSQL and SQLite, against the
path it replaced (``bench/matching_before.py``) and the `nearest_only` baseline.

    .venv/bin/python bench/matching.py [--db both|postgres|sqlite] [--volunteers 10000]
        [--requests 1000] [--seed 2026]

A fresh, migrated database gets the demo district (13,500 elders, their terminals and ~500
volunteers), then bulk-inserted volunteers up to ``--volunteers`` with the district's mix of
skills, radii and weekly windows, and four weeks of case and offer history (so that the fairness,
continuity and task-limit parts have rows to read). Then ``--requests`` random service requests:
a random elder, a random volunteer-served item, a random moment between 07:00 and 22:00 Shanghai
time in the coming week. Each request opens its own session, as a web request does; the
functions take turns on each request, and the new path must return exactly the old path's
candidates (scores, order, explanations) for every request, or the run fails. The CPU column
is this thread's time (SQLite: the whole request; PostgreSQL: without the server's share), which
other processes on a busy machine do not inflate. The last row of each database forces a reload
of the roster: what the first match after a volunteer's edit pays. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from matching_before import match_volunteers_before  # bench/matching_before.py
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from callcenter import db, migrate
from callcenter.demo_district import STREETS, SURNAMES, VOLUNTEER_GIVEN, seed_district
from callcenter.logging_setup import configure_logging
from callcenter.models import Case, CaseKind, CaseState, Elder
from volunteers import roster_cache
from volunteers.catalog import get_catalog
from volunteers.matching import match_volunteers, nearest_only
from volunteers.models import (
    AvailabilityWindow,
    Offer,
    OfferStatus,
    Volunteer,
    VolunteerSkill,
)

ADMIN_URL = os.environ.get("HYT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1/test")
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = dt.datetime(2026, 11, 30, 0, 0, tzinfo=dt.UTC)


def add_volunteers(session: Session, rng: random.Random, count: int) -> None:
    """Volunteers like the demo district's (same streets, skills, radii, windows), in bulk."""
    skill_codes = [c.code for c in get_catalog().categories if not c.operator_first]
    rows = []
    for i in range(1, count + 1):
        _, clat, clon, communities = rng.choice(STREETS)
        rows.append(
            {
                "code": f"B{i:06d}",
                "name": rng.choice(SURNAMES) + rng.choice(VOLUNTEER_GIVEN),
                "phone": f"+86199{i:08d}",
                "community": rng.choice(communities),
                "home_latitude": round(clat + rng.gauss(0, 0.006), 6),
                "home_longitude": round(clon + rng.gauss(0, 0.006), 6),
                "service_radius_m": rng.choice((2000, 3000, 3000, 5000)),
                "on_duty": rng.random() < 0.85,
                "max_concurrent_tasks": rng.choice((1, 2, 2, 3)),
                "rating": round(rng.uniform(3.8, 5.0), 1),
            }
        )
    ids = list(
        session.scalars(
            insert(Volunteer).returning(Volunteer.id, sort_by_parameter_order=True), rows
        )
    )
    skills: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    for vid in ids:
        chosen = set(rng.sample(skill_codes, k=rng.randint(2, 5)))
        if rng.random() < 0.6:
            chosen.add("visits")
        skills += [
            {"volunteer_id": vid, "category_code": code, "level": rng.choice((1, 1, 2, 3))}
            for code in sorted(chosen)
        ]
        pattern = rng.random()
        if pattern < 0.5:
            days, start, end = range(5), 8 * 60, 18 * 60
        elif pattern < 0.8:
            days, start, end = range(7), 7 * 60, 21 * 60
        else:
            days, start, end = range(7), 18 * 60, 22 * 60
        windows += [
            {"volunteer_id": vid, "weekday": d, "start_minute": start, "end_minute": end}
            for d in days
        ]
    session.execute(insert(VolunteerSkill), skills)
    session.execute(insert(AvailabilityWindow), windows)


def add_history(session: Session, rng: random.Random, cases: int) -> int:
    """Four weeks of service cases, each offered to 3–6 volunteers, one of whom took it."""
    elder_ids = list(session.scalars(select(Elder.id)))
    volunteer_ids = list(session.scalars(select(Volunteer.id)))
    items = [i for c in get_catalog().categories if not c.operator_first for i in c.items]
    case_rows: list[dict[str, Any]] = []
    for n in range(cases):
        opened = NOW - dt.timedelta(minutes=rng.randrange(28 * 24 * 60))
        item = rng.choice(items)
        # Cases of the last day are still in progress (accepted, not finished): they hold
        # their volunteer. The rest were closed the same day.
        open_case = NOW - opened < dt.timedelta(days=1)
        case_rows.append(
            {
                "code": f"H{n:06d}",  # seven characters: live codes have five
                "kind": CaseKind.SERVICE,
                "state": CaseState.HANDLE if open_case else CaseState.CLOSED,
                "priority": 3,
                "elder_id": rng.choice(elder_ids),
                "category_code": item.category_code,
                "item_code": item.code,
                "opened_at": opened,
                "opened_by": "bench",
                "state_changed_at": opened,
                "closed_at": None if open_case else opened + dt.timedelta(hours=2),
            }
        )
    case_ids = list(
        session.scalars(insert(Case).returning(Case.id, sort_by_parameter_order=True), case_rows)
    )
    offers = []
    for case_id, row in zip(case_ids, case_rows, strict=True):
        asked = rng.sample(volunteer_ids, k=rng.randint(3, 6))
        sent = row["opened_at"] + dt.timedelta(minutes=1)
        for k, vid in enumerate(asked):
            if k == 0:
                status = OfferStatus.ACCEPTED if row["closed_at"] is None else OfferStatus.COMPLETED
            else:
                status = rng.choice(
                    (OfferStatus.DECLINED, OfferStatus.EXPIRED, OfferStatus.STOOD_DOWN)
                )
            offers.append(
                {
                    "case_id": case_id,
                    "volunteer_id": vid,
                    "wave": 1,
                    "status": status,
                    "score": 0.5,
                    "sent_at": sent,
                    "expires_at": sent + dt.timedelta(minutes=3),
                    "responded_at": sent + dt.timedelta(minutes=rng.randint(0, 3)),
                }
            )
    session.execute(insert(Offer), offers)
    return len(offers)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


FUNCTIONS = ("match_volunteers", "before: one SQL statement", "nearest_only (baseline)")


def seed(engine: Engine, args: argparse.Namespace) -> tuple[int, list[int]]:
    rng = random.Random(args.seed)
    started = time.perf_counter()
    with Session(engine) as session:
        seed_district(session, seed=args.seed, elders=args.elders)
        have = session.scalar(select(func.count()).select_from(Volunteer)) or 0
        add_volunteers(session, rng, max(0, args.volunteers - have))
        offers = add_history(session, rng, args.cases)
        session.commit()
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    with Session(engine) as session:
        volunteers = session.scalar(select(func.count()).select_from(Volunteer)) or 0
        elder_ids = list(session.scalars(select(Elder.id)))
    print(
        f"{engine.dialect.name}: seeded {volunteers} volunteers, {len(elder_ids)} elders, "
        f"{args.cases} cases, {offers} offers in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return volunteers, elder_ids


def make_requests(
    args: argparse.Namespace, elder_ids: list[int]
) -> list[tuple[int, str, dt.datetime]]:
    rng = random.Random(args.seed + 1)
    items = [i.code for c in get_catalog().categories if not c.operator_first for i in c.items]
    requests = []
    for _ in range(args.requests + args.warmup):
        day = dt.date(2026, 11, 30) + dt.timedelta(days=rng.randrange(7))
        minute = rng.randrange(7 * 60, 22 * 60)
        local = dt.datetime.combine(day, dt.time(minute // 60, minute % 60), tzinfo=SHANGHAI)
        requests.append((rng.choice(elder_ids), rng.choice(items), local.astimezone(dt.UTC)))
    return requests


def call(
    engine: Engine, name: str, elder_id: int, item: str, at: dt.datetime
) -> tuple[float, float, Any]:
    """One request in its own session, as a web request is: (wall ms, CPU ms, result).

    The CPU time is this thread's: with SQLite that is the whole request, database included;
    with PostgreSQL the server's share is not in it. It is what other processes on a busy
    machine cannot inflate."""
    with Session(engine) as session:
        started, cpu = time.perf_counter(), time.thread_time()
        result: Any
        if name == FUNCTIONS[0]:
            result = match_volunteers(session, item_code=item, elder_id=elder_id, at=at)
        elif name == FUNCTIONS[1]:
            result = match_volunteers_before(session, item_code=item, elder_id=elder_id, at=at)
        else:
            result = nearest_only(session, item_code=item, elder_id=elder_id, at=at)
        return (
            (time.perf_counter() - started) * 1000,
            (time.thread_time() - cpu) * 1000,
            result,
        )


def run(engine: Engine, args: argparse.Namespace) -> list[str]:
    """Measure every function on one database; return the table's rows."""
    volunteers, elder_ids = seed(engine, args)
    requests = make_requests(args, elder_ids)
    # The roster's load after a change (cold): what the first match after an edit pays.
    cold: list[float] = []
    for elder_id, item, at in requests[:5]:
        roster_cache.forget_all()
        cold.append(call(engine, FUNCTIONS[0], elder_id, item, at)[0])
    times: dict[str, list[float]] = {name: [] for name in FUNCTIONS}
    cpus: dict[str, list[float]] = {name: [] for name in FUNCTIONS}
    found: dict[str, list[int]] = {name: [] for name in FUNCTIONS}
    differ = 0
    # Interleaved, so that the machine's load at any moment weighs on every function alike.
    for n, (elder_id, item, at) in enumerate(requests):
        results = {}
        for name in FUNCTIONS:
            elapsed, cpu, results[name] = call(engine, name, elder_id, item, at)
            if n >= args.warmup:
                times[name].append(elapsed)
                cpus[name].append(cpu)
                result = results[name]
                found[name].append(len(result) if isinstance(result, list) else int(bool(result)))
        # The fast path must give exactly what the old one gave (scores, order, reasons).
        differ += results[FUNCTIONS[0]] != results[FUNCTIONS[1]]
    backend = f"{engine.dialect.name} {server_version(engine)}"
    base50, base99 = (percentile(times[FUNCTIONS[1]], q) for q in (0.5, 0.99))
    rows = []
    for name in FUNCTIONS:
        t = times[name]
        p50, p90, p99 = (percentile(t, q) for q in (0.5, 0.9, 0.99))
        rows.append(
            f"| {backend} | {name} | {volunteers:,} | {len(t):,} | {p50:.2f} | {p90:.2f} | "
            f"{p99:.2f} | {max(t):.2f} | {base50 / p50:.1f}× / {base99 / p99:.1f}× | "
            f"{percentile(cpus[name], 0.5):.2f} / {percentile(cpus[name], 0.99):.2f} | "
            f"{statistics.mean(found[name]):.1f} |"
        )
    rows.append(
        f"| {backend} | roster load after a change (cold, 5 runs) | {volunteers:,} | 5 | "
        f"{statistics.median(cold):.2f} | | | {max(cold):.2f} | | | |"
    )
    print(f"{engine.dialect.name}: {differ} of {len(requests)} requests differ", file=sys.stderr)
    if differ:
        raise SystemExit(f"{differ} requests gave different candidates from the old path")
    return rows


def server_version(engine: Engine) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return str(conn.execute(text("SELECT sqlite_version()")).scalar())
        return str(conn.execute(text("SHOW server_version")).scalar()).split()[0]


def on_postgres(args: argparse.Namespace) -> list[str]:
    name = f"hyt_bench_{uuid.uuid4().hex[:8]}"
    admin = db.make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        engine = db.make_engine(make_url(ADMIN_URL).set(database=name).render_as_string(False))
        migrate.upgrade(engine)
        try:
            return run(engine, args)
        finally:
            engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def on_sqlite(args: argparse.Namespace) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = db.make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        try:
            migrate.upgrade(engine)
            return run(engine, args)
        finally:
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=("both", "postgres", "sqlite"), default="both")
    parser.add_argument("--volunteers", type=int, default=10_000)
    parser.add_argument("--elders", type=int, default=13_500)
    parser.add_argument("--cases", type=int, default=6_000, help="history: four weeks of cases")
    parser.add_argument("--requests", type=int, default=1_000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    configure_logging("ERROR")
    rows = []
    if args.db in ("both", "postgres"):
        rows += on_postgres(args)
    if args.db in ("both", "sqlite"):
        rows += on_sqlite(args)
    command = " ".join([".venv/bin/python", *sys.argv])
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n`{command}` — {os.cpu_count()} CPUs, load average {load} at the end\n")
    print(
        "| database | function | volunteers | requests | p50 ms | p90 ms | p99 ms | max ms "
        "| before ÷ this (p50 / p99) | CPU ms p50 / p99 | mean found |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
