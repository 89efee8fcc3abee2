"""The SMS outbox: idempotent queueing, the texts, and the sender against a fake Twilio.

The Twilio tests use the real ``twilio.rest.Client``; only its HTTP client is pointed at a small
HTTP server on 127.0.0.1 that speaks enough of the Messages API (create and list) and can be told
to fail, stall or hang up (TESTING.md, "Twilio").
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import io
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker
from twilio.http.http_client import TwilioHttpClient

from callcenter import db
from callcenter.models import OutboxMessage, OutboxStatus
from tests.factories import make_elder
from volunteers import sms_texts
from volunteers.outbox_sender import (
    UNKNOWN_GRACE,
    ConsoleBackend,
    TwilioBackend,
    backend_from_settings,
    backoff,
    send_due,
)
from volunteers.sms import MAX_SMS_CHARS, SmsKeyConflict, queue_sms
from volunteers.sms_settings import SmsSettings

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "fake-auth-token-0123456789abcdef"
FROM = "+8610690000001"
BASE = "https://hyt.example.org"
# As volunteers.links makes them: itsdangerous token of [offer id, case id], timestamp, signature.
LINK = BASE + "/v/offer/WzEyMzQ1LDY3ODld.aCYdEf.GhIjKlMnOpQrStUvWxYz0123456"
LONG_LINK = (
    "https://huyuantong.longhu.shantou.gov.cn/v/offer/WzEyMzQ1NjcsODkwMTJd.aCYdEf.GhIjKlMnOpQrStU"
)
_phones = itertools.count(1)


def phone() -> str:
    return f"+86138{next(_phones):08d}"


def sms_settings(**fields: Any) -> SmsSettings:
    values: dict[str, Any] = {"sms_backoff_base_s": 30.0, "sms_max_attempts": 4}
    values.update(fields)
    return SmsSettings(**values)


# -- a fake Twilio ------------------------------------------------------------------------------


@dataclass
class FakeTwilio:
    """The part of api.twilio.com the sender uses; ``script`` decides each POST's fate."""

    port: int = 0
    script: list[str] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    stall_s: float = 3.0
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_action(self) -> str:
        with self.lock:
            return self.script.pop(0) if self.script else "201"

    def create(self, form: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            n = len(self.created) + 1
            message = {
                "sid": f"SM{n:032x}",
                "account_sid": SID,
                "to": form["To"],
                "from": form["From"],
                "body": form["Body"],
                "status": "queued",
                "date_created": email.utils.formatdate(usegmt=True),
                "num_segments": "1",
            }
            self.created.append(message)
            return message

    def bodies_created(self) -> list[str]:
        return [m["body"] for m in self.created]


def _handler(fake: FakeTwilio) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
            pass

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # the Messages list, newest first
            query = parse_qs(urlsplit(self.path).query)
            with fake.lock:
                found = [
                    m
                    for m in reversed(fake.created)
                    if m["to"] == query.get("To", [""])[0]
                    and m["from"] == query.get("From", [""])[0]
                ]
            self._json(200, {"messages": found, "next_page_uri": None, "page": 0})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            with fake.lock:
                fake.posts.append(
                    {"path": self.path, "form": form, "auth": self.headers.get("Authorization")}
                )
            action = fake.next_action()
            if fake.delay_s:
                time.sleep(fake.delay_s)
            if action == "201":
                self._json(201, fake.create(form))
            elif action in ("500", "503", "429"):
                self._json(int(action), {"code": 20500, "message": "try later", "status": 500})
            elif action == "400":
                self._json(400, {"code": 21211, "message": "Invalid 'To'", "status": 400})
            elif action == "stall":  # created, but the answer comes too late
                fake.create(form)
                time.sleep(fake.stall_s)
                self.close_connection = True
            elif action == "stall_lost":  # stalls and never created it
                time.sleep(fake.stall_s)
                self.close_connection = True
            elif action == "hang_up":  # created, then the connection drops without an answer
                fake.create(form)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    server.block_on_close = False
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class LocalTwilioHttpClient(TwilioHttpClient):
    """The library's own HTTP client, sending api.twilio.com requests to the fake instead."""

    def __init__(self, port: int, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.target = f"http://127.0.0.1:{port}"
        # Never through a proxy from the environment: the fake is on loopback.
        assert self.session is not None
        self.session.trust_env = False

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        return super().request(
            method, url.replace("https://api.twilio.com", self.target, 1), *args, **kwargs
        )


def twilio_backend(port: int, timeout: float = 10.0) -> TwilioBackend:
    return TwilioBackend(
        account_sid=SID,
        auth_token=TOKEN,
        from_=FROM,
        public_base_url=BASE,
        timeout_s=timeout,
        http_client=LocalTwilioHttpClient(port, timeout),
    )


@pytest.fixture
def factory(fresh_engine: Engine) -> sessionmaker[Session]:
    db.load_models()
    return sessionmaker(fresh_engine, expire_on_commit=False)


def queue(factory: sessionmaker[Session], n: int = 1, *, body: str = "") -> list[int]:
    with factory() as s, s.begin():
        rows = [
            queue_sms(s, to=phone(), body=body or f"【呼援通】任务K7F3{i}：测试短信", key=f"t:{i}")
            for i in range(n)
        ]
        s.flush()
        return [r.id for r in rows]


def row(factory: sessionmaker[Session], outbox_id: int) -> OutboxMessage:
    with factory() as s:
        found = s.get(OutboxMessage, outbox_id)
        assert found is not None
        return found


def later(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


# -- queueing ----------------------------------------------------------------------------------


def test_queueing_is_idempotent_on_the_key(session: Session) -> None:
    first = queue_sms(session, to="13812345678", body="【呼援通】任务K7F3Q：你好", key="offer:1")
    again = queue_sms(session, to="+8613812345678", body="【呼援通】任务K7F3Q：你好", key="offer:1")
    assert again.id == first.id
    assert first.to == "+8613812345678" and first.status is OutboxStatus.QUEUED
    count = session.scalar(
        select(func.count())
        .select_from(OutboxMessage)
        .where(OutboxMessage.idempotency_key == "offer:1")
    )
    assert count == 1
    with pytest.raises(SmsKeyConflict):
        queue_sms(session, to="+8613900000000", body="x", key="offer:1")


def test_long_or_empty_bodies_are_refused(session: Session) -> None:
    with pytest.raises(ValueError, match="at most 140"):
        queue_sms(session, to="+8613812345678", body="长" * (MAX_SMS_CHARS + 1), key="k:long")
    with pytest.raises(ValueError, match="empty"):
        queue_sms(session, to="+8613812345678", body="  ", key="k:empty")
    assert queue_sms(session, to="+8613812345678", body="长" * MAX_SMS_CHARS, key="k:max")


def test_two_transactions_queueing_one_key_make_one_row(fresh_postgres_url: str) -> None:
    engine = db.make_engine(fresh_postgres_url)
    factory = sessionmaker(engine, expire_on_commit=False)
    try:
        first = factory()
        a = queue_sms(first, to="+8613812345678", body="甲", key="race:1")
        first.flush()
        result: dict[str, int] = {}

        def second() -> None:  # blocks on the unique index until the first commits
            with factory() as s, s.begin():
                result["id"] = queue_sms(s, to="+8613812345678", body="乙", key="race:1").id

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        first.commit()
        thread.join(timeout=30)
        assert result["id"] == a.id
        with factory() as s:
            assert s.scalar(select(func.count()).select_from(OutboxMessage)) == 1
        first.close()
    finally:
        engine.dispose()


# -- texts -------------------------------------------------------------------------------------


def test_texts_are_short_and_carry_no_medical_details_or_address(session: Session) -> None:
    elder = make_elder(session, medical_notes="高血压、糖尿病", address="金砂东路88号3栋402室")
    texts = []
    for lang in ("zh", "en"):
        texts += [
            sms_texts.offer_text(
                "K7F3Q",
                item="修剪指甲（上门服务，含工具）",
                community=elder.community,
                link=LINK,
                lang=lang,
            ),
            sms_texts.assigned_text("K7F3Q", link=LINK, lang=lang),
            sms_texts.stood_down_text("K7F3Q", lang=lang),
            sms_texts.too_late_text("K7F3Q", lang=lang),
            sms_texts.expired_text("K7F3Q", lang=lang),
            sms_texts.cancelled_text("K7F3Q", lang=lang),
            sms_texts.reminder_text("K7F3Q", link=LINK, lang=lang),
            sms_texts.visit_reminder_text(
                when="明天上午", community=elder.community, link=LINK, lang=lang
            ),
            sms_texts.reply_unknown_text(lang=lang),
        ]
    for text in texts:
        assert len(text) <= MAX_SMS_CHARS, text
        assert "金砂东路" not in text and "高血压" not in text and elder.name not in text
    # A long public base URL: the item name gives way, the link never does.
    squeezed = sms_texts.offer_text(
        "K7F3Q", item="修剪指甲（上门服务，含工具）", community="金湖社区", link=LONG_LINK
    )
    assert len(squeezed) <= MAX_SMS_CHARS and squeezed.endswith(" " + LONG_LINK)
    assert "修剪" in squeezed and "金湖社区" in squeezed
    offer = texts[0]
    assert offer.startswith("【呼援通】任务K7F3Q：金湖社区")
    assert "请回复1接受、2拒绝，或打开链接 " + LINK in offer
    assert texts[2] == "【呼援通】任务K7F3Q已有志愿者接单，无需前往，谢谢！"


# -- settings ----------------------------------------------------------------------------------


def test_twilio_backend_needs_its_three_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HYT_TWILIO_ACCOUNT_SID", "HYT_TWILIO_AUTH_TOKEN", "HYT_TWILIO_FROM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HYT_SMS_BACKEND", "twilio")
    monkeypatch.setenv("HYT_TWILIO_ACCOUNT_SID", SID)
    with pytest.raises(ValidationError, match="HYT_TWILIO_AUTH_TOKEN, HYT_TWILIO_FROM"):
        SmsSettings()
    monkeypatch.setenv("HYT_TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("HYT_TWILIO_FROM", FROM)
    settings = SmsSettings()
    assert isinstance(backend_from_settings(settings), TwilioBackend)
    monkeypatch.setenv("HYT_SMS_BACKEND", "console")
    assert isinstance(backend_from_settings(SmsSettings()), ConsoleBackend)


# -- console backend ---------------------------------------------------------------------------


def test_console_backend_prints_and_marks_sent(factory: sessionmaker[Session]) -> None:
    (outbox_id,) = queue(factory, body="【呼援通】任务K7F3Q已取消，无需前往，谢谢！")
    out = io.StringIO()
    assert send_due(factory, ConsoleBackend(out), now=later(1), sms=sms_settings()) == 1
    assert "任务K7F3Q已取消" in out.getvalue() and f"#{outbox_id}" in out.getvalue()
    sent = row(factory, outbox_id)
    assert sent.status is OutboxStatus.SENT and sent.provider_id == f"console-{outbox_id}"
    assert sent.attempts == 1 and sent.sent_at is not None
    assert send_due(factory, ConsoleBackend(out), now=later(3600), sms=sms_settings()) == 0
    assert out.getvalue().count("任务K7F3Q已取消") == 1


# -- Twilio: the real client against the fake ---------------------------------------------------


def test_sends_the_right_parameters_with_basic_auth(
    factory: sessionmaker[Session], fake_twilio: FakeTwilio
) -> None:
    (outbox_id,) = queue(factory, body="【呼援通】任务K7F3Q：金湖社区老人需要修剪指甲")
    assert (
        send_due(factory, twilio_backend(fake_twilio.port), now=later(1), sms=sms_settings()) == 1
    )
    (post,) = fake_twilio.posts
    assert post["path"] == f"/2010-04-01/Accounts/{SID}/Messages.json"
    sent = row(factory, outbox_id)
    assert post["form"] == {
        "To": sent.to,
        "From": FROM,
        "Body": "【呼援通】任务K7F3Q：金湖社区老人需要修剪指甲",
        "StatusCallback": f"{BASE}/webhooks/twilio/status?outbox={outbox_id}",
    }
    assert post["auth"] == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert sent.status is OutboxStatus.SENT
    assert sent.provider_id == fake_twilio.created[0]["sid"] and sent.provider_status == "queued"


def test_server_errors_are_retried_with_back_off_and_sent_once(
    factory: sessionmaker[Session], fake_twilio: FakeTwilio
) -> None:
    fake_twilio.script = ["500", "503", "201"]
    backend = twilio_backend(fake_twilio.port)
    settings = sms_settings()
    (outbox_id,) = queue(factory)
    t0 = later(1)
    assert send_due(factory, backend, now=t0, sms=settings) == 0
    first = row(factory, outbox_id)
    assert first.status is OutboxStatus.QUEUED and first.attempts == 1
    assert first.next_attempt_at == t0 + dt.timedelta(seconds=30)
    assert "HTTP 500" in (first.last_error or "")
    # Not due yet: nothing is posted.
    assert send_due(factory, backend, now=t0 + dt.timedelta(seconds=29), sms=settings) == 0
    assert len(fake_twilio.posts) == 1
    t1 = t0 + dt.timedelta(seconds=30)
    assert send_due(factory, backend, now=t1, sms=settings) == 0
    second = row(factory, outbox_id)
    assert second.attempts == 2 and second.next_attempt_at == t1 + dt.timedelta(seconds=60)
    assert send_due(factory, backend, now=t1 + dt.timedelta(seconds=60), sms=settings) == 1
    assert send_due(factory, backend, now=t1 + dt.timedelta(hours=2), sms=settings) == 0
    assert len(fake_twilio.posts) == 3 and len(fake_twilio.created) == 1
    done = row(factory, outbox_id)
    assert done.status is OutboxStatus.SENT and done.attempts == 3 and done.last_error is None


def test_back_off_doubles_and_is_capped() -> None:
    assert [backoff(n, 30).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert backoff(20, 30) == dt.timedelta(minutes=30)


def test_gives_up_after_the_last_attempt_or_a_permanent_error(
    factory: sessionmaker[Session], fake_twilio: FakeTwilio
) -> None:
    fake_twilio.script = ["400", "500", "500", "500"]
    backend = twilio_backend(fake_twilio.port)
    settings = sms_settings(sms_max_attempts=3)
    bad_number, flaky = queue(factory, 2)
    now = later(1)
    for _ in range(5):
        send_due(factory, backend, now=now, sms=settings)
        now += dt.timedelta(hours=1)
    refused = row(factory, bad_number)
    assert refused.status is OutboxStatus.FAILED and refused.attempts == 1
    assert "21211" in (refused.last_error or "")
    exhausted = row(factory, flaky)
    assert exhausted.status is OutboxStatus.FAILED and exhausted.attempts == 3
    assert len(fake_twilio.posts) == 4 and not fake_twilio.created


def test_no_connection_is_a_safe_retry(factory: sessionmaker[Session]) -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (outbox_id,) = queue(factory)
    now = later(1)
    assert send_due(factory, twilio_backend(port, timeout=2), now=now, sms=sms_settings()) == 0
    refused = row(factory, outbox_id)
    assert refused.status is OutboxStatus.QUEUED and refused.attempts == 1
    assert refused.next_attempt_at == now + dt.timedelta(seconds=30)
    assert "no connection" in (refused.last_error or "")


@pytest.mark.parametrize("action", ["stall", "hang_up"])
def test_unknown_outcome_is_never_resent_when_twilio_has_it(
    factory: sessionmaker[Session], fake_twilio: FakeTwilio, action: str
) -> None:
    fake_twilio.script = [action]
    fake_twilio.stall_s = 2.0
    backend = twilio_backend(fake_twilio.port, timeout=0.5)
    settings = sms_settings()
    (outbox_id,) = queue(factory)
    t0 = later(1)
    assert send_due(factory, backend, now=t0, sms=settings) == 0
    unknown = row(factory, outbox_id)
    assert unknown.status is OutboxStatus.SENDING and "outcome unknown" in (
        unknown.last_error or ""
    )
    assert unknown.next_attempt_at == t0 + UNKNOWN_GRACE
    # Within the grace period nothing happens: no second POST, no lookup.
    assert send_due(factory, backend, now=t0 + UNKNOWN_GRACE / 2, sms=settings) == 0
    assert len(fake_twilio.posts) == 1
    # After it, the sender asks Twilio, finds the message and records it.
    assert send_due(factory, backend, now=t0 + UNKNOWN_GRACE, sms=settings) == 1
    found = row(factory, outbox_id)
    assert found.status is OutboxStatus.SENT
    assert found.provider_id == fake_twilio.created[0]["sid"]
    assert len(fake_twilio.posts) == 1 and len(fake_twilio.created) == 1


def test_unknown_outcome_is_sent_again_when_twilio_never_got_it(
    factory: sessionmaker[Session], fake_twilio: FakeTwilio
) -> None:
    fake_twilio.script = ["stall_lost", "201"]
    fake_twilio.stall_s = 2.0
    settings = sms_settings()
    (outbox_id,) = queue(factory)
    t0 = later(1)
    send_due(factory, twilio_backend(fake_twilio.port, timeout=0.5), now=t0, sms=settings)
    assert row(factory, outbox_id).status is OutboxStatus.SENDING
    backend = twilio_backend(fake_twilio.port)
    assert send_due(factory, backend, now=t0 + UNKNOWN_GRACE, sms=settings) == 1
    assert len(fake_twilio.posts) == 2 and len(fake_twilio.created) == 1
    assert row(factory, outbox_id).provider_id == fake_twilio.created[0]["sid"]


def test_a_lookup_never_claims_another_rows_message(
    factory: sessionmaker[Session], fake_twilio: FakeTwilio
) -> None:
    """Two rows with the same text to the same number: each keeps its own SID."""
    settings = sms_settings()
    backend = twilio_backend(fake_twilio.port)
    to = phone()
    with factory() as s, s.begin():
        first = queue_sms(s, to=to, body="【呼援通】提醒：任务K7F3Q尚未完成", key="r:1").id
    assert send_due(factory, backend, now=later(1), sms=settings) == 1
    with factory() as s, s.begin():
        second = queue_sms(s, to=to, body="【呼援通】提醒：任务K7F3Q尚未完成", key="r:2").id
    fake_twilio.script = ["stall_lost", "201"]
    fake_twilio.stall_s = 2.0
    t0 = later(2)
    send_due(factory, twilio_backend(fake_twilio.port, timeout=0.5), now=t0, sms=settings)
    assert send_due(factory, backend, now=t0 + UNKNOWN_GRACE, sms=settings) == 1
    assert row(factory, first).provider_id == fake_twilio.created[0]["sid"]
    assert row(factory, second).provider_id == fake_twilio.created[1]["sid"]


class CrashAfterSending:
    """A sender process that dies after Twilio took the message, before recording it."""

    name = "crashing"

    def __init__(self, inner: TwilioBackend) -> None:
        self.inner = inner

    def send(self, message: Any) -> Any:
        self.inner.send(message)
        raise SystemExit("killed")

    def find_sent(self, message: Any, *, since: dt.datetime) -> Any:
        return self.inner.find_sent(message, since=since)


def test_a_crash_between_send_and_record_does_not_resend(
    factory: sessionmaker[Session], fake_twilio: FakeTwilio
) -> None:
    settings = sms_settings()
    backend = twilio_backend(fake_twilio.port)
    (outbox_id,) = queue(factory)
    t0 = later(1)
    with pytest.raises(SystemExit):
        send_due(factory, CrashAfterSending(backend), now=t0, sms=settings)
    assert row(factory, outbox_id).status is OutboxStatus.SENDING
    # The restarted sender leaves the row alone while the dead one's lease runs...
    assert send_due(factory, backend, now=t0 + dt.timedelta(seconds=30), sms=settings) == 0
    # ...then finds the message at Twilio instead of sending it again.
    assert send_due(factory, backend, now=t0 + dt.timedelta(seconds=61), sms=settings) == 1
    assert len(fake_twilio.posts) == 1
    assert row(factory, outbox_id).provider_id == fake_twilio.created[0]["sid"]


def test_two_concurrent_senders_send_each_message_once(
    fresh_url: str, fake_twilio: FakeTwilio
) -> None:
    engine = db.make_engine(fresh_url)
    factory = sessionmaker(engine, expire_on_commit=False)
    fake_twilio.delay_s = 0.01  # long enough for the two senders to interleave
    settings = sms_settings()
    try:
        ids = queue(factory, 30)
        now = later(1)
        counts: list[int] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                counts.append(
                    send_due(factory, twilio_backend(fake_twilio.port), now=now, sms=settings)
                )
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors
        assert sum(counts) == 30, counts
        bodies = fake_twilio.bodies_created()
        assert len(bodies) == len(set(bodies)) == 30 == len(fake_twilio.posts)
        with factory() as s:
            rows = s.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(ids))).all()
            assert {r.status for r in rows} == {OutboxStatus.SENT}
            assert len({r.provider_id for r in rows}) == 30
            assert {r.attempts for r in rows} == {1}
    finally:
        engine.dispose()
