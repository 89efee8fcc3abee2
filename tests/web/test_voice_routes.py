"""The console's voice API and the voice_calls table on both databases, without a call handler:
who may connect, what a request looks like to the handlers (claim race, call-back target,
restart clean-up), no handler → 503, pyVoIP → 409, recordings served only from their folder.
The calls themselves are in tests/sip/test_voice_bridge.py."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from callcenter import db, voice_calls
from callcenter.console import claim_alarm
from callcenter.intake import Press, record_alarm
from callcenter.models import AlarmKind, AlarmSource, Operator, Role
from callcenter.settings import get_settings
from callcenter.voice_models import VoiceCall, VoiceCallMode, VoiceCallState
from callcenter.web import voice_routes
from callcenter.web.app import create_app
from callcenter.web.auth import add_user
from devices.models import TerminalProtocol
from tests.factories import make_elder, make_terminal
from tests.web.clients import PASSWORD, logged_in


@dataclass
class World:
    engine: Engine
    recordings: Path
    alarm_id: int
    other_alarm_id: int


@pytest.fixture
def world(fresh_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    previous = db.get_engine()
    db.use_engine(fresh_engine)
    monkeypatch.setenv("HYT_RECORDINGS_DIR", str(tmp_path / "recordings"))
    get_settings.cache_clear()
    with Session(fresh_engine, expire_on_commit=False) as s:
        op1 = add_user(s, username="op1", password=PASSWORD, role=Role.OPERATOR)
        op1.sip_uri = "sip:desk1@127.0.0.1:5999"
        add_user(s, username="op2", password=PASSWORD, role=Role.OPERATOR)
        alarms = []
        for n in range(2):
            elder = make_elder(s)
            terminal = make_terminal(s, elder, TerminalProtocol.EXTENSION)
            s.commit()
            alarms.append(record_alarm(s, Press(
                source=AlarmSource.EXTENSION, kind=AlarmKind.LIFE_SAFETY, dedup_key=f"sos{n}",
                terminal_id=terminal.id, elder_id=elder.id, caller=terminal.sip_user or "",
                raw={"source": "127.0.0.1:5080",
                     "contact": f"sip:{terminal.sip_user}@192.0.2.7:5080"},
            )).alarm_id)  # fmt: skip
    try:
        yield World(fresh_engine, tmp_path / "recordings", alarms[0], alarms[1])
    finally:
        db.use_engine(previous)
        get_settings.cache_clear()


VOICE_ROUTES = [
    ("POST", "/api/alarms/1/voice"),
    ("GET", "/api/alarms/1/voice"),
    ("GET", "/api/recordings/1"),
]


def test_every_voice_route_needs_a_login(world: World) -> None:
    anonymous = TestClient(create_app())
    for method, path in VOICE_ROUTES:
        assert anonymous.request(method, path).status_code == 401, (method, path)
        forged = anonymous.request(method, path, headers={"Authorization": "Bearer forged"})
        assert forged.status_code == 401, (method, path)


def test_only_the_operator_who_claimed_may_connect(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(voice_routes, "TAKEN_WAIT_S", 0.3)
    op1, op2 = logged_in("op1"), logged_in("op2")
    unclaimed = op1.post(f"/api/alarms/{world.alarm_id}/voice")
    assert unclaimed.status_code == 409 and "claim" in unclaimed.json()["detail"]
    assert op1.post(f"/api/alarms/{world.alarm_id}/claim").status_code == 200
    assert op2.post(f"/api/alarms/{world.alarm_id}/voice").status_code == 403
    assert op1.post("/api/alarms/999999/voice").status_code == 404
    # No call handler runs here: the request is failed after the wait, and says why.
    nobody = op1.post(f"/api/alarms/{world.alarm_id}/voice")
    assert nobody.status_code == 503 and "hyt sip" in nobody.json()["detail"]
    (row,) = op1.get(f"/api/alarms/{world.alarm_id}/voice").json()
    assert row["state"] == "failed" and row["reason"] == voice_routes.NO_HANDLER
    # A failed request does not block the next one.
    assert op1.post(f"/api/alarms/{world.alarm_id}/voice").status_code == 503
    # An operator without a phone of their own, on a site without a desk phone setting.
    assert op2.post(f"/api/alarms/{world.other_alarm_id}/claim").status_code == 200
    no_phone = op2.post(f"/api/alarms/{world.other_alarm_id}/voice")
    assert no_phone.status_code == 409 and "HYT_OPERATOR_PHONE_URI" in no_phone.json()["detail"]


def test_pyvoip_backend_cannot_connect(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYT_SIP_BACKEND", "pyvoip")
    get_settings.cache_clear()
    op1 = logged_in("op1")
    assert op1.post(f"/api/alarms/{world.alarm_id}/claim").status_code == 200
    refused = op1.post(f"/api/alarms/{world.alarm_id}/voice")
    assert refused.status_code == 409 and "pyvoip" in refused.json()["detail"]


def _op1(s: Session) -> Operator:
    return s.scalars(select(Operator).where(Operator.username == "op1")).one()


def _request(world: World, alarm_id: int) -> int:
    with Session(world.engine, expire_on_commit=False) as s:
        operator = _op1(s)
        claim_alarm(s, alarm_id=alarm_id, operator_id=operator.id)
        row = voice_calls.request_voice_call(
            s, alarm_id=alarm_id, operator=operator, settings=get_settings()
        )
        s.commit()
        return row.id


def test_one_handler_claims_a_request(world: World) -> None:
    voice_call_id = _request(world, world.alarm_id)
    with Session(world.engine) as s:
        (pending,) = voice_calls.pending_voice_calls(s)
        assert (pending.id, pending.operator_uri) == (voice_call_id, "sip:desk1@127.0.0.1:5999")

    def claim(handler: str) -> bool:
        with Session(world.engine) as s:
            return voice_calls.claim_voice_call(
                s, voice_call_id=voice_call_id, handler=handler, mode=VoiceCallMode.BRIDGE
            )

    with ThreadPoolExecutor(2) as pool:
        won = list(pool.map(claim, ["host-a:5060", "host-b:5060"]))
    assert sorted(won) == [False, True]
    with Session(world.engine) as s:
        assert voice_calls.pending_voice_calls(s) == []
        row = s.get_one(VoiceCall, voice_call_id)
        assert row.state is VoiceCallState.CONNECTING and row.active_alarm_id == world.alarm_id
        # A restarted handler fails what it left ringing; the alarm can be connected again.
        assert voice_calls.fail_abandoned(s, handler=row.handler) == []
        s.expire_all()
        row = s.get_one(VoiceCall, voice_call_id)
        assert row.state is VoiceCallState.FAILED and row.active_alarm_id is None
        assert row.reason == voice_calls.HANDLER_RESTARTED
        # One that was talking is handed back to be finished with its audio, not failed.
        s.rollback()  # SQLite: our read transaction holds the write lock (BEGIN IMMEDIATE)
        talking = _request(world, world.other_alarm_id)
        assert voice_calls.claim_voice_call(
            s, voice_call_id=talking, handler="host-a:5060", mode=VoiceCallMode.BRIDGE
        )
        voice_calls.mark_connected(s, voice_call_id=talking, mode=VoiceCallMode.BRIDGE)
        assert voice_calls.fail_abandoned(s, handler="host-a:5060") == [talking]


def test_call_back_goes_where_the_call_came_from_or_through_the_edge(world: World) -> None:
    with Session(world.engine) as s:
        direct = voice_calls.call_back_target(s, alarm_id=world.alarm_id, edge="")
        assert direct is not None and direct.destination == "127.0.0.1:5080"
        assert direct.uri.startswith("sip:ft") and direct.uri.endswith("@192.0.2.7:5080")
        edge = voice_calls.call_back_target(s, alarm_id=world.alarm_id, edge="10.0.0.5:5060")
        assert edge is not None and edge.destination == "10.0.0.5:5060"
        assert edge.uri == direct.uri.split("@")[0] + "@10.0.0.5:5060"
        assert voice_calls.call_back_target(s, alarm_id=999999, edge="") is None


def test_recordings_are_served_only_from_their_folder(world: World) -> None:
    world.recordings.mkdir(parents=True)
    (world.recordings / "voice-000001.wav").write_bytes(b"RIFF....WAVE")
    (world.recordings.parent / "secret.wav").write_bytes(b"no")
    with Session(world.engine) as s:
        for name in ("voice-000001.wav", "../secret.wav", "voice-000002.wav"):
            s.add(VoiceCall(alarm_id=world.alarm_id, operator_id=_op1(s).id, operator_uri="sip:x@y",
                            state=VoiceCallState.ENDED, recording_file=name))  # fmt: skip
        s.commit()
        ids = list(s.scalars(select(VoiceCall.id).order_by(VoiceCall.id)))
    op1 = logged_in("op1")
    served = op1.get(f"/api/recordings/{ids[0]}")
    assert served.status_code == 200 and served.content == b"RIFF....WAVE"
    assert op1.get(f"/api/recordings/{ids[1]}").status_code == 404  # outside the folder
    assert op1.get(f"/api/recordings/{ids[2]}").status_code == 404  # not on disk
