"""Benchmark: what ``/metrics`` and ``/readyz`` cost on a centre with a year of history.

    .venv/bin/python bench/ops_endpoints.py [--db both|postgres|sqlite] [--alarms 1000000]
        [--runs 30]

A fresh, migrated database gets ``--alarms`` alarms spread over a year (mostly handled periodic
tests, as 13,500 terminals testing daily would leave; 40 waiting in the queue), 13,500 terminals
(100 silent), 200,000 sent SMS and 25 queued, and two weeks of scheduler job runs (one row per
5 s per job, as the offer and outbox timers write). Then ``--runs`` scrapes of each endpoint
through the ASGI app, each preceded by the database part alone. Prints a Markdown table; the
database part is what a scrape or probe costs the database server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("HYT_ENV", "test")
os.environ.setdefault("HYT_SECRET_KEY", "bench-secret-key-0123456789-abcdefghijklmnop")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from callcenter import db, migrate, readiness
from callcenter.metrics import read_snapshot
from callcenter.ops_settings import get_ops_settings
from callcenter.web.app import create_app

POSTGRES = os.environ.get("HYT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1/test")


def fill(engine: Engine, alarms: int) -> None:
    """Rows made by the database itself (generate_series / a recursive CTE): seconds, not hours."""
    pg = engine.dialect.name == "postgresql"
    series = (
        "SELECT g AS n FROM generate_series(1, :count) AS g"
        if pg
        else "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < :count) "
        "SELECT n FROM s"
    )
    ago = (
        (lambda seconds: f"now() - ({seconds}) * interval '1 second'")
        if pg
        else (
            lambda seconds: (
                f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || ({seconds}) || ' seconds')"
            )
        )
    )
    year = 365 * 86400
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO terminals (serial, model, protocol, sip_user, caller_id, button_map, "
                "report_interval_s, status, created_at) "
                f"SELECT 'B' || n, 'HYT-T200', 'dtmf', 'b' || n, NULL, '{{}}', 86400, "
                f"CASE WHEN n <= 100 THEN 'silent' ELSE 'active' END, {ago('0')} FROM ({series}) t"
            ),
            {"count": 13_500},
        )
        conn.execute(
            text(
                "INSERT INTO alarms (received_at, source, kind, priority, caller, raw, dedup_key, "
                "status) "
                f"SELECT {ago(f'n * {year}.0 / :count')}, 'contact_id', "
                "CASE WHEN n % 50 = 0 THEN 'service' WHEN n % 97 = 0 THEN 'life_safety' "
                "ELSE 'test' END, CASE WHEN n % 50 = 0 THEN 2 WHEN n % 97 = 0 THEN 1 ELSE 5 END, "
                "'', '{}', 'bench-' || n, CASE WHEN n <= 40 THEN 'new' ELSE 'handled' END "
                f"FROM ({series}) t"
            ),
            {"count": alarms},
        )
        conn.execute(
            text(
                'INSERT INTO outbox_messages (channel, "to", body, idempotency_key, status, '
                "attempts, next_attempt_at, created_at) "
                f"SELECT 'sms', '+8613700000000', 'bench', 'bench-' || n, "
                f"CASE WHEN n <= 25 THEN 'queued' ELSE 'sent' END, 1, {ago('0')}, "
                f"{ago(f'n * {year}.0 / :count')} FROM ({series}) t"
            ),
            {"count": 200_025},
        )
        runs = 14 * 86400 // 5
        conn.execute(
            text(
                "INSERT INTO scheduler_job_runs (job_name, scheduled_for, started_at, finished_at, "
                "outcome, attempts, missed, runner, detail) "
                f"SELECT CASE WHEN n % 2 = 0 THEN 'offers.advance' ELSE 'outbox.send' END, "
                f"{ago('(:count - n) * 5 + 1000')}, {ago('(:count - n) * 5')}, "
                f"{ago('(:count - n) * 5')}, 'ok', 1, 0, 'bench', '{{}}' FROM ({series}) t"
            ),
            {"count": runs},
        )
    # Committed: statistics gathered in a transaction that rolls back are lost again.
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))


def timed(fn: object, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    return times


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(name: str, url: str, alarms: int, runs: int) -> list[str]:
    engine = db.make_engine(url)
    migrate.upgrade(engine)
    started = time.perf_counter()
    fill(engine, alarms)
    fill_s = time.perf_counter() - started
    db.use_engine(engine)
    ops = get_ops_settings()
    loopback = TestClient(create_app(), client=("127.0.0.1", 40000))
    assert loopback.get("/metrics").status_code == 200  # warm-up, and the app works
    rows = []
    checks = ("database", "scheduler", "outbox")
    for label, fn in (
        ("metrics: database part", lambda: read_snapshot(ops.metrics_window_s)),
        ("metrics: whole scrape", lambda: loopback.get("/metrics")),
        ("readyz: database part", lambda: readiness.database_checks(engine, ops, checks)),
        ("readyz: whole probe", lambda: loopback.get("/readyz")),
    ):
        times = timed(fn, runs)
        rows.append(f"| {name} | {label} | {statistics.median(times):.1f} | {p(times, 0.99):.1f} |")
    engine.dispose()
    print(f"{name}: filled in {fill_s:.1f} s", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("both", "postgres", "sqlite"), default="both")
    parser.add_argument("--alarms", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    rows = []
    if args.db in ("both", "postgres"):
        name = f"hyt_bench_ops_{uuid.uuid4().hex[:8]}"
        admin = db.make_engine(POSTGRES, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(POSTGRES).set(database=name).render_as_string(False)
            rows += run("PostgreSQL", url, args.alarms, args.runs)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    if args.db in ("both", "sqlite"):
        with tempfile.TemporaryDirectory() as folder:
            rows += run("SQLite", f"sqlite:///{folder}/bench.db", args.alarms, args.runs)
    print(f"{args.alarms:,} alarms, 13,500 terminals, 200,025 SMS, 241,920 job runs; "
          f"{args.runs} runs each\n")  # fmt: skip
    print("| database | what | p50 ms | p99 ms |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
