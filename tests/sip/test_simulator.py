"""The terminal simulator (devices/simulator.py) placing real calls to the real call handler.

The handler runs in-process on a free UDP port against a fresh database (SQLite and
PostgreSQL), the simulator in the same event loop; the last test drives ``hyt terminal`` against
an ``hyt sip`` process. Each scenario runs under ``asyncio.run`` with a generous bound: the
machine may be loaded.
"""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from callcenter import db
from callcenter.models import Alarm, AlarmKind, AlarmSource, Case
from callcenter.settings import Settings
from callcenter.sip.runner import start_sip
from devices import contact_id, scaip, simulator, tones
from devices.models import Terminal, TerminalProtocol
from tests.factories import make_elder, make_terminal
from tests.sip.handler_process import start_handler

ROOT = Path(__file__).parents[2]
SECRET = "simulator-test-secret-0123456789abcdefghij"  # 40 characters
SCENARIO_LIMIT_S = 120.0
T = TypeVar("T")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rtp_range() -> tuple[int, int]:
    """A small slice of the centre's RTP range, so that parallel runs rarely meet."""
    low = random.randrange(20000, 29600, 2)
    return low, low + 300


@dataclass
class Seeded:
    serial: str
    model: str
    sip_user: str
    account: str | None
    elder_id: int
    terminal_id: int


def seed(engine: Engine, protocol: TerminalProtocol, **fields: object) -> Seeded:
    with Session(engine) as s:
        elder = make_elder(s)
        terminal = make_terminal(s, elder, protocol, **fields)
        s.commit()
        return Seeded(
            terminal.serial,
            terminal.model,
            terminal.sip_user or "",
            terminal.account,
            elder.id,
            terminal.id,
        )


def alarms(engine: Engine) -> list[Alarm]:
    with Session(engine) as s:
        return list(s.scalars(select(Alarm).order_by(Alarm.id)))


@pytest.fixture
def centre_db(
    fresh_url: str, fresh_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Engine]]:
    # start_sip reads the process-wide engine; put the previous one back afterwards.
    monkeypatch.setattr(db, "_engine", db._engine)
    monkeypatch.setattr(db, "_session_factory", db._session_factory)
    db.use_engine(fresh_engine)
    yield fresh_url, fresh_engine


def with_centre(
    url: str, scenario: Callable[[tuple[str, int]], Awaitable[T]], *, hold_s: int = 10
) -> T:
    """Run ``scenario(centre_address)`` against a call handler started in-process."""
    port = free_udp_port()
    low, high = rtp_range()
    settings = Settings(
        env="test",
        secret_key=SECRET,
        database_url=url,
        sip_host="127.0.0.1",
        sip_port=port,
        rtp_port_low=low,
        rtp_port_high=high,
        life_safety_hold_s=hold_s,
    )

    async def main() -> T:
        async with AsyncExitStack() as stack:
            await start_sip(settings, stack, calls=True, scaip=True)
            return await asyncio.wait_for(scenario(("127.0.0.1", port)), SCENARIO_LIMIT_S)

    return asyncio.run(main())


# -- against the call handler, in-process ----------------------------------------------------


def test_dtmf_service_press(centre_db: tuple[str, Engine]) -> None:
    url, engine = centre_db
    t = seed(engine, TerminalProtocol.DTMF)
    result = with_centre(
        url,
        lambda centre: simulator.press(
            centre, sip_user=t.sip_user, button="service", model=t.model
        ),
    )
    assert (result.answered, result.status, result.digits_sent) == (True, 200, "2")
    # The centre says "service received" and clears the call itself.
    assert result.centre_hung_up and result.audio_s > 1.0
    (alarm,) = alarms(engine)
    assert (alarm.kind, alarm.source, alarm.elder_id, alarm.terminal_id, alarm.event_code) == (
        AlarmKind.SERVICE, AlarmSource.DTMF, t.elder_id, t.terminal_id, "2"
    )  # fmt: skip
    assert alarm.acknowledged_at is not None  # the prompt was played out before we left


def test_extension_sos_is_held(centre_db: tuple[str, Engine]) -> None:
    url, engine = centre_db
    t = seed(engine, TerminalProtocol.EXTENSION)
    result = with_centre(
        url,
        lambda centre: simulator.press(centre, sip_user=t.sip_user, button="sos", model=t.model),
    )
    # HYT-T100 dials 110 for SOS; the centre keeps an SOS call up for the operator, so the
    # terminal is the one that hangs up.
    assert (result.answered, result.dialled, result.digits_sent) == (True, "110", "")
    assert not result.centre_hung_up
    (alarm,) = alarms(engine)
    assert (alarm.kind, alarm.source, alarm.elder_id, alarm.event_code) == (
        AlarmKind.LIFE_SAFETY, AlarmSource.EXTENSION, t.elder_id, "110"
    )  # fmt: skip
    assert alarm.case_id is not None


