"""Console logins are rate-limited: failures per username and address, and per address, in a
sliding window; then 429 with Retry-After, before the password is even checked."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from callcenter import db, metrics
from callcenter.models import Role
from callcenter.web import session_routes
from callcenter.web.app import create_app
from callcenter.web.auth import add_user
from callcenter.web.rate_limit import LoginRateLimiter

PASSWORD = "correct horse battery"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: FakeClock, *, per_user: int = 5, per_address: int = 20) -> LoginRateLimiter:
    return LoginRateLimiter(
        max_failures=per_user, max_failures_per_address=per_address, window_s=60, clock=clock
    )


def test_sliding_window() -> None:
    clock = FakeClock()
    limits = limiter(clock)
    for second in range(5):
        assert limits.retry_after("op1", "10.0.0.1") is None
        limits.failed("op1", "10.0.0.1")
        clock.now += 10 if second < 4 else 0  # failures at 1000, 1010, 1020, 1030, 1040
    assert limits.retry_after("op1", "10.0.0.1") == 20  # 1000 leaves the window at 1060
    assert limits.retry_after("OP1 ", "10.0.0.1") == 20  # the same account however typed
    assert limits.retry_after("op1", "10.0.0.2") is None  # another address
    assert limits.retry_after("op2", "10.0.0.1") is None  # another account
    clock.now = 1060.5
    assert limits.retry_after("op1", "10.0.0.1") is None  # one slot free again
    limits.failed("op1", "10.0.0.1")
    assert limits.retry_after("op1", "10.0.0.1") == 10  # now 1010 must leave


def test_success_forgives_the_account_but_not_the_address() -> None:
    clock = FakeClock()
    limits = limiter(clock, per_user=3, per_address=5)
    for _ in range(3):
        limits.failed("op1", "10.0.0.1")
    assert limits.retry_after("op1", "10.0.0.1") is not None
    limits.succeeded("op1", "10.0.0.1")
    assert limits.retry_after("op1", "10.0.0.1") is None
    for name in ("a", "b"):  # two more failures from the address reach its limit of 5
        limits.failed(name, "10.0.0.1")
    assert limits.retry_after("op1", "10.0.0.1") == 60
    assert limits.retry_after("anyone", "10.0.0.1") == 60
    assert limits.retry_after("anyone", "10.0.0.9") is None


def test_memory_is_pruned() -> None:
    clock = FakeClock()
    limits = limiter(clock)
    for n in range(100):
        limits.failed(f"user{n}", f"10.0.{n}.1")
    assert len(limits) == 200  # one key per account and address, one per address
    clock.now += 61
    limits._prune(clock.now)
    assert len(limits) == 0


@dataclass
class Login:
    app: FastAPI
    clock: FakeClock
    checks: list[str]  # usernames whose password was actually checked

    def client(self, address: str = "10.1.1.1") -> TestClient:
        return TestClient(self.app, client=(address, 40000))


@pytest.fixture
def login(sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Login]:
    previous = db.get_engine()
    db.use_engine(sqlite_engine)
    with Session(sqlite_engine) as s:
        add_user(s, username="op1", password=PASSWORD, role=Role.OPERATOR)
        s.commit()
    app = create_app()
    clock = FakeClock()
    # Few attempts per address, to keep argon2's work (and the test) short.
    app.state.login_limiter = limiter(clock, per_address=8)
    checks: list[str] = []
    real = session_routes.authenticate

    def counting(session: Session, username: str, password: str):  # type: ignore[no-untyped-def]
        checks.append(username)
        return real(session, username, password)

    monkeypatch.setattr(session_routes, "authenticate", counting)
    try:
        yield Login(app, clock, checks)
    finally:
        db.use_engine(previous)


def post(client: TestClient, username: str, password: str) -> int:
    return client.post(
        "/api/session", json={"username": username, "password": password}
    ).status_code


def limited() -> float:
    return metrics.REGISTRY.get_sample_value("hyt_logins_total", {"outcome": "rate_limited"}) or 0


def test_guessing_one_password_gets_429(login: Login) -> None:
    client = login.client()
    before = limited()
    assert [post(client, "op1", f"guess-{n}") for n in range(5)] == [401] * 5
    blocked = client.post("/api/session", json={"username": "op1", "password": PASSWORD})
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert "登录失败次数过多" in blocked.json()["detail"] and "hyt_session" not in blocked.cookies
    assert login.checks == ["op1"] * 5  # the blocked attempt never reached the password check
    assert limited() == before + 1
    # Someone else, elsewhere, is not held up.
    assert post(login.client("10.2.2.2"), "op1", PASSWORD) == 200
    login.clock.now += 61  # the window slides past the failures
    assert post(client, "op1", PASSWORD) == 200


def test_trying_many_names_from_one_address_gets_429(login: Login) -> None:
    client = login.client()
    assert [post(client, f"user{n}", "wrong-password") for n in range(8)] == [401] * 8
    assert post(client, "op1", PASSWORD) == 429  # even a real account, from this address
    assert post(login.client("10.3.3.3"), "op1", PASSWORD) == 200


def test_a_success_clears_the_account_count(login: Login) -> None:
    client = login.client()
    for n in range(4):
        assert post(client, "op1", f"typo-{n}") == 401
    assert post(client, "op1", PASSWORD) == 200
    for n in range(3):  # more typos are allowed again (the address has had 7 of its 8)
        assert post(client, "op1", f"typo-{n}") == 401
    assert post(client, "op1", PASSWORD) == 200
