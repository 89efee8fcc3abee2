"""Alarm storm through the SIP edge: registered SIPp terminals → Kamailio → two `hyt sip`
processes, per backend, in the same run as one handler taking the storm directly (the baseline).

    .venv/bin/python bench/storm_edge.py --backends aiosipua,pyvoip --rates 150:30,40:30 \
        --direct 75:30,20:30 --fallback 60:30,20:30

`--rates`: calls/s : seconds offered to the edge (the total over both handlers), paired with
`--backends`; `--direct`: the same backend's one handler without the edge (default: the share
each handler gets behind the edge); `--fallback`: run the edge again at this rate when the
first edge row lost calls. PostgreSQL (HYT_TEST_POSTGRES_URL or the local one), the district of
13,500 elders seeded first (bench/storm.py).

Each edge row: deploy/kamailio/kamailio.cfg started as tests/sip/test_kamailio.py starts it
(DBText credentials with HA1 hashes, dispatcher set 1 = the two handlers, probed every second),
handlers with HYT_SIP_REGISTRAR = the edge. The terminals first REGISTER with digest
credentials (401, then REGISTER with [authentication] from the injection file), so their
INVITEs are accepted without a challenge, as in the field (kamailio.cfg, route
TERMINAL_IDENTITY). Then the press of bench/storm.py: INVITE, RFC 2833 digit "2", 2 s hold,
BYE from the terminal. Split over several SIPp processes (`--sipp`), one per local port, since
one SIPp thread playing a DTMF recording per call is itself the bottleneck near 100 calls/s.
`--edge-define NAME=VALUE` sets a kamailio.cfg define (e.g. FR_INVITE_FIRST=5000) for every
edge row. "Lost" = offered − Call-IDs with an alarm; a second alarm for one Call-ID (the edge
failed the INVITE over after the first handler had it) counts as a duplicate. Under each row:
where it went wrong (edge log, SIPp errors, handler warnings, per-socket UDP drops, OPTIONS
answer times of the edge and each handler during the storm).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlalchemy import select
from sqlalchemy.orm import Session
from storm import (
    Database,
    Row,
    busy_share,
    call_row,
    cpu_seconds,
    machine_busy,
    options_status,
    percentile,
    run_sipp,
    start_handler,
    start_rtp_sink,
    storm,
)

from callcenter.models import Alarm
from devices.models import Terminal, TerminalProtocol
from tests.sip.sipp import call_scenario, free_port_pair, free_udp_port
from tests.sip.test_kamailio import (
    EDGE_IP,
    Handler,
    alone,
    free_edge_port,
    register_steps,
    start_kamailio,
    stop,
    write_credentials,
)
from tests.sip.test_kamailio import Terminal as EdgeTerminal

REGISTER_RATE = 400.0  # REGISTERs/s before the storm: 2 round trips each, cheap for the edge
# Over UDP a proxy with several workers may pass on a duplicate 180 after the 200; a terminal
# ignores it (RFC 3261 §17.1.1.2), SIPp would abort the call (see test_kamailio.sipp).
# That also leaves a call answered 503 (no handler up) waiting for a 200 that never comes: it
# fails after -recv_timeout instead of holding SIPp past its run.
SIPP_EDGE_ARGS = ("-default_behaviors", "all,-abortunexp", "-recv_timeout", "20000")
DISPATCHED = re.compile(
    r"\{1 \d+ INVITE (\S+)\} [^\n]*?(dispatch|last resort|failover) INVITE from \S+ to (sip:\S+)"
)
# What the edge logs when it could not place a call (kamailio.cfg) or ran short of memory.
EDGE_TROUBLE = {
    "handler did not answer in time": "did not answer",
    "handler answered 5xx": "answered INVITE with",
    "no handler up / left": "no handler",
    "out of shared/private memory": "out of memory",
    "errors": "ERROR:",
}


@dataclass
class EdgeRow:
    row: Row
    kamailio_cpu: float = float("nan")
    split: str = "–"
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        kamailio = "–" if self.kamailio_cpu != self.kamailio_cpu else f"{self.kamailio_cpu:.0f} %"
        return f"{self.row.markdown()} {kamailio} | {self.split} |"


def edge_terminals(database: Database, count: int) -> list[EdgeTerminal]:
    """The first ``count`` push-button terminals of the district, each with a fresh password."""
    with Session(database.engine) as s:
        rows = s.execute(
            select(Terminal.sip_user, Terminal.elder_id, Terminal.id)
            .where(Terminal.protocol == TerminalProtocol.DTMF, Terminal.sip_user.is_not(None))
            .order_by(Terminal.id)
            .limit(count)
        ).all()
    return [EdgeTerminal(str(user), secrets.token_hex(6), elder, tid) for user, elder, tid in rows]


def registration() -> str:
    """test_kamailio's REGISTER with digest, for the terminal on the injection file's line.
    The whole [authentication] keyword comes from the file (field 1): SIPp 3.6 garbles a field
    inside it (`username=[field0]` puts the value before the keyword: SIPp issue #640), but
    expands a keyword that a field holds."""
    keyword = "[authentication username=[field0] password=PASSWORD]"
    steps = register_steps("[field0]", "PASSWORD")
    assert keyword in steps
    return alone(steps.replace(keyword, "[field1]"))


def credentials_line(terminal: EdgeTerminal) -> str:
    return f"{terminal.user};[authentication username={terminal.user} password={terminal.password}]"


def family_cpu_seconds(pid: int) -> float:
    """CPU of a process and its children (Kamailio forks its workers, timers and control)."""
    total = cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                total += cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue  # it ended while we looked
    return total


def udp_receive_errors() -> int:
    """The kernel's count of UDP datagrams dropped for a full receive buffer (all sockets)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    header, values = [row for row in lines if row[0] == "Udp:"][:2]
    return int(values[header.index("RcvbufErrors")])


def udp_socket_drops() -> dict[tuple[str, int], int]:
    """(address, port) → datagrams the kernel dropped for that socket (its receive buffer was
    full), from /proc/net/udp's last column."""
    drops: dict[tuple[str, int], int] = {}
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        address, port = fields[1].split(":")
        ip = socket.inet_ntoa(int(address, 16).to_bytes(4, "little"))
        key = (ip, int(port, 16))
        drops[key] = max(drops.get(key, 0), int(fields[-1]))
    return drops


class DropWatch(threading.Thread):
    """Samples the drop counters of the sockets of interest while the storm runs (SIPp's
    sockets are gone once it exits), keeping the highest count seen for each."""

    def __init__(self, sockets: dict[tuple[str, int], str]) -> None:
        super().__init__(daemon=True)
        self.sockets, self.seen = sockets, dict.fromkeys(sockets.values(), 0)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.sample()

    def sample(self) -> None:
        for key, count in udp_socket_drops().items():
            label = self.sockets.get(key)
            if label is not None:
                self.seen[label] = max(self.seen[label], count)

    def stop(self) -> dict[str, int]:
        self.done.set()
        self.join()
        self.sample()
        return {label: count for label, count in self.seen.items() if count}


class LagProbe(threading.Thread):
    """An OPTIONS every half second to one SIP socket while the storm runs, sent as the edge
    (the handlers answer only it), timing the answer: how long requests wait there (a busy
    event loop, a long receive queue, a process waiting for a CPU). The edge answers OPTIONS
    itself, statelessly: its figure is the machine's own scheduling delay."""

    def __init__(self, label: str, port: int, host: str) -> None:
        super().__init__(daemon=True)
        self.label, self.port, self.host = label, port, host
        self.times: list[float] = []
        self.unanswered = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            started = time.monotonic()
            if options_status(self.host, self.port, 10.0, source=EDGE_IP) is None:
                self.unanswered += 1
            else:
                self.times.append((time.monotonic() - started) * 1000)

    def stop(self) -> str:
        self.done.set()
        self.join()
        return (
            f"OPTIONS answered by {self.label} in p50 {percentile(self.times, 0.5):.0f} / "
            f"p99 {percentile(self.times, 0.99):.0f} / max {max(self.times, default=0):.0f} ms"
            + (f", {self.unanswered} unanswered in 10 s" if self.unanswered else "")
        )


def sipp_errors(folder: Path) -> Counter[str]:
    """SIPp's reasons for failed calls, numbers blanked so that alike reasons count together."""
    reasons: Counter[str] = Counter()
    for path in folder.glob("*/errors.log"):
        for line in path.read_text(errors="replace").splitlines():
            if "call-id" in line.lower() or "aborting" in line.lower() or "timeout" in line:
                reasons[re.sub(r"\d+", "N", line.split(": ", 1)[-1])[:120]] += 1
    return reasons


def handler_events(log: Path) -> Counter[str]:
    """Warnings and errors a handler logged (JSON lines), by event; anything else verbatim.
    One `sip.foreign_source` is expected: storm.start_handler's readiness probe, sent from
    127.0.0.1, which a handler behind the edge refuses."""
    events: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            events[re.sub(r"\d+", "N", line)[:100]] += 1
            continue
        if isinstance(entry, dict) and entry.get("level") not in {"debug", "info"}:
            events[f"{entry.get('level')} {entry.get('event')}"] += 1
    return events


def in_slices(items: list[EdgeTerminal], parts: int) -> list[list[EdgeTerminal]]:
    return [items[i::parts] for i in range(parts)]


def parallel_sipp(jobs: list[dict[str, object]]) -> list[tuple[int, int, list[float]]]:
    """``run_sipp(**job)`` for every job at once, each in its own thread."""
    results: list[tuple[int, int, list[float]]] = [(0, 0, [])] * len(jobs)

    def one(i: int) -> None:
        try:
            results[i] = run_sipp(**jobs[i])  # type: ignore[arg-type]
        except subprocess.TimeoutExpired:
            # Still counted: its calls are offered, and the alarms they made are in the database.
            print(f"SIPp {i} did not finish in time: its calls count as not answered",
                  file=sys.stderr)  # fmt: skip

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def start_edge_handlers(database: Database, backend: str, folder: Path) -> list[Handler]:
    """Two handlers that take SIP from the edge only, each with its own half of the RTP range."""
    handlers: list[Handler] = []
    for i in range(2):
        for attempt in range(3):
            port, scaip_port = free_udp_port(), free_udp_port()
            log = folder / f"handler-{i}.log"
            env = {
                "HYT_SIP_HOST": "127.0.0.1",
                "HYT_SIP_REGISTRAR": EDGE_IP,
                "HYT_SCAIP_PORT": str(scaip_port),
                "HYT_RTP_PORT_LOW": str(30000 + 5000 * i),
                "HYT_RTP_PORT_HIGH": str(34999 + 5000 * i),
            }
            try:
                proc = start_handler(database, backend, port, log, env)
            except RuntimeError:
                if attempt == 2 or "Address already in use" not in log.read_text():
                    raise
                continue  # another process took the free port before the handler bound it
            # aiosipua answers MESSAGE on its call socket; pyVoIP's `hyt sip` adds a listener.
            handlers.append(Handler(port, scaip_port if backend == "pyvoip" else port, proc, log))
            break
    return handlers


def edge_storm(
    database: Database,
    backend: str,
    rate: float,
    seconds: float,
    *,
    sipps: int,
    max_users: int,
    defines: dict[str, str],
) -> EdgeRow:
    calls = int(rate * seconds)
    database.clear_alarms()
    terminals = edge_terminals(database, min(calls, max_users))
    sink_port = free_port_pair()
    press = call_scenario(user="[field0]", digits="2", hangup="caller", hold_ms=2000,
                          media_port=sink_port)  # fmt: skip
    register = registration()
    notes: list[str] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fake,
    ):
        folder = Path(tmp)
        write_credentials(folder / "credentials", terminals)
        handlers = start_edge_handlers(database, backend, folder)
        fake.bind(("127.0.0.1", 0))
        edge_port = free_edge_port()
        kamailio = None
        sink = start_rtp_sink(sink_port)
        try:
            kamailio = start_kamailio(folder, handlers, fake.getsockname()[1], edge_port, defines)
            slices = in_slices(terminals, sipps)
            local_ports = [free_udp_port() for _ in slices]
            # Registration: each SIPp process registers its terminals from the port it calls from.
            for i, (part, local_port) in enumerate(zip(slices, local_ports, strict=True)):
                (folder / f"register-{i}").mkdir()
                ok, failed, _ = run_sipp(
                    register, [credentials_line(t) for t in part], edge_port,
                    REGISTER_RATE, len(part), folder / f"register-{i}", host=EDGE_IP,
                    local_port=local_port,
                )  # fmt: skip
                if ok != len(part):
                    notes.append(f"registration {i}: {ok} of {len(part)} ok, {failed} failed")
            procs = [h.proc.pid for h in handlers]
            cpu0 = [cpu_seconds(pid) for pid in procs] + [family_cpu_seconds(kamailio.pid)]
            watch = DropWatch({
                (EDGE_IP, edge_port): "Kamailio",
                **{("127.0.0.1", h.port): f"handler {i}" for i, h in enumerate(handlers)},
                **{("127.0.0.1", port): f"SIPp {i}" for i, port in enumerate(local_ports)},
                ("127.0.0.1", sink_port): "RTP sink",
            })  # fmt: skip
            watch.start()
            probes = [LagProbe("Kamailio", edge_port, EDGE_IP)] + [
                LagProbe(f"handler {i}", h.port, "127.0.0.1") for i, h in enumerate(handlers)
            ]
            for probe in probes:
                probe.start()
            drops0, t0, busy0 = udp_receive_errors(), time.monotonic(), machine_busy()
            jobs: list[dict[str, object]] = []
            for i, (part, local_port) in enumerate(zip(slices, local_ports, strict=True)):
                (folder / f"calls-{i}").mkdir()
                share = calls // sipps + (1 if i < calls % sipps else 0)
                jobs.append({
                    "scenario": press, "users": [t.user for t in part], "port": edge_port,
                    "rate": rate / sipps, "calls": share, "workdir": folder / f"calls-{i}",
                    "host": EDGE_IP, "local_port": local_port,
                    "extra_args": (*SIPP_EDGE_ARGS, "-trace_err", "-error_file",
                                   str(folder / f"calls-{i}" / "errors.log")),
                })  # fmt: skip
            results = parallel_sipp(jobs)
            time.sleep(2)
            elapsed = time.monotonic() - t0
            cpu1 = [cpu_seconds(pid) for pid in procs] + [family_cpu_seconds(kamailio.pid)]
            cpu = [(b - a) / elapsed * 100 for a, b in zip(cpu0, cpu1, strict=True)]
            drops = udp_receive_errors() - drops0
            socket_drops = watch.stop()
            notes.extend(probe.stop() for probe in probes)
            notes.append(
                f"whole machine ({os.cpu_count()} cores) busy"
                f" {busy_share(busy0, machine_busy()):.0f} % during the storm, every process"
                " counted; load average at the end: "
                + " ".join(f"{x:.1f}" for x in os.getloadavg())
            )
        finally:
            sink.terminate()
            for handler in handlers:
                handler.proc.terminate()
            for handler in handlers:
                handler.proc.wait(timeout=180)  # it writes what it has queued before it stops
            if kamailio is not None:
                stop(kamailio)
        edge_log = (folder / "kamailio.log").read_text(errors="replace")
        final: dict[str, str] = {}
        failovers = 0
        for call_id, step, uri in DISPATCHED.findall(edge_log):
            final[call_id] = uri
            failovers += step == "failover"
        per_handler = Counter(final.values())
        split = " / ".join(
            f"{per_handler.get(h.uri, 0)} ({share:.0f} % CPU)"
            for h, share in zip(handlers, cpu, strict=False)
        )
        if failovers:
            notes.append(f"{failovers} INVITEs failed over to the other handler")
        for label, needle in EDGE_TROUBLE.items():
            count = edge_log.count(needle)
            if count:
                notes.append(f"edge log, {label}: {count}")
        for reason, count in sipp_errors(folder).most_common(5):
            notes.append(f"SIPp: {count} × {reason}")
        for handler in handlers:
            for event, count in handler_events(handler.log).most_common(5):
                notes.append(f"{handler.log.name}: {count} × {event}")
        if drops:
            notes.append(f"kernel dropped {drops} UDP datagrams (RcvbufErrors, whole machine)")
        for label, count in socket_drops.items():
            notes.append(f"{label}'s socket: {count} datagrams dropped, receive buffer full")
        keep = os.environ.get("BENCH_LOG_DIR")  # as in bench/storm.py
        if keep:
            for log in [folder / "kamailio.log", *(h.log for h in handlers)]:
                shutil.copy(log, Path(keep) / f"{backend}-{rate:g}-{log.name}")
    ok = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    if failed:
        notes.append(f"SIPp counted {failed} failed calls")
    rtts = [ms for r in results for ms in r[2]]
    name = (
        f"{backend}, 2 processes behind Kamailio, {rate:g} calls/s × {seconds:g} s "
        f"({len(terminals)} registered terminals, {sipps} SIPp"
        + "".join(f", {k}={v}" for k, v in defines.items())
        + ")"
    )
    # The handlers key an alarm by Call-ID and the top Via branch, which is the edge's: an
    # INVITE the edge failed over reaches the second handler with another branch, and both
    # handlers store it. Counted per Call-ID here: such a call is stored once (its first
    # alarm, whose times the row shows) and the later alarm is a duplicate.
    alarms = sorted(database.alarms(), key=lambda a: a.received_at)
    first: dict[str, Alarm] = {}
    for alarm in alarms:
        first.setdefault(alarm.dedup_key.rsplit(":", 1)[0], alarm)
    row = call_row(name, calls, ok, rtts, sum(cpu[:-1]), list(first.values()))
    row.duplicates = len(alarms) - len(first)
    return EdgeRow(row, kamailio_cpu=cpu[-1], split=split, notes=notes)


