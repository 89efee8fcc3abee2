"""Alarm storm: SIPp terminals pressing buttons at a fixed rate against `hyt sip`, per backend,
in the same run; and SCAIP MESSAGEs against the ingress. Alarms are really committed (PostgreSQL).

    .venv/bin/python bench/storm.py --backends aiosipua,pyvoip --rates 100:30,20:30 --scaip 500:20

`--rates` pairs with `--backends`: calls/s : seconds. Prints a Markdown table for BENCHMARKS.md.
Each press: INVITE (PCMU + telephone-event), RFC 2833 digit "2" (service request), 2 s hold while
the centre plays its prompt, BYE from the terminal — the scenario SIPSTACK.md measured.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from callcenter import db, migrate  # noqa: E402
from callcenter.demo_district import seed_district  # noqa: E402
from callcenter.models import Alarm  # noqa: E402
from devices.models import Terminal, TerminalProtocol  # noqa: E402
from tests.sip.conftest import options_status  # noqa: E402
from tests.sip.sipp import (  # noqa: E402
    call_scenario,
    free_port_pair,
    free_port_run,
    free_udp_port,
    scaip_scenario,
)

ADMIN_URL = os.environ.get("HYT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1/test")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Row:
    name: str
    offered: int
    answered: int
    stored: int
    lost: int
    duplicates: int
    p50_answer_ms: float
    p99_answer_ms: float
    p50_commit_ms: float
    p99_commit_ms: float
    cpu_pct: float
    p50_handler_answer_ms: float = float("nan")
    p99_handler_answer_ms: float = float("nan")

    def markdown(self) -> str:
        return (
            f"| {self.name} | {self.offered} | {self.answered} | {self.stored} | {self.lost} | "
            f"{self.duplicates} | {self.p50_answer_ms:.1f} / {self.p99_answer_ms:.1f} | "
            f"{self.p50_handler_answer_ms:.1f} / {self.p99_handler_answer_ms:.1f} | "
            f"{self.p50_commit_ms:.1f} / {self.p99_commit_ms:.1f} | {self.cpu_pct:.0f} % |"
        )


class Database:
    def __init__(self) -> None:
        self.name = f"hyt_storm_{uuid.uuid4().hex[:8]}"
        self.admin = db.make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url = make_url(ADMIN_URL).set(database=self.name).render_as_string(False)
        self.engine = db.make_engine(self.url)
        migrate.upgrade(self.engine)
        with Session(self.engine) as s:
            seed_district(s, elders=13_500)
            s.commit()

    def users(self, protocol: TerminalProtocol) -> list[str]:
        with Session(self.engine) as s:
            query = select(Terminal.sip_user).where(Terminal.protocol == protocol)
            return [u for u in s.scalars(query.order_by(Terminal.id)) if u]

    def clear_alarms(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM case_events; UPDATE alarms SET case_id = NULL;"))
            conn.execute(text("DELETE FROM cases; DELETE FROM alarms;"))

    def alarms(self) -> list[Alarm]:
        with Session(self.engine) as s:
            return list(s.scalars(select(Alarm)))

    def drop(self) -> None:
        self.engine.dispose()
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat's first line: the
    difference of two readings tells how busy the whole machine was in between, other jobs
    included."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Percent of the machine's CPU (all cores) busy between two :func:`machine_busy`."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total * 100 if total else float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SINK = """
