"""Hostile input against a running call handler (``hyt sip``), on both SIP backends.

Hundreds of malformed SIP datagrams, malformed RTP in the middle of a call, and hostile SCAIP
bodies (entity bombs, external entities, DTDs, deep nesting, wrong encodings, oversize), with
valid alarms sent in between. Afterwards the process must still run and answer OPTIONS, every
valid alarm must be stored exactly once, the junk must have made no alarm, every refusal must
be a clear SIP answer (or silence where there is no one to answer), and the log must hold a
warning for each class of rejected input. The inputs are generated deterministically
(:mod:`tests.reliability.hostile_inputs`): a failure replays exactly.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from callcenter.models import Alarm, AlarmKind
from devices import scaip
from devices.models import TerminalProtocol
from tests.reliability.hostile_inputs import (
    CLASSES,
    JUNK_USER,
    Target,
    hostile_scaip_bodies,
    rtp_junk,
    sdp,
    sip_junk,
)
from tests.reliability.udp_peer import UdpPeer, header, sip_request
from tests.sip.handler_process import Centre, options_ok, running_centre
from tests.sip.raw import answered_rtp_port, dtmf_event_packets

SEED = 20261128
JUNK_PER_CLASS = 22  # 10 classes: 220 datagrams
RTP_JUNK = 220
WARNING_LEVELS = {"warning", "error", "critical"}
# JSON lines: the log is read for a warning per class of rejected input.
HANDLER_ENV = {"HYT_LIFE_SAFETY_HOLD_S": "10", "HYT_LOG_JSON": "1"}


@pytest.fixture(params=["aiosipua", "pyvoip"])
def handler(
    request: pytest.FixtureRequest, fresh_postgres_url: str, tmp_path: Path
) -> Iterator[Centre]:
    log = tmp_path / "handler.log"
    with running_centre(fresh_postgres_url, request.param, log, HANDLER_ENV) as running:
        yield running


@pytest.fixture
def aiosipua_handler(fresh_postgres_url: str, tmp_path: Path) -> Iterator[Centre]:
    """SCAIP is parsed by the same aiosipua listener whichever backend takes the calls."""
    log = tmp_path / "handler.log"
    with running_centre(fresh_postgres_url, "aiosipua", log, HANDLER_ENV) as running:
        yield running


def alarms(handler: Centre) -> list[Alarm]:
    with Session(handler.engine) as s:
        return list(s.scalars(select(Alarm).order_by(Alarm.id)))


def wait_for_alarms(handler: Centre, count: int, timeout: float = 10.0) -> list[Alarm]:
    deadline = time.monotonic() + timeout
    while True:
        found = alarms(handler)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def warnings_from(handler: Centre, source_port: int) -> list[dict[str, Any]]:
    """Warning lines whose ``source`` is the given local port of ours."""
    return [
        event
        for event in handler.events()
        if event.get("level") in WARNING_LEVELS
        and str(event.get("source", "")).endswith(f":{source_port}")
    ]


def send_scaip(
    peer: UdpPeer, handler: Centre, ref: str, *, stc: str = "0010", mty: str = "ME"
) -> tuple[str, bytes]:
    user = handler.terminals[TerminalProtocol.SCAIP][0]
    body = scaip.build_mrq(ref=ref, cid=user, dty="0003", mty=mty, stc=stc)
    branch, data = sip_request("MESSAGE", handler.scaip_address, peer.port, user=user, body=body,
                               content_type="application/scaip+xml")  # fmt: skip
    peer.send(data, handler.scaip_address)
    return branch, body


def check_valid_scaip(peer: UdpPeer, handler: Centre, ref: str, **kwargs: str) -> None:
    branch, _ = send_scaip(peer, handler, ref, **kwargs)
    final = peer.final(branch, timeout=10)
    assert final is not None and final.status == 200, f"valid SCAIP {ref}: {final}"
    mrs = peer.mrs_for(ref, timeout=10)
    assert mrs is not None and mrs.snu == 0, f"valid SCAIP {ref}: <mrs> {mrs}"


def extension_call(peer: UdpPeer, handler: Centre, media: socket.socket) -> str:
    """A valid call from the extension terminal dialling its service number: answered 200."""
    user = handler.terminals[TerminalProtocol.EXTENSION][0]
    branch, data = sip_request("INVITE", handler.address, peer.port, user=user, dialled="200",
                               body=sdp(media.getsockname()[1]).encode(),
                               content_type="application/sdp")  # fmt: skip
    peer.send(data, handler.address)
    final = peer.final(branch, timeout=30)
    assert final is not None and final.status == 200, f"valid call: {final}"
    to_tag = header(final.text, "To").split("tag=")[-1]
    call_id = header(final.text, "Call-ID").removesuffix("@peer")
    _, ack = sip_request("ACK", handler.address, peer.port, user=user, dialled="200",
                         call_id=call_id, to_tag=to_tag)  # fmt: skip
    peer.send(ack, handler.address)
    return call_id


# -- SIP ---------------------------------------------------------------------------------------


def test_malformed_sip_leaves_the_handler_serving_and_stores_only_valid_alarms(
    handler: Centre,
) -> None:
    valid = UdpPeer()
    peers = {kind: UdpPeer() for kind in CLASSES}  # one source port per class: logs name it
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    sent: list[tuple[str, str, str]] = []  # (class, method, branch)
    valid_refs: list[str] = []
    try:
        count = JUNK_PER_CLASS * len(CLASSES)
        streams = {
            kind: list(sip_junk(SEED, Target(handler.host, handler.port, peer.port), count))
            for kind, peer in peers.items()
        }
        for i in range(JUNK_PER_CLASS * len(CLASSES)):
            kind = list(CLASSES)[i % len(CLASSES)]
            junk = streams[kind][i]
            assert junk.kind == kind
            peers[kind].send(junk.data, handler.address)
            sent.append((kind, junk.method, junk.branch))
            if i % 25 == 12:  # a valid alarm in the middle of the junk, every 25 datagrams
                ref = f"v{i}"
                check_valid_scaip(valid, handler, ref, stc="0016" if i % 2 else "0010")
                valid_refs.append(ref)
            if i == 110:
                extension_call(valid, handler, media)
            time.sleep(0.002)
        time.sleep(2.0)  # the last answers
        summary = {
            kind: Counter(_last_answer(peers[kind].statuses(b)) for k, _, b in sent if k == kind)
            for kind in CLASSES
        }
        print(f"{handler.backend}: answers by class {summary}")

        assert handler.running(), handler.tail()
        assert options_ok(*handler.address), handler.tail()
        check_valid_scaip(valid, handler, "after")
        valid_refs.append("after")

        # The valid alarms, each once; nothing from the junk.
        stored = wait_for_alarms(handler, len(valid_refs) + 1)
        scaip_refs = Counter(str(a.raw.get("ref")) for a in stored if a.raw.get("ref"))
        assert scaip_refs == Counter(valid_refs), scaip_refs
        calls = [a for a in stored if not a.raw.get("ref")]
        _, ext_elder, *_ = handler.terminals[TerminalProtocol.EXTENSION]
        assert [(a.kind, a.elder_id, a.event_code) for a in calls] == [
            (AlarmKind.SERVICE, ext_elder, "200")
        ], [(a.kind, a.caller, a.raw) for a in calls]
        assert not [a for a in stored if JUNK_USER in a.caller], "an alarm from the junk"

        # Clear answers: a junk INVITE never rings or is answered; any final answer is an error.
        wrong = []
        for kind, method, branch in sent:
            statuses = peers[kind].statuses(branch)
            finals = [s for s in statuses if s >= 200]
            if method == "INVITE" and (
                any(100 < s < 300 for s in statuses) or any(s < 400 for s in finals)
            ):
                wrong.append((kind, branch, statuses))
        assert not wrong, f"junk INVITEs treated as calls: {wrong}"

        # A warning in the log for each class that was refused, from that class's own port.
        silent = []
        for kind, peer in peers.items():
            refused = [
                b for k, _, b in sent if k == kind and not any(
                    200 <= s < 300 for s in peer.statuses(b))
            ]  # fmt: skip
            if refused and not warnings_from(handler, peer.port):
                silent.append(kind)
        assert not silent, f"refused without a warning in the log: {silent}\n{handler.tail()}"
        assert "Traceback" not in handler.log.read_text(), handler.tail()  # one line each
    finally:
        valid.close()
        for peer in peers.values():
            peer.close()
        media.close()


def _last_answer(statuses: list[int]) -> str:
    return str(statuses[-1]) if statuses else "none"


# -- RTP ---------------------------------------------------------------------------------------


def test_malformed_rtp_in_a_call_loses_no_digit_and_makes_no_press(handler: Centre) -> None:
    user, elder_id, terminal_id, _ = handler.terminals[TerminalProtocol.DTMF]
    peer = UdpPeer()
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    try:
        branch, invite = sip_request("INVITE", handler.address, peer.port, user=user,
                                     body=sdp(media.getsockname()[1]).encode(),
                                     content_type="application/sdp")  # fmt: skip
        peer.send(invite, handler.address)
        final = peer.final(branch, timeout=30)  # generous: CI runs this beside other calls
        assert final is not None and final.status == 200, (final, handler.tail())
        to_tag = header(final.text, "To").split("tag=")[-1]
        call_id = header(final.text, "Call-ID").removesuffix("@peer")
        _, ack = sip_request("ACK", handler.address, peer.port, user=user, call_id=call_id,
                             to_tag=to_tag)  # fmt: skip
        peer.send(ack, handler.address)
        rtp = (handler.host, answered_rtp_port(final.text.split("\r\n\r\n", 1)[1]))
        kinds: Counter[str] = Counter()
        started = time.monotonic()
        for kind, packet in rtp_junk(SEED, RTP_JUNK):
            media.sendto(packet, rtp)
            kinds[kind] += 1
        for packet in dtmf_event_packets(2, 5000, 160_000):  # the service button
            media.sendto(packet, rtp)
            time.sleep(0.02)
        for _, packet in rtp_junk(SEED + 1, 40):  # and junk after it, while the prompt plays
            media.sendto(packet, rtp)
        assert time.monotonic() - started < 10
        deadline = time.monotonic() + 30
        while not any(r.startswith("BYE ") for r in peer.requests):  # the centre hangs up
            assert time.monotonic() < deadline, handler.tail()
            time.sleep(0.1)
        assert handler.running(), handler.tail()
        assert options_ok(*handler.address)
        stored = wait_for_alarms(handler, 1)
        assert [(a.kind, a.elder_id, a.terminal_id, a.event_code) for a in stored] == [
            (AlarmKind.SERVICE, elder_id, terminal_id, "2")
        ], handler.tail()
        # One line per malformed event, no traceback (aiortp raised out of its callback).
        assert "Traceback" not in handler.log.read_text(), handler.tail()
        if handler.backend == "aiosipua":
            assert any(e["event"] == "rtp.bad_dtmf_event" for e in handler.events())
        print(f"{handler.backend}: {sum(kinds.values())} malformed RTP packets {dict(kinds)}")
    finally:
        peer.close()
        media.close()


# -- SCAIP -------------------------------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Recorder.hits.append(self.path)
        body = b"<!ENTITY leak 'EXTERNAL-ENTITY-FETCHED'>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def entity_server() -> Iterator[str]:
    """A loopback HTTP server an external entity could point to: it records any fetch."""
    _Recorder.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_hostile_scaip_bodies_are_refused_clearly_and_nothing_leaks(
    aiosipua_handler: Centre, entity_server: str
) -> None:
    handler = aiosipua_handler
    user = handler.terminals[TerminalProtocol.SCAIP][0]
    bodies = hostile_scaip_bodies(entity_server)
    peer = UdpPeer()
    valid = UdpPeer()
    answers: dict[str, tuple[int | None, int | None, float]] = {}
    try:
        for n, (name, (body, _reason)) in enumerate(bodies.items()):
            branch, data = sip_request("MESSAGE", handler.scaip_address, peer.port, user=user,
                                       body=body, content_type="application/scaip+xml")  # fmt: skip
            started = time.monotonic()
            peer.send(data, handler.scaip_address)
            final = peer.final(branch, timeout=10)
            elapsed = time.monotonic() - started
            ref = _ref_of(body)
            mrs = peer.mrs_for(ref, timeout=5) if final and final.status == 200 and ref else None
            answers[name] = (final.status if final else None, mrs.snu if mrs else None, elapsed)
            if n % 5 == 2:
                check_valid_scaip(valid, handler, f"ok{n}")
        check_valid_scaip(valid, handler, "ok-last")

        assert handler.running(), handler.tail()
        assert options_ok(*handler.address)
        # Each refused clearly: 200 with an <mrs> whose snu says what is wrong, or a 4xx when
        # no <ref> could be read; and quickly (no entity was expanded).
        unclear = {
            name: answer
            for name, answer in answers.items()
            if not (
                (answer[0] == 200 and answer[1] not in (None, 0))
                or (answer[0] is not None and 400 <= answer[0] < 500)
            )
        }
        assert not unclear, f"not refused clearly: {unclear}"
        slow = {name: a[2] for name, a in answers.items() if a[2] > 1.0}
        assert not slow, f"slow to refuse (expanded?): {slow}"
        # Only the valid alarms were stored, once each, and no external content reached them.
        expected = [f"ok{n}" for n in range(len(bodies)) if n % 5 == 2] + ["ok-last"]
        stored = wait_for_alarms(handler, len(expected))
        refs = Counter(str(a.raw.get("ref")) for a in stored)
        assert refs == Counter(expected), refs
        text = " ".join(f"{a.caller} {a.raw} {a.event_code}" for a in stored)
        assert "root:" not in text and "EXTERNAL-ENTITY-FETCHED" not in text
        assert _Recorder.hits == [], f"an external entity was fetched: {_Recorder.hits}"
        # The log says why each was refused.
        reasons = Counter(
            event["reason"]
            for event in warnings_from(handler, peer.port)
            if event["event"] == "scaip.rejected"
        )
        wanted = Counter(reason for _, reason in bodies.values())
        assert reasons == wanted, (reasons, wanted)
        print("SCAIP answers (status, snu, seconds):", answers)
    finally:
        peer.close()
        valid.close()


def _ref_of(body: bytes) -> str | None:
    text = body.decode("utf-8", "replace")
    if "<ref>" not in text:
        return None
    return text.split("<ref>", 1)[1].split("</ref>", 1)[0]
