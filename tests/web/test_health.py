"""/healthz, /readyz and /metrics on both databases: readiness fails for the right reason (a
database refusing or hanging, no scheduler, an SMS backlog, a closed SIP socket, a silent SIP
edge), and the metrics show what was recorded."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from callcenter import db, db_probe, metrics, readiness
from callcenter.db import utcnow
from callcenter.intake import Press, record_alarm
from callcenter.models import AlarmKind, AlarmSource, OutboxMessage, OutboxStatus
from callcenter.ops_settings import OpsSettings
from callcenter.settings import Settings
from callcenter.sip import listener_registry
from callcenter.sip.aiosipua_backend import AiosipuaBackend
from callcenter.sip.runner import start_sip
from callcenter.web import health_routes
from callcenter.web.app import create_app
from callcenter.web.auth import SESSION_COOKIE
from devices.models import TerminalProtocol, TerminalStatus
from schedules.leader import AdvisoryLockLeadership
from schedules.models import JobOutcome, SchedulerJobRun
from schedules.settings import get_schedule_settings
from tests.factories import make_terminal
from tests.reliability.world import World, build_world
from volunteers.models import Offer, OfferStatus

LOOPBACK = ("127.0.0.1", 40000)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def use_ops(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Replace the operational settings for this test: ``use_ops(ready_outbox_max=2)``."""

    def use(**values: Any) -> OpsSettings:
        ops = OpsSettings(**values)
        for module in (health_routes, metrics):
            monkeypatch.setattr(module, "get_ops_settings", lambda: ops)
        return ops

    return use


@pytest.fixture
def world(fresh_engine: Engine) -> Iterator[World]:
    previous = db.get_engine()
    db.use_engine(fresh_engine)
    try:
        yield build_world(fresh_engine, volunteers=8, staff=("operator",))
    finally:
        db.use_engine(previous)


def scheduler_ran(engine: Engine, seconds_ago: float) -> None:
    at = utcnow() - dt.timedelta(seconds=seconds_ago)
    with Session(engine) as s:
        s.add(
            SchedulerJobRun(
                job_name="terminals.watchdog",
                scheduled_for=at,
                started_at=at,
                finished_at=at,
                outcome=JobOutcome.OK,
                runner="test",
            )
        )
        s.commit()


def readyz() -> tuple[int, dict[str, Any]]:
    response = TestClient(create_app()).get("/readyz")
    return response.status_code, response.json()


def test_healthz_is_liveness_only() -> None:
    response = TestClient(create_app()).get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_when_everything_works(world: World) -> None:
    scheduler_ran(world.engine, 20)
    code, body = readyz()
    assert code == 200, body
    assert body["status"] == "ready"
    assert list(body["checks"]) == ["database", "sip", "scheduler", "outbox"]
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["sip"]["reason"].endswith("this process runs no SIP listener")
    assert 15 <= body["checks"]["scheduler"]["last_run_age_s"] < 60


@pytest.mark.parametrize("where", ["postgres_closed_port", "sqlite_missing_directory"])
def test_not_ready_when_the_database_is_unreachable(
    where: str, tmp_path: Any, use_ops: Any
) -> None:
    use_ops(ready_timeout_s=5.0)
    url = (
        f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
        if where.startswith("postgres")
        else f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'hyt.db'}"
    )
    previous = db.get_engine()
    db.use_engine(db.make_engine(url))
    try:
        started = time.monotonic()
        code, body = readyz()
        elapsed = time.monotonic() - started
        scrape = TestClient(create_app(), client=LOOPBACK).get("/metrics")
    finally:
        db.use_engine(previous)
    assert code == 503 and body["status"] == "not_ready"
    checks = body["checks"]
    assert checks["database"] == {
        "ok": False,
        "reason": "数据库无法连接 / database unreachable",
        "error": "OperationalError",
    }
    assert not checks["scheduler"]["ok"] and not checks["outbox"]["ok"]
    assert checks["sip"]["ok"]  # nothing to do with the database
    assert "127.0.0.1" not in str(body) and "hyt.db" not in str(body)  # no internals leak
    assert elapsed < 4.0  # refused at once: no waiting for the deadline
    assert scrape.status_code == 200
    families = {f.name for f in text_string_to_metric_families(scrape.text)}
    assert "hyt_database_up" in families and "hyt_alarms_recent" not in families
    assert "hyt_database_up 0.0" in scrape.text


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: a hung database server."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for conn in held:  # the probe threads waiting on them now fail and end
            conn.close()
        server.close()