def pairs(spec: str) -> list[tuple[float, float]]:
    return [(float(r), float(s)) for r, s in (x.split(":") for x in spec.split(",") if x)]


HEADER = (
    "| run | offered | answered | alarms stored | lost | duplicates | "
    "INVITE→200 at SIPp p50/p99 ms | INVITE→200 in handler p50/p99 ms | "
    "INVITE→alarm committed p50/p99 ms | handler CPU (sum) | Kamailio CPU | "
    "calls per handler (CPU) |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="aiosipua,pyvoip")
    parser.add_argument("--rates", default="150:30,40:30", help="edge calls/s:seconds")
    parser.add_argument("--direct", default="75:30,20:30", help="one handler, no edge; or ''")
    parser.add_argument("--fallback", default="60:30,20:30", help="edge again if calls lost")
    parser.add_argument("--sipp", type=int, default=2, help="SIPp processes through the edge")
    parser.add_argument("--users", type=int, default=5000, help="most terminals registered")
    parser.add_argument(
        "--edge-define", action="append", default=[], metavar="NAME=VALUE",
        help="a kamailio.cfg define (deploy/kamailio/README.md), e.g. FR_INVITE_FIRST=5000",
    )  # fmt: skip
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    none: list[tuple[float, float] | None] = [None] * len(backends)
    direct: list[tuple[float, float] | None] = [*pairs(args.direct)] or none
    fallback: list[tuple[float, float] | None] = [*pairs(args.fallback)] or none
    defines = dict(d.split("=", 1) for d in args.edge_define)
    started = time.monotonic()
    database = Database()
    print(f"district seeded in {time.monotonic() - started:.0f} s", file=sys.stderr)
    rows: list[EdgeRow] = []
    try:
        for backend, edge, alone_, lower in zip(
            backends, pairs(args.rates), direct, fallback, strict=True
        ):
            if alone_ is not None:
                rows.append(EdgeRow(storm(database, backend, *alone_)))
                print(rows[-1].markdown(), flush=True)
            plan = [edge] + ([lower] if lower is not None else [])
            for rate, seconds in plan:
                rows.append(edge_storm(database, backend, rate, seconds, sipps=args.sipp,
                                       max_users=args.users, defines=defines))  # fmt: skip
                print(rows[-1].markdown(), *rows[-1].notes, sep="\n  ", flush=True)
                if rows[-1].row.lost == 0:
                    break
    finally:
        database.drop()
    print(f"\nwhole run {time.monotonic() - started:.0f} s\n\n{HEADER}")
    for row in rows:
        print(row.markdown())
    for row in rows:
        if row.notes:
            print(f"\n{row.row.name}:", *row.notes, sep="\n- ")


if __name__ == "__main__":
    main()
