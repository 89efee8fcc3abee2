"""PyVoipBackend end to end: SIPp alarm-terminal calls (INVITE, RFC 2833 "1#", BYE) answered
through the CallHandle interface, plus CANCEL and reject through the same interface.

SIPp scenarios: tests/sip/scenarios/ (copies of shared/tools/sipp/). Our RTP goes to a socket of
the test (``-key mport``), so the test hears what ``play()`` sent.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from callcenter.intake_service import IntakeService
from callcenter.models import Alarm, AlarmKind
from callcenter.settings import Settings
from callcenter.sip.call_flow import CallFlow
from callcenter.sip.interface import CallEnded, CallHandle, CallInfo
from callcenter.sip.live_calls import LiveCalls
from callcenter.sip.pyvoip_backend import PyVoipBackend, to_pyvoip_audio
from tests.factories import make_elder, make_terminal
from tests.sip.pyvoip_kit import HOST, Dialog, Peer, hyt_threads, rtp_range, status

SCENARIOS = Path(__file__).parent / "scenarios"
SIPP = shutil.which("sipp") or "/usr/bin/sipp"
TONE = b"".join(  # 0.6 s of 440 Hz, 16-bit: longer than SIPp's last pause before it waits for BYE
    struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 8000))) for i in range(4800)
)


def free_even_udp_port() -> int:
    """An even port with the next two free too (SIPp's media port and its +2 neighbour)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((HOST, 0))
            port: int = probe.getsockname()[1]
        if port % 2 or port > 65000:
            continue
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
            ):
                a.bind((HOST, port))
                b.bind((HOST, port + 2))
            return port
        except OSError:
            continue


