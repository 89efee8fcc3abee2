"""The same INVITE reaching the centre along another proxy path is the same alarm.

Behind the SIP edge, Kamailio tries a second handler when the first is slow; its own Via (on top,
with a new branch) differs per attempt, the terminal's request does not. The alarm's key is the
Call-ID with the terminal's From tag and CSeq (RFC 3261 §8.2.2.2), so a failed-over INVITE that
both handlers answered is stored once (bench/storm_edge.py counted 140 duplicates at 150 calls/s
when the key used the top Via branch).
"""

from __future__ import annotations

from aiosipua import SipMessage, SipRequest

from callcenter.sip.aiosipua_backend import request_key
from callcenter.sip.pyvoip_sipmsg import HardenedSIPMessage

INVITE = (
    "INVITE sip:200@centre.local SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK{edge}\r\n"
    "Via: SIP/2.0/UDP 10.1.2.3:5062;branch=z9hG4bKterminal1;received=10.1.2.3\r\n"
    "From: <sip:lht000001@centre.local>;tag=t1\r\n"
    "To: <sip:200@centre.local>\r\n"
    "Call-ID: call-1@10.1.2.3\r\n"
    "CSeq: {cseq} INVITE\r\n"
    "Contact: <sip:lht000001@10.1.2.3:5062>\r\n"
    "Max-Forwards: 69\r\n"
    "Content-Length: 0\r\n\r\n"
)


def aiosipua_key(edge: str, cseq: int = 1) -> str:
    message = SipMessage.parse(INVITE.format(edge=edge, cseq=cseq).encode())
    assert isinstance(message, SipRequest)
    return request_key(message)


def pyvoip_key(edge: str, cseq: int = 1) -> str:
    message = HardenedSIPMessage(INVITE.format(edge=edge, cseq=cseq).encode())
    return f"{message.from_tag}:{message.cseq}"


def test_the_key_ignores_the_edges_via_and_keeps_the_terminals_request() -> None:
    for key in (aiosipua_key, pyvoip_key):
        assert key("first-handler") == key("second-handler") == "t1:1"
        assert key("first-handler", cseq=2) != key("first-handler")  # a new press, a new key
