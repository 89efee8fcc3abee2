"""Every route of the app × every kind of caller, with the status each must get.

The callers: anonymous (no credentials), a volunteer holding a valid signed link (no console
account: the link token is also tried as the console's session cookie and as a Bearer token),
and logged-in operator, supervisor and admin. A route missing from :data:`TABLE` fails
:func:`test_every_route_is_in_the_table`: whoever adds a route says here who may call it.

Adding a route: one line in TABLE with one of the access helpers below (``staff``, ``supervisors``,
``admins``, ``page``, ``supervisor_page``, ``public``, ``link``, ``webhook``, ``machine``) and, if
the route needs path parameters or a body, a function that makes fresh objects for each caller
(``params``, ``json``, ``form``). Every allowed caller gets its own objects, so the expected
statuses are exact.

A refused request (401/403) must change nothing: the test compares a fingerprint of the database
before and after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session
from starlette.routing import Mount

from callcenter import db
from callcenter.models import Alarm, Case, CaseState
from callcenter.web import console_api, pages
from callcenter.web.app import create_app
from callcenter.web.auth import SESSION_COOKIE
from schedules.models import JobOutcome, SchedulerJobRun, Visit
from tests.reliability.world import ITEM, PASSWORD, World, build_world
from volunteers.links import make_token
from volunteers.models import Offer

ROLES = ("anonymous", "volunteer", "operator", "supervisor", "admin")
StatusByRole = Mapping[str, int]


# -- who may call a route --------------------------------------------------------------------


def staff(ok: int = 200) -> StatusByRole:
    """Console API for operators and up: 401 without a console session."""
    return {"anonymous": 401, "volunteer": 401, "operator": ok, "supervisor": ok, "admin": ok}


def supervisors(ok: int = 200) -> StatusByRole:
    return {"anonymous": 401, "volunteer": 401, "operator": 403, "supervisor": ok, "admin": ok}


def admins(ok: int = 200) -> StatusByRole:
    return {"anonymous": 401, "volunteer": 401, "operator": 403, "supervisor": 403, "admin": ok}


def page(ok: int = 200) -> StatusByRole:
    """A console page: without a session it sends the browser to the login page (303)."""
    return {"anonymous": 303, "volunteer": 303, "operator": ok, "supervisor": ok, "admin": ok}


def supervisor_page(ok: int = 200) -> StatusByRole:
    """A page for supervisors: login first (303), an operator is told no (403)."""
    return {"anonymous": 303, "volunteer": 303, "operator": 403, "supervisor": ok, "admin": ok}


def public(ok: int = 200) -> StatusByRole:
    return dict.fromkeys(ROLES, ok)


def link(ok: int = 200) -> StatusByRole:
    """A volunteer page: only a valid signed link of its own purpose opens it."""
    return {"anonymous": 403, "volunteer": ok, "operator": 403, "supervisor": 403, "admin": 403}


def webhook() -> StatusByRole:
    """Twilio's callbacks: no console session or link replaces Twilio's signature."""
    return public(403)


def machine() -> StatusByRole:
    """For the monitoring system (token or loopback), never for a browser session."""
    return public(403)


# -- what each caller sends ------------------------------------------------------------------

Params = Callable[[World, str], dict[str, Any]]
Body = Callable[[World, str], Any]


def no_params(_world: World, _role: str) -> dict[str, Any]:
    return {}


def wrong_token(world: World, role: str, purpose: str) -> str:
    """What a caller without the right link presents: staff their console session token,
    an anonymous caller a genuine link of the *other* purpose (signed, but not for this)."""
    if role in world.session_tokens:
        return world.session_tokens[role]
    other = "visit" if purpose == "offer" else "offer"
    return make_token(other, 1, 1)


def offer_link(*, accepted: bool = False) -> Params:
    def params(world: World, role: str) -> dict[str, Any]:
        _, _, token = world.new_offer(accepted=accepted)
        return {"token": token if role == "volunteer" else wrong_token(world, role, "offer")}

    return params


def visit_link(world: World, role: str) -> dict[str, Any]:
    _, token = world.new_visit()
    return {"token": token if role == "volunteer" else wrong_token(world, role, "visit")}


def fresh_alarm(world: World, _role: str) -> dict[str, Any]:
    return {"alarm_id": world.new_alarm()}


def fresh_case(state: CaseState = CaseState.DISPATCH, *, item: bool = True) -> Params:
    def params(world: World, _role: str) -> dict[str, Any]:
        return {"case_id": world.new_case(state, item=item)}

    return params


def const_params(**values: Any) -> Params:
    return lambda _world, _role: dict(values)


def the_elder(world: World, _role: str) -> dict[str, Any]:
    return {"elder_id": world.elder_id}


def static_file(_world: World, _role: str) -> dict[str, Any]:
    name = next(p.name for p in sorted(pages.STATIC_DIR.iterdir()) if p.is_file())
    return {"path": name}


def recent_scheduler_run(world: World, _role: str) -> dict[str, Any]:
    """/readyz needs a scheduler seen at work (this test runs none)."""
    with world.session() as s:
        s.add(
            SchedulerJobRun(
                job_name="access.table",
                scheduled_for=db.utcnow(),
                finished_at=db.utcnow(),
                outcome=JobOutcome.OK,
                runner="test",
            )
        )
    return {}


def login_body(world: World, role: str) -> dict[str, str]:
    if role in world.session_tokens:
        with world.session() as s:
            username = s.scalar(
                text("SELECT username FROM operators WHERE id = :id"),
                {"id": world.user_ids[role]},
            )
        return {"username": str(username), "password": PASSWORD}
    return {"username": "nobody", "password": "not the password"}


@dataclass(frozen=True)
class Entry:
    expect: StatusByRole
    params: Params = no_params
    json: Body | None = None
    form: Body | None = None
    query: str = ""


def const(value: Any) -> Body:
    return lambda _world, _role: value


TABLE: dict[str, Entry] = {
    # FastAPI's own documentation pages: the API's shape is public, its data is not.
    "GET /openapi.json": Entry(public()),
    "GET /docs": Entry(public()),
    "GET /docs/oauth2-redirect": Entry(public()),
    "GET /redoc": Entry(public()),
    # Logging in and out.
    "POST /api/session": Entry(
        {"anonymous": 401, "volunteer": 401, "operator": 200, "supervisor": 200, "admin": 200},
        json=login_body,
    ),
    "GET /api/session": Entry(staff()),
    "DELETE /api/session": Entry(public(204)),
    # Alarms and the live queue.
    "GET /api/alarms": Entry(staff()),
    "POST /api/alarms/{alarm_id}/claim": Entry(staff(), fresh_alarm),
    "POST /api/alarms/{alarm_id}/outcome": Entry(
        staff(), fresh_alarm, json=const({"outcome": "talked", "note": "回电确认平安"})
    ),
    "GET /api/queue": Entry(staff()),
    # Voice: the staff get past the login to the domain's own answers (an unclaimed alarm
    # cannot be connected: 409; no recording: 404); connecting is tested with the voice desk.
    "POST /api/alarms/{alarm_id}/voice": Entry(staff(409), fresh_alarm),
    "GET /api/alarms/{alarm_id}/voice": Entry(staff(), fresh_alarm),
    "GET /api/recordings/{voice_call_id}": Entry(staff(404), const_params(voice_call_id=999999)),
    "GET /api/events": Entry(staff()),
    # Elders.
    "GET /api/elders": Entry(staff(), query="q=欧阳"),
    "GET /api/elders/{elder_id}": Entry(staff(), the_elder),
    "GET /api/catalog": Entry(staff()),
    # Cases and dispatch.
    "GET /api/cases": Entry(staff()),
    "POST /api/cases": Entry(
        staff(201), json=lambda w, _r: {"elder_id": w.elder_id, "item_code": ITEM}
    ),
    "GET /api/cases/{case_id}": Entry(staff(), fresh_case()),
    "PATCH /api/cases/{case_id}": Entry(
        staff(), fresh_case(item=False), json=const({"item_code": ITEM})
    ),
    "GET /api/cases/{case_id}/candidates": Entry(staff(), fresh_case()),
    "POST /api/cases/{case_id}/dispatch": Entry(staff(), fresh_case()),
    "POST /api/cases/{case_id}/close": Entry(
        staff(), fresh_case(CaseState.FEEDBACK), json=const({"satisfied": True})
    ),
    "POST /api/cases/{case_id}/cancel": Entry(
        staff(), fresh_case(), json=const({"reason": "老人来电取消"})
    ),
    # The supervisor's view (班长看板).
    "GET /api/supervisor": Entry(supervisors()),
    "GET /supervisor": Entry(supervisor_page()),
    # Console pages.
    "GET /": Entry(public(303)),
    "GET /login": Entry(public()),
    "GET /console": Entry(page()),
    "GET /static": Entry(public(), static_file),
    # The volunteer's offer page (signed link, no login).
    "GET /v/offer/{token}": Entry(link(), offer_link()),
    "POST /v/offer/{token}/accept": Entry(link(303), offer_link()),
    "POST /v/offer/{token}/decline": Entry(link(303), offer_link()),
    "POST /v/offer/{token}/arrived": Entry(link(303), offer_link(accepted=True)),
    "POST /v/offer/{token}/feedback": Entry(
        link(303),
        offer_link(accepted=True),
        form=const({"what_was_done": "更换了灯泡", "minutes": "20"}),
    ),
    "POST /v/offer/{token}/drop": Entry(link(303), offer_link(accepted=True)),
    # The volunteer's visit page (signed link, no login).
    "GET /v/visit/{token}": Entry(link(), visit_link),
    "POST /v/visit/{token}/confirm": Entry(link(303), visit_link),
    "POST /v/visit/{token}/handback": Entry(link(303), visit_link),
    "POST /v/visit/{token}/record": Entry(
        link(303), visit_link, form=const({"seen_in_person": "yes", "health": "ok"})
    ),
    # Twilio's callbacks.
    "POST /webhooks/twilio/sms": Entry(
        webhook(), form=const({"From": "+8613700000001", "Body": "1"})
    ),
    "POST /webhooks/twilio/status": Entry(
        webhook(), form=const({"MessageSid": "SM1", "MessageStatus": "delivered"})
    ),
    # Operations.
    "GET /healthz": Entry(public()),
    "GET /readyz": Entry(public(), recent_scheduler_run),
    "GET /metrics": Entry(machine()),
}


# -- the app's routes ------------------------------------------------------------------------


def route_keys(app: FastAPI) -> set[str]:
    """``METHOD /path`` for every route (HEAD, which Starlette adds to GET, left out)."""
    try:  # FastAPI ≥ 0.165 includes routers lazily; this lists what they hold
        from fastapi.routing import iter_route_contexts

        routes: list[Any] = [c.original_route for c in iter_route_contexts(app.routes)]
        paths = [c.path for c in iter_route_contexts(app.routes)]
    except ImportError:
        routes = list(app.routes)
        paths = [getattr(r, "path", "") for r in routes]
    keys = set()
    for route, path in zip(routes, paths, strict=True):
        if isinstance(route, Mount):
            keys.add(f"GET {route.path}")
            continue
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                keys.add(f"{method} {path}")
    return keys


def test_every_route_is_in_the_table() -> None:
    routes = route_keys(create_app())
    missing = sorted(routes - TABLE.keys())
    stale = sorted(TABLE.keys() - routes)
    assert not missing, f"routes without an access rule in TABLE: {missing}"
    assert not stale, f"TABLE names routes the app no longer has: {stale}"


# -- the requests ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(module_engine: Engine) -> FastAPI:
    """One app per database: its login limiter counts this module's failed logins only."""
    return create_app()