async def run_sipp(scenario: str, port: int, sink_port: int, tmp: Path, *extra: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        SIPP, f"{HOST}:{port}", "-sf", str(SCENARIOS / scenario), "-s", "2000", "-m", "1",
        "-i", HOST, "-mp", str(free_even_udp_port()), "-key", "mport", str(sink_port),
        "-timeout", "20s", "-timeout_error", "-nostdin", "-trace_err",
        "-error_file", str(tmp / "sipp_errors.log"), *extra,
        cwd=tmp, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        return await asyncio.wait_for(proc.wait(), 30)
    except TimeoutError:
        proc.kill()  # only the process we started, by its handle
        await proc.wait()
        raise


async def with_backend(
    on_call: Callable[[CallHandle], Awaitable[None]],
    body: Callable[[PyVoipBackend], Awaitable[None]],
) -> None:
    low, high = rtp_range()
    backend = PyVoipBackend(HOST, 0, rtp_port_low=low, rtp_port_high=high)
    await backend.start(on_call)
    try:
        await body(backend)
    finally:
        await backend.stop()
    assert not hyt_threads()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind((HOST, backend.port))  # the SIP socket is closed


def tone_packets(sink: Peer) -> int:
    """PCMU packets carrying sound: μ-law silence is one repeated byte, a tone is not."""
    tone = 0
    while (packet := sink.recv(0.05)) is not None:
        if len(packet) > 12 and packet[1] & 0x7F == 0:
            tone += len(set(packet[12:])) > 8
    return tone


def test_sipp_alarm_call_answered_digits_collected_and_we_hang_up(tmp_path: Path) -> None:
    seen: list[tuple[CallInfo, str, bool]] = []
    sink = Peer()

    async def on_call(call: CallHandle) -> None:
        await call.answer()
        digits = await call.collect_digits(2, first_timeout=5, inter_digit_timeout=3)
        await call.play(TONE)
        await call.hangup()
        await call.hangup()  # idempotent
        seen.append((call.info, digits, await call.wait_ended(1)))

    async def body(backend: PyVoipBackend) -> None:
        assert await run_sipp("uac_dtmf.xml", backend.port, sink.port, tmp_path) == 0

    asyncio.run(with_backend(on_call, body))
    ((info, digits, ended),) = seen
    assert digits == "1#" and ended
    assert (info.caller_user, info.caller_display, info.dialled_user) == (
        "alarm1",
        "Alarm 1",
        "2000",
    )
    assert info.source[0] == HOST and info.request_key.endswith(":1")  # From tag : CSeq
    assert tone_packets(sink) >= 20  # the tone, as PCMU, at least 0.4 s of it


@pytest.mark.parametrize("fresh_url", ["sqlite"], indirect=True)  # the backend's times, not the DB
def test_the_alarm_keeps_when_the_invite_came_and_the_200_went(
    fresh_engine: Engine, tmp_path: Path
) -> None:
    """The centre's own call flow on this backend: the alarm's raw JSON holds ``invite_at`` (the
    INVITE read off the socket) and ``answered_at`` (our 200 sent), as the default backend's
    does, so bench/storm.py can report pyVoIP's INVITE→200 and INVITE→alarm committed."""
    with Session(fresh_engine) as s:
        make_terminal(s, make_elder(s), sip_user="alarm1")  # SIPp's From user; "1": SOS
        s.commit()
    intake = IntakeService(sessionmaker(fresh_engine, expire_on_commit=False),
                           Settings(env="test", secret_key="t" * 40))  # fmt: skip
    sink = Peer()
    sent_at: list[float] = []

    async def body(backend: PyVoipBackend) -> None:
        try:
            sent_at.append(time.time())
            # The caller hangs up during the prompt: the alarm is stored by then (and short).
            code = await run_sipp("uac_load.xml", backend.port, sink.port, tmp_path, "-d", "300")
            assert code == 0
            await intake.flush()
        finally:
            await asyncio.to_thread(intake.close)  # its threads too are checked for leaks

    asyncio.run(with_backend(CallFlow(intake, LiveCalls(), hold_s=0.2), body))
    with Session(fresh_engine) as s:
        (alarm,) = s.scalars(select(Alarm))
    assert alarm.kind is AlarmKind.LIFE_SAFETY
    invite_at, answered_at = alarm.raw.get("invite_at"), alarm.raw.get("answered_at")
    assert isinstance(invite_at, float) and isinstance(answered_at, float), alarm.raw
    # SIPp started after sent_at: the INVITE cannot have been read before it.
    assert sent_at[0] <= invite_at <= answered_at <= alarm.received_at.timestamp()


def test_sipp_caller_hangs_up_and_the_flow_sees_it(tmp_path: Path) -> None:
    seen: list[tuple[str, bool, bool]] = []
    sink = Peer()

    async def on_call(call: CallHandle) -> None:
        await call.answer()
        digits = await call.collect_digits(2, first_timeout=5, inter_digit_timeout=3)
        seen.append((digits, await call.wait_ended(10), call.ended))

    async def body(backend: PyVoipBackend) -> None:
        code = await run_sipp("uac_load.xml", backend.port, sink.port, tmp_path, "-d", "300")
        assert code == 0

    asyncio.run(with_backend(on_call, body))
    assert seen == [("1#", True, True)]


def test_cancel_while_ringing_makes_answer_raise_call_ended() -> None:
    peer = Peer()
    outcome: list[str] = []
    ringing = asyncio.Event()

    async def on_call(call: CallHandle) -> None:
        ringing.set()
        await asyncio.sleep(0.5)  # the flow stores the alarm first; the caller gives up
        try:
            await call.answer()
            outcome.append("answered")
        except CallEnded:
            outcome.append("ended")

    async def body(backend: PyVoipBackend) -> None:
        dialog = Dialog(peer, backend.port)
        dialog.send(dialog.invite())
        await asyncio.wait_for(ringing.wait(), 5)
        dialog.send(dialog.request("CANCEL", to_tag=""))
        await asyncio.to_thread(peer.expect_response, 487)
        while not outcome:
            await asyncio.sleep(0.01)

    asyncio.run(with_backend(on_call, body))
    assert outcome == ["ended"]
    assert not [m for m in peer.seen if status(m) == 200 and b"INVITE" in m.split(b"CSeq:")[1]]


def test_reject_sends_the_final_response_and_ends_the_call() -> None:
    peer = Peer()

    async def on_call(call: CallHandle) -> None:
        await call.reject(480, "Temporarily Unavailable")
        assert call.ended and await call.wait_ended(0)

    async def body(backend: PyVoipBackend) -> None:
        dialog = Dialog(peer, backend.port)
        dialog.send(dialog.invite())
        reply = await asyncio.to_thread(peer.expect_response, 480)
        assert b"480 Temporarily Unavailable" in reply

    asyncio.run(with_backend(on_call, body))


def test_prompts_become_pyvoip_8_bit_unsigned_audio() -> None:
    assert to_pyvoip_audio(struct.pack("<3h", 0, 32767, -32768)) == bytes([128, 255, 0])


def test_with_an_edge_only_the_edge_is_served() -> None:
    """HYT_SIP_REGISTRAR: terminals are authenticated at the edge, so nobody may go round it."""

    async def on_call(call: CallHandle) -> None:
        raise AssertionError("no call may arrive")

    async def body() -> None:
        low, high = rtp_range()
        backend = PyVoipBackend(HOST, 0, low, high, edge="127.0.0.2:5060")
        await backend.start(on_call)
        terminal, edge = Peer(), Peer("127.0.0.2")
        try:
            for peer, expected in ((terminal, 403), (edge, 200)):
                dialog = Dialog(peer, backend.port)
                dialog.send(dialog.request("OPTIONS", to_tag=""))
                await asyncio.to_thread(peer.expect_response, expected, "OPTIONS")
            dialog = Dialog(terminal, backend.port)
            dialog.send(dialog.invite())
            await asyncio.to_thread(terminal.expect_response, 403)
        finally:
            await backend.stop()

    asyncio.run(body())
