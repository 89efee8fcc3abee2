"""Hostile input over HTTP: forged, replayed and oversized Twilio webhooks, and SQL and script
injection in every text field the console shows (stored verbatim, rendered escaped, never
executed). Schema-driven fuzzing of the whole API is in test_hostile_openapi.py."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from callcenter import db
from callcenter.demo import free_port
from callcenter.models import Alarm, Case, CaseEvent, Elder, OutboxMessage, OutboxStatus
from callcenter.settings import get_settings
from callcenter.web.app import create_app
from callcenter.web.auth import SESSION_COOKIE
from tests.reliability.world import World, build_world
from volunteers.models import Offer, OfferStatus, Volunteer
from volunteers.sms_inbound import InboundSms
from volunteers.sms_settings import webhook_auth_token
from volunteers.twilio_webhooks import MAX_BODY_BYTES

SMS = "/webhooks/twilio/sms"
STATUS = "/webhooks/twilio/status"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

# What an attacker types into a text field. Each must come back exactly as typed.
HOSTILE = [
    "<script>window.__xss = 1</script>",
    '"><img src=x onerror="window.__xss = 2">',
    "'; DROP TABLE elders; --",
    "Robert'); DELETE FROM cases WHERE ('1'='1",
    "{{ 7*7 }}{% raw %}${7*7}",
    "A&amp;B &lt;b&gt; \u202egnp.exe",
]
SCRIPT = HOSTILE[0]


@pytest.fixture
def world(sqlite_engine: Engine) -> Iterator[World]:
    previous = db.get_engine()
    db.use_engine(sqlite_engine)
    try:
        yield build_world(sqlite_engine, staff=("operator",))
    finally:
        db.use_engine(previous)


@pytest.fixture
def both_world(fresh_engine: Engine) -> Iterator[World]:
    """As ``world``, on SQLite and on PostgreSQL: where the database's own rules matter."""
    previous = db.get_engine()
    db.use_engine(fresh_engine)
    try:
        yield build_world(fresh_engine, staff=("operator",), volunteers=1)
    finally:
        db.use_engine(previous)


@pytest.fixture
def app(world: World) -> FastAPI:
    return create_app()


def operator(app: FastAPI, world: World) -> TestClient:
    return TestClient(app, cookies={SESSION_COOKIE: world.session_tokens["operator"]})


def sign(path: str, params: dict[str, str]) -> str:
    url = get_settings().public_base_url.rstrip("/") + path
    return str(RequestValidator(webhook_auth_token()).compute_signature(url, params))


def snapshot(engine: Engine) -> tuple[Any, ...]:
    with Session(engine) as s:
        return (
            s.scalar(select(func.count()).select_from(OutboxMessage)),
            s.scalar(select(func.count()).select_from(InboundSms)),
            tuple(s.execute(select(Offer.id, Offer.status).order_by(Offer.id)).all()),
            tuple(s.execute(select(OutboxMessage.id, OutboxMessage.provider_status)).all()),
            s.scalar(select(func.count()).select_from(CaseEvent)),
        )


# -- webhooks ----------------------------------------------------------------------------------


def test_forged_webhooks_get_403_and_change_nothing(app: FastAPI, world: World) -> None:
    _, _, _ = world.new_offer()
    phone = _volunteer_phone(world, 0)
    client = TestClient(app)
    params = {"From": phone, "Body": "1", "MessageSid": "SM" + "f" * 32}
    before = snapshot(world.engine)
    for path in (SMS, STATUS):
        for signature in ("", "bm90IGEgc2lnbmF0dXJl", sign(path, {**params, "Body": "2"})):
            headers = {"X-Twilio-Signature": signature} if signature else {}
            response = client.post(path, data=params, headers=headers)
            assert response.status_code == 403, (path, signature, response.text)
    assert snapshot(world.engine) == before


def test_a_replayed_sms_reply_changes_nothing_the_second_time(app: FastAPI, world: World) -> None:
    # The volunteer has two pending offers: a "1" acted on twice would accept both.
    first, _, _ = world.new_offer()
    second, _, _ = world.new_offer()
    params = {"From": _volunteer_phone(world, 0), "Body": "1", "MessageSid": "SM" + "a" * 32}
    headers = {"X-Twilio-Signature": sign(SMS, params)}
    client = TestClient(app)
    answer = client.post(SMS, data=params, headers=headers)
    assert answer.status_code == 200
    after_first = snapshot(world.engine)
    assert _offer_status(world, first, second) == [OfferStatus.PENDING, OfferStatus.ACCEPTED]
    again = client.post(SMS, data=params, headers=headers)  # Twilio retrying, or a replay
    assert (again.status_code, again.text) == (200, answer.text)
    assert snapshot(world.engine) == after_first
    assert _offer_status(world, first, second) == [OfferStatus.PENDING, OfferStatus.ACCEPTED]