def test_contact_id_pendant_alarm_is_kissed_off(centre_db: tuple[str, Engine]) -> None:
    url, engine = centre_db
    t = seed(engine, TerminalProtocol.CONTACT_ID, account="4321")
    message = contact_id.encode("4321", "101", zone="001")
    result = with_centre(
        url, lambda centre: simulator.press(centre, sip_user=t.sip_user, contact_id=[message])
    )
    assert result.answered and result.handshake_heard
    assert result.digits_sent == message
    assert result.kiss_offs == 1  # DC-05: the centre acknowledged the stored message
    (alarm,) = alarms(engine)
    assert (alarm.kind, alarm.source, alarm.elder_id, alarm.event_code) == (
        AlarmKind.LIFE_SAFETY, AlarmSource.CONTACT_ID, t.elder_id, "1101"
    )  # fmt: skip
    assert alarm.raw["digits"] == message and alarm.acknowledged_at is not None


def test_scaip_alarm_message(centre_db: tuple[str, Engine]) -> None:
    url, engine = centre_db
    t = seed(engine, TerminalProtocol.SCAIP, account="SC0001")
    result = with_centre(
        url,
        lambda centre: simulator.send_scaip(
            centre, cid="SC0001", ref="4711", sip_user=t.sip_user, stc="10"
        ),
    )
    assert (result.status, result.snu, result.ok) == (200, 0, True)
    assert result.mre == scaip.MediaReply.DUPLEX  # life-safety: the centre wants the voice call
    (alarm,) = alarms(engine)
    assert (alarm.kind, alarm.source, alarm.elder_id, alarm.event_code) == (
        AlarmKind.LIFE_SAFETY, AlarmSource.SCAIP, t.elder_id, "0010"
    )  # fmt: skip
    assert alarm.case_id is not None


def test_scaip_heartbeat_opens_no_case(centre_db: tuple[str, Engine]) -> None:
    url, engine = centre_db
    t = seed(engine, TerminalProtocol.SCAIP, account="SC0002")
    result = with_centre(
        url,
        lambda centre: simulator.send_scaip(
            centre, cid="SC0002", ref="1", mty="PI", stc=None, sip_user=t.sip_user
        ),
    )
    assert (result.status, result.snu) == (200, 0)
    with Session(engine) as s:
        assert s.scalars(select(Case)).all() == []
        kinds = [(a.kind, a.case_id) for a in s.scalars(select(Alarm))]
        seen = s.scalars(select(Terminal.last_seen_at).where(Terminal.id == t.terminal_id)).one()
    assert all(kind is AlarmKind.TEST and case is None for kind, case in kinds)
    assert seen is not None  # the terminal reported in


# -- pieces without a network ----------------------------------------------------------------


def frames(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + 320].ljust(320, b"\0") for i in range(0, len(pcm), 320)]


def test_goertzel_tells_kiss_off_from_handshake_and_silence() -> None:
    kiss = simulator.pcm_samples(frames(tones.kiss_off())[10])
    assert simulator.tone_share(kiss, 1400) > 0.9
    assert simulator.tone_share(kiss, 2300) < 0.05
    assert simulator.tone_share(simulator.pcm_samples(tones.silence(20)), 1400) == 0.0
    ding = simulator.pcm_samples(frames(tones.beep(1000, 100))[2])
    assert simulator.tone_share(ding, 1400) < 0.1


def test_listener_counts_each_kiss_off_once_and_not_the_handshake() -> None:
    listener = simulator.ToneListener()
    now = 0.0
    for frame in frames(tones.handshake()):
        now += 0.02
        listener.feed(frame, now)
    assert listener.handshake_heard and listener.kiss_offs == 0
    for _ in range(2):  # two messages: two kiss-offs, seconds apart, timestamps contiguous
        now += 3.0
        for frame in frames(tones.kiss_off()):
            now += 0.02
            listener.feed(frame, now)
    assert listener.kiss_offs == 2
    short = simulator.ToneListener()
    for i, frame in enumerate(frames(tones.beep(1400, 300))):  # 300 ms: not a kiss-off
        short.feed(frame, i * 0.02)
    assert short.kiss_offs == 0


