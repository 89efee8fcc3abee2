"""Alarm storm seen from the operators' consoles (issue #7, item 1): how long life-safety alarms
take to be stored and to appear in the consoles while calls and SCAIP messages pour in, and
whether they keep their place at the head of the queue.

    .venv/bin/python bench/storm_console.py --stages 10:250,20:500,30:750 --handlers 2 \\
        --sos-rate 1 --consoles 10

One fresh PostgreSQL database (HYT_TEST_POSTGRES_URL or the local one) with the district of
13,500 elders (bench/storm.py), and in their own processes: ``--handlers`` call handlers
(``hyt sip``, aiosipua), the SCAIP ingress (``hyt scaip``; ``--scaip-to handler`` sends SCAIP
to the first handler's SIP port instead), the web console (uvicorn, one worker, as ``hyt web``
runs it: bench/console_sse.py) and an RTP sink for the centre's prompts. ``--consoles``
operators log in and hold ``GET /api/events`` open as the console page does
(bench/console_sse.py ``listen``: the queue from each ``alarms`` event, a fetch of
``GET /api/queue`` after each reconnection).

Each stage (``calls/s per handler : SCAIP messages/s``, ``--seconds`` long, one after the
other) drives every handler straight from SIPp: service presses as in bench/storm.py (RFC 2833
"2", 2 s hold, BYE from the terminal) at the stage's rate, plus SOS presses at ``--sos-rate``
calls/s: by default HYT-T100 terminals dialling their SOS extension "110" (the alarm is
committed before the call is answered, so INVITE → stored is the handler's own time to store);
``--sos-via dtmf`` makes them HYT-T200 terminals sending "1" after the answer, as
bench/mains_loss.py does (INVITE → stored then includes the terminal's 300 ms pause and the
digit). One SIPp sends the stage's SCAIP mains-loss MESSAGEs (bench/mains_loss.py) from the
whole fleet. Every call and message is identifiable: Call-ID ``st<stage>-h<handler>-<what>-…``,
SCAIP ``<ref>st<stage>-<n></ref>``; terminals are not reused within a run (a repeat press of an
unacknowledged alarm would be merged with it, rightly, and counted lost here).

Times (one machine, one clock): "stored" is the alarm's ``received_at`` (the writer's clock,
taken just before the batch's statements and commit); calls keep the handler's INVITE receipt
as ``raw.invite_at``; SCAIP alarms keep no receipt time, so their time to store is SIPp's
MESSAGE → 200, which the ingress sends only after the commit. "To console" is until the first
event (or fetched queue) holding the alarm, in any console and in the slowest one: for SOS from
the press's receipt (``invite_at`` with extension terminals, else ``received_at``), for the
others from ``received_at``. Positions: in every queue received, a non-life-safety item before
an unclaimed life-safety one is a violation; each life-safety alarm's position when first seen
must be within the life-safety block at the head.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from console_sse import Console, add_operators, listen, log_in, start_server
from console_sse import stop as stop_server
from mains_loss import MAINS_LOSS
from sqlalchemy import text
from sqlalchemy.orm import Session
from storm import (
    Database,
    cpu_seconds,
    free_port_pair,
    free_udp_port,
    percentile,
    run_sipp,
    start_handler,
    start_rtp_sink,
)
from storm_edge import DropWatch

from callcenter import db
from callcenter.console import queue, queue_marker
from callcenter.db import utcnow
from callcenter.models import PRIORITY_BY_KIND, Alarm, AlarmKind
from callcenter.supervision import flagged_alarm_ids
from callcenter.web.live_events import read_snapshot
from callcenter.web.queue_view import queue_items
from devices.models import TerminalProtocol
from tests.sip.sipp import call_scenario, scaip_scenario

T = TypeVar("T")
LIFE_SAFETY = (AlarmKind.LIFE_SAFETY, AlarmKind.UNIDENTIFIED)  # callcenter.console.is_life_safety
CALL_KEY = re.compile(r"^sip:st(\d+)-h(\d+)-(svc|sos)-")
SCAIP_KEY = re.compile(r"^scaip:[^:]*:st(\d+)-")
INF = float("inf")
TARGET_MS = 1000.0  # issue #7: life-safety alarms visible to operators within 1 s at p99


def ms(values: list[float]) -> str:
    return f"{percentile(values, 0.5):.0f} / {percentile(values, 0.99):.0f}"


# -- what the consoles received --------------------------------------------------------------
@dataclass
class Snap:
    """One queue as the consoles received it (the same event data goes to every console)."""

    first_at: float
    length: int
    size: int  # bytes of the event's data; 0 for a queue fetched with GET /api/queue
    parse_ms: float
    ids: frozenset[int]
    ls_block: int  # how many items at the head are life-safety
    ls_positions: dict[int, int]  # life-safety alarm id → its index in the queue
    violation: bool  # a non-life-safety item precedes an unclaimed life-safety one
    arrivals: list[float] = field(default_factory=list)  # when each console received it


def analyse(items: list[dict[str, Any]], at: float, size: int, parse_ms: float) -> Snap:
    ls_block = next((n for n, i in enumerate(items) if not i["life_safety"]), len(items))
    positions = {i["id"]: n for n, i in enumerate(items) if i["life_safety"]}
    violation = any(
        n > ls_block and i["life_safety"] and i["claimed_by_id"] is None
        for n, i in enumerate(items)
    )
    ids = frozenset(i["id"] for i in items)
    return Snap(at, len(items), size, parse_ms, ids, ls_block, positions, violation)


class Operators:
    """``count`` consoles on their own event loop in a thread of this process.

    Every console receives the same event data for a queue; it is parsed once (``parse``) and
    analysed once (``take``), so that the bench measures when each console had the queue, not
    this process parsing one large queue ten times over. The cost of one parse is kept
    (``Snap.parse_ms``): a real console (a browser) pays it for every event."""

    def __init__(self, base: str, names: list[str]) -> None:
        self.base, self.names = base, names
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="consoles", daemon=True)
        self.consoles: list[Console] = []
        self.known: dict[int, set[int]] = {}  # id(console) → alarm ids it has had
        self.snaps: list[Snap] = []  # every distinct queue received, in order
        self._by_data: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
        self._by_list: dict[int, Snap] = {}  # id(queue list) → its Snap, while in _by_data
        self.ls_first: dict[int, tuple[float, int, bool]] = {}  # id → (at, position, in block)
        self._stop: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def start(self) -> None:
        self.thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        self._stop = asyncio.Event()
        for name in self.names:
            console = Console(await log_in(self.base, name))
            self.consoles.append(console)
            self.known[id(console)] = set()
        self._tasks = [
            asyncio.create_task(listen(c, self._stop, parse=self.parse, take=self.take))
            for c in self.consoles
        ]
        await asyncio.sleep(2.0)  # every stream open and past its first event

    def parse(self, data: str) -> Any:
        key = (data[:80], len(data))  # the marker leads the data: same marker, same queue
        cached = self._by_data.get(key)
        if cached is not None:
            return cached
        arrived = time.time()
        started = time.perf_counter()
        parsed = json.loads(data)
        parse_ms = (time.perf_counter() - started) * 1000
        items = parsed.get("queue")
        if isinstance(items, list):
            snap = analyse(items, arrived, len(data.encode()), parse_ms)
            self._remember(snap)
            self._by_data[key] = parsed
            self._by_list[id(items)] = snap
            if len(self._by_data) > 8:
                _, old = self._by_data.popitem(last=False)
                gone = self._by_list.pop(id(old["queue"]), None)
                if gone is not None:
                    gone.ids = frozenset()  # no console will receive it again: free it
        return parsed

    def _remember(self, snap: Snap) -> None:
        self.snaps.append(snap)
        for alarm_id, position in snap.ls_positions.items():
            if alarm_id not in self.ls_first:
                self.ls_first[alarm_id] = (snap.first_at, position, position < snap.ls_block)

    def take(self, console: Console, at: float, items: list[dict[str, Any]]) -> None:
        snap = self._by_list.get(id(items))
        fetched = snap is None
        if snap is None:  # a queue fetched after a reconnection: this console's own
            snap = analyse(items, at, 0, 0.0)
            self._remember(snap)
        snap.arrivals.append(at)
        known = self.known[id(console)]
        new = snap.ids - known
        for alarm_id in new:
            console.seen[alarm_id] = at
        known |= new
        if fetched:
            snap.ids = frozenset()  # used once: free it

    def have_all(self, ids: set[int]) -> bool:
        async def check() -> bool:
            return all(ids <= known for known in self.known.values())

        return self.run(check())

    def close(self) -> None:
        async def stop() -> None:
            if self._stop is not None:
                self._stop.set()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for console in self.consoles:
                await console.client.aclose()

        if self.thread.is_alive():
            self.run(stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        self.loop.close()


# -- the storm -------------------------------------------------------------------------------
@dataclass
class Stage:
    number: int
    call_rate: float  # per handler
    scaip_rate: float
    seconds: float
    calls: dict[str, int] = field(default_factory=dict)  # "svc"/"sos" → offered (all handlers)
    scaip: int = 0
    acked: dict[str, int] = field(default_factory=dict)  # "svc"/"sos"/"scaip" → SIPp successes
    scaip_rtt: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # process → % of one core
    started_at: float = 0.0  # time.time()


class Processes:
    """Everything the run starts, stopped in ``close`` whatever happened."""

    def __init__(self) -> None:
        self.handlers: list[subprocess.Popen[bytes]] = []
        self.scaip: subprocess.Popen[bytes] | None = None
        self.web: subprocess.Popen[bytes] | None = None
        self.sink: subprocess.Popen[bytes] | None = None  # the RTP sink
        self.spy: subprocess.Popen[bytes] | None = None  # py-spy

    def named(self) -> dict[str, int]:
        out = {f"handler {n + 1}": p.pid for n, p in enumerate(self.handlers)}
        if self.scaip is not None:
            out["hyt scaip"] = self.scaip.pid
        if self.web is not None:
            out["web"] = self.web.pid
        return out

    def stop_sip(self, logs: Path | None = None) -> float:
        """Stop the handlers and the SCAIP ingress; seconds until the last one exited (they
        write what they have queued before they stop). One still running after 30 s has its
        threads' stacks written to ``logs``/stuck-<pid>.txt (py-spy dump), then gets 90 s more
        before it is killed."""
        started = time.monotonic()
        sip = [*self.handlers, *([self.scaip] if self.scaip else [])]
        for proc in sip:
            if proc.poll() is None:
                proc.terminate()
        for proc in sip:
            try:
                proc.wait(max(0.0, 30 - (time.monotonic() - started)))
                continue
            except subprocess.TimeoutExpired:
                pass
            spy = Path(sys.executable).with_name("py-spy")
            if logs is not None and spy.exists():
                with (logs / f"stuck-{proc.pid}.txt").open("w") as out:
                    subprocess.run([str(spy), "dump", "-p", str(proc.pid)], stdout=out,
                                   stderr=subprocess.STDOUT, timeout=60, check=False)  # fmt: skip
                print(f"{sip_name(proc)} (pid {proc.pid}) still running 30 s "
                      f"after SIGTERM: stacks in stuck-{proc.pid}.txt", flush=True)  # fmt: skip
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return time.monotonic() - started

    def close(self) -> None:
        if self.spy is not None:  # first: it writes its profile when interrupted
            self.spy.send_signal(signal.SIGINT)
        for proc in (self.spy, self.sink):
            if proc is None:
                continue
            if proc is self.sink:
                proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.web is not None:
            stop_server(self.web)
        self.stop_sip()
        # SIPp runs still going after an error (run_sipp starts them with subprocess.run in a
        # thread): this process's remaining children, by their ids.
        for pid in children(os.getpid()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def sip_name(proc: subprocess.Popen[bytes]) -> str:
    args = proc.args if isinstance(proc.args, list) else [str(proc.args)]
    return "hyt " + str(args[-1])


def children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def cpu_sample(database: Database, pids: dict[str, int]) -> tuple[float, dict[str, float]]:
    """(monotonic time, CPU seconds of each process); PostgreSQL: this database's backends."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            out[name] = cpu_seconds(pid)
    with database.engine.connect() as conn:
        backends = conn.scalars(
            text("SELECT pid FROM pg_stat_activity WHERE datname = :name"), {"name": database.name}
        ).all()
    for pid in backends:
        # Not readable when PostgreSQL runs on another host or in another namespace.
        with contextlib.suppress(OSError):
            out[f"pg:{pid}"] = cpu_seconds(pid)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["bench (consoles)"] = usage.ru_utime + usage.ru_stime
    # The whole machine, every process of every job on it (of 200 % on two cores).
    jiffies = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    out["machine busy"] = (sum(jiffies) - jiffies[3] - jiffies[4]) / os.sysconf("SC_CLK_TCK")
    return time.monotonic(), out