import signal, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("127.0.0.1", int(sys.argv[1])))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    s.recv(2048)
"""


def start_rtp_sink(port: int) -> subprocess.Popen[bytes]:
    """Where the centre's prompts go: SIPp is one thread, and reading every prompt's RTP (10,000
    packets/s at 100 calls/s) made it, not the centre, the bottleneck (its answer times grew
    while the handler's own INVITE→200 stayed at 5 ms p50)."""
    return subprocess.Popen([sys.executable, "-c", SINK, str(port)])


def start_handler(
    database: Database,
    backend: str,
    port: int,
    log: Path,
    extra_env: dict[str, str] | None = None,
    command: str = "sip",
) -> subprocess.Popen[bytes]:
    """``hyt sip`` listening on ``port``; ``command="scaip"``: ``hyt scaip`` (the SCAIP ingress
    alone) listening on ``port``."""
    rtp = free_port_pair()
    env = {
        **os.environ,
        "HYT_ENV": "test",
        "HYT_SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnop",
        "HYT_DATABASE_URL": database.url,
        "HYT_SIP_BACKEND": backend,
        "HYT_SIP_PORT": str(port),
        "HYT_SCAIP_PORT": str(port if command == "scaip" else free_udp_port()),
        "HYT_RTP_PORT_LOW": "30000",
        "HYT_RTP_PORT_HIGH": "39999",
        "HYT_LOG_LEVEL": "WARNING",
        "HYT_DB_THREADS": os.environ.get("HYT_DB_THREADS", "8"),
        **(extra_env or {}),
    }
    del rtp
    proc = subprocess.Popen([sys.executable, "-m", "callcenter", command], env=env, cwd=ROOT,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 30
    while options_status("127.0.0.1", port, 0.5) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()  # still starting after 30 s: not left behind
            proc.wait()
            raise RuntimeError(f"handler did not start: {log.read_text()[-2000:]}")
    return proc


def run_sipp(scenario: str, users: list[str], port: int, rate: float, calls: int,
             workdir: Path, *, host: str = "127.0.0.1", local_port: int | None = None,
             extra_args: tuple[str, ...] = ()) -> tuple[int, int, list[float]]:  # fmt: skip
    """Returns (successful, failed, INVITE→200 times in ms). ``users``: lines of the injection
    file (fields separated by ";"). ``local_port``: SIPp's own SIP port, e.g. the one its
    terminals registered from at an edge (bench/storm_edge.py)."""
    (workdir / "scenario.xml").write_text(scenario, encoding="ascii")
    with (workdir / "users.csv").open("w") as fh:
        fh.write("SEQUENTIAL\n")
        fh.writelines(f"{u}\n" for u in users)
    stat = workdir / "stat.csv"
    cmd = [
        "sipp", "-sf", "scenario.xml", "-inf", "users.csv", "-i", "127.0.0.1",
        "-mi", "127.0.0.1", "-p", str(local_port or free_udp_port()),
        "-mp", str(free_port_run(4)),  # SIPp: audio at -mp, video at -mp + 2
        "-m", str(calls), "-r", str(rate), "-l", str(int(rate * 30) + 50),
        "-timeout", f"{int(calls / rate) + 90}s", "-nostdin", "-trace_rtt", "-rtt_freq", "1",
        "-trace_stat", "-stf", str(stat), "-fd", "1", "-max_socket", "5000",
        "-buff_size", str(8 << 20), *extra_args,
        f"{host}:{port}",
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run(cmd, cwd=workdir, capture_output=True, timeout=calls / rate + 180)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / (
        time.monotonic() - started
    )
    # SIPp is one thread: near 100 % it, not the centre, sets the pace.
    print(f"SIPp CPU {busy:.0%} over {time.monotonic() - started:.1f} s", file=sys.stderr)
    rows = list(csv.DictReader(stat.open(), delimiter=";"))
    last = rows[-1]
    ok, failed = int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"])
    rtts: list[float] = []
    for rtt_file in workdir.glob("*_rtt.csv"):
        for row in csv.DictReader(rtt_file.open(), delimiter=";"):
            value = row.get("response_time_ms")
            if value:
                rtts.append(float(value))
        rtt_file.unlink()
    return ok, failed, rtts


def against_handler(
    database: Database,
    backend: str,
    scenario: str,
    users: list[str],
    rate: float,
    count: int,
    *,
    rtp_sink_port: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[int, list[float], float]:
    """Start a handler, run SIPp against it; (successful, INVITE/MESSAGE→200 ms, handler CPU %)."""
    database.clear_alarms()
    port = free_udp_port()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        proc = start_handler(database, backend, port, workdir / "handler.log", extra_env)
        sink = start_rtp_sink(rtp_sink_port) if rtp_sink_port else None
        profile = os.environ.get("BENCH_PROFILE")  # a py-spy flame graph of the handler
        # BENCH_PROFILE_ARGS: more py-spy options, e.g. "--gil" for the GIL holder only.
        spy_cmd = [str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(proc.pid),
                   "-o", str(profile), "-r", "200", "--format", "raw",
                   *os.environ.get("BENCH_PROFILE_ARGS", "").split()]  # fmt: skip
        spy: subprocess.Popen[bytes] | None = None
        try:  # from here on, the handler and the sink are stopped whatever fails
            spy = subprocess.Popen(spy_cmd) if profile else None
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            ok, _failed, rtts = run_sipp(scenario, users, port, rate, count, workdir)
            time.sleep(2)
            cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
        finally:
            if sink is not None:
                sink.terminate()
            proc.terminate()
            if spy is not None:
                spy.wait(timeout=60)
            proc.wait(timeout=180)  # it writes what it has queued before it stops
            keep = os.environ.get("BENCH_LOG_DIR")
            if keep:
                shutil.copy(workdir / "handler.log", Path(keep) / f"handler-{proc.pid}.log")
    return ok, rtts, cpu


def storm(database: Database, backend: str, rate: float, seconds: float) -> Row:
    calls = int(rate * seconds)
    sink_port = free_port_pair()
    scenario = call_scenario(user="[field0]", digits="2", hangup="caller", hold_ms=2000,
                             media_port=sink_port)  # fmt: skip
    ok, rtts, cpu = against_handler(database, backend, scenario,
                                    database.users(TerminalProtocol.DTMF), rate, calls,
                                    rtp_sink_port=sink_port)  # fmt: skip
    name = f"{backend}, 1 process, {rate:g} calls/s × {seconds:g} s"
    return call_row(name, calls, ok, rtts, cpu, database.alarms())


def call_row(
    name: str, calls: int, ok: int, rtts: list[float], cpu: float, alarms: list[Alarm]
) -> Row:
    """A storm's row from what SIPp saw and the alarms the database holds afterwards."""
    keys = [a.dedup_key for a in alarms]
    commit_ms = [
        (a.received_at.timestamp() - float(a.raw["invite_at"])) * 1000
        for a in alarms
        if a.raw.get("invite_at")
    ]
    answer_ms = [
        (float(a.raw["answered_at"]) - float(a.raw["invite_at"])) * 1000
        for a in alarms
        if a.raw.get("answered_at") and a.raw.get("invite_at")
    ]
    return Row(
        name=name,
        p50_handler_answer_ms=percentile(answer_ms, 0.5),
        p99_handler_answer_ms=percentile(answer_ms, 0.99),
        offered=calls,
        answered=ok,
        stored=len(set(keys)),
        lost=calls - len(set(keys)),
        duplicates=len(keys) - len(set(keys)),
        p50_answer_ms=percentile(rtts, 0.5),
        p99_answer_ms=percentile(rtts, 0.99),
        p50_commit_ms=percentile(commit_ms, 0.5),
        p99_commit_ms=percentile(commit_ms, 0.99),
        cpu_pct=cpu,
    )


def scaip_storm(database: Database, rate: float, seconds: float, batch_max: int = 64) -> Row:
    messages = int(rate * seconds)
    mrq = (
        "<mrq><ref>[call_number]</ref><cid>[field0]</cid><dty>0003</dty>"
        "<mty>ME</mty><stc>0085</stc></mrq>"
    )  # mains failure: the storm of a power cut
    scenario = scaip_scenario(user="[field0]", mrq=mrq)
    users = database.users(TerminalProtocol.SCAIP)
    ok, rtts, cpu = against_handler(database, "aiosipua", scenario, users, rate, messages,
                                    extra_env={"HYT_ALARM_BATCH_MAX": str(batch_max)})  # fmt: skip
    alarms = database.alarms()
    keys = [a.dedup_key for a in alarms]
    return Row(
        name=f"SCAIP MESSAGE, {rate:g}/s × {seconds:g} s, "
        + ("one transaction each" if batch_max == 1 else f"group commit ≤{batch_max}"),
        offered=messages, answered=ok, stored=len(set(keys)), lost=messages - len(set(keys)),
        duplicates=len(keys) - len(set(keys)), p50_answer_ms=percentile(rtts, 0.5),
        p99_answer_ms=percentile(rtts, 0.99), p50_commit_ms=float("nan"),
        p99_commit_ms=float("nan"), cpu_pct=cpu,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="aiosipua,pyvoip")
    parser.add_argument("--rates", default="100:30,20:30", help="calls/s:seconds per backend")
    parser.add_argument("--scaip", default="500:20", help="messages/s:seconds, or empty")
    parser.add_argument(
        "--scaip-baseline",
        action="store_true",
        help="first run SCAIP with one transaction per alarm, as before",
    )
    args = parser.parse_args()
    database = Database()
    rows: list[Row] = []
    try:
        backends = [b for b in args.backends.split(",") if b]
        rates = [r for r in args.rates.split(",") if r]
        for backend, spec in zip(backends, rates, strict=True):
            rate, seconds = (float(x) for x in spec.split(":"))
            rows.append(storm(database, backend, rate, seconds))
            print(rows[-1].markdown(), flush=True)
        if args.scaip:
            rate, seconds = (float(x) for x in args.scaip.split(":"))
            for batch_max in (1, 64) if args.scaip_baseline else (64,):
                rows.append(scaip_storm(database, rate, seconds, batch_max))
                print(rows[-1].markdown(), flush=True)
    finally:
        database.drop()
    print()
    print(
        "| run | offered | answered | alarms stored | lost | duplicates | "
        "INVITE→200 at SIPp p50/p99 ms | INVITE→200 in handler p50/p99 ms | "
        "INVITE→alarm committed p50/p99 ms | handler CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row.markdown())


if __name__ == "__main__":
    main()