def test_plan_press_follows_the_button_maps() -> None:
    t100 = {"110": "sos", "120": "sos", "200": "service", "300": "consult", "900": "cancel"}
    t200 = {"1": "sos", "2": "service", "3": "consult", "9": "cancel"}
    assert simulator.plan_press(TerminalProtocol.EXTENSION, t100, "sos").dialled == "110"
    assert simulator.plan_press(TerminalProtocol.DTMF, t200, "consult").digits == "3"
    pendant = simulator.plan_press(TerminalProtocol.CONTACT_ID, {}, "cancel", account="1234")
    (message,) = pendant.contact_id
    parsed = contact_id.parse(message)
    assert (parsed.account, parsed.event_code, parsed.is_restore) == ("1234", "101", True)
    with pytest.raises(ValueError, match="no 'service' button"):
        simulator.plan_press(TerminalProtocol.CONTACT_ID, {}, "service", account="1234")
    with pytest.raises(ValueError, match="no 'consult' button"):
        simulator.plan_press(TerminalProtocol.DTMF, {"1": "sos"}, "consult")
    with pytest.raises(ValueError, match="send_scaip"):
        simulator.plan_press(TerminalProtocol.SCAIP, {}, "sos")
    assert simulator.scaip_for_button("cancel") == ("RE", scaip.STC_CANCEL)


def test_build_mrq_round_trips_through_the_parser() -> None:
    body = scaip.build_mrq(
        ref="77", cid="12 34", dty="3", mty="ME", stc="10", pri=1, lge="23.36,116.70",
        crd="sip:ft1@127.0.0.1", ver="1.0",
    )  # fmt: skip
    parsed = scaip.parse_mrq(body)
    assert (parsed.ref, parsed.cid, parsed.dty, parsed.stc, parsed.pri) == (
        "77", "1234", "0003", "0010", 1
    )  # fmt: skip
    assert (parsed.lge, parsed.crd, parsed.ver, parsed.kind) == (
        "23.36,116.70", "sip:ft1@127.0.0.1", "1.0", "life_safety"
    )  # fmt: skip
    assert b"<did>" not in body  # absent tags are left out, not sent empty
    escaped = scaip.parse_mrq(scaip.build_mrq(ref="a<&>b", mty="PI"))
    assert escaped.ref == "a<&>b" and escaped.is_heartbeat
    with pytest.raises(ValueError):
        scaip.build_mrq(ref=" ")
    with pytest.raises(ValueError):
        scaip.build_mrq(ref="1", cid="\x00")


# -- the CLI against an `hyt sip` process ----------------------------------------------------


def hyt(*args: str, env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callcenter", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_cli_press_and_scaip(fresh_url: str, fresh_engine: Engine, tmp_path: Path) -> None:
    ext = seed(fresh_engine, TerminalProtocol.EXTENSION)
    sc = seed(fresh_engine, TerminalProtocol.SCAIP, account="SC0003")
    settings = {"HYT_SECRET_KEY": SECRET, "HYT_LIFE_SAFETY_HOLD_S": "10"}
    with start_handler(fresh_url, tmp_path / "centre.log", rtp=rtp_range(), env=settings) as c:
        env = c.env  # the handler's own: `hyt terminal` finds it by HYT_SIP_HOST/PORT
        assert asyncio.run(simulator.ping(c.address, timeout=1.0)) == 200
        # No --centre: the default is HYT_SIP_HOST:HYT_SIP_PORT.
        pressed = hyt("terminal", "press", "--terminal", ext.serial, "--button", "consult", env=env)
        assert pressed.returncode == 0, pressed.stdout + pressed.stderr
        (line,) = pressed.stdout.strip().splitlines()
        assert "已接通 answered" in line and "dialled 300" in line
        sent = hyt("terminal", "scaip", "--terminal", sc.serial, "--ref", "9", env=env)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "已受理 accepted" in sent.stdout and "snu 0" in sent.stdout
        unknown = hyt("terminal", "press", "--terminal", "NO-SUCH", "--button", "sos", env=env)
        assert unknown.returncode == 1 and "NO-SUCH" in unknown.stdout
        nobody = f"127.0.0.1:{free_udp_port()}"
        silent = hyt("terminal", "press", "--terminal", ext.serial, "--button", "sos",
                     "--centre", nobody, "--timeout", "2", env=env)  # fmt: skip
        assert silent.returncode == 1 and "未接通 not answered" in silent.stdout
    kinds = {(a.kind, a.source, a.elder_id) for a in alarms(fresh_engine)}
    assert kinds == {
        (AlarmKind.CONSULT, AlarmSource.EXTENSION, ext.elder_id),
        (AlarmKind.LIFE_SAFETY, AlarmSource.SCAIP, sc.elder_id),
    }