def cpu_between(
    before: tuple[float, dict[str, float]], after: tuple[float, dict[str, float]]
) -> dict[str, float]:
    wall = after[0] - before[0]
    out: dict[str, float] = {}
    for name, value in after[1].items():
        key = "PostgreSQL" if name.startswith("pg:") else name
        # A backend started during the stage counts from its start.
        out[key] = out.get(key, 0.0) + (value - before[1].get(name, 0.0)) / wall * 100
    return out


def add_backlog(database: Database, count: int) -> None:
    """``count`` unhandled mains-loss alarms of the district's terminals, received over the
    last ``count`` × 10 ms: the queue a storm leaves behind. Not this run's presses: they count
    in no stage's figures, but every queue the consoles receive carries them."""
    if not count:
        return
    with database.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO alarms (received_at, source, kind, priority, terminal_id, elder_id, "
                "caller, event_code, raw, dedup_key, status) "
                "SELECT now() - (:count - n) * interval '10 milliseconds', 'scaip', 'technical', "
                ":priority, t.id, t.elder_id, t.sip_user, '0085', '{}', 'backlog-' || n, 'new' "
                "FROM generate_series(1, :count) AS n "
                "JOIN terminals t ON t.id = 1 + (n % (SELECT count(*) FROM terminals))"
            ),
            {"count": count, "priority": PRIORITY_BY_KIND[AlarmKind.TECHNICAL]},
        )
        conn.execute(text("ANALYZE alarms"))


