"""Console live stream and queue API under load: 50 logged-in consoles on the SSE stream, alarms
recorded through the real intake path, and ``wrk`` against the queue API with a bare FastAPI
endpoint as the baseline, in the same run.

    .venv/bin/python bench/console_sse.py --databases sqlite,postgresql --clients 50 --alarms 20

Needs ``wrk`` (``scripts/bench-deps.sh`` installs it). For each database: a fresh migrated
database with a seeded district, ``--clients`` operator accounts, the web app in its own process
(uvicorn, one worker, as ``hyt web`` runs it) and a bare FastAPI app returning a constant JSON
under the same uvicorn settings. Prints Markdown tables for BENCHMARKS.md.

Delivery is measured the way the console page does it: each client holds ``GET /api/events``
open (reconnecting 500 ms after the server ends a stream, as the ``retry:`` field tells
EventSource to), and on every ``alarms`` event takes the queue the event carries, or, from a
server whose events carry only a marker (before the shared feed), fetches ``GET /api/queue``.
For each alarm and client, "event" is the first event received at or after the alarm's
``received_at`` (the centre's clock, set just before the commit), and "in queue" the first
queue (in an event or fetched) that holds the alarm. Clients and the recorder are in this
process, the server in another, on one machine and one clock (``time.time()``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select, text  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from callcenter import db, migrate  # noqa: E402
from callcenter.console import queue, queue_marker  # noqa: E402
from callcenter.db import utcnow  # noqa: E402
from callcenter.demo_district import seed_district  # noqa: E402
from callcenter.intake import Press, record_alarm  # noqa: E402
from callcenter.models import Alarm, AlarmKind, AlarmSource, Operator, Role  # noqa: E402
from callcenter.supervision import flagged_alarm_ids, supervisor_report  # noqa: E402
from callcenter.web.auth import hash_password  # noqa: E402
from devices.models import Terminal  # noqa: E402

ADMIN_URL = os.environ.get("HYT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1/test")
PASSWORD = "bench-console-password"
SECRET = "bench-secret-key-0123456789-abcdefghijklmnop"
RECONNECT_S = 0.5  # the stream's "retry: 500"
SHANGHAI = ZoneInfo("Asia/Shanghai")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the two servers -------------------------------------------------------------------------
def serve(which: str, port: int) -> None:
    """Run one server in this process (``console_sse.py serve``): the console app or the bare
    baseline, with the same uvicorn settings."""
    import uvicorn
    from fastapi import FastAPI

    app: Any
    if which == "console":
        from callcenter.web.app import create_app

        app = create_app()
    else:
        app = FastAPI()
        constant = [{"id": 1, "kind": "life_safety", "priority": 1, "status": "new"}]

        @app.get("/api/queue")
        def bare_queue() -> list[dict[str, Any]]:
            return constant

        @app.get("/healthz")
        def healthz() -> dict[str, str]:
            return {"status": "ok"}

    # As `hyt web` runs it (one worker, default loop and HTTP implementation), but without the
    # per-request access log, which would measure the terminal rather than the server.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start_server(
    which: str, url: str, log: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``log``: where the server's output goes (default: this process's)."""
    port = free_port()
    env = {**os.environ, "HYT_DATABASE_URL": url, "HYT_ENV": "test", "HYT_SECRET_KEY": SECRET}
    out = log.open("w") if log is not None else None
    proc = subprocess.Popen(
        [sys.executable, __file__, "serve", which, str(port)], env=env, cwd=ROOT,
        stdout=out, stderr=subprocess.STDOUT if out else None,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{which} server exited with {proc.returncode}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{which} server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- databases -------------------------------------------------------------------------------
class Database:
    def __init__(self, kind: str, elders: int) -> None:
        self.kind = kind
        self._dir = tempfile.mkdtemp(prefix="hyt-console-bench-")
        if kind == "sqlite":
            self.url = f"sqlite:///{self._dir}/bench.db"
            self._pg_name = ""
        else:
            self._pg_name = f"hyt_console_{uuid.uuid4().hex[:8]}"
            admin = db.make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self._pg_name}"'))
            admin.dispose()
            self.url = make_url(ADMIN_URL).set(database=self._pg_name).render_as_string(False)
        self.engine = db.make_engine(self.url)
        migrate.upgrade(self.engine)
        with Session(self.engine) as s:
            seed_district(s, elders=elders)
            s.commit()

    def add_history(self, count: int) -> None:
        """``count`` handled alarms from the past (periodic test reports): a year of a district
        is millions of rows, and the queue's reads must not grow with them."""
        if not count:
            return
        if self.kind == "sqlite":
            numbers = (
                f"WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {count})"
            )
            at = "datetime('now', '-' || n || ' seconds')"
        else:
            numbers = f"WITH g(n) AS (SELECT generate_series(1, {count}))"
            at = "now() - n * interval '1 second'"
        with self.engine.begin() as conn:
            conn.execute(text(
                f"{numbers} INSERT INTO alarms (received_at, source, kind, priority, caller, raw, "
                f"dedup_key, status, handled_at) SELECT {at}, 'scaip', 'test', 5, '', '{{}}', "
                f"'history-' || n, 'handled', {at} FROM g"
            ))  # fmt: skip
            conn.execute(text("ANALYZE"))

    def read_times(self) -> dict[str, float]:
        """Milliseconds per read of what the live feed reads on every poll and every change."""
        sessions = sessionmaker(self.engine)
        timings = {}

        def flagged(s: Session) -> object:
            return flagged_alarm_ids(s, now=utcnow(), older_than_s=60)

        def report(s: Session) -> object:
            return supervisor_report(s, now=utcnow(), tz=SHANGHAI, within=(60, 180),
                                     flag_after_s=60, watchdog_grace_s=600)  # fmt: skip

        for name, fn in (("queue marker (every poll)", queue_marker),
                         ("flagged ids (every poll)", flagged),
                         ("queue (every change)", queue),
                         ("supervisor view (GET /api/supervisor)", report)):  # fmt: skip
            with sessions() as s:
                fn(s)
                started = time.perf_counter()
                for _ in range(10):
                    fn(s)
                timings[name] = (time.perf_counter() - started) * 100
        return timings

    def add_operators(self, count: int) -> list[str]:
        return add_operators(self.engine, count)

    def terminals(self, count: int) -> list[tuple[int, int]]:
        with Session(self.engine) as s:
            rows = s.execute(
                select(Terminal.id, Terminal.elder_id).order_by(Terminal.id).limit(count)
            ).all()
        return [(tid, eid) for tid, eid in rows]

    def drop(self) -> None:
        self.engine.dispose()
        if self._pg_name:
            admin = db.make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)'))
            admin.dispose()
        shutil.rmtree(self._dir, ignore_errors=True)


