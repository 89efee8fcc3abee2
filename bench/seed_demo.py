"""Benchmark: `hyt seed-demo --elders N` against PostgreSQL, with SQLite in the same run.

    .venv/bin/python bench/seed_demo.py [--elders 13500] [--repeat 3]

Each repeat seeds a fresh, migrated database and times only the seeding (as the command does).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from callcenter import db, migrate
from callcenter.demo_district import seed_district

ADMIN_URL = os.environ.get("HYT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1/test")


def time_seed(url: str, elders: int) -> float:
    engine = db.make_engine(url)
    migrate.upgrade(engine)
    started = time.perf_counter()
    with Session(engine) as session:
        seed_district(session, elders=elders)
        session.commit()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def postgres_run(elders: int) -> float:
    name = f"hyt_bench_{uuid.uuid4().hex[:8]}"
    admin = db.make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        return time_seed(make_url(ADMIN_URL).set(database=name).render_as_string(False), elders)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def sqlite_run(elders: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return time_seed(f"sqlite:///{tmp}/bench.db", elders)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--elders", type=int, default=13_500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"postgresql": [], "sqlite": []}
    for _ in range(args.repeat):  # interleaved, so that machine noise hits both alike
        results["postgresql"].append(postgres_run(args.elders))
        results["sqlite"].append(sqlite_run(args.elders))
    print("| database | elders | median s | min s | max s | elders/s (median) |")
    print("|---|---|---|---|---|---|")
    for name, times in results.items():
        med = statistics.median(times)
        print(
            f"| {name} | {args.elders} | {med:.1f} | {min(times):.1f} | {max(times):.1f} | "
            f"{args.elders / med:,.0f} |"
        )


if __name__ == "__main__":
    main()
