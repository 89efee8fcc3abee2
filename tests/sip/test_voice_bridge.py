"""The operator talks to the elder: a real call handler (``hyt sip``, default backend), SIPp as
the elder's terminal sending a 440 Hz "voice", a hand-written SIP desk phone as the operator's
sending 1000 Hz, and the console's API in this process on the same database: the request
crosses from the web process to the handler through the ``voice_calls`` table, as at a site.

Checked: each side hears the other (by tone), the recording holds both (elder left, operator
right), it is attached to the case, a BYE from either side ends both legs, a busy phone gets
its ACK and the elder stays held, a gone elder is called back, and only the operator who
claimed the alarm may connect.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiortp.codecs.g711 import PcmuCodec
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from callcenter import db
from callcenter.models import Alarm, CaseEvent, Role
from callcenter.settings import get_settings
from callcenter.web.app import create_app
from callcenter.web.auth import add_user
from devices.models import TerminalProtocol
from tests.conftest import _fresh_postgres
from tests.factories import make_elder, make_terminal
from tests.sip.handler_process import ROOT, options_status, rtp_block, start_handler
from tests.sip.pcap import write_tone_pcap
from tests.sip.sip_phone import FakePhone, seconds_of, tone_share
from tests.sip.sipp import answer_scenario, call_scenario, free_udp_port, run_sipp

PASSWORD = "correct horse battery"
ELDER_HZ, OPERATOR_HZ, PROMPT_HZ = 440.0, 1000.0, 600.0
PROMPT_S = 8.0


@dataclass
class VoiceCentre:
    address: tuple[str, int]
    engine: Engine
    recordings: Path
    log: Path


def _write_prompt(path: Path, hz: float, seconds: float) -> None:
    """A short stand-in for the "help is coming" prompt, so that a call is held at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"".join(
            struct.pack("<h", int(9000 * math.sin(2 * math.pi * hz * n / 8000)))
            for n in range(int(seconds * 8000))
        ))  # fmt: skip


@pytest.fixture(scope="module")
def voice_centre(
    postgres_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VoiceCentre]:
    databases = _fresh_postgres(postgres_template)
    url = next(databases)
    engine = db.make_engine(url)
    tmp = tmp_path_factory.mktemp("voice")
    # Longer than the tests wait: the prompt must be cut short when the operator answers.
    _write_prompt(tmp / "prompts" / "zh" / "help_coming.wav", PROMPT_HZ, PROMPT_S)
    recordings = tmp / "recordings"
    env = {
        "HYT_LIFE_SAFETY_HOLD_S": "60",
        "HYT_VOICE_HOLD_REMINDER_S": "0",
        "HYT_VOICE_RING_S": "10",
        "HYT_PROMPT_DIR": str(tmp / "prompts"),
        "HYT_RECORDINGS_DIR": str(recordings),
    }
    rtp_low = rtp_block() + 500
    previous = db.get_engine()
    try:
        with start_handler(
            url, tmp / "centre.log", backend="aiosipua", rtp=(rtp_low, rtp_low + 498), env=env
        ) as handler:
            # The console in this process, on the same database and recordings folder.
            db.use_engine(engine)
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("HYT_RECORDINGS_DIR", str(recordings))
                get_settings.cache_clear()
                yield VoiceCentre(handler.address, engine, recordings, handler.log)
    finally:
        get_settings.cache_clear()
        db.use_engine(previous)
        engine.dispose()
        next(databases, None)  # drops the database


@dataclass
class Scene:
    sip_user: str
    terminal_id: int
    operator: TestClient
    other: TestClient


def scene(centre: VoiceCentre, phone: FakePhone) -> Scene:
    """An elder with an SOS terminal (HYT-T100: dialling 110 is the SOS button), the operator
    whose desk phone is ``phone``, and a second operator."""
    suffix = os.urandom(4).hex()
    with Session(centre.engine) as s:
        terminal = make_terminal(s, make_elder(s), TerminalProtocol.EXTENSION)
        operator = add_user(s, username=f"op-{suffix}", password=PASSWORD, role=Role.OPERATOR)
        operator.sip_uri = phone.uri
        add_user(s, username=f"other-{suffix}", password=PASSWORD, role=Role.OPERATOR)
        s.commit()
        found = Scene(terminal.sip_user or "", terminal.id, login(f"op-{suffix}"),
                      login(f"other-{suffix}"))  # fmt: skip
    return found