def test_a_replayed_status_callback_changes_nothing_the_second_time(
    app: FastAPI, world: World
) -> None:
    sid = "SM" + "b" * 32
    with world.session() as s:
        row = OutboxMessage(to="+8613700000001", body="x", idempotency_key="hostile:1",
                            status=OutboxStatus.SENT, provider_id=sid, attempts=1)  # fmt: skip
        s.add(row)
    params = {"MessageSid": sid, "MessageStatus": "delivered"}
    headers = {"X-Twilio-Signature": sign(STATUS, params)}
    client = TestClient(app)
    assert client.post(STATUS, data=params, headers=headers).status_code == 204
    after_first = snapshot(world.engine)
    assert client.post(STATUS, data=params, headers=headers).status_code == 204
    assert snapshot(world.engine) == after_first


@pytest.mark.parametrize("path", [SMS, STATUS])
@pytest.mark.parametrize("declared", [True, False])
def test_an_oversized_webhook_is_refused_with_413_and_nothing_stored(
    app: FastAPI, world: World, path: str, declared: bool
) -> None:
    world.new_offer()
    params = {"From": _volunteer_phone(world, 0), "Body": "1" + " " * (1 << 20),
              "MessageSid": "SM" + "c" * 32, "MessageStatus": "delivered"}  # fmt: skip
    headers = {"X-Twilio-Signature": sign(path, params),
               "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
    from urllib.parse import urlencode

    body = urlencode(params).encode()
    assert len(body) > MAX_BODY_BYTES
    before = snapshot(world.engine)
    client = TestClient(app)
    if declared:
        response = client.post(path, content=body, headers=headers)
    else:  # chunked: no Content-Length to refuse it by, the stream is counted instead
        chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))
        response = client.post(path, content=chunks, headers=headers)
    assert response.status_code == 413, response.text
    assert snapshot(world.engine) == before


def _volunteer_phone(world: World, index: int) -> str:
    with world.session() as s:
        return s.get_one(Volunteer, world.volunteer_ids[index]).phone


def _offer_status(world: World, *offer_ids: int) -> list[OfferStatus]:
    with world.session() as s:
        return [s.get_one(Offer, offer_id).status for offer_id in offer_ids]


# -- injection in text fields --------------------------------------------------------------


def test_hostile_text_is_stored_verbatim_and_returned_as_text(both_world: World) -> None:
    world = both_world
    client = operator(create_app(), world)
    with world.session() as s:
        elder = s.get_one(Elder, world.elder_id)
        elder.name, elder.access_notes, elder.medical_notes = HOSTILE[0], HOSTILE[1], HOSTILE[2]
    for text in HOSTILE:
        # Case summary (the console's case panel), outcome note (the alarm's record).
        created = client.post("/api/cases", json={"elder_id": world.elder_id,
                                                   "item_code": "appliances.replace_bulb",
                                                   "summary": text})  # fmt: skip
        assert created.status_code == 201, created.text
        case_id = created.json()["id"]
        assert client.get(f"/api/cases/{case_id}").json()["summary"] == text
        alarm_id = world.new_alarm()
        assert client.post(f"/api/alarms/{alarm_id}/claim").status_code == 200
        noted = client.post(f"/api/alarms/{alarm_id}/outcome",
                            json={"outcome": "talked", "note": text})  # fmt: skip
        assert noted.status_code == 200, noted.text
        with world.session() as s:
            assert s.get_one(Case, case_id).summary == text
            assert _note_stored(s, alarm_id, text)
    pop = client.get(f"/api/elders/{world.elder_id}").json()
    assert (pop["name"], pop["access_notes"], pop["medical_notes"]) == tuple(HOSTILE[:3])
    with world.session() as s:  # no statement was run from the text: every table still there
        assert (s.scalar(select(func.count()).select_from(Elder)) or 0) >= 1
        assert (s.scalar(select(func.count()).select_from(Case)) or 0) >= len(HOSTILE)


def _note_stored(s: Session, alarm_id: int, text: str) -> bool:
    """The outcome note is kept in the event the outcome adds to the alarm's case."""
    case_id = s.get_one(Alarm, alarm_id).case_id
    details = s.scalars(select(CaseEvent.detail).where(CaseEvent.case_id == case_id)).all()
    return any(detail.get("note") == text for detail in details)


