"""The whole loop over HTTP, on SQLite and PostgreSQL: a service press → case → offers by SMS →
a signed Twilio reply accepts → the others are stood down → feedback → closed, every step in the
case's event log."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from callcenter import db
from callcenter.intake import Press, record_alarm
from callcenter.models import AlarmKind, AlarmSource, CaseEvent, OutboxMessage, Role
from callcenter.settings import get_settings
from callcenter.web.app import create_app
from callcenter.web.auth import add_user
from devices.models import TerminalProtocol
from tests.factories import make_elder, make_terminal
from volunteers.models import AvailabilityWindow, Offer, OfferStatus, Volunteer, VolunteerSkill
from volunteers.sms_settings import webhook_auth_token

PASSWORD = "correct horse battery"


@dataclass
class World:
    client: TestClient
    engine: Engine
    case_id: int
    elder_name: str
    volunteer_phones: list[str]


@pytest.fixture
def world(fresh_engine: Engine) -> Iterator[World]:
    previous = db.get_engine()
    db.use_engine(fresh_engine)
    with Session(fresh_engine, expire_on_commit=False) as s:
        add_user(s, username="op1", password=PASSWORD, role=Role.OPERATOR)
        elder = make_elder(s, name="林惜娥", medical_notes="高血压", address="金砂东路18号302室")
        terminal = make_terminal(s, elder, TerminalProtocol.DTMF)
        phones = []
        for n in range(4):
            volunteer = Volunteer(
                code=f"LV{n}", name=f"志愿者{n}", phone=f"+8613700000{n:03d}",
                home_latitude=23.365 + n * 0.002, home_longitude=116.705,
                skills=[VolunteerSkill(category_code="appliances", level=2)],
                availability=[AvailabilityWindow(weekday=d, start_minute=0, end_minute=1440)
                              for d in range(7)],
            )  # fmt: skip
            s.add(volunteer)
            phones.append(volunteer.phone)
        s.commit()
        recorded = record_alarm(s, Press(source=AlarmSource.DTMF, kind=AlarmKind.SERVICE,
                                         dedup_key="press-1", terminal_id=terminal.id,
                                         elder_id=elder.id))  # fmt: skip
    client = TestClient(create_app())
    assert client.post("/api/session", json={"username": "op1", "password": PASSWORD}).is_success
    assert recorded.case_id is not None
    try:
        yield World(client, fresh_engine, recorded.case_id, elder.name, phones)
    finally:
        db.use_engine(previous)


def twilio_post(client: TestClient, path: str, params: dict[str, str], *, sign: bool = True):  # type: ignore[no-untyped-def]
    url = get_settings().public_base_url.rstrip("/") + path
    signature = RequestValidator(webhook_auth_token()).compute_signature(url, params)
    headers = {"X-Twilio-Signature": signature if sign else "forged"}
    return client.post(path, data=params, headers=headers)


def outbox(engine: Engine) -> list[OutboxMessage]:
    with Session(engine) as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_service_press_to_closed_case(world: World) -> None:
    client, case_id = world.client, world.case_id
    item = client.patch(f"/api/cases/{case_id}", json={"item_code": "appliances.replace_bulb",
                                                        "summary": "客厅灯泡坏了"})  # fmt: skip
    assert item.status_code == 200, item.text
    code = item.json()["code"]
    candidates = client.get(f"/api/cases/{case_id}/candidates").json()
    assert len(candidates) == 4 and candidates[0]["explain_zh"] and candidates[0]["reasons"]
    wave = client.post(f"/api/cases/{case_id}/dispatch").json()
    assert wave["wave"] == 1 and len(wave["offered_volunteer_ids"]) == 3

    offers_sms = outbox(world.engine)
    assert len(offers_sms) == 3
    for sms in offers_sms:  # minimum personal data: code, item, community, link; nothing else
        assert code in sms.body and "/v/offer/" in sms.body
        assert world.elder_name not in sms.body and "高血压" not in sms.body
        assert "金砂东路" not in sms.body

    with Session(world.engine) as s:
        offered = s.scalars(select(Offer).where(Offer.case_id == case_id).order_by(Offer.id)).all()
        phone_of = {v.id: v.phone for v in s.scalars(select(Volunteer))}
    first, second, third = (phone_of[o.volunteer_id] for o in offered)

    # A forged signature changes nothing.
    assert twilio_post(client, "/webhooks/twilio/sms", {"From": second, "Body": "1"},
                       sign=False).status_code == 403  # fmt: skip
    # An unknown number and an unclear text change nothing and get a helpful answer.
    unknown = twilio_post(client, "/webhooks/twilio/sms", {"From": "+8613999999999", "Body": "1"})
    assert unknown.status_code == 200 and "<Message>" in unknown.text
    unclear = twilio_post(client, "/webhooks/twilio/sms", {"From": second, "Body": "嗯？"})
    assert "1" in unclear.text
    assert client.get(f"/api/cases/{case_id}").json()["state"] == "dispatch"

    declined = twilio_post(client, "/webhooks/twilio/sms", {"From": first, "Body": "不去"})
    assert declined.status_code == 200
    accepted = twilio_post(client, "/webhooks/twilio/sms", {"From": second, "Body": f"接 {code}"})
    assert accepted.status_code == 200 and "/v/offer/" in accepted.text
    late = twilio_post(client, "/webhooks/twilio/sms", {"From": third, "Body": "YES"})
    assert late.status_code == 200

    detail = client.get(f"/api/cases/{case_id}").json()
    assert detail["state"] == "handle"
    statuses = {o["volunteer_id"]: o["status"] for o in detail["offers"]}
    assert sorted(statuses.values()) == ["accepted", "declined", "stood_down"]
    stood_down_sms = [
        m for m in outbox(world.engine) if m.idempotency_key.startswith("stood_down:")
    ]
    assert [m.to for m in stood_down_sms] == [third]

    # The winner's link: the address is shown to the one who took the task only.
    link = accepted.text.split("/v/offer/")[1].split("<")[0].split()[0]
    page = client.get(f"/v/offer/{link}")
    assert page.status_code == 200 and "金砂东路18号302室" in page.text
    assert client.post(f"/v/offer/{link}/arrived", follow_redirects=False).status_code == 303
    done = client.post(f"/v/offer/{link}/feedback", follow_redirects=False,
                       data={"what_was_done": "更换了客厅灯泡", "minutes": "30"})  # fmt: skip
    assert done.status_code == 303
    assert client.get(f"/api/cases/{case_id}").json()["state"] == "feedback"
    closed = client.post(
        f"/api/cases/{case_id}/close", json={"satisfied": True, "note": "电话回访满意"}
    )
    assert closed.json()["state"] == "closed"

    with Session(world.engine) as s:
        events = [e.event for e in s.scalars(select(CaseEvent).where(CaseEvent.case_id == case_id)
                                             .order_by(CaseEvent.id))]  # fmt: skip
        winner = s.scalars(select(Volunteer).where(Volunteer.phone == second)).one()
        assert winner.hours_served == 0.5
        assert s.scalars(select(Offer.status).where(Offer.volunteer_id == winner.id)).one() is (
            OfferStatus.COMPLETED
        )
    for expected in ("opened", "alarm_attached", "item_set", "offers_sent", "offer_declined",
                     "state_changed", "others_stood_down", "volunteer_arrived",
                     "satisfaction_confirmed"):  # fmt: skip
        assert expected in events, (expected, events)
    assert events.count("state_changed") == 3  # handle → feedback → closed


def test_worrying_feedback_opens_a_follow_up(world: World) -> None:
    client, case_id = world.client, world.case_id
    client.patch(f"/api/cases/{case_id}", json={"item_code": "appliances.replace_bulb"})
    client.post(f"/api/cases/{case_id}/dispatch")
    with Session(world.engine) as s:
        offer = s.scalars(select(Offer).where(Offer.case_id == case_id)).first()
        assert offer is not None
        phone = s.get(Volunteer, offer.volunteer_id).phone  # type: ignore[union-attr]
    reply = twilio_post(client, "/webhooks/twilio/sms", {"From": phone, "Body": "1"})
    link = reply.text.split("/v/offer/")[1].split("<")[0].split()[0]
    client.post(f"/v/offer/{link}/feedback", data={"what_was_done": "换灯泡", "minutes": "20",
                                                  "worrying": "老人说最近常头晕"})  # fmt: skip
    cases = client.get("/api/cases").json()
    follow_up = [c for c in cases if "头晕" in c["summary"]]
    assert len(follow_up) == 1 and follow_up[0]["state"] == "dispatch"


def test_another_cases_link_is_refused(world: World) -> None:
    from volunteers.links import make_token

    client = world.client
    forged = make_token("offer", 1, world.case_id + 999)  # a real signature, wrong case
    assert client.get(f"/v/offer/{forged}").status_code == 403
    assert client.get("/v/offer/not-a-token").status_code == 403
    assert client.get("/api/cases").status_code == 200
    assert TestClient(create_app()).get("/api/cases").status_code == 401
