"""The SIP layer's own defences against hostile input, one function at a time (fast, no process):
unreadable datagrams, Content-Length, SDP that is not SDP, SCAIP bodies without a readable
``<ref>``, malformed telephone events. Each of the fixes these tests pin was found by the
process-level tests in test_hostile_sip.py; each test here fails without its fix. Property tests
(hypothesis, bounded and derandomised) check that no input makes these functions raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import MutableMapping
from typing import Any, cast

import pytest
from aiortp.dtmf import DtmfReceiver
from aiortp.packet import RtpPacket
from aiosipua import SipMessage, SipRequest, SipResponse
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from callcenter.intake_service import IntakeService
from callcenter.scaip_ingress import ScaipIngress
from callcenter.sip.aiosipua_transport import CentreTransport
from callcenter.sip.aiosipua_uas import CentreUAS, content_length_problem
from callcenter.sip.pyvoip_sipmsg import SIP, HardenedSIPMessage
from callcenter.sip.rtp_guard import guard_dtmf_receiver
from callcenter.sip.sdp_check import offer_problem, sdp_problem
from devices import scaip
from tests.reliability.hostile_inputs import Target, billion_laughs, invite, join, request, sdp
from tests.sip.raw import sdp_offer

FUZZ = settings(max_examples=200, derandomize=True, deadline=None)
TARGET = Target("127.0.0.1", 5060, 40000)
ADDR = ("127.0.0.1", 40000)


# -- the transport: one warning per unreadable datagram --------------------------------------


def dispatched(data: bytes) -> tuple[list[Any], list[MutableMapping[str, Any]]]:
    transport = CentreTransport(local_addr=("127.0.0.1", 0))
    got: list[Any] = []
    transport.on_message = lambda msg, addr: got.append(msg)
    with capture_logs() as logs:
        transport._dispatch(data, ADDR)
    return got, logs


def test_an_unreadable_datagram_is_one_structured_warning_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    got, logs = dispatched(b"\x8fGARBAGE\r\n\r\n")  # not "METHOD URI VERSION"
    assert got == []
    assert [(e["event"], e["log_level"]) for e in logs] == [("sip.unreadable", "warning")]
    assert logs[0]["source"] == "127.0.0.1:40000" and logs[0]["bytes"] == 12
    # The library's own handler logged a traceback for each such datagram.
    assert not [r for r in caplog.records if r.exc_info], caplog.text


def test_a_keep_alive_is_not_an_error() -> None:
    for ping in (b"\r\n\r\n", b"\r\n", b"", b"\x00"):
        assert dispatched(ping) == ([], [])


@FUZZ
@given(st.binary(max_size=2000))
def test_any_datagram_is_either_a_message_or_one_warning(data: bytes) -> None:
    got, logs = dispatched(data)
    warnings = [e for e in logs if e["event"] == "sip.unreadable"]
    assert len(got) + len(warnings) <= 1
    assert not [e for e in logs if e["event"] == "sip.handler_failed"]


# -- Content-Length (RFC 3261 §18.3, §20.14) --------------------------------------------------


@pytest.mark.parametrize(
    ("length", "problem"),
    [
        (None, None),
        ("0", None),
        ("-1", "unreadable Content-Length"),
        ("abc", "unreadable Content-Length"),
        ("２０", "unreadable Content-Length"),
        ("1 2", "unreadable Content-Length"),
        ("99999", "body shorter than Content-Length"),
    ],
)
def test_content_length_problems(length: str | None, problem: str | None) -> None:
    parts = request(TARGET, "OPTIONS", "z9hG4bK-cl", length=length or "0")
    if length is None:
        parts = [p for p in parts if not p.startswith(b"Content-Length")]
    assert content_length_problem(SipMessage.parse(join(parts))) == problem


def test_a_longer_body_is_cut_to_its_content_length_not_refused() -> None:
    parts = request(TARGET, "MESSAGE", "z9hG4bK-long", body=b"hello world", length="5")
    message = SipMessage.parse(join(parts))
    assert content_length_problem(message) is None and message.body == b"hello"


@FUZZ
@given(st.text(max_size=30))
def test_content_length_check_never_raises(value: str) -> None:
    if "\r" in value or "\n" in value:
        return
    parts = request(TARGET, "OPTIONS", "z9hG4bK-f", length=value)
    try:
        message = SipMessage.parse(join(parts))
    except ValueError:
        return
    content_length_problem(message)


# -- the UAS: truncated requests, missing headers and junk offers never become calls ----------


class FakeTransport:
    reliable = False
    local_addr = ("127.0.0.1", 5060)

    def __init__(self) -> None:
        self.sent: list[SipResponse] = []
        self.on_message: Any = None

    def send_reply(self, response: SipResponse) -> None:
        self.sent.append(response)

    def send(self, message: Any, _addr: tuple[str, int]) -> None:
        if isinstance(message, SipResponse):
            self.sent.append(message)


def offered(data: bytes) -> tuple[list[int], list[Any], list[MutableMapping[str, Any]]]:
    """Hand ``data`` to a CentreUAS: the statuses it answered, the calls it started, its logs."""
    transport = FakeTransport()
    uas = CentreUAS(transport)
    calls: list[Any] = []
    uas.on_invite = calls.append
    with capture_logs() as logs:
        uas._on_message(SipMessage.parse(data), ADDR)
    return [r.status_code for r in transport.sent], calls, logs


def test_a_truncated_invite_gets_400_and_is_no_call() -> None:
    whole = join(invite(TARGET, "z9hG4bK-trunc"))
    statuses, calls, logs = offered(whole[:-40])
    assert (statuses, calls) == ([400], [])
    assert [e["event"] for e in logs] == ["sip.bad_content_length"]


def test_an_unreadable_content_length_gets_400() -> None:
    statuses, calls, _ = offered(join(invite(TARGET, "z9hG4bK-nan", length="-1")))
    assert (statuses, calls) == ([400], [])


def test_missing_call_id_gets_400_and_a_structured_warning() -> None:
    parts = [p for p in invite(TARGET, "z9hG4bK-nocid") if not p.startswith(b"Call-ID")]
    statuses, calls, logs = offered(join(parts))
    assert (statuses, calls) == ([400], [])
    assert [(e["event"], e["missing"]) for e in logs] == [("sip.missing_headers", "call-id")]


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x01\x02 not sdp \xff",
        b"<html>not sdp</html>",
        sdp().replace("v=0", "v=zero").encode(),
        sdp().replace("v=0\r\n", "").encode(),
        sdp().replace("m=audio 40000 RTP/AVP 0 101", "m=audio").encode(),
    ],
)
def test_an_invite_whose_body_is_not_sdp_gets_400_and_is_no_call(body: bytes) -> None:
    parts = request(TARGET, "INVITE", "z9hG4bK-junk", body=body, content_type="application/sdp")
    statuses, calls, logs = offered(join(parts))
    assert (statuses, calls) == ([400], [])
    assert [e["event"] for e in logs] == ["sip.invite_rejected"]


def test_a_valid_invite_still_becomes_a_call() -> None:
    async def run() -> tuple[list[int], list[Any], list[MutableMapping[str, Any]]]:
        return offered(join(invite(TARGET, "z9hG4bK-ok")))

    statuses, calls, _ = asyncio.run(run())
    assert len(calls) == 1 and not [s for s in statuses if s >= 400]


# -- SDP (RFC 4566 §5) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        sdp(),
        sdp_offer(4000),  # LF line ends, as tests.sip.raw writes them
        "\r\n" + sdp(),  # a blank line first
        sdp().replace("s=-", "s=\u5f20\u4e09\u7684\u7ec8\u7aef"),  # a Chinese session name
        sdp().replace("m=audio 40000", "m=audio 40000/2"),
    ],
)
def test_real_offers_pass(text: str) -> None:
    assert sdp_problem(text.encode()) is None


def test_a_gbk_session_name_passes() -> None:
    body = sdp().encode().replace(b"s=-", b"s=" + "张三".encode("gbk"))
    assert sdp_problem(body) is None


def test_only_sdp_bodies_are_judged() -> None:
    assert offer_problem("application/sdp", b"") is None  # no offer: refused later with 488
    assert offer_problem("text/plain", b"junk") is None
    assert offer_problem("application/SDP; charset=utf-8", b"junk") is not None


@FUZZ
@given(st.binary(max_size=600))
def test_sdp_check_never_raises(body: bytes) -> None:
    assert sdp_problem(body) is None or isinstance(sdp_problem(body), str)


# -- SCAIP: a body without a readable <ref> gets 400 ------------------------------------------


def scaip_message(body: bytes) -> SipRequest:
    parts = request(TARGET, "MESSAGE", "z9hG4bK-scaip", body=body,
                    content_type="application/scaip+xml")  # fmt: skip
    message = SipMessage.parse(join(parts))
    assert isinstance(message, SipRequest)
    return message


class NoIntake:
    """Nothing refused may reach the intake."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"intake.{name} used for a refused body")


