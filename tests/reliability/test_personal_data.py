"""Minimum personal data in SMS and logs.

An SMS crosses carriers in clear and sits on a lock screen; a log line is copied to files,
terminals and tickets. Neither may carry an elder's name, phone number, address, access notes,
medical notes, medicines, allergies or contacts, nor a volunteer's name or full phone number:
ids, case codes and masked numbers only (PIPL art. 6 and 51: collect and expose the minimum).

The test plays the service through (a call, the console, dispatch, SMS replies, the outbox,
visit links and reminders) and reads every SMS and every log line it produced.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import io
import logging
import string
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from structlog.testing import capture_logs
from twilio.request_validator import RequestValidator

from callcenter import db
from callcenter.intake_service import IntakeService
from callcenter.models import OutboxMessage
from callcenter.settings import Settings, get_settings
from callcenter.sip.call_flow import CallFlow
from callcenter.sip.interface import CallInfo
from callcenter.sip.live_calls import LiveCalls
from callcenter.web.app import create_app
from callcenter.web.auth import SESSION_COOKIE
from devices.models import Terminal
from schedules.reminders import send_visit_reminders
from tests.reliability.world import CONTACT, ELDER, ITEM, World, build_world
from tests.sip.test_call_flow import FakeCall
from volunteers import sms_texts
from volunteers.models import Offer, Volunteer
from volunteers.outbox_sender import ConsoleBackend, send_due
from volunteers.sms_settings import webhook_auth_token

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
# What an SMS text may be made of: the case or visit code, the service item, the community,
# a date phrase and the signed link. Nothing that names or locates a person.
SMS_FIELDS = {"code", "item", "community", "when", "link"}
SMS_PARAMETERS = SMS_FIELDS | {"lang", "key", "day", "fields"}


def elder_secrets() -> list[str]:
    national = str(ELDER["phone"]).removeprefix("+86")
    return [
        str(ELDER["name"]),
        str(ELDER["phone"]),
        national,
        str(ELDER["address"]),
        str(ELDER["medical_notes"]),
        str(ELDER["access_notes"]),
        *ELDER["medications"],
        *ELDER["allergies"],
        CONTACT["name"],
        CONTACT["phone"],
        CONTACT["phone"].removeprefix("+86"),
    ]


def test_sms_templates_have_no_personal_fields() -> None:
    for key, texts in sms_texts.TEXTS.items():
        for lang, template in texts.items():
            fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
            assert fields <= SMS_FIELDS, f"SMS {key}/{lang} takes {fields - SMS_FIELDS}"


def test_sms_functions_take_no_personal_fields() -> None:
    for name, function in inspect.getmembers(sms_texts, inspect.isfunction):
        if function.__module__ != sms_texts.__name__ or name.startswith("_"):
            continue
        parameters = set(inspect.signature(function).parameters)
        assert parameters <= SMS_PARAMETERS, f"{name}() takes {parameters - SMS_PARAMETERS}"


@pytest.fixture
def world(sqlite_engine: Engine) -> Iterator[World]:
    previous = db.get_engine()
    db.use_engine(sqlite_engine)
    try:
        yield build_world(sqlite_engine, staff=("operator",))
    finally:
        db.use_engine(previous)


def twilio_reply(client: TestClient, sender: str, body: str) -> str:
    params = {"From": sender, "Body": body}
    url = get_settings().public_base_url.rstrip("/") + "/webhooks/twilio/sms"
    signature = RequestValidator(webhook_auth_token()).compute_signature(url, params)
    response = client.post(
        "/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 200, response.text
    return response.text


def sos_call(world: World) -> None:
    """A real call flow (scripted caller): the terminal's SOS, with the elder's own number as
    the caller's display, as a carrier's P-Asserted-Identity would show it."""
    with Session(world.engine) as s:
        terminal = s.get_one(Terminal, world.terminal_id)
    call = FakeCall(world.engine, caller=terminal.sip_user or "", bursts=["1"])
    call._info = CallInfo(
        "pii-call-1",
        terminal.sip_user or "",
        str(ELDER["phone"]),
        "200",
        ("127.0.0.1", 5099),
        "z9hG4bK-pii",
    )
    intake = IntakeService(
        sessionmaker(world.engine, expire_on_commit=False),
        Settings(env="test", secret_key="t" * 40),
    )
    flow = CallFlow(intake, LiveCalls(), hold_s=10)

    async def run() -> None:
        await flow(call)
        await intake.flush()

    try:
        asyncio.run(run())
    finally:
        intake.close()


def play_the_service(world: World) -> list[str]:
    """Everything that sends SMS or writes logs; returns the SMS replies (TwiML) sent back."""
    sos_call(world)
    staff = TestClient(create_app(), cookies={SESSION_COOKIE: world.session_tokens["operator"]})
    queue = staff.get("/api/queue").json()
    assert queue, "the call made no alarm"
    assert staff.post(f"/api/alarms/{queue[0]['id']}/claim").status_code == 200
    outcome = staff.post(
        f"/api/alarms/{queue[0]['id']}/outcome",
        json={"outcome": "sent_volunteers", "note": "需要上门"},
    )
    assert outcome.status_code == 200
    case = staff.post(
        "/api/cases", json={"elder_id": world.elder_id, "item_code": ITEM, "summary": "灯泡坏了"}
    ).json()
    assert staff.post(f"/api/cases/{case['id']}/dispatch").status_code == 200
    with Session(world.engine) as s:
        offered = s.scalars(select(Offer).where(Offer.case_id == case["id"]).order_by(Offer.id))
        phones = [s.get_one(Volunteer, o.volunteer_id).phone for o in offered]
    public = TestClient(create_app())
    replies = [
        twilio_reply(public, phones[0], "不去"),  # declined
        twilio_reply(public, phones[1], f"接 {case['code']}"),  # accepted: assigned
        twilio_reply(public, phones[2], "1"),  # too late
        twilio_reply(public, "+8613999999999", "1"),  # unknown sender
    ]
    # A visit: the volunteer hands it back (another one is told), the other is reminded.
    visit_day = dt.datetime.now(SHANGHAI).date() + dt.timedelta(days=1)
    _, token = world.new_visit(planned=visit_day)
    public.post(f"/v/visit/{token}/handback", follow_redirects=False)
    world.new_visit(volunteer=3, planned=visit_day)
    with world.session() as s:
        evening = dt.datetime.combine(visit_day - dt.timedelta(days=1), dt.time(18, 30), SHANGHAI)
        send_visit_reminders(s, now=evening)
    printed = io.StringIO()
    send_due(sessionmaker(world.engine, expire_on_commit=False), ConsoleBackend(printed))
    assert printed.getvalue(), "the outbox sent nothing"
    return replies


def test_no_personal_data_in_sms_or_logs(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:
        replies = play_the_service(world)
    with Session(world.engine) as s:
        sms = [m.body for m in s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]
        volunteers = [(v.name, v.phone) for v in s.scalars(select(Volunteer))]
    sms_kinds = " ".join(sms)
    assert "/v/offer/" in sms_kinds and "/v/visit/" in sms_kinds, sms  # offers and visits sent
    assert "无需前往" in sms_kinds, sms  # the stood-down text

    # SMS carry nothing of the elder and no volunteer's name.
    for text in [*sms, *replies]:
        for secret in [*elder_secrets(), *(name for name, _ in volunteers)]:
            assert secret not in text, f"{secret!r} in SMS {text!r}"

    # Log lines: structlog events and the standard library's records.
    names = {str(event.get("event")) for event in events}
    for expected in (
        "alarm.stored",
        "dispatch.wave_sent",
        "dispatch.offer_accepted",
        "webhook.sms.handled",
    ):
        assert expected in names, f"{expected} not logged (is structlog capturing?): {names}"
    stored = next(e for e in events if e["event"] == "alarm.stored")
    assert isinstance(stored["alarm_id"], int) and "elder" not in str(stored)
    lines: list[Any] = [repr(event) for event in events]
    lines += [record.getMessage() for record in caplog.records]
    volunteer_secrets = [s for name, phone in volunteers for s in (name, phone, phone[3:])]
    for line in lines:
        for secret in [*elder_secrets(), *volunteer_secrets]:
            assert secret not in line, f"{secret!r} in log line {line[:300]!r}"
