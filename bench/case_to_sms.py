"""Benchmark: a service case opened → its first offer SMS queued (committed), on PostgreSQL.

    .venv/bin/python bench/case_to_sms.py [--cases 300]

A fresh, migrated database gets the demo district (13,500 elders, ~500 volunteers). Each request
opens a service case for a random elder and a random volunteer item, matches, writes the wave of
offers and their outbox rows, and commits — one unit of work, as the dispatch API does. The time
is measured from the start of the request to its commit (when the SMS sender can see the row).
Target (issue 4): p99 < 200 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import time
import uuid
from zoneinfo import ZoneInfo

from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from callcenter import db, migrate
from callcenter.cases import open_case
from callcenter.demo_district import seed_district
from callcenter.models import CaseKind, Elder
from volunteers.catalog import PRIORITY_RANK, get_catalog
from volunteers.offers import send_wave

ADMIN_URL = os.environ.get("HYT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1/test")
# A Monday mid-morning in Shanghai: most of the district's volunteers are on duty.
AT = dt.datetime(2026, 11, 30, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")).astimezone(dt.UTC)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=300)
    args = parser.parse_args()
    name = f"hyt_bench_{uuid.uuid4().hex[:8]}"
    admin = db.make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = db.make_engine(make_url(ADMIN_URL).set(database=name).render_as_string(False))
    try:
        migrate.upgrade(engine)
        with Session(engine) as s:
            seed_district(s, elders=13_500)
            s.commit()
            elder_ids = list(s.scalars(select(Elder.id)))
        catalog = get_catalog()
        items = [i for c in catalog.categories if not c.operator_first for i in c.items]
        rng = random.Random(7)
        times: list[float] = []
        offered: list[int] = []
        for _ in range(args.cases):
            item = rng.choice(items)
            started = time.perf_counter()
            with Session(engine) as s:
                case = open_case(
                    s,
                    kind=CaseKind.SERVICE,
                    priority=PRIORITY_RANK[item.priority],
                    actor="operator:1",
                    elder_id=rng.choice(elder_ids),
                    category_code=item.category_code,
                    item_code=item.code,
                    at=AT,
                )
                wave = send_wave(s, case, actor="operator:1", at=AT)
                s.commit()
            times.append((time.perf_counter() - started) * 1000)
            offered.append(len(wave.offered))
        with_offers = sum(1 for n in offered if n)
        print(f"Command: .venv/bin/python bench/case_to_sms.py --cases {args.cases}")
        print("| cases | with offers sent | p50 ms | p90 ms | p99 ms | max ms | mean ms |")
        print("|---|---|---|---|---|---|---|")
        print(
            f"| {args.cases} | {with_offers} | {percentile(times, 0.5):.1f} | "
            f"{percentile(times, 0.9):.1f} | {percentile(times, 0.99):.1f} | {max(times):.1f} | "
            f"{statistics.mean(times):.1f} |"
        )
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
