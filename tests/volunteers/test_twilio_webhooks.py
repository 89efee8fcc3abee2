"""POST /webhooks/twilio/status: real signatures pass, forged ones change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from callcenter import db
from callcenter.models import OutboxMessage, OutboxStatus
from callcenter.settings import DEVELOPMENT_SECRET_KEY, get_settings
from volunteers.sms_settings import development_auth_token, get_sms_settings, webhook_auth_token
from volunteers.twilio_webhooks import TwilioForm, public_url, router

PATH = "/webhooks/twilio/status"
SID_A = "SM" + "a" * 32
SID_B = "SM" + "b" * 32


@pytest.fixture
def client(fresh_engine: Engine) -> Iterator[TestClient]:
    previous = db.get_engine()
    db.use_engine(fresh_engine)
    app = FastAPI()
    app.include_router(router)

    @app.post("/webhooks/twilio/sms")  # how the lead's SMS-reply webhook reuses the check
    def sms_reply(form: TwilioForm) -> dict[str, str]:
        return {"body": str(form.get("Body"))}

    try:
        yield TestClient(app)
    finally:
        db.use_engine(previous)


def public(path_and_query: str) -> str:
    return get_settings().public_base_url.rstrip("/") + path_and_query


def sign(url: str, params: dict[str, str], token: str | None = None) -> str:
    return str(RequestValidator(token or webhook_auth_token()).compute_signature(url, params))


def add_row(engine: Engine, **fields: Any) -> int:
    values: dict[str, Any] = {
        "to": "+8613812345678",
        "body": "【呼援通】任务K7F3Q已有志愿者接单，无需前往，谢谢！",
        "idempotency_key": f"k:{fields.get('provider_id') or fields.get('status')}",
        "status": OutboxStatus.SENT,
        "attempts": 1,
    }
    values.update(fields)
    with Session(engine) as s, s.begin():
        row = OutboxMessage(**values)
        s.add(row)
        s.flush()
        return row.id


def snapshot(engine: Engine) -> list[dict[str, Any]]:
    with Session(engine) as s:
        rows = s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        return [{c.key: getattr(r, c.key) for c in OutboxMessage.__table__.columns} for r in rows]


def post_status(
    client: TestClient,
    params: dict[str, str],
    *,
    query: str = "",
    signature: str | None = None,
    sign_url: str | None = None,
) -> int:
    path = PATH + (f"?{query}" if query else "")
    headers = {}
    if signature is None:
        signature = sign(sign_url or public(path), params)
    if signature:
        headers["X-Twilio-Signature"] = signature
    return client.post(path, data=params, headers=headers).status_code


def status_params(sid: str, status: str, **extra: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": "AC" + "0" * 32,
        "To": "+8613812345678",
        "From": "+8610690000001",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def get_row(engine: Engine, outbox_id: int) -> OutboxMessage:
    with Session(engine) as s:
        row = s.get(OutboxMessage, outbox_id)
        assert row is not None
        return row


def test_a_signed_callback_records_the_status(client: TestClient, fresh_engine: Engine) -> None:
    outbox_id = add_row(fresh_engine, provider_id=SID_A, provider_status="queued")
    assert post_status(client, status_params(SID_A, "sent"), query=f"outbox={outbox_id}") == 204
    assert get_row(fresh_engine, outbox_id).provider_status == "sent"
    assert post_status(client, status_params(SID_A, "delivered")) == 204
    row = get_row(fresh_engine, outbox_id)
    assert row.status is OutboxStatus.DELIVERED and row.provider_status == "delivered"
    # Callbacks can overtake each other: a late "sent" does not undo "delivered".
    assert post_status(client, status_params(SID_A, "sent")) == 204
    row = get_row(fresh_engine, outbox_id)
    assert row.status is OutboxStatus.DELIVERED and row.provider_status == "delivered"


def test_undelivered_marks_the_row_failed(client: TestClient, fresh_engine: Engine) -> None:
    outbox_id = add_row(fresh_engine, provider_id=SID_A, provider_status="sent")
    params = status_params(SID_A, "undelivered", ErrorCode="30003")
    assert post_status(client, params) == 204
    row = get_row(fresh_engine, outbox_id)
    assert row.status is OutboxStatus.FAILED and "30003" in (row.last_error or "")


def test_a_callback_settles_a_send_whose_answer_was_lost(
    client: TestClient, fresh_engine: Engine
) -> None:
    outbox_id = add_row(fresh_engine, status=OutboxStatus.SENDING, provider_id=None)
    assert post_status(client, status_params(SID_A, "queued"), query=f"outbox={outbox_id}") == 204
    row = get_row(fresh_engine, outbox_id)
    assert row.status is OutboxStatus.SENT and row.provider_id == SID_A
    assert row.provider_status == "queued"


def test_a_second_sid_for_one_row_is_reported_as_a_duplicate(
    client: TestClient, fresh_engine: Engine
) -> None:
    outbox_id = add_row(fresh_engine, provider_id=SID_A, provider_status="sent")
    assert post_status(client, status_params(SID_B, "sent"), query=f"outbox={outbox_id}") == 204
    row = get_row(fresh_engine, outbox_id)
    assert row.provider_id == SID_A and "duplicate" in (row.last_error or "")


def test_a_message_that_is_not_ours_is_acknowledged_and_ignored(
    client: TestClient, fresh_engine: Engine
) -> None:
    add_row(fresh_engine, provider_id=SID_A, provider_status="sent")
    before = snapshot(fresh_engine)
    assert post_status(client, status_params(SID_B, "delivered")) == 204
    assert snapshot(fresh_engine) == before


@pytest.mark.parametrize(
    "forgery",
    ["missing", "wrong_token", "other_url", "no_query", "tampered_params", "garbage"],
)
def test_forged_or_missing_signatures_get_403_and_change_nothing(
    client: TestClient, fresh_engine: Engine, forgery: str
) -> None:
    outbox_id = add_row(fresh_engine, provider_id=SID_A, provider_status="sent")
    before = snapshot(fresh_engine)
    params = status_params(SID_A, "delivered")
    query = f"outbox={outbox_id}"
    url = public(f"{PATH}?{query}")
    signature = {
        "missing": "",
        "wrong_token": sign(url, params, token="not-the-auth-token"),
        "other_url": sign("https://evil.example.com" + PATH + f"?{query}", params),
        "no_query": sign(public(PATH), params),
        "tampered_params": sign(url, status_params(SID_A, "failed")),
        "garbage": "bm90IGEgc2lnbmF0dXJl",
    }[forgery]
    assert post_status(client, params, query=query, signature=signature) == 403
    assert snapshot(fresh_engine) == before


def test_the_request_host_does_not_matter_only_the_public_url(client: TestClient) -> None:
    # TestClient calls http://testserver; a signature over that address is not Twilio's.
    params = status_params(SID_A, "sent")
    assert post_status(client, params, sign_url="http://testserver" + PATH) == 403
    assert post_status(client, params) == 204


def test_the_sms_reply_webhook_can_reuse_the_check(client: TestClient) -> None:
    params = {"From": "+8613812345678", "Body": "1 K7F3Q", "MessageSid": SID_A}
    good = sign(public("/webhooks/twilio/sms"), params)
    reply = client.post("/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": good})
    assert reply.status_code == 200 and reply.json() == {"body": "1 K7F3Q"}
    forged = client.post("/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": "x"})
    assert forged.status_code == 403


def test_a_configured_auth_token_replaces_the_development_one(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    development = development_auth_token(get_settings().secret_key)
    assert webhook_auth_token() == development
    params = status_params(SID_A, "sent")
    monkeypatch.setenv("HYT_TWILIO_AUTH_TOKEN", "the-real-twilio-auth-token")
    get_sms_settings.cache_clear()
    try:
        assert post_status(client, params, signature=sign(public(PATH), params, development)) == 403
        real = sign(public(PATH), params, "the-real-twilio-auth-token")
        assert post_status(client, params, signature=real) == 204
    finally:
        monkeypatch.delenv("HYT_TWILIO_AUTH_TOKEN")
        get_sms_settings.cache_clear()


def test_the_development_token_depends_on_the_secret_key() -> None:
    assert development_auth_token(DEVELOPMENT_SECRET_KEY) != development_auth_token("x" * 40)
    assert development_auth_token("x" * 40) == development_auth_token("x" * 40)
    assert len(development_auth_token("x" * 40)) == 64


def test_validation_uses_the_public_url_of_the_request() -> None:
    """``public_url`` keeps the query string: Twilio signs the URL exactly as configured."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": PATH,
        "query_string": b"outbox=7",
        "headers": [(b"host", b"10.0.0.5:8000")],
        "scheme": "http",
        "server": ("10.0.0.5", 8000),
    }
    assert public_url(Request(scope)) == public(f"{PATH}?outbox=7")