def rotated(users: list[str], offset: int) -> list[str]:
    """Each stage starts where the last one stopped: no terminal presses twice in a run."""
    offset %= max(1, len(users))
    return users[offset:] + users[:offset]


def storm(args: argparse.Namespace) -> None:
    command = ".venv/bin/python bench/storm_console.py " + shlex.join(sys.argv[1:])
    started_utc = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    print(f"command: `{command}`", flush=True)
    print(f"started {started_utc:%Y-%m-%d %H:%M:%S} UTC, load average before "
          f"{load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}",
          flush=True)  # fmt: skip
    stages = []
    for n, spec in enumerate(s for s in args.stages.split(",") if s):
        call_rate, scaip_rate = (float(x) for x in spec.split(":"))
        stages.append(Stage(n + 1, call_rate, scaip_rate, args.seconds))

    seeding = time.monotonic()
    database = Database()
    print(f"database {database.name}: migrated and seeded in {time.monotonic() - seeding:.0f} s",
          flush=True)  # fmt: skip
    procs = Processes()
    operators: Operators | None = None
    try:
        names = add_operators(database.engine, args.consoles)
        add_backlog(database, args.backlog)
        service_users = database.users(TerminalProtocol.DTMF)
        sos_protocol = TerminalProtocol.EXTENSION if args.sos_via == "extension" else None
        sos_users = database.users(sos_protocol) if sos_protocol else []
        if sos_protocol is None:  # DTMF "1": the DTMF terminals not pressing "2" here
            sos_users = service_users[1::2]
            service_users = service_users[0::2]
        fleet = [u for p in TerminalProtocol for u in database.users(p)]
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            ports = [free_udp_port() for _ in range(args.handlers)]
            # Each handler its own RTP ports, below the kernel's ephemeral range and outside
            # bench/storm.py's 30000-39999 (other benches may run beside this one): handlers
            # sharing a range take each other's ports, and calls fail with 500 (media_failed).
            span = 10_000 // args.handlers
            for n, port in enumerate(ports):
                rtp = {"HYT_RTP_PORT_LOW": str(20_000 + n * span),
                       "HYT_RTP_PORT_HIGH": str(20_000 + (n + 1) * span - 1)}  # fmt: skip
                procs.handlers.append(
                    start_handler(database, args.backend, port, work / f"handler{n}.log", rtp)
                )
            if args.scaip_to == "ingress":
                scaip_port = free_udp_port()
                procs.scaip = start_handler(database, "aiosipua", scaip_port,
                                            work / "scaip.log", command="scaip")  # fmt: skip
            else:
                scaip_port = ports[0]
            sink_port = free_port_pair()
            procs.sink = start_rtp_sink(sink_port)
            procs.web, base = start_server("console", database.url, work / "web.log")
            if args.profile_web:
                spy = Path(sys.executable).with_name("py-spy")
                procs.spy = subprocess.Popen(
                    [str(spy), "record", "-p", str(procs.web.pid), "-o", args.profile_web,
                     "-r", "100", "--format", "raw", "--nonblocking"]
                )  # fmt: skip
            operators = Operators(base, names)
            operators.start()
            sockets = {("127.0.0.1", p): f"handler {n + 1}" for n, p in enumerate(ports)}
            if procs.scaip is not None:
                sockets[("127.0.0.1", scaip_port)] = "hyt scaip"
            drops = DropWatch(sockets)
            drops.start()
            run_stages(args, database, procs, stages, work, ports, scaip_port, sink_port,
                       service_users, sos_users, fleet)  # fmt: skip
            # Whatever the SIP processes still hold is stored before they exit: it counts as
            # stored, and the consoles must show it too.
            flush_s = procs.stop_sip(work)
            dropped = drops.stop()
            print(f"SIP processes stopped {flush_s:.1f} s after the last SIPp ended; UDP "
                  f"datagrams dropped by the kernel (receive buffer full): {dropped or 0}",
                  flush=True)  # fmt: skip
            drain_started = time.monotonic()
            drained = False
            while time.monotonic() - drain_started < args.drain:
                with Session(database.engine) as s:
                    # What the consoles are sent: every life-safety alarm, the first others.
                    ids = {row.id for row in queue(s).rows}
                if operators.have_all(ids):
                    drained = True
                    break
                time.sleep(0.5)
            print(f"consoles {'had every alarm' if drained else 'still missed alarms'} "
                  f"{time.monotonic() - drain_started:.1f} s after the last SIPp ended",
                  flush=True)  # fmt: skip
            operators.close()
            feed_read = time_feed_read(database)
            feed_read["one GET /api/queue (each console, after each reconnection), ms"] = (
                asyncio.run(time_fetch(base, names[0]))
            )
            alarms = database.alarms()
            report(args, stages, operators, alarms, feed_read)
            feed_outages(work / "web.log")
            if args.keep_logs:
                shutil.copytree(work, args.keep_logs, dirs_exist_ok=True)
                print(f"logs and SIPp files copied to {args.keep_logs}")
    finally:
        if operators is not None:
            operators.close()
        procs.close()
        database.drop()
    load_after = os.getloadavg()
    print(f"\nfinished {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC, load average after "
          f"{load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}")  # fmt: skip