def login(username: str) -> TestClient:
    client = TestClient(create_app())
    response = client.post("/api/session", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return client


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def alarm_of(centre: VoiceCentre, terminal_id: int) -> int:
    found: list[int] = []

    def stored() -> bool:
        with Session(centre.engine) as s:
            found[:] = s.scalars(select(Alarm.id).where(Alarm.terminal_id == terminal_id)).all()
        return bool(found)

    wait_for(stored, 10, "the SOS alarm")
    return found[0]


def voice_calls(client: TestClient, alarm_id: int) -> list[dict[str, object]]:
    response = client.get(f"/api/alarms/{alarm_id}/voice")
    assert response.status_code == 200, response.text
    calls: list[dict[str, object]] = response.json()
    return calls


def wait_state(client: TestClient, alarm_id: int, call_id: object, state: str) -> dict[str, object]:
    def reached() -> bool:
        return any(
            c["id"] == call_id and c["state"] == state for c in voice_calls(client, alarm_id)
        )

    wait_for(reached, 15, f"voice call {call_id} {state}")
    return next(c for c in voice_calls(client, alarm_id) if c["id"] == call_id)


class Ear:
    """The elder's loudspeaker: where the terminal's SDP tells the centre to send audio."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.heard = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        codec = PcmuCodec()
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                continue
            if len(data) > 12 and data[1] & 0x7F == 0:
                self.heard += codec.decode(data[12:])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def channels(wav_bytes: bytes) -> tuple[bytes, bytes]:
    with wave.open(io.BytesIO(wav_bytes)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        frames = w.readframes(w.getnframes())
    left = b"".join(frames[i : i + 2] for i in range(0, len(frames), 4))
    right = b"".join(frames[i + 2 : i + 4] for i in range(0, len(frames), 4))
    return left, right


def assert_recording_holds_both(client: TestClient, call: dict[str, object]) -> None:
    assert call["recording_url"] == f"/api/recordings/{call['id']}"
    response = client.get(str(call["recording_url"]))
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    elder, operator = channels(response.content)
    assert seconds_of(elder) >= 1.5, call
    assert tone_share(elder, ELDER_HZ) > 0.8 and tone_share(elder, OPERATOR_HZ) < 0.1
    assert tone_share(operator, OPERATOR_HZ) > 0.8 and tone_share(operator, ELDER_HZ) < 0.1


def test_operator_talks_with_the_elder_recorded_and_attached(
    voice_centre: VoiceCentre, tmp_path: Path
) -> None:
    phone, ear = FakePhone(tone_hz=OPERATOR_HZ, busy_first=1), Ear()
    pcap = write_tone_pcap(tmp_path / "elder.pcap", ELDER_HZ, seconds=15)
    s = scene(voice_centre, phone)
    terminal = call_scenario(user=s.sip_user, dialled="110", hangup="centre", dtmf_pcap=pcap,
                             media_port=ear.port)  # fmt: skip
    try:
        with ThreadPoolExecutor(1) as pool:
            elder = pool.submit(run_sipp, terminal, voice_centre.address, timeout_s=40)
            alarm_id = alarm_of(voice_centre, s.terminal_id)
            refused = s.operator.post(f"/api/alarms/{alarm_id}/voice")
            assert refused.status_code == 409 and "claim" in refused.json()["detail"]
            assert s.operator.post(f"/api/alarms/{alarm_id}/claim").status_code == 200
            assert s.other.post(f"/api/alarms/{alarm_id}/voice").status_code == 403

            # The desk phone is busy the first time: that attempt fails, the elder stays held.
            # (409 if it failed before the request was answered, else 202 and then failed).
            busy = s.operator.post(f"/api/alarms/{alarm_id}/voice")
            assert busy.status_code in (202, 409), busy.text
            if busy.status_code == 202:
                assert busy.json()["mode"] == "bridge"
                wait_state(s.operator, alarm_id, busy.json()["id"], "failed")
            failed = voice_calls(s.operator, alarm_id)[0]
            assert failed["state"] == "failed" and "486" in str(failed["reason"])
            wait_for(lambda: phone.acks, 3, "the ACK of the 486 (RFC 3261 §17.1.1.3)")
            assert "CSeq: 1 ACK" in phone.acks[0]

            again = s.operator.post(f"/api/alarms/{alarm_id}/voice")
            assert again.status_code == 202, again.text
            assert s.operator.post(f"/api/alarms/{alarm_id}/voice").status_code == 409
            wait_state(s.operator, alarm_id, again.json()["id"], "connected")
            wait_for(lambda: seconds_of(phone.heard) > 2.5 and seconds_of(ear.heard) > 2.5,
                     15, "two and a half seconds of audio each way")  # fmt: skip
            phone.hang_up()
            result = elder.result(timeout=30)
        assert result.ok, result.output  # the terminal got the centre's BYE and said 200
        wait_for(phone.bye_answered.is_set, 5, "200 to the phone's BYE")
        call = wait_state(s.operator, alarm_id, again.json()["id"], "ended")
        assert call["ended_by"] == "operator" and call["mode"] == "bridge"
        # Each side heard the other.
        assert tone_share(bytes(phone.heard), ELDER_HZ) > 0.8
        # Before the operator answered the elder heard the prompt, then only the operator.
        assert tone_share(bytes(ear.heard[-2 * 16000 :]), OPERATOR_HZ) > 0.8
        assert tone_share(bytes(ear.heard), PROMPT_HZ) > 0.05
        assert_recording_holds_both(s.operator, call)
        with Session(voice_centre.engine) as db_session:
            alarm = db_session.get(Alarm, alarm_id)
            assert alarm is not None and alarm.case_id is not None
            events = db_session.scalars(
                select(CaseEvent).where(CaseEvent.case_id == alarm.case_id)
            ).all()
        noted = {e.event: e.detail for e in events}
        assert "486" in noted["voice_call_failed"]["reason"]
        assert noted["voice_call"]["recording"] == call["recording_url"]
        assert noted["voice_call"]["recording_s"] >= 1.5
        assert noted["voice_call"]["ended_by"] == "operator"
        anonymous = TestClient(create_app())
        assert anonymous.get(str(call["recording_url"])).status_code == 401
    finally:
        phone.close()
        ear.close()


def test_the_elder_hanging_up_ends_the_operators_call(
    voice_centre: VoiceCentre, tmp_path: Path
) -> None:
    phone = FakePhone(tone_hz=OPERATOR_HZ)
    pcap = write_tone_pcap(tmp_path / "elder.pcap", ELDER_HZ, seconds=10)
    s = scene(voice_centre, phone)
    terminal = call_scenario(user=s.sip_user, dialled="110", hangup="terminal", hold_ms=3000,
                             dtmf_pcap=pcap)  # fmt: skip
    try:
        with ThreadPoolExecutor(1) as pool:
            elder = pool.submit(run_sipp, terminal, voice_centre.address, timeout_s=30)
            alarm_id = alarm_of(voice_centre, s.terminal_id)
            assert s.operator.post(f"/api/alarms/{alarm_id}/claim").status_code == 200
            asked = time.monotonic()
            started = s.operator.post(f"/api/alarms/{alarm_id}/voice")
            assert started.status_code == 202, started.text
            wait_state(s.operator, alarm_id, started.json()["id"], "connected")
            # The phone answers at once: the 8 s prompt was cut short for the operator.
            assert time.monotonic() - asked < PROMPT_S / 2
            result = elder.result(timeout=30)
        assert result.ok, result.output
        wait_for(phone.bye_received.is_set, 5, "the centre's BYE to the operator's phone")
        assert phone.byes[0].startswith(f"BYE {phone.contact} ")  # the 2xx's Contact
        call = wait_state(s.operator, alarm_id, started.json()["id"], "ended")
        assert call["ended_by"] == "elder"
        assert seconds_of(phone.heard) > 1 and tone_share(bytes(phone.heard), ELDER_HZ) > 0.8
    finally:
        phone.close()


def test_a_gone_elder_is_called_back(voice_centre: VoiceCentre, tmp_path: Path) -> None:
    phone = FakePhone(tone_hz=OPERATOR_HZ)
    pcap = write_tone_pcap(tmp_path / "elder.pcap", ELDER_HZ, seconds=10)
    s = scene(voice_centre, phone)
    terminal_port = free_udp_port()
    # The elder presses SOS and hangs up after the prompt.
    pressed = run_sipp(
        call_scenario(user=s.sip_user, dialled="110", hangup="terminal", hold_ms=300),
        voice_centre.address, timeout_s=20, local_port=terminal_port,
    )  # fmt: skip
    assert pressed.ok, pressed.output
    alarm_id = alarm_of(voice_centre, s.terminal_id)
    try:
        with ThreadPoolExecutor(1) as pool:
            # The terminal answers where it called from (its Contact).
            answering = pool.submit(run_sipp, answer_scenario(user=s.sip_user, audio_pcap=pcap),
                                    voice_centre.address, timeout_s=30,
                                    local_port=terminal_port)  # fmt: skip
            time.sleep(0.3)  # SIPp binds its port
            assert s.operator.post(f"/api/alarms/{alarm_id}/claim").status_code == 200
            started = s.operator.post(f"/api/alarms/{alarm_id}/voice")
            assert started.status_code == 202, started.text
            assert started.json()["mode"] == "call_back"
            wait_state(s.operator, alarm_id, started.json()["id"], "connected")
            wait_for(lambda: seconds_of(phone.heard) > 1.5, 15, "the elder's voice on the phone")
            phone.hang_up()
            result = answering.result(timeout=30)
        assert result.ok, result.output  # the terminal got the centre's BYE
        call = wait_state(s.operator, alarm_id, started.json()["id"], "ended")
        assert call["mode"] == "call_back" and call["ended_by"] == "operator"
        assert_recording_holds_both(s.operator, call)
    finally:
        phone.close()


def test_in_one_process_on_sqlite_the_request_is_taken_at_once(
    sqlite_template: Path, tmp_path: Path
) -> None:
    """``hyt serve`` (a small site: web and call handler in one process, SQLite): the same
    table, but the handler is woken by the request instead of finding it at its next poll."""
    database = tmp_path / "serve.db"
    shutil.copyfile(sqlite_template, database)
    engine = db.make_engine(f"sqlite:///{database}")
    phone = FakePhone(tone_hz=OPERATOR_HZ)
    with Session(engine) as s:
        terminal = make_terminal(s, make_elder(s), TerminalProtocol.EXTENSION)
        add_user(s, username="desk", password=PASSWORD, role=Role.OPERATOR).sip_uri = phone.uri
        s.commit()
        sip_user = terminal.sip_user or ""
    engine.dispose()
    _write_prompt(tmp_path / "prompts" / "zh" / "help_coming.wav", PROMPT_HZ, 0.3)
    sip_port, http_port, rtp_low = free_udp_port(), free_tcp_port(), rtp_block() + 500
    env = {
        **os.environ,
        "HYT_ENV": "test",
        "HYT_SECRET_KEY": "test-secret-key-0123456789-abcdefghijklmnop",
        "HYT_DATABASE_URL": f"sqlite:///{database}",
        "HYT_SIP_HOST": "127.0.0.1",
        "HYT_SIP_PORT": str(sip_port),
        "HYT_HTTP_PORT": str(http_port),
        "HYT_SCAIP_PORT": str(free_udp_port()),
        "HYT_RTP_PORT_LOW": str(rtp_low),
        "HYT_RTP_PORT_HIGH": str(rtp_low + 498),
        "HYT_VOICE_HOLD_REMINDER_S": "0",
        "HYT_PROMPT_DIR": str(tmp_path / "prompts"),
        "HYT_RECORDINGS_DIR": str(tmp_path / "recordings"),
    }
    pcap = write_tone_pcap(tmp_path / "elder.pcap", ELDER_HZ, seconds=8)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "callcenter", "serve"], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 30
        while options_status("127.0.0.1", sip_port, 0.5) is None or not _http_up(base):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"hyt serve did not start:\n{log.read_text()[-3000:]}")
        web = httpx.Client(base_url=base, timeout=15)
        session = web.post("/api/session", json={"username": "desk", "password": PASSWORD})
        assert session.status_code == 200, session.text
        terminal_call = call_scenario(user=sip_user, dialled="110", hangup="terminal",
                                      hold_ms=2500, dtmf_pcap=pcap)  # fmt: skip
        with ThreadPoolExecutor(1) as pool:
            elder = pool.submit(run_sipp, terminal_call, ("127.0.0.1", sip_port), timeout_s=30)
            alarm_id = _first_alarm(web)
            assert web.post(f"/api/alarms/{alarm_id}/claim").status_code == 200
            asked = time.monotonic()
            started = web.post(f"/api/alarms/{alarm_id}/voice")
            taken_in = time.monotonic() - asked
            assert started.status_code == 202, started.text
            assert started.json()["mode"] == "bridge"
            result = elder.result(timeout=30)
        assert result.ok, result.output
        # Woken at once, not at the next 0.25 s poll (plus the web's own 0.1 s re-read).
        assert taken_in < 0.5, taken_in
        wait_for(phone.bye_received.is_set, 5, "the centre's BYE to the operator's phone")

        def ended() -> bool:
            calls = web.get(f"/api/alarms/{alarm_id}/voice").json()
            return bool(calls) and calls[0]["state"] == "ended"

        wait_for(ended, 10, "the call to end")
        (call,) = web.get(f"/api/alarms/{alarm_id}/voice").json()
        recording = web.get(call["recording_url"])
        elder_channel, operator_channel = channels(recording.content)
        assert tone_share(elder_channel, ELDER_HZ) > 0.8
        assert tone_share(operator_channel, OPERATOR_HZ) > 0.8
    finally:
        phone.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _http_up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/login", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def _first_alarm(web: httpx.Client) -> int:
    found: list[int] = []

    def queued() -> bool:
        found[:] = [item["id"] for item in web.get("/api/queue").json()]
        return bool(found)

    wait_for(queued, 10, "the SOS alarm in the queue")
    return found[0]