@pytest.mark.parametrize(
    "body",
    [billion_laughs(None).encode(), b"\xff\xfe junk", b"<mrq><cid>x</cid></mrq>", b"A" * 20_000],
)
def test_scaip_without_a_readable_ref_gets_400(body: bytes) -> None:
    ingress = ScaipIngress(cast(IntakeService, NoIntake()))
    with capture_logs() as logs:
        reply = asyncio.run(ingress(scaip_message(body), ADDR))
    assert (reply.status, reply.followup_body) == (400, None)
    assert reply.reason.startswith("Bad Request - SCAIP ")
    assert [e["event"] for e in logs] == ["scaip.rejected"]


def test_scaip_with_a_ref_gets_200_and_an_mrs_saying_what_is_wrong() -> None:
    ingress = ScaipIngress(cast(IntakeService, NoIntake()))
    reply = asyncio.run(ingress(scaip_message(billion_laughs("b7").encode()), ADDR))
    # A DTD is refused before any <ref> is read: nothing to echo, so 400 as well.
    assert reply.status == 400
    reply = asyncio.run(ingress(scaip_message(b"<mrq><ref>r9</ref><stc>x</stc></mrq>"), ADDR))
    assert reply.status == 200 and reply.followup_body is not None
    snu = int(reply.followup_body.split(b"<snu>")[1].split(b"</snu>")[0])
    assert snu == scaip.Snu.WRONG_DATA_CONTENT