def run_stages(
    args: argparse.Namespace,
    database: Database,
    procs: Processes,
    stages: list[Stage],
    work: Path,
    ports: list[int],
    scaip_port: int,
    sink_port: int,
    service_users: list[str],
    sos_users: list[str],
    fleet: list[str],
) -> None:
    """Start each stage's SIPp runs on time (a stage's last calls overlap the next stage's
    first), sample every process's CPU at the stage boundaries, wait for all runs."""
    service = call_scenario(user="[field0]", digits="2", hangup="caller", hold_ms=2000,
                            media_port=sink_port)  # fmt: skip
    if args.sos_via == "extension":
        sos = call_scenario(user="[field0]", dialled="110", hangup="caller", hold_ms=2000,
                            media_port=sink_port)  # fmt: skip
    else:
        sos = call_scenario(user="[field0]", digits="1", hangup="caller", hold_ms=2000,
                            media_port=sink_port)  # fmt: skip
    handlers = len(ports)
    service_parts = [service_users[n::handlers] for n in range(handlers)]
    sos_parts = [sos_users[n::handlers] for n in range(handlers)]
    used = {"svc": 0, "sos": 0, "scaip": 0}  # terminals used so far, per handler's share
    threads: list[threading.Thread] = []
    errors: list[BaseException] = []

    def sipp(stage: Stage, what: str, scenario: str, users: list[str], port: int, rate: float,
             count: int, cid: str) -> None:  # fmt: skip
        workdir = work / f"st{stage.number}-{cid}"
        workdir.mkdir()
        try:
            # -trace_err: SIPp's reasons for failed calls, kept with --keep-logs.
            call_ids = ("-cid_str", f"st{stage.number}-{cid}-%u-%p@%s", "-trace_err")
            ok, _failed, rtts = run_sipp(scenario, users, port, rate, count, workdir,
                                         extra_args=call_ids)  # fmt: skip
        except BaseException as exc:
            errors.append(exc)
            return
        stage.acked[what] = stage.acked.get(what, 0) + ok
        if what == "scaip":
            stage.scaip_rtt.extend(rtts)

    pids = procs.named()
    t0 = time.monotonic() + 1.0
    samples = []
    for stage in stages:
        time.sleep(max(0.0, t0 + (stage.number - 1) * stage.seconds - time.monotonic()))
        samples.append(cpu_sample(database, pids))
        stage.started_at = time.time()
        print(f"stage {stage.number}: {stage.call_rate:g} calls/s per handler + SOS "
              f"{args.sos_rate:g}/s per handler, SCAIP {stage.scaip_rate:g}/s, "
              f"{stage.seconds:g} s", flush=True)  # fmt: skip
        runs: list[tuple[str, str, list[str], int, float, int, str]] = []
        calls = int(stage.call_rate * stage.seconds)
        sos_calls = int(args.sos_rate * stage.seconds)
        for n, port in enumerate(ports):
            if sos_calls:
                runs.append(("sos", sos, rotated(sos_parts[n], used["sos"]), port,
                             args.sos_rate, sos_calls, f"h{n + 1}-sos"))  # fmt: skip
            if calls:
                runs.append(("svc", service, rotated(service_parts[n], used["svc"]), port,
                             stage.call_rate, calls, f"h{n + 1}-svc"))  # fmt: skip
        stage.calls = {"svc": calls * handlers, "sos": sos_calls * handlers}
        used["svc"] += calls
        used["sos"] += sos_calls
        stage.scaip = int(stage.scaip_rate * stage.seconds)
        if stage.scaip:
            mrq = MAINS_LOSS.replace("<ref>[call_number]</ref>",
                                     f"<ref>st{stage.number}-[call_number]</ref>")  # fmt: skip
            runs.append(("scaip", scaip_scenario(user="[field0]", mrq=mrq),
                         rotated(fleet, used["scaip"]), scaip_port, stage.scaip_rate,
                         stage.scaip, "scaip"))  # fmt: skip
            used["scaip"] += stage.scaip
        for what, scenario, users, port, rate, count, cid in runs:
            thread = threading.Thread(target=sipp, args=(stage, what, scenario, users, port,
                                                         rate, count, cid))  # fmt: skip
            thread.start()
            threads.append(thread)
            time.sleep(0.2)  # each SIPp picks its free ports in turn
    time.sleep(max(0.0, t0 + sum(s.seconds for s in stages) - time.monotonic()))
    samples.append(cpu_sample(database, pids))
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    for stage, before, after in zip(stages, samples, samples[1:], strict=False):
        stage.cpu = cpu_between(before, after)