@pytest.fixture(scope="module")
def world(module_engine: Engine) -> Iterator[World]:
    previous = db.get_engine()
    db.use_engine(module_engine)
    try:
        yield build_world(module_engine)
    finally:
        db.use_engine(previous)


def fingerprint(engine: Engine) -> tuple[int, ...]:
    """Rows in every table, and the states a console, dispatch or visit action moves."""
    with Session(engine) as s:
        counts = [
            select(func.count()).select_from(table) for table in db.Base.metadata.sorted_tables
        ]
        states = [
            select(func.count()).where(Alarm.status != "new"),
            select(func.count()).where(Case.state != "dispatch"),
            select(func.count()).where(Offer.status != "pending"),
            select(func.count()).where(Visit.status != "planned"),
        ]
        return tuple(int(s.scalar(query) or 0) for query in (*counts, *states))


def clients(app: FastAPI, world: World, role: str) -> list[TestClient]:
    """The caller's clients: a volunteer tries the link token as cookie and as Bearer token."""
    if role == "anonymous":
        return [TestClient(app)]
    if role == "volunteer":
        _, _, token = world.new_offer()
        as_cookie = TestClient(app, cookies={SESSION_COOKIE: token})
        as_bearer = TestClient(app, headers={"Authorization": f"Bearer {token}"})
        return [as_cookie, as_bearer]
    return [TestClient(app, cookies={SESSION_COOKIE: world.session_tokens[role]})]


