"""The pyVoIP 1.6.8 defects our adapter closes, one id each (shared/docs/PYVOIP.md).

Every fix in :mod:`callcenter.sip.pyvoip_hardening`, :mod:`~callcenter.sip.pyvoip_rtp` and
:mod:`~callcenter.sip.pyvoip_sipmsg` is guarded by ``enabled(<id>)``. The guard exists for one
purpose: the regression-test audit. Each test in ``tests/sip/test_pyvoip_hardening.py`` must fail
when its fix is listed in :data:`DISABLED`, which the tests fill from the environment variable
``HYT_PYVOIP_DISABLE_FIXES`` (comma-separated ids). Production code never touches it, so in
production every fix is on.
"""

from __future__ import annotations

# id -> (the defect, what the fix does). Kept here so that the ids, the defects and the tests
# can be read side by side.
FIXES: dict[str, tuple[str, str]] = {
    "cancel": (
        "CANCEL gets 200, then the call is answered anyway",
        "RFC 3261 §9.2: 200 to the CANCEL, 487 to the INVITE, the call ends and answer() raises",
    ),
    "rtp-robust": (
        "one malformed RTP packet kills the call's RTP receive thread",
        "length-checked RTP parsing, events > 15 ignored, the receive loop survives any packet",
    ),
    "rtp-ports": (
        "RTP ports of inbound calls are never released; live ports reused on exhaustion",
        "a free-list of even ports, a port returns only once its socket is closed",
    ),
    "rtp-jump": (
        "an RTP timestamp jump grows the receive buffer to hundreds of MB",
        "a bounded receive buffer (2 s); a jump re-anchors it",
    ),
    "reply-via": (
        "responses go to the configured server, not to the sender",
        "RFC 3261 §18.2.1/§18.2.2 + RFC 3581: received/rport stamped, reply to the top Via",
    ),
    "pcmu-only": (
        "PCMA negotiated, but μ-law bytes are sent labelled A-law",
        "offer/answer PCMU (+ telephone-event) only, 488 without PCMU; PCMA encoded as A-law",
    ),
    "options": (
        "OPTIONS gets no reply (proxies probing with OPTIONS mark us dead)",
        "RFC 3261 §11.2: 200 OK with Allow and Accept",
    ),
    "405": (
        "MESSAGE, INFO, NOTIFY and other methods get no reply at all",
        "RFC 3261 §8.2.1: 405 Method Not Allowed with Allow",
    ),
    "header-tolerant": (
        "a header line without ': ' (an empty 'Supported:') drops the whole INVITE",
        "header lines split on the first ':' and stripped; compact forms; folded lines",
    ),
    "bye-route": (
        "our BYE has no Route and copies the INVITE's Via stack; sent to the configured server",
        "RFC 3261 §12.2.1.1: Route set from Record-Route, our own Via, sent to the first hop and "
        "retransmitted until a final response (§17.1.2)",
    ),
    "record-route": (
        "Record-Route not mirrored in our 180/200",
        "RFC 3261 §12.1.1: Record-Route copied into every dialog-creating response",
    ),
    "100-trying": ("no 100 Trying", "RFC 3261 §8.2.6.1/§17.2.1: 100 Trying at once"),
    "2xx-retransmit": (
        "our 200 OK is sent once",
        "RFC 3261 §13.3.1.4: 200 retransmitted (T1 doubling to T2) until ACK; BYE after 64·T1",
    ),
    "481": (
        "BYE (and CANCEL) for an unknown Call-ID answered 200",
        "RFC 3261 §15.1.2/§9.2: 481 Call/Transaction Does Not Exist",
    ),
    "absorb-retransmit": (
        "a re-sent INVITE is ignored while ringing, or re-answered with new media after 200",
        "RFC 3261 §17.2.1: the last response for that INVITE is sent again, no second call",
    ),
    "re-invite": (
        "re-INVITE: a second 200 and duplicated RTP threads (and a socket race)",
        "RFC 3261 §14.2: 200 with the same SDP, media kept, the remote RTP address updated",
    ),
    "sdp-errors": (
        "an INVITE whose SDP pyVoIP cannot read gets no response at all",
        "RFC 3261 §21.4.26: 488 Not Acceptable Here",
    ),
    "content-length": (
        "Content-Length larger than the datagram accepted",
        "RFC 3261 §18.3: 400 Bad Request",
    ),
    "tag-leak": (
        "every To/From tag ever made is kept in a list and scanned for each new one",
        "random tags (RFC 3261 §19.3) without the list",
    ),
    "no-delay": (
        "the call callback starts 1.0 s after the INVITE (threading.Timer(1, ...))",
        "the callback starts at once",
    ),
    "no-register": (
        "start() REGISTERs (blocking) and a noisy network can stop the phone for good",
        "no REGISTER: the centre is a UAS reached directly or through Kamailio's dispatcher",
    ),
}

DISABLED: set[str] = set()


def enabled(fix: str) -> bool:
    """True unless the regression-test audit switched ``fix`` off (see module docstring)."""
    if fix not in FIXES:
        raise KeyError(f"unknown pyVoIP fix {fix!r}")
    return fix not in DISABLED
