"""A real call-handler process (``hyt sip``, or ``hyt scaip``: the SCAIP ingress alone) on
loopback, as the SIP, edge and reliability tests start it: the tests' settings, free ports
unless the test names them, its output in a log file, ready once it answers OPTIONS, stopped
with SIGTERM (SIGKILL if it does not stop).

:func:`running_centre` adds what most tests want around it: a terminal of each protocol seeded in
its database.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from callcenter import db
from devices.models import TerminalProtocol
from tests.factories import make_elder, make_terminal
from tests.sip.sipp import free_udp_port

ROOT = Path(__file__).parents[2]
HOST = "127.0.0.1"
SECRET = "test-secret-key-0123456789-abcdefghijklmnop"
START_TIMEOUT_S = 40.0
STOP_TIMEOUT_S = 20.0
PORT_TRIES = 3

# protocol → (sip_user, elder_id, terminal_id, account)
Terminals = dict[TerminalProtocol, tuple[str, int, int, str | None]]


def options_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """Send one OPTIONS and report whether a 200 came back."""
    return options_status(host, port, timeout) == 200


def options_status(
    host: str, port: int, timeout: float = 1.0, source: str = "127.0.0.1"
) -> int | None:
    """The status of the answer to one OPTIONS sent from ``source``; None if none came."""
    branch = f"z9hG4bK-probe-{uuid.uuid4().hex[:8]}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        lport = s.getsockname()[1]
        msg = (
            f"OPTIONS sip:centre@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {source}:{lport};branch={branch};rport\r\n"
            f"From: <sip:probe@{source}:{lport}>;tag=probe\r\n"
            f"To: <sip:centre@{host}:{port}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        s.settimeout(timeout)
        s.sendto(msg.encode(), (host, port))
        try:
            data = s.recv(65535)
        except TimeoutError:
            return None
        return int(data.split()[1]) if data.startswith(b"SIP/2.0 ") else None


def rtp_block() -> int:
    """A block of 1,000 RTP ports of this test worker's own, below the kernel's ephemeral range
    (32768+), so that parallel workers and the OS never hand out the same port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw9")
    index = int(worker.removeprefix("gw")) if worker.removeprefix("gw").isdigit() else 9
    return 20000 + (index % 10) * 1000


def seed_terminals(engine: Engine) -> Terminals:
    seeded = {}
    with Session(engine) as s:
        for protocol in TerminalProtocol:
            elder = make_elder(s)
            terminal = make_terminal(s, elder, protocol)
            seeded[protocol] = (terminal.sip_user or "", elder.id, terminal.id, terminal.account)
        s.commit()
    return seeded


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not stopped within STOP_TIMEOUT_S."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Handler:
    """A started handler process; ``kill`` for a crash, ``stop`` (or the ``with``) after."""

    port: int
    scaip_port: int  # where MESSAGE goes: the handler's own port, or pyVoIP's SCAIP listener
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)  # the process's (for `hyt` commands)

    @property
    def host(self) -> str:
        return HOST

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def scaip_address(self) -> tuple[str, int]:
        return (HOST, self.scaip_port)

    @property
    def uri(self) -> str:
        return f"sip:{HOST}:{self.port}"

    def running(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]

    def events(self) -> list[dict[str, Any]]:
        """The structured log lines so far (``HYT_LOG_JSON=1``); other lines are skipped."""
        found = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def kill(self) -> None:
        """``kill -9``: no warning, nothing flushed."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop(self.proc)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_handler(
    database_url: str,
    log: Path,
    *,
    command: str = "sip",
    backend: str | None = None,
    port: int | None = None,
    scaip_port: int | None = None,
    rtp: tuple[int, int] | None = None,
    registrar: str | None = None,
    env: dict[str, str] | None = None,
) -> Handler:
    """Start ``python -m callcenter <command>`` and wait until it answers OPTIONS; as a
    context manager (``with start_handler(...) as handler``) it is stopped after.

    Ports not given are free ones; if another process takes one between our check and the
    handler's bind, it is started again (on fresh free ports), PORT_TRIES times in all.
    ``backend`` and ``rtp`` (low, high) are the process's defaults when not given;
    ``registrar`` (the SIP edge's address) is also where the readiness probes come from,
    as the edge's are. ``env`` last: it overrides the rest. The log is appended to: a
    handler restarted on the same log keeps the first one's output before its own.
    """
    for _ in range(PORT_TRIES):
        sip_port = port or free_udp_port()
        # `hyt scaip` (the SCAIP ingress alone) listens on HYT_SCAIP_PORT.
        listener = scaip_port or (sip_port if command == "scaip" else free_udp_port())
        full_env = {
            **os.environ,
            "HYT_ENV": "test",
            "HYT_SECRET_KEY": SECRET,
            "HYT_DATABASE_URL": database_url,
            "HYT_SIP_HOST": HOST,
            "HYT_SIP_PORT": str(sip_port),
            "HYT_SCAIP_PORT": str(listener),
        }
        if backend is not None:
            full_env["HYT_SIP_BACKEND"] = backend
        if rtp is not None:
            full_env["HYT_RTP_PORT_LOW"], full_env["HYT_RTP_PORT_HIGH"] = map(str, rtp)
        if registrar is not None:
            full_env["HYT_SIP_REGISTRAR"] = registrar
        full_env.update(env or {})
        offset = log.stat().st_size if log.exists() else 0
        with log.open("a") as out:
            proc = subprocess.Popen([sys.executable, "-m", "callcenter", command],
                                    env=full_env, cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT)  # fmt: skip
        # aiosipua answers MESSAGE on its call socket; with pyVoIP `hyt sip` adds a SCAIP
        # listener.
        separate = command == "scaip" or full_env.get("HYT_SIP_BACKEND") == "pyvoip"
        handler = Handler(sip_port, listener if separate else sip_port, proc, log, full_env)
        if _ready(handler, registrar or HOST, offset):
            return handler
    raise RuntimeError(f"no free port for a handler:\n{handler.tail()}")


def _ready(handler: Handler, source: str, offset: int) -> bool:
    """Wait until every port of the handler answers (any answer: behind an edge, a probe from
    elsewhere gets a 403); False if it lost a race for a free port."""
    deadline = time.monotonic() + START_TIMEOUT_S
    for port in {handler.port, handler.scaip_port}:
        while options_status(HOST, port, 0.5, source=source) is None:
            if not handler.running() or time.monotonic() > deadline:
                handler.stop()
                own = handler.log.read_bytes()[offset:].decode(errors="replace")
                if "Address already in use" in own:
                    return False
                raise RuntimeError(f"call handler did not start:\n{own[-3000:]}")
    return True


@dataclass(kw_only=True)
class Centre(Handler):
    """A call handler on its own database, with one terminal of each protocol seeded."""

    backend: str
    url: str
    engine: Engine
    terminals: Terminals


@contextmanager
def running_centre(
    database_url: str, backend: str, log: Path, env: dict[str, str]
) -> Iterator[Centre]:
    """The handler on this worker's RTP block (:func:`rtp_block`)."""
    engine = db.make_engine(database_url)
    try:
        terminals = seed_terminals(engine)
        low = rtp_block()
        with start_handler(
            database_url, log, backend=backend, rtp=(low, low + 998), env=env
        ) as handler:
            yield Centre(handler.port, handler.scaip_port, handler.proc, handler.log,
                         handler.env, backend=backend, url=database_url, engine=engine,
                         terminals=terminals)  # fmt: skip
    finally:
        engine.dispose()
