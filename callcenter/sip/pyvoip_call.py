"""An inbound pyVoIP call, hardened: our SDP negotiation, state changes through the phone.

Part of the pyVoIP backend's hardening (see :mod:`callcenter.sip.pyvoip_hardening`).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

# pyVoIP.SIP imported before pyVoIP.VoIP fails (a circular import inside pyVoIP 1.6.8).
import pyVoIP.VoIP  # noqa: F401
import structlog
from pyVoIP import RTP, SIP
from pyVoIP.VoIP import CallState
from pyVoIP.VoIP import VoIP as stock

from callcenter.sip.pyvoip_fixes import enabled
from callcenter.sip.pyvoip_rtp import HardenedRTPClient
from callcenter.sip.pyvoip_sipmsg import AudioOffer, HardenedSIPMessage, parse_name_addr

if TYPE_CHECKING:
    from callcenter.sip.pyvoip_hardening import HardenedVoIPPhone

log = structlog.get_logger(__name__)

PCMU, TELEPHONE_EVENT, PCMA = "pcmu/8000", "telephone-event/8000", "pcma/8000"
_KNOWN = {
    PCMU: RTP.PayloadType.PCMU,
    PCMA: RTP.PayloadType.PCMA,
    TELEPHONE_EVENT: RTP.PayloadType.EVENT,
}
FINISHED_TTL = 32.0  # RFC 3261 Timer H/J (64·T1): how long a finished call answers re-sends


def reason_phrase(code: int) -> str:
    try:
        return str(SIP.SIPStatus(code).phrase)
    except ValueError:
        return "Unknown"


def negotiate(offer: AudioOffer) -> dict[int, str]:
    """The codecs we answer with, in the offer's payload numbers. Empty: reject with 488."""
    if enabled("pcmu-only"):
        pcmu = offer.pt_of(PCMU)
        if pcmu is None:
            return {}
        codecs = {pcmu: PCMU}
        te = offer.pt_of(TELEPHONE_EVENT)
        return codecs | ({te: TELEPHONE_EVENT} if te is not None else {})
    # pyVoIP's own choice (VoIP.py:117): every codec it knows, in the offer's order.
    return {pt: n for pt in offer.payload_types if (n := offer.names.get(pt, "")) in _KNOWN}


@dataclass
class Finished:
    """A call that ended recently: re-sent INVITE/CANCEL/BYE still get the right answer."""

    invite_branch: str
    to_tag: str
    final: bytes | None
    bye_branch: str = ""
    bye_response: bytes | None = None
    expires: float = 0.0


class HardenedVoIPCall(stock.VoIPCall):
    """An inbound call. State changes go through the phone, under its lock."""

    phone: HardenedVoIPPhone
    request: HardenedSIPMessage

    def __init__(
        self,
        phone: HardenedVoIPPhone,
        request: HardenedSIPMessage,
        session_id: int,
        offer: AudioOffer,
        codecs: dict[int, str],
        port: int,
    ) -> None:
        # VoIPCall.__init__ negotiates RINGING calls itself (VoIP.py:82): it raises on SDP it
        # cannot read and resets the warning filters (VoIP.py:143). We negotiated already; a
        # state other than RINGING/DIALING makes it set up only its buffers.
        super().__init__(phone, CallState.ENDED, request, session_id, phone.myIP)
        self.state = CallState.RINGING
        self.offer, self.codecs, self.rtp_port = offer, codecs, port
        self.to_tag = phone.sip.gen_tag()
        phone.sip.tagLibrary[self.call_id] = self.to_tag  # pyVoIP's gen_bye reads it
        self.invite_branch = request.branch
        self.source = request.source
        contact = request.fields.get("Contact") or request.fields.get("From", "")
        self.remote_target = parse_name_addr(str(contact).split(",")[0]).uri
        self.route_set = list(request.record_route)  # RFC 3261 §12.1.1: UAS keeps the order
        self.local_cseq = 0
        self.last_invite_response = b""
        self.unacked: dict[int, bytes] = {}  # CSeq -> 200 OK still waiting for its ACK
        self.reinvites: dict[str, bytes] = {}  # branch -> our 200, for a re-sent re-INVITE
        self.end_reason = ""
        self._end_listeners: list[Callable[[str], None]] = []
        assoc = {pt: _KNOWN[name] for pt, name in codecs.items()}
        self.RTPClients.append(
            HardenedRTPClient(
                assoc,
                phone.bind_host,
                port,
                offer.address,
                offer.port,
                RTP.TransmitType.SENDRECV,
                dtmf=self.dtmf_callback,
                on_closed=lambda: phone.release_port(port),
            )
        )
        self.assignedPorts = {port: assoc}

    def answer(self) -> None:
        self.phone.answer_call(self)

    def reject(self, code: int, reason: str = "") -> None:
        self.phone.reject_call(self, code, reason)

    def deny(self) -> None:
        self.reject(486)

    def hangup(self) -> None:
        """BYE if answered, 480 if still ringing, nothing if ended (pyVoIP raises instead)."""
        self.phone.hangup_call(self)

    def clear_dtmf(self) -> None:
        with self.dtmfLock:
            self.dtmf = io.StringIO()

    def on_end(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(reason)`` once the call has ended (at once if it has)."""
        with self.phone.lock:
            if self.state != CallState.ENDED:
                self._end_listeners.append(listener)
                return
        listener(self.end_reason)

    def notify_end(self) -> None:
        listeners, self._end_listeners = self._end_listeners, []
        for listener in listeners:
            try:
                listener(self.end_reason)
            except Exception:
                log.exception("pyvoip.call.end_listener_failed", call_id=self.call_id)