def test_not_ready_within_the_deadline_when_the_database_hangs(use_ops: Any) -> None:
    use_ops(ready_timeout_s=0.5)
    previous = db.get_engine()
    with black_hole() as port:
        db.use_engine(db.make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"))
        try:
            started = time.monotonic()
            code, body = readyz()
            elapsed = time.monotonic() - started
        finally:
            db.use_engine(previous)
    assert code == 503
    assert body["checks"]["database"]["error"] == "timeout"
    assert 0.4 <= elapsed < 3.0


def test_scheduler_leader_on_postgres(fresh_postgres_url: str) -> None:
    engine = db.make_engine(fresh_postgres_url)
    previous = db.get_engine()
    db.use_engine(engine)
    key = get_schedule_settings().scheduler_lock_key
    leader = AdvisoryLockLeadership(fresh_postgres_url, key=key, lease_s=10)
    # The same key held on another database of the same server is another centre's leader.
    elsewhere_url = make_url(fresh_postgres_url).set(database="test").render_as_string(False)
    elsewhere = AdvisoryLockLeadership(elsewhere_url, key=key, lease_s=10)
    try:
        assert elsewhere.try_acquire()
        code, body = readyz()
        assert code == 503 and body["checks"]["scheduler"]["lock_held"] is False
        assert body["checks"]["scheduler"]["reason"].endswith("no scheduler holds the leader lock")
        assert leader.try_acquire()
        code, body = readyz()
        assert code == 200, body
        assert body["checks"]["scheduler"]["lock_held"] is True
        leader.release()
        code, body = readyz()
        assert code == 503
    finally:
        leader.dispose()
        elsewhere.dispose()
        db.use_engine(previous)
        engine.dispose()


def test_scheduler_seen_by_its_job_runs(world: World, use_ops: Any) -> None:
    use_ops(ready_scheduler_stale_s=180, ready_checks="database,scheduler")
    scheduler_ran(world.engine, 3600)
    code, body = readyz()
    assert code == 503 and list(body["checks"]) == ["database", "scheduler"]
    assert body["checks"]["scheduler"]["last_job"] == "terminals.watchdog"
    scheduler_ran(world.engine, 30)
    assert readyz()[0] == 200


def add_sms(engine: Engine, status: OutboxStatus, *, age_s: float = 0, count: int = 1) -> None:
    created = utcnow() - dt.timedelta(seconds=age_s)
    with Session(engine) as s:
        for _ in range(count):
            n = time.monotonic_ns()
            s.add(
                OutboxMessage(
                    to="+8613700009999",
                    body="【呼援通】测试",
                    status=status,
                    idempotency_key=f"test:{n}",
                    created_at=created,
                    next_attempt_at=created,
                )
            )
        s.commit()


def test_outbox_backlog(world: World, use_ops: Any) -> None:
    use_ops(ready_outbox_max=3, ready_outbox_max_age_s=600, ready_checks="outbox")
    add_sms(world.engine, OutboxStatus.SENT, count=5)  # sent and given-up ones are no backlog
    add_sms(world.engine, OutboxStatus.FAILED, count=5)
    add_sms(world.engine, OutboxStatus.QUEUED, count=2)
    add_sms(world.engine, OutboxStatus.SENDING)
    code, body = readyz()
    assert code == 200 and body["checks"]["outbox"]["unsent"] == 3, body
    assert body["checks"]["outbox"]["failed"] == 5
    add_sms(world.engine, OutboxStatus.QUEUED)
    code, body = readyz()
    assert code == 503 and body["checks"]["outbox"]["reason"].endswith(
        "too many SMS waiting to be sent"
    )
    use_ops(ready_outbox_max=100, ready_outbox_max_age_s=600, ready_checks="outbox")
    assert readyz()[0] == 200
    add_sms(world.engine, OutboxStatus.QUEUED, age_s=700)  # Twilio down for over 10 minutes
    code, body = readyz()
    assert code == 503 and body["checks"]["outbox"]["oldest_unsent_age_s"] >= 700


class FakeEdge(asyncio.DatagramProtocol):
    """A SIP edge that answers OPTIONS with ``status`` (None: never answers)."""

    def __init__(self, status: str | None) -> None:
        self.status = status
        self.requests: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = data.decode()
        self.requests.append(request)
        if self.status is None:
            return
        headers = [
            line
            for line in request.split("\r\n")[1:]
            if line.split(":")[0] in ("Via", "From", "To", "Call-ID", "CSeq")
        ]
        answer = "\r\n".join([f"SIP/2.0 {self.status}", *headers, "Content-Length: 0", "", ""])
        self.transport.sendto(answer.encode(), addr)  # type: ignore[attr-defined]


def test_sip_listener_and_edge() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        backend = AiosipuaBackend("127.0.0.1", free_port(socket.SOCK_DGRAM))

        async def no_calls(call: Any) -> None:
            await call.reject(503)

        await backend.start(no_calls)
        listener_registry.register(backend, "calls")
        try:
            check = await readiness.sip_check("", 1.0)
            assert check.ok and check.detail["listeners"][0]["listening"] is True
            edges = {}
            for status in ("200 OK", "403 Forbidden", None):
                port = free_port(socket.SOCK_DGRAM)
                edge = FakeEdge(status)
                await loop.create_datagram_endpoint(
                    functools.partial(lambda e: e, edge), local_addr=("127.0.0.1", port)
                )
                edges[status] = (edge, await readiness.sip_check(f"127.0.0.1:{port}", 0.5))
            edge, ok = edges["200 OK"]
            assert ok.ok and ok.detail["answer"] == "SIP/2.0 200 OK"
            first_line, *headers = edge.requests[0].split("\r\n")
            assert first_line.startswith("OPTIONS sip:127.0.0.1:") and first_line.endswith(
                "SIP/2.0"
            )
            assert any(h.startswith("Via: SIP/2.0/UDP") and ";rport" in h for h in headers)
            refused = edges["403 Forbidden"][1]
            assert not refused.ok and refused.reason.endswith("SIP edge refuses OPTIONS")
            silent = edges[None][1]
            assert not silent.ok and silent.detail["error"] == "TimeoutError"
            closed = await readiness.sip_check(f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}", 2.0)
            assert not closed.ok and closed.detail["error"] == "ConnectionRefusedError"
            await backend.stop()
            stopped = await readiness.sip_check("", 1.0)
            assert not stopped.ok and stopped.detail["listeners"][0]["listening"] is False
        finally:
            listener_registry.unregister(backend)
            await backend.stop()

    asyncio.run(scenario())
    assert listener_registry.listeners() == []


def test_start_sip_registers_its_listeners(fresh_engine: Engine) -> None:
    previous = db.get_engine()
    db.use_engine(fresh_engine)
    settings = Settings(env="test", secret_key="t" * 40, sip_port=free_port(socket.SOCK_DGRAM))

    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            await start_sip(settings, stack, calls=True, scaip=False)
            (state,) = listener_registry.listeners()
            assert state.listening and state.role == "calls" and state.port == settings.sip_port
        assert listener_registry.listeners() == []

    try:
        asyncio.run(scenario())
    finally:
        db.use_engine(previous)


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def answered(le: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "hyt_alarm_answer_seconds_bucket", {"priority": "1", "le": le}
    )
    return value or 0.0


def test_metrics_show_what_happened(world: World) -> None:
    now = utcnow()
    with Session(world.engine, expire_on_commit=False) as s:

        def alarm(kind: AlarmKind, seconds_ago: float) -> int:
            press = Press(
                source=AlarmSource.DTMF,
                kind=kind,
                dedup_key=f"m-{kind}-{seconds_ago}",
                terminal_id=world.terminal_id,
                elder_id=world.elder_id,
            )
            at = now - dt.timedelta(seconds=seconds_ago)
            return record_alarm(s, press, repeat_window_s=0, now=at).alarm_id

        oldest_sos = alarm(AlarmKind.LIFE_SAFETY, 120)
        alarm(AlarmKind.LIFE_SAFETY, 10)
        alarm(AlarmKind.SERVICE, 30)
        alarm(AlarmKind.TECHNICAL, 7200)  # outside the 15-minute window, still waiting
        alarm(AlarmKind.TEST, 5)  # a periodic test: counted, never queued
        for status in (TerminalStatus.SILENT, TerminalStatus.SILENT, TerminalStatus.FAULT):
            make_terminal(s, None, TerminalProtocol.DTMF, status=status)
        s.commit()
    offer_statuses = [
        OfferStatus.PENDING,
        OfferStatus.PENDING,
        OfferStatus.ACCEPTED,
        OfferStatus.COMPLETED,
        OfferStatus.DROPPED,
        OfferStatus.DECLINED,
        OfferStatus.EXPIRED,
        OfferStatus.STOOD_DOWN,
    ]
    case_id = world.new_case()
    with world.session() as s:
        for volunteer_id, offer_status in zip(world.volunteer_ids, offer_statuses, strict=True):
            s.add(
                Offer(
                    case_id=case_id,
                    volunteer_id=volunteer_id,
                    status=offer_status,
                    sent_at=now,
                    expires_at=now + dt.timedelta(minutes=10),
                )
            )
    add_sms(world.engine, OutboxStatus.QUEUED, age_s=300)
    add_sms(world.engine, OutboxStatus.QUEUED)
    add_sms(world.engine, OutboxStatus.SENDING)
    add_sms(world.engine, OutboxStatus.FAILED)
    add_sms(world.engine, OutboxStatus.SENT, count=3)
    scheduler_ran(world.engine, 50)

    before_le_90, before_le_180 = answered("90.0"), answered("180.0")
    operator = TestClient(create_app(), cookies={SESSION_COOKIE: world.session_tokens["operator"]})
    assert operator.post(f"/api/alarms/{oldest_sos}/claim").status_code == 200  # after ~120 s
    assert operator.post(f"/api/alarms/{oldest_sos}/claim").status_code == 200  # again: no count
    assert answered("90.0") == before_le_90 and answered("180.0") == before_le_180 + 1

    values = scrape(TestClient(create_app(), client=LOOPBACK))

    def value(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted(labels.items())))]

    assert value("hyt_database_up") == 1
    assert value("hyt_alarms_recent", kind="life_safety", priority="1") == 2
    assert value("hyt_alarms_recent", kind="service", priority="2") == 1
    assert value("hyt_alarms_recent", kind="technical", priority="4") == 0
    assert value("hyt_alarms_recent", kind="test", priority="5") == 1
    assert value("hyt_alarm_queue", status="new", priority="1") == 1
    assert value("hyt_alarm_queue", status="claimed", priority="1") == 1
    assert value("hyt_alarm_queue", status="new", priority="2") == 1
    assert value("hyt_alarm_queue", status="new", priority="4") == 1
    assert value("hyt_alarm_queue", status="new", priority="5") == 0
    assert 10 <= value("hyt_alarm_oldest_waiting_seconds", priority="1") < 60
    assert 7200 <= value("hyt_alarm_oldest_waiting_seconds", priority="4") < 7300
    assert value("hyt_offers_sent_total") == 8
    assert value("hyt_offers_accepted_total") == 3  # accepted, completed, dropped
    assert value("hyt_offers_declined_total") == 1
    assert value("hyt_offers_expired_total") == 1
    assert value("hyt_offers_stood_down_total") == 1
    assert value("hyt_offers_pending") == 2
    assert value("hyt_outbox_backlog") == 3
    assert value("hyt_outbox_messages", status="failed") == 1
    assert 300 <= value("hyt_outbox_oldest_unsent_seconds") < 400
    assert value("hyt_terminals", status="silent") == 2 == value("hyt_terminals_silent")
    assert value("hyt_terminals", status="active") == 1
    assert value("hyt_terminals", status="fault") == 1
    assert 50 <= value("hyt_scheduler_last_run_age_seconds") < 120
    if world.engine.dialect.name == "postgresql":
        assert value("hyt_scheduler_leader") == 0
    assert ("hyt_alarm_answer_seconds_count", (("priority", "1"),)) in values
    # Only counts and ages: no name, phone number or address in any label or help text.
    text = TestClient(create_app(), client=LOOPBACK).get("/metrics").text
    assert "欧阳" not in text and "13922334455" not in text and "金砂东路" not in text