# -- the consoles ----------------------------------------------------------------------------
def add_operators(engine: Engine, count: int) -> list[str]:
    """``count`` operator accounts (password :data:`PASSWORD`); their user names."""
    hashed = hash_password(PASSWORD)  # one hash for all: argon2 is slow on purpose
    names = [f"bench{n:03d}" for n in range(count)]
    with Session(engine) as s:
        s.add_all(
            Operator(username=n, display_name=n, role=Role.OPERATOR, password_hash=hashed)
            for n in names
        )
        s.commit()
    return names


@dataclass
class Console:
    client: httpx.AsyncClient
    events: list[float] = field(default_factory=list)  # when each ``alarms`` event arrived
    seen: dict[int, float] = field(default_factory=dict)  # alarm id → first queue that held it
    connects: int = 0
    errors: int = 0


async def log_in(base: str, username: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(30, read=60))
    response = await client.post("/api/session", json={"username": username, "password": PASSWORD})
    response.raise_for_status()
    return client


# What a console does with a queue it received at ``at`` (in an event or fetched).
TakeQueue = Callable[[Console, float, list[dict[str, Any]]], None]


def take_queue(console: Console, at: float, items: list[dict[str, Any]]) -> None:
    for item in items:
        console.seen.setdefault(item["id"], at)


