"""A real call-handler process (``hyt sip``) on loopback, for SIPp and raw-socket tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from callcenter import db
from devices.models import TerminalProtocol
from tests.factories import make_elder, make_terminal
from tests.sip.sipp import free_udp_port

BACKENDS = ["aiosipua", "pyvoip"]
ROOT = Path(__file__).parents[2]


@dataclass
class Centre:
    backend: str
    host: str
    port: int
    url: str
    engine: Engine
    log: Path
    scaip_port: int
    # protocol → (sip_user, elder_id, terminal_id, account)
    terminals: dict[TerminalProtocol, tuple[str, int, int, str | None]] = field(
        default_factory=dict
    )

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


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


def seed_terminals(engine: Engine) -> dict[TerminalProtocol, tuple[str, int, int, str | None]]:
    seeded = {}
    with Session(engine) as s:
        for protocol in TerminalProtocol:
            elder = make_elder(s)
            terminal = make_terminal(s, elder, protocol)
            seeded[protocol] = (terminal.sip_user or "", elder.id, terminal.id, terminal.account)
        s.commit()
    return seeded


def rtp_block() -> int:
    """A block of 1,000 RTP ports of this test worker's own, below the kernel's ephemeral range
    (32768+), so that parallel workers and the OS never hand out the same port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw9")
    index = int(worker.removeprefix("gw")) if worker.removeprefix("gw").isdigit() else 9
    return 20000 + (index % 10) * 1000


@pytest.fixture(params=BACKENDS)
def centre(
    request: pytest.FixtureRequest, fresh_postgres_url: str, tmp_path: Path
) -> Iterator[Centre]:
    engine = db.make_engine(fresh_postgres_url)
    terminals = seed_terminals(engine)
    port = free_udp_port()
    scaip_port = free_udp_port()
    rtp_low = rtp_block()
    env = {
        **os.environ,
        "HYT_ENV": "test",
        "HYT_SECRET_KEY": "test-secret-key-0123456789-abcdefghijklmnop",
        "HYT_DATABASE_URL": fresh_postgres_url,
        "HYT_SIP_BACKEND": request.param,
        "HYT_SIP_HOST": "127.0.0.1",
        "HYT_SIP_PORT": str(port),
        "HYT_SCAIP_PORT": str(scaip_port),
        "HYT_RTP_PORT_LOW": str(rtp_low),
        "HYT_RTP_PORT_HIGH": str(rtp_low + 998),
        "HYT_LIFE_SAFETY_HOLD_S": "15",
    }
    marker = request.node.get_closest_marker("centre_env")
    env.update(marker.kwargs if marker else {})
    log = tmp_path / "centre.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "callcenter", "sip"], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while options_status("127.0.0.1", port, 0.5) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"call handler did not start:\n{log.read_text()[-3000:]}")
        yield Centre(
            request.param,
            "127.0.0.1",
            port,
            fresh_postgres_url,
            engine,
            log,
            scaip_port if request.param == "pyvoip" else port,
            terminals,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        engine.dispose()
