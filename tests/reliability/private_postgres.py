"""A PostgreSQL server of the test's own, to stop and start: the shared one at 127.0.0.1:5432
serves every other test running in parallel and must never be stopped."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from callcenter.demo import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail(f"PostgreSQL's {name} is not installed (Debian package postgresql)")
    return found[-1]


def _as_postgres(*cmd: str) -> list[str]:
    # initdb and postgres refuse to run as root; the Debian package's user runs them.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


@dataclass
class PrivatePostgres:
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        log = self.data.parent / "server.log"
        options = f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1"
        subprocess.run(
            _as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "-t", "30",
                         "-o", options, "start"),
            check=True, capture_output=True,
        )  # fmt: skip

    def stop(self) -> None:
        subprocess.run(
            _as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"),
            check=True,
            capture_output=True,
        )

    def running(self) -> bool:
        probe = subprocess.run(
            [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"], check=False
        )
        return probe.returncode == 0


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    root = Path(tempfile.mkdtemp(prefix="hyt-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    server = PrivatePostgres(root / "data", free_port(socket.SOCK_STREAM))
    try:
        subprocess.run(
            _as_postgres(_bin("initdb"), "-D", str(server.data), "-U", "postgres",
                         "--auth=trust", "--no-sync", "-E", "UTF8"),
            check=True, capture_output=True,
        )  # fmt: skip
        server.start()
        deadline = time.monotonic() + 30
        while not server.running():
            assert time.monotonic() < deadline, "private PostgreSQL did not start"
            time.sleep(0.2)
        yield server
    finally:
        if server.running():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