def prepare(key: str, entry: Entry, world: World, role: str) -> tuple[str, str, dict[str, Any]]:
    """The request's method, URL and body, with fresh objects made for this caller."""
    method, path = key.split(" ", 1)
    if path == "/static":
        path = "/static/{path}"
    url = path.format(**entry.params(world, role))
    if entry.query:
        url += "?" + entry.query
    kwargs: dict[str, Any] = {"follow_redirects": False}
    if entry.json is not None:
        kwargs["json"] = entry.json(world, role)
    if entry.form is not None:
        kwargs["data"] = entry.form(world, role)
    return method, url, kwargs


@pytest.mark.parametrize("key", sorted(TABLE))
def test_access(key: str, app: FastAPI, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console_api, "EVENTS_STREAM_S", 0.0)  # one event, then the stream ends
    entry = TABLE[key]
    assert set(entry.expect) == set(ROLES), f"{key}: give a status for every role"
    wrong = []
    for role in ROLES:
        for client in clients(app, world, role):
            method, url, kwargs = prepare(key, entry, world, role)
            before = fingerprint(world.engine)
            response = client.request(method, url, **kwargs)
            expected = entry.expect[role]
            if response.status_code != expected:
                wrong.append(
                    f"{role}: {response.status_code} (expected {expected}) {response.text[:200]}"
                )
            elif expected in (401, 403):
                assert fingerprint(world.engine) == before, f"{key} {role}: refused, yet changed"
    assert not wrong, f"{key}: " + "; ".join(wrong)
