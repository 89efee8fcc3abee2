"""Benchmark: `match_volunteers` (and the `nearest_only` baseline) with 10,000 volunteers.

    .venv/bin/python bench/matching.py [--volunteers 10000] [--requests 1000] [--seed 2026]

A fresh, migrated PostgreSQL database gets the demo district (13,500 elders, their terminals and
~500 volunteers), then bulk-inserted volunteers up to ``--volunteers`` with the district's mix of
skills, radii and weekly windows, and four weeks of case and offer history (so that the fairness,
continuity and task-limit parts of the query have rows to read). Then ``--requests`` random
service requests: a random elder, a random volunteer-served item, a random moment between 07:00
and 22:00 Shanghai time in the coming week. Each request opens its own session, as a web request
does. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import time
import uuid
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from callcenter import db, migrate
from callcenter.demo_district import STREETS, SURNAMES, VOLUNTEER_GIVEN, seed_district
from callcenter.models import Case, CaseKind, CaseState, Elder
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


def run(engine: Engine, args: argparse.Namespace) -> None:
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
        f"seeded {volunteers} volunteers, {len(elder_ids)} elders, {args.cases} cases, "
        f"{offers} offers in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    items = [i.code for c in get_catalog().categories if not c.operator_first for i in c.items]
    requests = []
    for _ in range(args.requests + args.warmup):
        day = dt.date(2026, 11, 30) + dt.timedelta(days=rng.randrange(7))
        minute = rng.randrange(7 * 60, 22 * 60)
        local = dt.datetime.combine(day, dt.time(minute // 60, minute % 60), tzinfo=SHANGHAI)
        requests.append((rng.choice(elder_ids), rng.choice(items), local.astimezone(dt.UTC)))

    results: dict[str, tuple[list[float], list[int]]] = {}
    for name in ("match_volunteers", "nearest_only"):
        times: list[float] = []
        found: list[int] = []
        for n, (elder_id, item, at) in enumerate(requests):
            with Session(engine) as session:
                started = time.perf_counter()
                if name == "match_volunteers":
                    count = len(match_volunteers(session, item_code=item, elder_id=elder_id, at=at))
                else:
                    count = int(nearest_only(session, item_code=item, elder_id=elder_id, at=at)
                                is not None)  # fmt: skip
                elapsed = (time.perf_counter() - started) * 1000
            if n >= args.warmup:
                times.append(elapsed)
                found.append(count)
        results[name] = (times, found)

    command = " ".join([".venv/bin/python", *sys.argv])
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n`{command}` — PostgreSQL {server_version(engine)}, {os.cpu_count()} CPUs, "
          f"load average {load}\n")  # fmt: skip
    print("| function | volunteers | requests | p50 ms | p90 ms | p99 ms | max ms | mean found |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (times, found) in results.items():
        print(
            f"| {name} | {volunteers:,} | {len(times):,} | {statistics.median(times):.2f} | "
            f"{percentile(times, 0.90):.2f} | {percentile(times, 0.99):.2f} | {max(times):.2f} | "
            f"{statistics.mean(found):.1f} |"
        )


def server_version(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("SHOW server_version")).scalar())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--volunteers", type=int, default=10_000)
    parser.add_argument("--elders", type=int, default=13_500)
    parser.add_argument("--cases", type=int, default=6_000, help="history: four weeks of cases")
    parser.add_argument("--requests", type=int, default=1_000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    name = f"hyt_bench_{uuid.uuid4().hex[:8]}"
    admin = db.make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        engine = db.make_engine(make_url(ADMIN_URL).set(database=name).render_as_string(False))
        migrate.upgrade(engine)
        try:
            run(engine, args)
        finally:
            engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
