"""Schemathesis against the app's own OpenAPI schema: every operation, as an anonymous caller and
as a logged-in admin, with generated (valid and invalid) parameters and bodies.

Bounded and reproducible: 25 examples per operation and caller, derandomised, on SQLite (the
database is not what is tested here; PostgreSQL's own refusals are tested with the text fields in
test_hostile_http.py). Every answer must be no server error, of a documented content type, and
match its documented schema. Undocumented status codes (FastAPI documents 200 and 422; a 401,
403, 404 or 409 is the domain speaking) are not a failure: the access table tests who gets what.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)
from sqlalchemy import Engine

from callcenter import db
from callcenter.web import console_api
from callcenter.web.app import create_app
from callcenter.web.auth import SESSION_COOKIE
from tests.reliability.world import World, build_world

APP = create_app()
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)
CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]
# Not ready is what /readyz exists to say: 503 with its reasons when no scheduler has run.
BY_DESIGN_5XX = {("GET", "/readyz"): 503}


@pytest.fixture(scope="module")
def world(sqlite_template: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    import shutil

    path = tmp_path_factory.mktemp("openapi") / "openapi.db"
    shutil.copyfile(str(sqlite_template), path)
    engine: Engine = db.make_engine(f"sqlite:///{path}")
    previous = db.get_engine()
    db.use_engine(engine)
    try:
        yield build_world(engine, staff=("admin",), volunteers=1)
    finally:
        db.use_engine(previous)
        engine.dispose()


@pytest.fixture(autouse=True)
def short_event_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console_api, "EVENTS_STREAM_S", 0.0)  # one event, then the stream ends


@pytest.mark.parametrize("caller", ["anonymous", "admin"])
@SCHEMA.parametrize()
@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_answers_hostile_requests_without_server_errors(
    case: schemathesis.Case, caller: str, world: World
) -> None:
    key = (case.method.upper(), case.operation.path)
    cookies = {SESSION_COOKIE: world.session_tokens["admin"]} if caller == "admin" else {}
    response = case.call(cookies=cookies)
    if BY_DESIGN_5XX.get(key) == response.status_code:
        assert response.json()["status"] != "ok"
        return
    case.validate_response(response, checks=CHECKS)