def test_metrics_are_for_the_monitoring_system_only(world: World, use_ops: Any) -> None:
    assert TestClient(create_app(), client=("10.0.0.5", 40000)).get("/metrics").status_code == 403
    assert TestClient(create_app(), client=LOOPBACK).get("/metrics").status_code == 200
    use_ops(metrics_token="s3cret-scrape-token")
    remote = TestClient(create_app(), client=("10.0.0.5", 40000))
    assert remote.get("/metrics").status_code == 403
    assert remote.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert TestClient(create_app(), client=LOOPBACK).get("/metrics").status_code == 403
    good = remote.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape-token"})
    assert good.status_code == 200 and "hyt_database_up 1.0" in good.text


def test_probes_keep_their_deadline_and_a_bounded_number_of_threads() -> None:
    release = threading.Event()
    hung = [threading.Thread(target=lambda: _expect_timeout(release)) for _ in range(4)]
    for thread in hung:
        thread.start()
    for thread in hung:
        thread.join()  # four probes still hang, each holding a slot
    started = time.monotonic()
    with pytest.raises(db_probe.ProbeTimeout):
        db_probe.run_with_deadline(lambda: "quick", 0.2)  # no slot free: refused in time
    assert time.monotonic() - started < 1.0
    release.set()  # the database answers again: the slots come back
    deadline = time.monotonic() + 5
    while True:
        try:
            assert db_probe.run_with_deadline(lambda: "quick", 0.5) == "quick"
            break
        except db_probe.ProbeTimeout:
            assert time.monotonic() < deadline
    with pytest.raises(ZeroDivisionError):  # a probe's own error reaches the caller
        db_probe.run_with_deadline(lambda: 1 // 0, 1.0)


def _expect_timeout(release: threading.Event) -> None:
    with pytest.raises(db_probe.ProbeTimeout):
        db_probe.run_with_deadline(lambda: release.wait(30), 0.1)
