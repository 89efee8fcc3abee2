"""``kill -9`` of the web process (issue #7): started again, it serves within 10 s, and the
operators stay logged in (sessions are signed cookies, not process memory)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy.orm import Session

from callcenter import db
from callcenter.demo import free_port
from callcenter.models import Role
from callcenter.web.auth import add_user

ROOT = Path(__file__).parents[2]
PASSWORD = "crash-test-password-1"


def start_web(url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "HYT_ENV": "test",
        "HYT_SECRET_KEY": "test-secret-key-0123456789-abcdefghijklmnop",
        "HYT_DATABASE_URL": url,
        "HYT_LOG_JSON": "1",
    }
    with log.open("a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "callcenter", "web", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def serving(base: str, proc: subprocess.Popen[bytes], log: Path, limit: float = 30) -> float:
    started = time.monotonic()
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        assert time.monotonic() - started < limit, log.read_text()[-3000:]
        time.sleep(0.1)


def test_the_web_process_comes_back_and_nobody_is_logged_out(
    fresh_postgres_url: str, tmp_path: Path
) -> None:
    engine = db.make_engine(fresh_postgres_url)
    with Session(engine) as s:
        add_user(s, username="night", password=PASSWORD, role=Role.OPERATOR)
        s.commit()
    engine.dispose()
    port = free_port(socket.SOCK_STREAM)
    base, log = f"http://127.0.0.1:{port}", tmp_path / "web.log"
    first = start_web(fresh_postgres_url, port, log)
    second = None
    try:
        serving(base, first, log)
        with httpx.Client(base_url=base, timeout=10) as client:
            client.post("/api/session", json={"username": "night", "password": PASSWORD})
            assert client.get("/api/queue").status_code == 200
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            killed_at = time.monotonic()
            second = start_web(fresh_postgres_url, port, log)
            serving(base, second, log)
            back_after = time.monotonic() - killed_at
            assert client.get("/api/queue").status_code == 200  # the same cookie still works
        print(f"web back after {back_after:.1f} s")
        assert back_after < 10.0
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