async def fetch_queue(console: Console, take: TakeQueue = take_queue) -> None:
    try:
        response = await console.client.get("/api/queue")
        response.raise_for_status()
    except httpx.HTTPError:
        console.errors += 1
        return
    at = time.time()
    take(console, at, response.json())


async def listen(
    console: Console,
    stop: asyncio.Event,
    *,
    parse: Callable[[str], Any] = json.loads,
    take: TakeQueue = take_queue,
) -> None:
    """What the console page's EventSource and its handler do. ``parse`` reads an event's data
    and ``take`` handles each queue received (bench/storm_console.py passes its own: many
    consoles receive the same large queue during a storm)."""
    pending: set[asyncio.Task[None]] = set()
    while not stop.is_set():
        try:
            async with console.client.stream("GET", "/api/events") as response:
                response.raise_for_status()
                console.connects += 1
                event = ""
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "alarms":
                        at = time.time()
                        console.events.append(at)
                        data = parse(line[6:])
                        if isinstance(data.get("queue"), list):  # the queue came with it
                            take(console, at, data["queue"])
                        else:  # a server that sends only a marker: fetch, as the page does
                            task = asyncio.create_task(fetch_queue(console, take))
                            pending.add(task)
                            task.add_done_callback(pending.discard)
                    if stop.is_set():
                        break
        except httpx.HTTPError:
            console.errors += 1
        if not stop.is_set():
            await asyncio.sleep(RECONNECT_S)
    await asyncio.gather(*pending)


@dataclass
class Delivery:
    db: str
    clients: int
    alarms: int
    event_ms: list[float]
    queue_ms: list[float]
    missed: int
    connects: int
    errors: int
    cpu_pct: float  # the web process's CPU while the consoles were connected

    def rows(self) -> list[str]:
        out = []
        for what, values in (("event received", self.event_ms), ("alarm in queue", self.queue_ms)):
            within = sum(1 for v in values if v <= 1000.0)
            out.append(
                f"| {self.db} | {self.clients} × {self.alarms} | {what} | "
                f"{percentile(values, 0.5):.0f} | {percentile(values, 0.99):.0f} | "
                f"{max(values, default=float('nan')):.0f} | {within}/{len(values) + self.missed}"
                f" | {self.connects} | {self.cpu_pct:.0f} % |"
            )
        return out


async def delivery_run(
    database: Database, base: str, users: list[str], alarms: int, spacing_s: float, pid: int
) -> Delivery:
    consoles = [Console(await log_in(base, name)) for name in users]
    stop = asyncio.Event()
    listeners = [asyncio.create_task(listen(c, stop)) for c in consoles]
    await asyncio.sleep(2.0)  # every stream open and past its first event
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    terminals = database.terminals(alarms)
    received: dict[int, float] = {}
    sessions = sessionmaker(database.engine, expire_on_commit=False)

    def record(n: int) -> tuple[int, float]:
        tid, eid = terminals[n % len(terminals)]
        with sessions() as s:
            press = Press(source=AlarmSource.DTMF, kind=AlarmKind.LIFE_SAFETY,
                          dedup_key=f"bench-sse-{uuid.uuid4().hex}", terminal_id=tid,
                          elder_id=eid)  # fmt: skip
            stored = record_alarm(s, press)  # commits, as the call handler's intake does
            alarm = s.get(Alarm, stored.alarm_id)
            assert alarm is not None
            return alarm.id, alarm.received_at.timestamp()

    for n in range(alarms):
        alarm_id, at = await asyncio.to_thread(record, n)
        received[alarm_id] = at
        await asyncio.sleep(spacing_s)
    await asyncio.sleep(3.0)  # let the last one arrive everywhere
    cpu_pct = 100 * (cpu_seconds(pid) - cpu_before) / (time.monotonic() - wall_before)
    stop.set()
    # Streams end on their own within the server's stream length; do not wait for that.
    for task in listeners:
        task.cancel()
    await asyncio.gather(*listeners, return_exceptions=True)
    event_ms: list[float] = []
    queue_ms: list[float] = []
    missed = 0
    for console in consoles:
        for alarm_id, at in received.items():
            first_event = next((t for t in console.events if t >= at), None)
            if first_event is not None:
                event_ms.append((first_event - at) * 1000)
            if alarm_id in console.seen:
                queue_ms.append((console.seen[alarm_id] - at) * 1000)
            else:
                missed += 1
        await console.client.aclose()
    return Delivery(
        database.kind, len(consoles), alarms, event_ms, queue_ms, missed,
        sum(c.connects for c in consoles), sum(c.errors for c in consoles), cpu_pct,
    )  # fmt: skip