# -- RTP: a malformed telephone event is one warning, not a traceback -------------------------


class Session:
    def __init__(self, digits: list[str]) -> None:
        self._dtmf_receiver = DtmfReceiver(lambda digit, _duration: digits.append(digit))


def event_packet(payload: bytes, timestamp: int) -> RtpPacket:
    header = struct.pack("!BBHII", 0x80, 101, 1, timestamp, 0x1234)
    return RtpPacket.parse(header + payload)


def test_a_short_telephone_event_is_reported_and_the_next_digit_heard() -> None:
    digits: list[str] = []
    malformed: list[str] = []
    session = Session(digits)
    guard_dtmf_receiver(session, malformed.append)
    session._dtmf_receiver.handle_packet(event_packet(b"\x02\x80", 160))  # 2 bytes, not 4
    session._dtmf_receiver.handle_packet(event_packet(struct.pack("!BBH", 2, 0x8A, 800), 320))
    assert (malformed, digits) == (["DTMF event payload must be at least 4 bytes"], ["2"])


# -- pyVoIP's parser: Content-Length is 1*DIGIT ------------------------------------------------


@pytest.mark.parametrize("length", ["-1", "２０", "+3", "0x10"])
def test_pyvoip_refuses_a_content_length_that_is_not_digits(length: str) -> None:
    message = HardenedSIPMessage(join(invite(TARGET, "z9hG4bK-pv", length=length)))
    assert message.bad_request == "Bad Content-Length header"


@FUZZ
@given(st.binary(max_size=1500))
def test_pyvoip_parser_raises_only_its_parse_error(data: bytes) -> None:
    with contextlib.suppress(SIP.SIPParseError):
        HardenedSIPMessage(data)
