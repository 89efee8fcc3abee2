"""A real call-handler process (``hyt sip``) on loopback whose process, log and database the
hostile-input tests look at: is it still running, what did it log, what did it store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from callcenter import db
from devices.models import TerminalProtocol
from tests.sip.conftest import options_status, rtp_block, seed_terminals
from tests.sip.sipp import free_udp_port

ROOT = Path(__file__).parents[2]


@dataclass
class Handler:
    backend: str
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    scaip_port: int
    engine: Engine
    log: Path
    # protocol → (sip_user, elder_id, terminal_id, account)
    terminals: dict[TerminalProtocol, tuple[str, int, int, str | None]] = field(
        default_factory=dict
    )

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def scaip_address(self) -> tuple[str, int]:
        return (self.host, self.scaip_port)

    def running(self) -> bool:
        return self.proc.poll() is None

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

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]


@contextmanager
def running_handler(
    database_url: str, backend: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[Handler]:
    """Start ``python -m callcenter sip`` on free ports with JSON logs; stop it after."""
    engine = db.make_engine(database_url)
    terminals = seed_terminals(engine)
    port, scaip_port = free_udp_port(), free_udp_port()
    rtp_low = rtp_block()
    full_env = {
        **os.environ,
        "HYT_ENV": "test",
        "HYT_SECRET_KEY": "test-secret-key-0123456789-abcdefghijklmnop",
        "HYT_DATABASE_URL": database_url,
        "HYT_SIP_BACKEND": backend,
        "HYT_SIP_HOST": "127.0.0.1",
        "HYT_SIP_PORT": str(port),
        "HYT_SCAIP_PORT": str(scaip_port),
        "HYT_RTP_PORT_LOW": str(rtp_low),
        "HYT_RTP_PORT_HIGH": str(rtp_low + 998),
        "HYT_LIFE_SAFETY_HOLD_S": "10",
        "HYT_LOG_JSON": "1",
        **(env or {}),
    }
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "callcenter", "sip"], env=full_env,
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    handler = Handler(
        backend,
        proc,
        "127.0.0.1",
        port,
        scaip_port if backend == "pyvoip" else port,
        engine,
        log,
        terminals,
    )
    try:
        deadline = time.monotonic() + 20
        while options_status("127.0.0.1", port, 0.5) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"call handler did not start:\n{handler.tail()}")
        yield handler
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        engine.dispose()
