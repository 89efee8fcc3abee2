"""Signed links and sessions: they expire, and cannot be turned to another case, object or
purpose. The clock is moved with time-machine, so expiry is tested at its real lengths."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import time_machine
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from callcenter import db
from callcenter.models import Case, Operator
from callcenter.web.app import create_app
from callcenter.web.auth import SESSION_COOKIE, SESSION_MAX_AGE_S, session_token
from schedules.settings import get_schedule_settings
from tests.reliability.world import ELDER, World, build_world
from volunteers.links import DEFAULT_MAX_AGE_S, make_token
from volunteers.models import Offer, OfferStatus
from volunteers.offers import accept_offer

T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def world(fresh_engine: Engine) -> Iterator[World]:
    previous = db.get_engine()
    db.use_engine(fresh_engine)
    try:
        yield build_world(fresh_engine)
    finally:
        db.use_engine(previous)


def at(moment: dt.datetime) -> time_machine.travel:
    return time_machine.travel(moment, tick=False)


def test_offer_link_expires_after_three_days(world: World) -> None:
    client = TestClient(create_app())
    with at(T0):
        offer_id, _, token = world.new_offer()
    with at(T0 + dt.timedelta(seconds=DEFAULT_MAX_AGE_S - 60)):
        assert client.get(f"/v/offer/{token}").status_code == 200
    with at(T0 + dt.timedelta(seconds=DEFAULT_MAX_AGE_S + 1)):
        assert client.get(f"/v/offer/{token}").status_code == 410
        late = client.post(f"/v/offer/{token}/accept", follow_redirects=False)
        assert late.status_code == 410
    with Session(world.engine) as s:
        assert s.get_one(Offer, offer_id).status is OfferStatus.PENDING  # nothing happened


def test_visit_link_expires(world: World) -> None:
    client = TestClient(create_app())
    max_age = dt.timedelta(days=get_schedule_settings().visit_link_max_age_days)
    with at(T0):
        _, token = world.new_visit()
    with at(T0 + max_age - dt.timedelta(minutes=1)):
        assert client.get(f"/v/visit/{token}").status_code == 200
    with at(T0 + max_age + dt.timedelta(seconds=1)):
        assert client.get(f"/v/visit/{token}").status_code == 410
        assert client.post(f"/v/visit/{token}/confirm", follow_redirects=False).status_code == 410


def test_console_session_expires_after_a_shift(world: World) -> None:
    with at(T0), Session(world.engine) as s:
        token = session_token(s.get_one(Operator, world.user_ids["operator"]))
        client = TestClient(create_app(), cookies={SESSION_COOKIE: token})
        assert client.get("/api/queue").status_code == 200
    with at(T0 + dt.timedelta(seconds=SESSION_MAX_AGE_S - 60)):
        assert client.get("/api/queue").status_code == 200
    with at(T0 + dt.timedelta(seconds=SESSION_MAX_AGE_S + 1)):
        assert client.get("/api/queue").status_code == 401


def test_a_link_cannot_be_turned_to_another_case_or_object(world: World) -> None:
    client = TestClient(create_app())
    offer_a, case_a, token_a = world.new_offer()
    offer_b, case_b, _ = world.new_offer(volunteer=1)
    refused = {
        # A genuine signature, but the offer belongs to another case.
        "offer of another case": make_token("offer", offer_a, case_b),
        "another offer, same case": make_token("offer", offer_b, case_a),
        "no such offer": make_token("offer", 999_999, case_a),
        "altered payload": token_a[:5] + ("A" if token_a[5] != "A" else "B") + token_a[6:],
        "altered signature": token_a[:-2] + ("AA" if not token_a.endswith("AA") else "BB"),
        "not a token": "hello",
    }
    for why, token in refused.items():
        assert client.get(f"/v/offer/{token}").status_code == 403, why
        answer = client.post(f"/v/offer/{token}/accept", follow_redirects=False)
        assert answer.status_code == 403, why
    with Session(world.engine) as s:
        assert s.get_one(Case, case_a).assigned_volunteer_id is None
        assert s.get_one(Case, case_b).assigned_volunteer_id is None
    assert client.get(f"/v/offer/{token_a}").status_code == 200  # the real one still works


def test_a_link_cannot_serve_another_purpose(world: World) -> None:
    client = TestClient(create_app())
    offer_id, case_id, offer_token = world.new_offer()
    visit_id, visit_token = world.new_visit()
    volunteer_id = world.volunteer_ids[0]
    # The same numbers, signed for the other purpose: the salt differs, so the signature fails.
    assert client.get(f"/v/offer/{make_token('visit', offer_id, case_id)}").status_code == 403
    assert client.get(f"/v/visit/{make_token('offer', visit_id, volunteer_id)}").status_code == 403
    assert client.get(f"/v/offer/{visit_token}").status_code == 403
    assert client.get(f"/v/visit/{offer_token}").status_code == 403
    # A console session is not a link, and a link is not a console session.
    staff_token = world.session_tokens["admin"]
    assert client.get(f"/v/offer/{staff_token}").status_code == 403
    for token in (offer_token, visit_token):
        as_cookie = TestClient(create_app(), cookies={SESSION_COOKIE: token})
        assert as_cookie.get("/api/session").status_code == 401
        assert as_cookie.get("/api/events").status_code == 401
        as_bearer = TestClient(create_app(), headers={"Authorization": f"Bearer {token}"})
        assert as_bearer.get("/api/cases").status_code == 401


def test_a_used_link_cannot_take_the_case_back(world: World) -> None:
    """After another volunteer won, a stood-down link neither accepts nor shows the address."""
    client = TestClient(create_app())
    case_id = world.new_case()
    with world.session() as s:
        now = db.utcnow()
        offers = [
            Offer(case_id=case_id, volunteer_id=v, sent_at=now, expires_at=now + dt.timedelta(1))
            for v in world.volunteer_ids[:2]
        ]
        s.add_all(offers)
        s.flush()
        loser, winner = offers
        assert accept_offer(s, winner.id) == "accepted"
    loser_link = make_token("offer", loser.id, case_id)
    page = client.get(f"/v/offer/{loser_link}")
    assert page.status_code == 200 and ELDER["address"] not in page.text
    again = client.post(f"/v/offer/{loser_link}/accept", follow_redirects=False)
    assert again.status_code == 303 and "msg=taken" in again.headers["location"]
    assert client.post(f"/v/offer/{loser_link}/arrived").status_code == 409
    with Session(world.engine) as s:
        assert s.get_one(Case, case_id).assigned_volunteer_id == world.volunteer_ids[1]
        assert s.get_one(Offer, loser.id).status is OfferStatus.STOOD_DOWN
    winner_page = client.get(f"/v/offer/{make_token('offer', winner.id, case_id)}")
    assert ELDER["address"] in winner_page.text  # only the one who took the task sees it
