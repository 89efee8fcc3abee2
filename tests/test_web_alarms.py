"""GET /api/alarms and console login, on both databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from callcenter import db
from callcenter.intake import Press, record_alarm
from callcenter.models import AlarmKind, AlarmSource, Role
from callcenter.web.app import create_app
from callcenter.web.auth import add_user
from devices.models import TerminalProtocol
from tests.factories import make_elder, make_terminal

PASSWORD = "correct horse battery"


@pytest.fixture
def client(fresh_engine: Engine) -> Iterator[TestClient]:
    previous = db.get_engine()
    db.use_engine(fresh_engine)
    with Session(fresh_engine) as s:
        add_user(s, username="op1", password=PASSWORD, role=Role.OPERATOR, display_name="张接警")
        s.commit()
    try:
        yield TestClient(create_app())
    finally:
        db.use_engine(previous)


def login(client: TestClient) -> None:
    response = client.post("/api/session", json={"username": "op1", "password": PASSWORD})
    assert response.status_code == 200, response.text


def test_alarms_need_a_login(client: TestClient) -> None:
    assert client.get("/api/alarms").status_code == 401
    bad = client.post("/api/session", json={"username": "op1", "password": "wrong password"})
    assert bad.status_code == 401
    forged = client.get("/api/alarms", headers={"Authorization": "Bearer not-a-token"})
    assert forged.status_code == 401


def test_alarms_newest_first_with_elder_terminal_and_kind(
    client: TestClient, fresh_engine: Engine
) -> None:
    with Session(fresh_engine, expire_on_commit=False) as s:
        elder = make_elder(s, name="陈来顺")
        terminal = make_terminal(s, elder, TerminalProtocol.DTMF)
        s.commit()
        for n, kind in enumerate((AlarmKind.SERVICE, AlarmKind.LIFE_SAFETY)):
            record_alarm(s, Press(source=AlarmSource.DTMF, kind=kind, dedup_key=f"k{n}",
                                  terminal_id=terminal.id, elder_id=elder.id))  # fmt: skip
        record_alarm(s, Press(source=AlarmSource.DTMF, kind=AlarmKind.UNIDENTIFIED,
                              dedup_key="k9", caller="stranger"))  # fmt: skip
    login(client)
    alarms = client.get("/api/alarms").json()
    assert [a["kind"] for a in alarms] == ["unidentified", "life_safety", "service"]
    newest, sos, _ = alarms
    assert newest["elder"] is None and newest["priority"] == 1
    assert sos["elder"]["name"] == "陈来顺" and sos["terminal"]["serial"] == terminal.serial
    assert sos["case"]["code"] and sos["received_at"]
    only_service = client.get("/api/alarms", params={"kind": "service"}).json()
    assert [a["kind"] for a in only_service] == ["service"]
    assert client.get("/api/alarms", params={"limit": 0}).status_code == 422
