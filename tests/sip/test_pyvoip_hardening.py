"""One regression test per pyVoIP 1.6.8 defect closed in our adapter (shared/docs/PYVOIP.md).

Hand-written SIP and RTP on 127.0.0.1 against a :class:`HardenedVoIPPhone`. Each test names its
fix in :data:`FIX_OF_TEST`; with that fix switched off (``HYT_PYVOIP_DISABLE_FIXES=<id>``, see
callcenter/sip/pyvoip_fixes.py) the test fails. Audit loop::

    for t in $(.venv/bin/python -c "from tests.sip.test_pyvoip_hardening import FIX_OF_TEST as F
    print(' '.join(f'{k}={v}' for k, v in F.items()))"); do
      HYT_PYVOIP_DISABLE_FIXES=${t#*=} .venv/bin/python -m pytest -q -x \\
        "tests/sip/test_pyvoip_hardening.py::${t%=*}" >/dev/null && echo "NOT FAILING: $t"; done
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from pyVoIP import RTP
from pyVoIP.VoIP import CallState, InvalidStateError

from callcenter.sip.pyvoip_fixes import FIXES
from callcenter.sip.pyvoip_rtp import BoundedRTPPacketManager
from tests.sip.pyvoip_kit import (
    HOST,
    Calls,
    Dialog,
    Peer,
    body,
    cseq_method,
    header,
    headers,
    rtp_event,
    rtp_range,
    running_phone,
    sdp,
    sdp_port,
    send_digit,
    status,
    to_tag,
    wait_for,
)

FIX_OF_TEST = {
    "test_cancel_before_answer_gets_487_and_is_never_answered": "cancel",
    "test_bad_rtp_packet_does_not_stop_dtmf": "rtp-robust",
    "test_rtp_port_comes_back_and_live_ports_are_never_reused": "rtp-ports",
    "test_rtp_timestamp_jump_does_not_grow_memory": "rtp-jump",
    "test_responses_go_to_the_top_via_not_the_configured_server": "reply-via",
    "test_pcma_offered_first_is_answered_pcmu_only": "pcmu-only",
    "test_offer_without_pcmu_gets_488": "pcmu-only",
    "test_options_gets_200_with_allow": "options",
    "test_other_methods_get_405_with_allow": "405",
    "test_header_line_without_colon_space_keeps_the_invite": "header-tolerant",
    "test_our_bye_carries_the_route_set_and_our_own_via": "bye-route",
    "test_record_route_is_mirrored_in_180_and_200": "record-route",
    "test_100_trying_comes_first": "100-trying",
    "test_200_is_retransmitted_until_ack": "2xx-retransmit",
    "test_no_ack_ends_the_call_with_bye": "2xx-retransmit",
    "test_bye_and_cancel_for_unknown_calls_get_481": "481",
    "test_resent_invite_is_absorbed": "absorb-retransmit",
    "test_reinvite_keeps_media_and_answers_the_same_sdp": "re-invite",
    "test_unreadable_sdp_gets_488": "sdp-errors",
    "test_content_length_beyond_the_datagram_gets_400": "content-length",
    "test_call_callback_starts_at_once": "no-delay",
    "test_start_sends_no_register": "no-register",
    "test_tags_are_not_hoarded": "tag-leak",
    "test_stock_rtp_parser_is_patched_on_pyvoip_itself": "rtp-robust",
}


def answered_call(phone_port: int, peer: Peer, calls: Calls, **kw: str) -> tuple[Dialog, bytes]:
    """INVITE → 200 (the callback answers) → ACK."""
    dialog = Dialog(peer, phone_port, rtp_port=peer.port)
    dialog.send(dialog.invite(**kw))
    ok = peer.expect_response(200)
    dialog.remote_tag = to_tag(ok)
    dialog.ack()
    return dialog, ok


def rtp_threads() -> int:
    return sum(t.name.startswith("hyt-rtp") for t in threading.enumerate())


# -- CANCEL -----------------------------------------------------------------------------------


def test_cancel_before_answer_gets_487_and_is_never_answered() -> None:
    calls, peer = Calls(), Peer()
    with running_phone(calls) as phone:
        dialog = Dialog(peer, phone.sip_port)
        dialog.send(dialog.invite())
        peer.expect_response(180)
        call = calls.next()
        dialog.send(dialog.request("CANCEL", to_tag=""))
        peer.expect_response(200, "CANCEL")
        peer.expect_response(487)
        with pytest.raises(InvalidStateError):
            call.answer()  # the application tries anyway, as pyVoIP's callback would
        assert call.state == CallState.ENDED
        assert not [m for m in peer.collect(0.5) + peer.seen if status(m) == 200 and
                    cseq_method(m) == "INVITE"]  # fmt: skip


# -- RTP --------------------------------------------------------------------------------------

BAD_RTP = {
    "event 16 (hook flash)": rtp_event(16, 50, 3000, marker=True),
    "empty datagram": b"",
    "1-byte datagram": b"\x80",
    "short header": b"\x80\xe5\x00\x01\x00",
    "event without payload": rtp_event(1, 51, 3000, marker=True)[:12],
}


@pytest.mark.parametrize("bad", BAD_RTP.values(), ids=BAD_RTP.keys())
def test_bad_rtp_packet_does_not_stop_dtmf(bad: bytes) -> None:
    calls, peer, media = Calls(answer=True), Peer(), Peer()
    with running_phone(calls) as phone:
        dialog = Dialog(peer, phone.sip_port, rtp_port=media.port)
        dialog.send(dialog.invite())
        dest = (HOST, sdp_port(peer.expect_response(200)))
        call = calls.next()
        send_digit(media, dest, 1, 10, 1000)
        assert wait_for(lambda: call.dtmf.getvalue() == "1")
        media.send(bad, dest)
        send_digit(media, dest, 2, 20, 2000)
        assert wait_for(lambda: call.dtmf.getvalue() == "12"), "digit after the bad packet lost"
        assert call.get_dtmf(2) == "12"


def test_rtp_port_comes_back_and_live_ports_are_never_reused() -> None:
    low, _ = rtp_range()
    calls, peer = Calls(answer=True), Peer()
    with running_phone(calls, rtp=(low, low + 1)) as phone:  # one even port: `low`
        first, ok = answered_call(phone.sip_port, peer, calls)
        assert sdp_port(ok) == low
        first.bye()
        peer.expect_response(200, "BYE")
        # The port returns once the call's RTP socket is closed, not before.
        assert wait_for(lambda: phone.free_port_count() == 1), "port of an ended call not freed"
        second, ok = answered_call(phone.sip_port, peer, calls)
        assert sdp_port(ok) == low
        third = Dialog(peer, phone.sip_port)
        third.send(third.invite())
        peer.expect_response(503)  # the only port is live: refuse, never share it
        second.bye()
        peer.expect_response(200, "BYE")


def test_rtp_timestamp_jump_does_not_grow_memory() -> None:
    calls, peer = Calls(answer=True), Peer()
    with running_phone(calls) as phone:
        answered_call(phone.sip_port, peer, calls)
        client = calls.next().RTPClients[0]

        def pcmu(seq: int, timestamp: int) -> bytes:
            return (
                bytes([0x80, 0])
                + seq.to_bytes(2, "big")
                + timestamp.to_bytes(4, "big")
                + (b"\x00\x00\x00\x07" + b"\xff" * 160)
            )

        client.parse_packet(pcmu(1, 1000))
        client.parse_packet(pcmu(2, 1000 + 20_000_000))  # 20 M samples later: 20 MB in pyVoIP
        assert isinstance(client.pmin, BoundedRTPPacketManager)
        assert client.pmin.held_bytes() < 100_000


# -- where replies go, what is offered --------------------------------------------------------


def test_responses_go_to_the_top_via_not_the_configured_server() -> None:
    calls, terminal, server = Calls(), Peer(), Peer()
    with running_phone(calls, server=server.addr) as phone:
        dialog = Dialog(terminal, phone.sip_port)
        # Behind NAT: the Via names a private address; rport asks for the packet's source.
        via = f"SIP/2.0/UDP 10.1.2.3:5999;branch={dialog.branch};rport"
        dialog.send(dialog.invite(via=via))
        ringing = terminal.expect_response(180)
        assert f"received={HOST}" in header(ringing, "Via")
        assert f"rport={terminal.port}" in header(ringing, "Via")
        assert server.collect(0.3) == []


def test_pcma_offered_first_is_answered_pcmu_only() -> None:
    calls, peer, media = Calls(answer=True), Peer(), Peer()
    with running_phone(calls) as phone:
        dialog = Dialog(peer, phone.sip_port, rtp_port=media.port)
        dialog.send(dialog.invite("8 0 101"))
        answer = body(peer.expect_response(200)).decode()
        assert "m=audio" in answer and " RTP/AVP 0 101\r\n" in answer
        assert "PCMA" not in answer
        packet = media.expect(lambda p: len(p) > 12)
        assert packet[1] & 0x7F == 0  # what we send is labelled PCMU


def test_offer_without_pcmu_gets_488() -> None:
    calls, peer = Calls(answer=True), Peer()
    with running_phone(calls) as phone:
        dialog = Dialog(peer, phone.sip_port)
        dialog.send(dialog.invite("8 101"))
        peer.expect_response(488)
        assert calls.queue.empty()


# -- methods pyVoIP did not answer ------------------------------------------------------------


def test_options_gets_200_with_allow() -> None:
    peer = Peer()
    with running_phone() as phone:
        dialog = Dialog(peer, phone.sip_port)
        dialog.send(dialog.request("OPTIONS", to_tag=""))
        ok = peer.expect_response(200, "OPTIONS")
        assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"} <= {
            m.strip() for m in header(ok, "Allow").split(",")
        }


def test_other_methods_get_405_with_allow() -> None:
    peer = Peer()
    with running_phone() as phone:
        for method in ("MESSAGE", "INFO", "NOTIFY", "SUBSCRIBE", "REGISTER", "FOO"):
            dialog = Dialog(peer, phone.sip_port)
            text = '<?xml version="1.0"?><mxml><cid>alarm-42</cid><stc>SOS</stc></mxml>'
            dialog.send(
                dialog.request(method, body_text=text, content_type="application/scaip+xml")
            )
            reply = peer.expect_response(405, method)
            assert "INVITE" in header(reply, "Allow")


def test_header_line_without_colon_space_keeps_the_invite() -> None:
    calls, peer = Calls(), Peer()
    with running_phone(calls) as phone:
        dialog = Dialog(peer, phone.sip_port)
        # A real softphone sends an empty Supported:; RFC 3261 §7.3.1 needs no space either.
        dialog.send(dialog.invite(extra="Supported:\r\nUser-Agent:Terminal/1.0\r\n"))
        peer.expect_response(180)
        assert calls.next().call_id == dialog.call_id


# -- dialogs through a proxy ------------------------------------------------------------------


def proxied_invite(dialog: Dialog, proxy: Peer, terminal_port: int) -> str:
    """The INVITE as a record-routing proxy forwards it: its Via on top, two Record-Routes."""
    proxy_via = f"SIP/2.0/UDP {HOST}:{proxy.port};branch=z9hG4bK{uuid.uuid4().hex[:10]}"
    term_via = f"SIP/2.0/UDP {HOST}:{terminal_port};branch={dialog.branch}"
    extra = (
        f"Record-Route: <sip:{HOST}:{proxy.port};lr>\r\n"
        f"Record-Route: <sip:10.0.0.2;lr;ftag=x>, <sip:10.0.0.3;lr>\r\n"
    )
    return dialog.invite(via=f"{proxy_via}\r\nVia: {term_via}", extra=extra)


RECORD_ROUTE = ["<sip:{proxy};lr>", "<sip:10.0.0.2;lr;ftag=x>", "<sip:10.0.0.3;lr>"]


def test_record_route_is_mirrored_in_180_and_200() -> None:
    calls, proxy = Calls(), Peer()
    with running_phone(calls) as phone:
        dialog = Dialog(proxy, phone.sip_port)
        proxy.send(proxied_invite(dialog, proxy, 5099), (HOST, phone.sip_port))
        expected = [rr.format(proxy=f"{HOST}:{proxy.port}") for rr in RECORD_ROUTE]
        assert headers(proxy.expect_response(180), "Record-Route") == expected
        calls.next().answer()
        assert headers(proxy.expect_response(200), "Record-Route") == expected


def test_our_bye_carries_the_route_set_and_our_own_via() -> None:
    calls, proxy, elsewhere = Calls(), Peer(), Peer()
    with running_phone(calls, server=elsewhere.addr) as phone:
        dialog = Dialog(proxy, phone.sip_port)
        proxy.send(proxied_invite(dialog, proxy, 5099), (HOST, phone.sip_port))
        call = calls.next()
        call.answer()
        ok = proxy.expect_response(200)
        call.hangup()
        bye = proxy.expect(lambda m: m.startswith(b"BYE "))
        assert bye.split(b" ")[1] == f"sip:alarm7@{HOST}:{proxy.port}".encode()  # the Contact
        expected = [rr.format(proxy=f"{HOST}:{proxy.port}") for rr in RECORD_ROUTE]
        assert headers(bye, "Route") == expected
        vias = headers(bye, "Via")
        assert len(vias) == 1 and vias[0].startswith(f"SIP/2.0/UDP {HOST}:{phone.sip_port};")
        assert f"tag={to_tag(ok)}" in header(bye, "From")
        assert f"tag={dialog.from_tag}" in header(bye, "To")
        # UDP: the BYE is sent again until a final response (RFC 3261 §17.1.2.2).
        again = proxy.expect(lambda m: m.startswith(b"BYE "))
        assert header(again, "Via") == vias[0]
        reply = f"SIP/2.0 200 OK\r\nVia: {vias[0]}\r\nCall-ID: {dialog.call_id}\r\n"
        proxy.send(reply + "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n", (HOST, phone.sip_port))
        time.sleep(0.2)  # a retransmission may be in flight when the 200 arrives
        assert not [m for m in proxy.collect(1.5) if m.startswith(b"BYE ")]


# -- transactions -----------------------------------------------------------------------------


def test_100_trying_comes_first() -> None:
    calls, peer = Calls(), Peer()
    with running_phone(calls) as phone:
        dialog = Dialog(peer, phone.sip_port)
        dialog.send(dialog.invite())
        peer.expect_response(180)
        assert status(peer.seen[0]) == 100


def test_200_is_retransmitted_until_ack() -> None:
    calls, peer = Calls(answer=True), Peer()
    with running_phone(calls, t1=0.1) as phone:
        dialog = Dialog(peer, phone.sip_port)
        dialog.send(dialog.invite())
        oks = [peer.expect_response(200, timeout=3) for _ in range(3)]
        assert len({to_tag(ok) for ok in oks}) == 1
        dialog.remote_tag = to_tag(oks[0])
        dialog.ack()
        time.sleep(0.2)
        peer.collect(0.1)
        assert not [m for m in peer.collect(1.0) if status(m) == 200]
        assert calls.next().state == CallState.ANSWERED


def test_no_ack_ends_the_call_with_bye() -> None:
    calls, peer = Calls(answer=True), Peer()
    with running_phone(calls, t1=0.05) as phone:  # 64·T1 = 3.2 s
        dialog = Dialog(peer, phone.sip_port)
        dialog.send(dialog.invite())
        peer.expect_response(200)
        peer.expect(lambda m: m.startswith(b"BYE "), timeout=10)
        call = calls.next()
        assert wait_for(lambda: call.state == CallState.ENDED)


def test_bye_and_cancel_for_unknown_calls_get_481() -> None:
    peer = Peer()
    with running_phone() as phone:
        dialog = Dialog(peer, phone.sip_port)
        dialog.bye()
        peer.expect_response(481, "BYE")
        dialog.send(dialog.request("CANCEL", to_tag=""))
        peer.expect_response(481, "CANCEL")


def test_resent_invite_is_absorbed() -> None:
    calls, peer = Calls(), Peer()
    with running_phone(calls) as phone:
        dialog = Dialog(peer, phone.sip_port, rtp_port=peer.port)
        invite = dialog.invite()
        dialog.send(invite)
        first = peer.expect_response(180)
        call = calls.next()
        dialog.send(invite)  # the terminal's Timer A fired: same Call-ID, same branch
        assert to_tag(peer.expect_response(180)) == to_tag(first)
        call.answer()
        ok = peer.expect_response(200)
        threads = rtp_threads()
        dialog.send(invite)  # the 200 was lost
        again = peer.expect_response(200)
        assert (to_tag(again), sdp_port(again)) == (to_tag(ok), sdp_port(ok))
        assert rtp_threads() == threads
        assert calls.queue.empty() and len(calls.started_at) == 1


def test_reinvite_keeps_media_and_answers_the_same_sdp() -> None:
    calls, peer, media = Calls(answer=True), Peer(), Peer()
    with running_phone(calls) as phone:
        dialog, ok = answered_call(phone.sip_port, peer, calls)
        call, threads = calls.next(), rtp_threads()
        branch = f"z9hG4bK{uuid.uuid4().hex[:10]}"
        dialog.send(dialog.request("INVITE", cseq=2, branch=branch, body_text=sdp(media.port)))
        again = peer.expect_response(200)
        assert (to_tag(again), sdp_port(again)) == (to_tag(ok), sdp_port(ok))
        dialog.ack(cseq=2)
        assert rtp_threads() == threads
        media.expect(lambda p: len(p) > 12)  # our RTP now goes to the new address
        send_digit(media, (HOST, sdp_port(ok)), 5, 1, 500)
        assert wait_for(lambda: call.dtmf.getvalue() == "5")


def test_unreadable_sdp_gets_488() -> None:
    peer = Peer()
    bodies = {
        "no SDP": "",
        "port not a number": sdp(4000).replace("m=audio 4000", "m=audio notaport"),
        "no c= line": sdp(4000).replace(f"c=IN IP4 {HOST}\r\n", ""),
        "SRTP only": sdp(4000).replace("RTP/AVP", "RTP/SAVP"),
    }
    with running_phone(Calls()) as phone:
        for name, text in bodies.items():
            dialog = Dialog(peer, phone.sip_port)
            dialog.send(dialog.request("INVITE", body_text=text, to_tag=""))
            assert peer.expect_response(488), name


def test_content_length_beyond_the_datagram_gets_400() -> None:
    calls, peer = Calls(), Peer()
    with running_phone(calls) as phone:
        dialog = Dialog(peer, phone.sip_port)
        invite = dialog.invite()
        length = header(invite.encode(), "Content-Length")
        dialog.send(invite.replace(f"Content-Length: {length}", "Content-Length: 99999999"))
        peer.expect_response(400)
        assert calls.queue.empty()


# -- start-up and the call callback -----------------------------------------------------------


def test_call_callback_starts_at_once() -> None:
    calls, peer = Calls(), Peer()
    with running_phone(calls) as phone:
        dialog = Dialog(peer, phone.sip_port)
        dialog.send(dialog.invite())
        peer.expect_response(180)
        ringing_at = time.monotonic()
        calls.next()
        assert calls.started_at[0] - ringing_at < 0.5  # pyVoIP: Timer(1, ...) after the 180


def test_tags_are_not_hoarded() -> None:
    peer = Peer()
    with running_phone() as phone:
        dialog = Dialog(peer, phone.sip_port)
        for _ in range(20):  # Kamailio's dispatcher probes every few seconds, for months
            dialog.send(dialog.request("OPTIONS", to_tag="", branch=f"z9hG4bK{uuid.uuid4().hex}"))
            peer.expect_response(200, "OPTIONS")
        assert phone.sip.tags == []


def test_start_sends_no_register() -> None:
    registrar = Peer()
    started = time.monotonic()
    with running_phone(server=registrar.addr) as phone:
        assert time.monotonic() - started < 1.0
        assert registrar.collect(0.3) == []
        assert phone.sip_port


def test_stock_rtp_parser_is_patched_on_pyvoip_itself() -> None:
    """harden() patches pyVoIP's own classes: a stock RTPClient survives a 1-byte packet too."""
    with running_phone():
        client = RTP.RTPClient(
            {0: RTP.PayloadType.PCMU}, HOST, 9, HOST, 9, RTP.TransmitType.SENDRECV
        )
        with pytest.raises(RTP.RTPParseError):
            client.parse_packet(b"\x80")


def test_every_fix_has_a_regression_test() -> None:
    assert set(FIX_OF_TEST.values()) == set(FIXES)
    assert set(FIX_OF_TEST) <= {name for name in globals() if name.startswith("test_")}