# -- wrk -------------------------------------------------------------------------------------
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass
class WrkResult:
    name: str
    requests_s: float
    p50_ms: float
    p99_ms: float
    errors: int

    def row(self, db_name: str, seconds: int, connections: int) -> str:
        return (
            f"| {db_name} | {self.name} | {connections} conn × {seconds} s | "
            f"{self.requests_s:,.0f} | {self.p50_ms:.1f} | {self.p99_ms:.1f} | {self.errors} |"
        )


def run_wrk(name: str, url: str, cookie: str, seconds: int, connections: int) -> WrkResult:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
               "-H", f"Cookie: hyt_session={cookie}", url]  # fmt: skip
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    print(f"--- wrk: {name}\n{out}", flush=True)
    lat = {
        m.group(1): float(m.group(2)) * _UNIT[m.group(3)]
        for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    for m in re.finditer(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return WrkResult(name, rps, lat["50"], lat["99"], errors)


async def cookie_of(base: str, username: str) -> str:
    client = await log_in(base, username)
    value = client.cookies.get("hyt_session") or ""
    await client.aclose()
    return value


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_database(kind: str, args: argparse.Namespace) -> tuple[Delivery, list[WrkResult], int]:
    database = Database(kind, args.elders)
    try:
        database.add_history(args.history)
        for name, ms in database.read_times().items():
            print(f"[{kind}] {args.history:,} handled alarms in the table: {name} {ms:.1f} ms",
                  flush=True)  # fmt: skip
        users = database.add_operators(args.clients)
        app, base = start_server("console", database.url)
        try:
            delivery = asyncio.run(
                delivery_run(database, base, users, args.alarms, args.spacing, app.pid)
            )
            cookie = asyncio.run(cookie_of(base, users[0]))
            queue_len = len(httpx.get(base + "/api/queue", cookies={"hyt_session": cookie}).json())
            app_wrk = run_wrk("GET /api/queue (console app)", base + "/api/queue", cookie,
                              args.wrk_seconds, args.wrk_connections)  # fmt: skip
        finally:
            stop(app)
        bare, bare_base = start_server("bare", database.url)
        try:
            bare_wrk = run_wrk("GET /api/queue (bare FastAPI, constant JSON)",
                               bare_base + "/api/queue", cookie, args.wrk_seconds,
                               args.wrk_connections)  # fmt: skip
        finally:
            stop(bare)
        return delivery, [app_wrk, bare_wrk], queue_len
    finally:
        database.drop()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--alarms", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=1.5, help="seconds between alarms")
    parser.add_argument("--elders", type=int, default=2000)
    parser.add_argument("--history", type=int, default=0, help="handled alarms in the table")
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--wrk-connections", type=int, default=50)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: run scripts/bench-deps.sh")
    os.environ.setdefault("HYT_ENV", "test")
    os.environ.setdefault("HYT_SECRET_KEY", SECRET)
    deliveries: list[Delivery] = []
    wrk_rows: list[str] = []
    for kind in args.databases.split(","):
        delivery, results, queue_len = run_database(kind.strip(), args)
        deliveries.append(delivery)
        print(f"[{kind}] queue length during wrk: {queue_len}; client errors during delivery: "
              f"{delivery.errors}", flush=True)  # fmt: skip
        wrk_rows += [r.row(kind, args.wrk_seconds, args.wrk_connections) for r in results]
    print(
        "\n| database | clients × alarms | measured | p50 ms | p99 ms | max ms | within 1 s "
        "| stream connects |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for d in deliveries:
        print("\n".join(d.rows()))
    print("\n| database | endpoint | load | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(wrk_rows))


if __name__ == "__main__":
    main()