# -- where the time goes ---------------------------------------------------------------------
def time_feed_read(database: Database) -> dict[str, float]:
    """What the web process's feed does on each change, timed here against the final queue:
    the marker and flagged ids (every 200 ms poll), the queue read, its two views (operators',
    supervisors') built as items and serialised — and the whole ``read_snapshot``."""
    db.use_engine(database.engine)
    out: dict[str, float] = {}
    for _ in range(3):  # the fastest of three: the machine is shared
        timings: dict[str, float] = {}
        with Session(database.engine) as s:
            t = time.perf_counter()
            queue_marker(s)
            flagged_alarm_ids(s, now=utcnow(), older_than_s=60)
            timings["marker + flagged ids (every poll), ms"] = time.perf_counter() - t
            t = time.perf_counter()
            rows = queue(s, now=utcnow()).rows  # the consoles' page of it (QUEUE_OTHERS_SHOWN)
            timings["queue read (SQL + ORM), ms"] = time.perf_counter() - t
            t = time.perf_counter()
            views = [[i.model_dump(mode="json") for i in queue_items(rows, now=utcnow(),
                                                                   supervisor=sup, flag_s=60)]
                     for sup in (False, True)]  # fmt: skip
            timings["two views as items (pydantic), ms"] = time.perf_counter() - t
            t = time.perf_counter()
            data = [json.dumps({"queue": v}, ensure_ascii=False) for v in views]
            timings["two views serialised (json), ms"] = time.perf_counter() - t
        t = time.perf_counter()
        read_snapshot(None)
        timings["read_snapshot() as the feed runs it, ms"] = time.perf_counter() - t
        t = time.perf_counter()
        json.loads(data[0])
        timings["one console's json.loads of the event, ms"] = time.perf_counter() - t
        for key, value in timings.items():
            out[key] = min(out.get(key, float("inf")), value * 1000)
        out["queue length"] = len(rows)
        out["event size, MB"] = len(data[0].encode()) / 1e6
    return out