def test_volunteer_feedback_is_stored_verbatim_and_rendered_escaped(
    app: FastAPI, world: World
) -> None:
    _, case_id, token = world.new_offer(accepted=True)
    client = TestClient(app)
    with world.session() as s:
        s.get_one(Case, case_id).summary = SCRIPT
        s.get_one(Elder, world.elder_id).access_notes = HOSTILE[1]
    page = client.get(f"/v/offer/{token}")
    assert page.status_code == 200
    for text in (SCRIPT, HOSTILE[1]):
        assert text not in page.text  # never as markup
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in page.text  # but shown as text
    assert "&#34;&gt;&lt;img src=x onerror=&#34;window.__xss = 2&#34;&gt;" in page.text
    assert client.post(f"/v/offer/{token}/arrived", follow_redirects=False).status_code == 303
    sent = client.post(f"/v/offer/{token}/feedback", follow_redirects=False,
                       data={"what_was_done": HOSTILE[2], "minutes": "20",
                             "worrying": SCRIPT})  # fmt: skip
    assert sent.status_code == 303
    staff = operator(app, world).get(f"/api/cases/{case_id}").json()
    texts = [value for event in staff["events"] for value in event["detail"].values()]
    assert HOSTILE[2] in texts and SCRIPT in texts, staff["events"]


@pytest.mark.parametrize("field", ["summary", "note", "login", "feedback"])
def test_a_nul_character_is_refused_not_a_server_error(both_world: World, field: str) -> None:
    # PostgreSQL text cannot hold NUL: it must be a 422, never a 500 from the driver.
    world = both_world
    client = operator(create_app(), world)
    if field == "summary":
        response = client.post("/api/cases", json={"elder_id": world.elder_id,
                                                    "item_code": "appliances.replace_bulb",
                                                    "summary": "a\x00b"})  # fmt: skip
    elif field == "note":
        alarm_id = world.new_alarm()
        client.post(f"/api/alarms/{alarm_id}/claim")
        response = client.post(f"/api/alarms/{alarm_id}/outcome",
                               json={"outcome": "talked", "note": "a\x00b"})  # fmt: skip
    elif field == "login":
        response = client.post("/api/session", json={"username": "a\x00b", "password": "x"})
    else:
        _, _, token = world.new_offer(accepted=True)
        client.post(f"/v/offer/{token}/arrived")
        response = client.post(f"/v/offer/{token}/feedback", follow_redirects=False,
                               data={"what_was_done": "a\x00b", "minutes": "5"})  # fmt: skip
    assert response.status_code == 422, response.text


# -- the console in a browser: hostile text shown as text, never run -----------------------


@pytest.fixture
def served(app: FastAPI) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "the web server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed")
def test_the_console_shows_hostile_text_as_text(world: World, served: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with world.session() as s:
        elder = s.get_one(Elder, world.elder_id)
        elder.name, elder.access_notes, elder.medical_notes = SCRIPT, HOSTILE[1], HOSTILE[2]
    world.new_case()  # an open case of the elder, its summary shown in the screen pop
    with world.session() as s:
        s.scalars(select(Case).where(Case.elder_id == world.elder_id)).first().summary = HOSTILE[1]  # type: ignore[union-attr]
    world.new_alarm()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.add_cookies([{"name": SESSION_COOKIE, "url": served,
                                  "value": world.session_tokens["operator"]}])  # fmt: skip
            page = context.new_page()
            dialogs: list[str] = []

            def on_dialog(dialog: Any) -> None:  # an alert() would mean injected script ran
                dialogs.append(dialog.message)
                dialog.dismiss()

            page.on("dialog", on_dialog)
            page.goto(f"{served}/console")
            row = page.locator("tr", has_text=SCRIPT).first
            expect(row).to_be_visible(timeout=15_000)
            row.locator("button").first.click()  # claim: the screen pop opens
            expect(page.get_by_text(HOSTILE[1]).first).to_be_visible(timeout=10_000)
            expect(page.get_by_text(HOSTILE[2]).first).to_be_visible()
            page.screenshot(path=str(tmp_path / "hostile-console.png"))
            assert page.evaluate("window.__xss") is None
            assert page.locator('img[src="x"]').count() == 0
            assert page.locator("script", has_text="__xss").count() == 0
            assert dialogs == []
        finally:
            browser.close()