async def time_fetch(base: str, name: str) -> float:
    """What each console does after each reconnection (the stream's first event names only the
    marker): ``GET /api/queue``, the whole queue read afresh."""
    client = await log_in(base, name)
    try:
        started = time.perf_counter()
        response = await client.get("/api/queue")
        response.raise_for_status()
        return (time.perf_counter() - started) * 1000
    finally:
        await client.aclose()


def feed_outages(log: Path) -> None:
    """The web process's feed says "database down" to every console when a read takes more
    than READ_DEADLINE_S (callcenter/web/live_events.py); the database was up throughout."""
    lines = log.read_text(errors="replace").splitlines()
    down = [line for line in lines if "console.feed.database_down" in line]
    back = [float(m.group(1)) for line in lines if (m := re.search(r"down_s=([\d.]+)", line))]
    print(
        f'the web process\'s feed told the consoles "database down" {len(down)} times '
        f"(for {sum(back):.0f} s in all; PostgreSQL was up throughout)"
    )


# -- the report ------------------------------------------------------------------------------
def report(
    args: argparse.Namespace,
    stages: list[Stage],
    operators: Operators,
    alarms: list[Alarm],
    feed_read: dict[str, float],
) -> None:
    by_stage: dict[int, list[Alarm]] = {s.number: [] for s in stages}
    unattributed = 0
    for alarm in alarms:
        call = CALL_KEY.match(alarm.dedup_key)
        scaip = SCAIP_KEY.match(alarm.dedup_key)
        if call:
            by_stage[int(call.group(1))].append(alarm)
        elif scaip:
            by_stage[int(scaip.group(1))].append(alarm)
        else:
            unattributed += 1
    consoles = operators.consoles
    intake_rows, console_rows, feed_rows, cpu_rows = [], [], [], []
    for stage in stages:
        mine = by_stage[stage.number]
        keys = {a.dedup_key.split(":")[1] if a.dedup_key.startswith("sip:") else a.dedup_key
                for a in mine}  # fmt: skip
        offered = sum(stage.calls.values()) + stage.scaip
        calls_stored = [a for a in mine if a.dedup_key.startswith("sip:")]
        duplicates = len(mine) - len(keys)  # more than one alarm for one call or message
        sos = [a for a in calls_stored if "-sos-" in a.dedup_key]
        svc = [a for a in calls_stored if "-svc-" in a.dedup_key]
        store_sos = [(a.received_at.timestamp() - float(a.raw["invite_at"])) * 1000
                     for a in sos if a.raw.get("invite_at")]  # fmt: skip
        store_svc = [(a.received_at.timestamp() - float(a.raw["invite_at"])) * 1000
                     for a in svc if a.raw.get("invite_at")]  # fmt: skip
        acked_calls = stage.acked.get("svc", 0) + stage.acked.get("sos", 0)
        call_keys = {k for k in keys if not k.startswith("scaip:")}
        lost_calls = sum(stage.calls.values()) - len(call_keys)
        lost_sos = stage.calls["sos"] - len({a.dedup_key.split(":")[1] for a in sos})
        intake_rows.append(
            f"| {stage.number}: ({stage.call_rate:g}+{args.sos_rate:g})×{args.handlers} : "
            f"{stage.scaip_rate:g} | {stage.calls['svc']}+{stage.calls['sos']} / "
            f"{stage.scaip} | {acked_calls} / {stage.acked.get('scaip', 0)} | "
            f"{len(call_keys)} / {len(keys) - len(call_keys)} | {lost_calls} ({lost_sos}) / "
            f"{offered - len(keys) - lost_calls} | {duplicates} | {ms(store_sos)} | "
            f"{ms(store_svc)} | {ms(stage.scaip_rtt)} |"
        )
        # To console: from the press's receipt for SOS (invite_at: extension terminals commit
        # before answering), from received_at for the rest. Not seen (by any console, or by
        # every console) by the end of the run: infinite, so that it weighs in the p99.
        ls_any, ls_all, ls_stored, other_any, other_all = [], [], [], [], []
        unseen = partly = ls_unseen = 0
        for alarm in mine:
            life_safety = alarm.kind in LIFE_SAFETY
            times = [c.seen[alarm.id] for c in consoles if alarm.id in c.seen]
            stored_at = alarm.received_at.timestamp()
            pressed_at = stored_at
            if life_safety and args.sos_via == "extension" and alarm.raw.get("invite_at"):
                pressed_at = float(alarm.raw["invite_at"])
            first = last = INF
            if times:
                first = (min(times) - pressed_at) * 1000
                if len(times) == len(consoles):
                    last = (max(times) - pressed_at) * 1000
                else:
                    partly += 1
            else:
                unseen += 1
                ls_unseen += life_safety
            if life_safety:
                ls_any.append(first)
                ls_all.append(last)
                if times:
                    ls_stored.append((min(times) - stored_at) * 1000)
            else:
                other_any.append(first)
                other_all.append(last)
        ls_ids = [a.id for a in mine if a.kind in LIFE_SAFETY]
        firsts = [operators.ls_first[i] for i in ls_ids if i in operators.ls_first]
        outside = sum(1 for _, _, inside in firsts if not inside)
        max_pos = max((p for _, p, _ in firsts), default=-1)
        within = sum(1 for v in ls_all if v <= TARGET_MS)
        console_rows.append(
            f"| {stage.number} | {len(ls_ids)} ({ls_unseen}) | {ms(ls_any)} | "
            f"{percentile(ls_all, 0.99):.0f} / {max(ls_all, default=float('nan')):.0f} | "
            f"{within}/{len(ls_ids)} | {ms(ls_stored)} | {ms(other_any)} | "
            f"{percentile(other_all, 0.99):.0f} | {unseen} / {partly} | {max_pos} | {outside} |"
        )
        cpu = stage.cpu
        names = [n for n in cpu if n != "bench (consoles)"] + ["bench (consoles)"]
        cpu_rows.append((stage.number, {n: cpu.get(n, float("nan")) for n in names}))
    for n, stage in enumerate(stages):
        # The stage's window: from its start to the next one's (the last: to the end).
        start = stage.started_at
        end = stages[n + 1].started_at if n + 1 < len(stages) else float("inf")
        snaps = [s for s in operators.snaps if start <= s.first_at < end and s.size]
        fetched = [s for s in operators.snaps if start <= s.first_at < end and not s.size]
        gaps = [(b.first_at - a.first_at) * 1000 for a, b in itertools.pairwise(snaps)]
        spread = [(max(s.arrivals) - min(s.arrivals)) * 1000 for s in snaps if s.arrivals]
        violations = sum(1 for s in operators.snaps if start <= s.first_at < end and s.violation)
        feed_rows.append(
            f"| {stage.number} | {len(snaps)} (+{len(fetched)} fetched) | {ms(gaps)} | "
            f"{max((s.length for s in snaps), default=0)} | "
            f"{max((s.size for s in snaps), default=0) / 1e6:.2f} | {ms(spread)} | "
            f"{percentile([s.parse_ms for s in snaps], 0.5):.0f} | {violations} |"
        )
    print(f"\n{args.handlers} × `hyt sip` ({args.backend}), SCAIP to "
          f"{'`hyt scaip`' if args.scaip_to == 'ingress' else 'handler 1'}, one `hyt web`, "
          f"{args.consoles} consoles, SOS by {args.sos_via}; {len(alarms)} alarms stored "
          f"({unattributed} not from this run's SIPp).")  # fmt: skip
    print("\n| stage (per handler : SCAIP) | offered calls (service+SOS) / SCAIP | "
          "acknowledged calls / SCAIP | stored (distinct) calls / SCAIP | "
          "lost calls (SOS) / SCAIP | duplicates | "
          "SOS INVITE→stored p50/p99 ms | service INVITE→stored p50/p99 ms | "
          "SCAIP MESSAGE→200 p50/p99 ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(intake_rows))
    sos_from = "INVITE" if args.sos_via == "extension" else "stored"
    print(f"\n| stage | life-safety alarms (never seen) | LS {sos_from}→first console p50/p99 ms | "
          "LS →slowest console p99 / max ms | LS in every console within 1 s | "
          "LS stored→first console p50/p99 ms | others stored→first console p50/p99 ms | "
          "others →slowest console p99 ms | alarms never seen / not in every console | "
          "LS max position when first seen | LS first seen outside the LS block |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(console_rows))
    print("\n| stage | queues received (distinct events) | between events p50/p99 ms | "
          "largest queue (items) | largest event MB | one event: first→last console "
          "p50/p99 ms | one JSON parse p50 ms | queues with a violation |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(feed_rows))
    names = list(cpu_rows[0][1]) if cpu_rows else []
    print("\n| stage | " + " | ".join(f"{n} CPU" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for number, cpu in cpu_rows:
        print(f"| {number} | " + " | ".join(f"{cpu[n]:.0f} %" for n in names) + " |")
    print(
        f"\nThe feed's work at the end of the run, timed in this process "
        f"({feed_read.get('queue length', 0):.0f} alarms waiting, fastest of three):\n"
    )
    print("| " + " | ".join(feed_read) + " |")
    print("|" + "---|" * len(feed_read))
    print("| " + " | ".join(f"{v:.1f}" if v < 100 else f"{v:.0f}" for v in feed_read.values())
          + " |")  # fmt: skip
    connects = sum(c.connects for c in consoles)
    errors = sum(c.errors for c in consoles)
    print(f"\nconsole streams opened {connects}, client errors {errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", default="10:250,20:500,30:750",
                        help="calls/s per handler : SCAIP messages/s, comma-separated")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=20, help="length of each stage")
    parser.add_argument("--handlers", type=int, default=2)
    parser.add_argument("--backend", default="aiosipua")
    parser.add_argument("--sos-rate", type=float, default=1, help="SOS calls/s per handler")
    parser.add_argument("--sos-via", choices=("extension", "dtmf"), default="extension")
    parser.add_argument("--scaip-to", choices=("ingress", "handler"), default="ingress")
    parser.add_argument("--consoles", type=int, default=10)
    parser.add_argument("--backlog", type=int, default=0,
                        help="technical alarms waiting in the queue before the first stage, "
                        "as a storm leaves them: the consoles' cost of a long queue without "
                        "the storm's load (e.g. --stages 0:0 --backlog 20000)")  # fmt: skip
    parser.add_argument("--drain", type=float, default=20,
                        help="seconds to wait, after the last SIPp, for every console to have "
                        "every alarm")  # fmt: skip
    parser.add_argument("--keep-logs", default="",
                        help="copy the logs and SIPp's files to this folder")  # fmt: skip
    parser.add_argument("--profile-web", default="", help="py-spy profile of the web process")
    args = parser.parse_args()
    os.environ.setdefault("HYT_ENV", "test")
    os.environ.setdefault("HYT_SECRET_KEY", "bench-secret-key-0123456789-abcdefghijklmnop")
    storm(args)


if __name__ == "__main__":
    main()
