"""Outgoing calls on aiosipua 0.7.1 + aiortp 0.8.0: the operator's SIP phone, and the elder's
terminal when it has to be called back.

aiosipua's ``SipUAC`` sends the INVITE, ACKs a 2xx, sends BYE and CANCEL. Gaps closed here,
each seen in its source (pinned in pyproject.toml) and named where it is closed:

- the INVITE is sent once: over UDP it must be retransmitted until a response (RFC 3261
  §17.1.1.2, Timer A), and given up after 64·T1 without one (Timer B);
- a non-2xx final response is not ACKed (RFC 3261 §17.1.1.3): the phone would re-send its 486
  for 32 s;
- the 2xx's Contact and Record-Route are not kept (RFC 3261 §12.1.2): the ACK and BYE went to
  the To URI with no route set;
- a 2xx that crosses our CANCEL is dropped (the call is forgotten on CANCEL): RFC 3261 §9.1
  wants it ACKed and then ended with BYE, or the phone rings on into a dead call;
- CANCEL is sent once: retransmitted here as a non-INVITE request (§17.1.2).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from aiortp import RTPSession
from aiosipua import DialogState, OutgoingCall, SipRequest, SipResponse, SipUAC, stringify_uri
from aiosipua.sdp_negotiate import build_sdp
from aiosipua.utils import format_addr

from callcenter.sip.interface import AudioSink, DialFailed
from callcenter.sip.rtp_out import RtpOut

if TYPE_CHECKING:
    from callcenter.sip.aiosipua_backend import AiosipuaBackend

log = structlog.get_logger(__name__)

T1 = 0.5  # RFC 3261 §17: retransmission base
T2 = 4.0
TIMER_B = 64 * T1  # an INVITE nobody answers at all
PCMU = 0
TELEPHONE_EVENT = 101
BYE_TIMEOUT = 8.0


@dataclass
class _Dialled:
    """An INVITE we sent, remembered until 64·T1 after the call is over (late responses)."""

    call: OutgoingCall
    heard: asyncio.Event = field(default_factory=asyncio.Event)  # any response
    final: asyncio.Event = field(default_factory=asyncio.Event)  # a final response


class CentreUAC(SipUAC):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._dialled: dict[str, _Dialled] = {}

    def track(self, call: OutgoingCall) -> _Dialled:
        dialled = self._dialled[call.call_id] = _Dialled(call)
        return dialled

    def forget_later(self, call_id: str) -> None:
        asyncio.get_running_loop().call_later(TIMER_B, self._dialled.pop, call_id, None)

    def handle_response(self, response: SipResponse, addr: tuple[str, int]) -> None:
        call_id = response.call_id or ""
        dialled = self._dialled.get(call_id)
        cseq = response.cseq
        if dialled is None or cseq is None or cseq.method.upper() != "INVITE":
            super().handle_response(response, addr)
            return
        dialled.heard.set()
        status = response.status_code
        if status >= 200:
            dialled.final.set()
        call = dialled.call
        if 200 <= status < 300:
            if call_id not in self._calls:
                self._answered_after_cancel(call, response, addr)
                return
            if call.dialog.state is DialogState.EARLY:
                _adopt_target(call, response)
        elif status >= 300:
            self._ack_failure(call, response)
        super().handle_response(response, addr)

    def _ack_failure(self, call: OutgoingCall, response: SipResponse) -> None:
        """RFC 3261 §17.1.1.3: the ACK of a non-2xx is part of the INVITE transaction: same
        branch, the INVITE's From and Route, the response's To (with its tag)."""
        invite = call.invite
        ack = SipRequest(method="ACK", uri=invite.uri)
        ack.headers.append("Via", invite.headers.get_first("via") or "")
        ack.headers.set_single("From", invite.headers.get_first("from") or "")
        ack.headers.set_single("To", response.headers.get_first("to") or "")
        ack.headers.set_single("Call-ID", call.call_id)
        ack.headers.set_single("CSeq", f"{invite.cseq.seq if invite.cseq else 1} ACK")
        ack.headers.set_single("Max-Forwards", "70")
        for route in invite.headers.get("route"):
            ack.headers.append("Route", route)
        self.transport.send(ack, call.remote_addr)

    def _answered_after_cancel(
        self, call: OutgoingCall, response: SipResponse, addr: tuple[str, int]
    ) -> None:
        """RFC 3261 §9.1/§15: the callee answered as we gave up: ACK the 2xx, then BYE."""
        if call.dialog.state is DialogState.CONFIRMED:
            return  # already done for an earlier copy of this 2xx
        log.info("sip.answered_after_cancel", call_id=call.call_id)
        self._calls[call.call_id] = call  # let the library ACK it as usual ...
        call.dialog.state = DialogState.EARLY
        _adopt_target(call, response)
        super().handle_response(response, addr)
        with contextlib.suppress(ValueError):
            self.send_bye(call.dialog, call.remote_addr)  # ... and end it


def _adopt_target(call: OutgoingCall, response: SipResponse) -> None:
    """RFC 3261 §12.1.2: the remote target is the 2xx's Contact; the route set is its
    Record-Route, reversed."""
    contacts = response.contact
    if contacts:
        call.dialog.remote_target = stringify_uri(contacts[0].uri)
    call.dialog.route_set = list(reversed(response.headers.get("record-route")))


class OutgoingLeg:
    """One answered outgoing call (implements :class:`callcenter.sip.interface.MediaLeg`)."""

    def __init__(
        self, backend: AiosipuaBackend, call: OutgoingCall, port: int, session: RTPSession
    ) -> None:
        self._backend = backend
        self._call = call
        self._port: int | None = port
        self._session: RTPSession | None = session
        self._out = RtpOut()
        self._ended = asyncio.Event()
        self.call_id = call.call_id
        self.on_released: Callable[[], object] | None = None

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def listen(self, sink: AudioSink | None) -> None:
        if self._session is not None:
            self._session.on_audio = (lambda pcm, _ts: sink(pcm)) if sink is not None else None

    def send_audio(self, pcm: bytes) -> None:
        if self._session is not None and not self._ended.is_set():
            self._out.send_pcm(self._session, pcm)

    async def hangup(self) -> None:
        if not self._ended.is_set():
            self._ended.set()
            if self._call.dialog.state is DialogState.CONFIRMED:
                bye = self._backend.uac.send_bye(self._call.dialog, self._call.remote_addr)
                # Sent once by the library; UDP needs it retransmitted (RFC 3261 §17.1.2).
                self._backend.uas.spawn(self._await_bye(bye))
        await self._release()

    async def _await_bye(self, bye: SipRequest) -> None:
        with contextlib.suppress(TimeoutError):
            await self._backend.uas.request(
                bye, self._call.remote_addr, timeout=BYE_TIMEOUT, already_sent=True
            )

    def far_end_hung_up(self) -> None:
        self._ended.set()
        self._backend.uas.spawn(self._release())

    async def wait_ended(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._ended.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _release(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.on_audio = None
            await session.close()
        if self._port is not None:
            self._backend.ports.release(self._port)
            self._port = None
            self._backend.uac.forget_later(self.call_id)
            if self.on_released is not None:
                self.on_released()


async def place_call(
    backend: AiosipuaBackend,
    uri: str,
    destination: tuple[str, int],
    *,
    caller: str,
    ring_s: float,
) -> OutgoingLeg:
    """INVITE ``uri`` at ``destination`` offering PCMU + telephone-event; the leg once answered.

    Raises :class:`DialFailed` (busy, declined, no answer, unreachable, no common codec). If
    the wait is cancelled (the other party hung up meanwhile), the INVITE is CANCELled.
    """
    uac = backend.uac
    port = backend.ports.acquire()
    call: OutgoingCall | None = None
    try:
        offer = build_sdp(backend.media_host, port, PCMU, "PCMU",
                          dtmf_payload_type=TELEPHONE_EVENT,
                          advertised_ip=backend.advertised_host)  # fmt: skip
        local = format_addr(*uac._local_addr())
        call = uac.send_invite(
            f"sip:{caller}@{local}", uri, destination, offer, user_agent=backend.user_agent
        )
        dialled = uac.track(call)
        log.info("sip.dialling", call_id=call.call_id, uri=uri, destination=destination)
        await _wait_answered(backend, dialled, ring_s)
    except BaseException:
        backend.ports.release(port)
        if call is not None:
            uac.forget_later(call.call_id)
        raise
    try:
        session, remote = await _start_media(backend, call, port)
    except BaseException:
        # Answered, but we cannot take the media: end the call rather than leave it silent.
        with contextlib.suppress(ValueError):
            uac.send_bye(call.dialog, call.remote_addr)
        backend.ports.release(port)
        uac.forget_later(call.call_id)
        raise
    leg = OutgoingLeg(backend, call, port, session)
    if call.call_id not in uac._calls:
        leg.far_end_hung_up()  # a BYE came in while we bound the media
    log.info("sip.dial_answered", call_id=call.call_id, media=remote)
    return leg


async def _start_media(
    backend: AiosipuaBackend, call: OutgoingCall, port: int
) -> tuple[RTPSession, tuple[str, int]]:
    """Our RTP socket, sending to where the answer says; PCMU or nothing (we offered only it)."""
    answer = call.sdp_answer
    audio = answer.audio if answer is not None else None
    remote = answer.rtp_address if answer is not None else None
    if audio is None or remote is None or audio.port == 0:
        raise DialFailed(488, "no audio in the answer")
    if not any(c.payload_type == PCMU for c in audio.codecs):
        raise DialFailed(488, "no common codec (PCMU)")
    te = next(
        (c.payload_type for c in audio.codecs if c.encoding_name.lower() == "telephone-event"),
        TELEPHONE_EVENT,
    )
    session = await RTPSession.create(
        local_addr=(backend.media_host, port),
        remote_addr=remote,
        payload_type=PCMU,
        clock_rate=8000,
        dtmf_payload_type=te,
    )
    return session, remote


async def _wait_answered(backend: AiosipuaBackend, dialled: _Dialled, ring_s: float) -> None:
    call = dialled.call
    answered = asyncio.ensure_future(call.wait_answered(timeout=ring_s))
    resender = asyncio.ensure_future(_retransmit_invite(backend.uac, dialled))
    try:
        done, _ = await asyncio.wait({answered, resender}, return_when=asyncio.FIRST_COMPLETED)
        if answered not in done and not resender.result():
            _abandon(backend, dialled)
            raise DialFailed(408, "unreachable / 无法接通")
        await answered
    except TimeoutError:
        _abandon(backend, dialled)
        raise DialFailed(480, "no answer / 无人接听") from None
    except RuntimeError:
        # aiosipua reports a 3xx-6xx final response this way; the ACK went out above.
        raise DialFailed(call._reject_code, call._reject_reason) from None
    except asyncio.CancelledError:
        _abandon(backend, dialled)
        raise
    finally:
        answered.cancel()
        resender.cancel()


async def _retransmit_invite(uac: CentreUAC, dialled: _Dialled) -> bool:
    """RFC 3261 §17.1.1.2 Timer A; False if Timer B fired with no response at all."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMER_B
    interval = T1
    while True:
        try:
            await asyncio.wait_for(dialled.heard.wait(), interval)
            return True
        except TimeoutError:
            if loop.time() >= deadline:
                return False
            uac.transport.send(dialled.call.invite, dialled.call.remote_addr)
            interval *= 2


def _abandon(backend: AiosipuaBackend, dialled: _Dialled) -> None:
    """Give up an unanswered INVITE: CANCEL it if the callee has answered at all (RFC 3261
    §9.1 forbids it before a provisional), and forget it, so that a late 2xx gets ACK + BYE."""
    call = dialled.call
    if call.dialog.state is not DialogState.EARLY:
        return
    uac = backend.uac
    if dialled.heard.is_set():
        cancel = call.cancel(uac)
        if cancel is not None:
            backend.uas.spawn(_retransmit_cancel(uac, dialled, cancel))
    else:
        call.dialog.terminate()
        uac.remove_call(call.call_id)


async def _retransmit_cancel(uac: CentreUAC, dialled: _Dialled, cancel: SipRequest) -> None:
    """A non-INVITE request over UDP (RFC 3261 §17.1.2): until the INVITE's final response
    (the 487 the CANCEL causes) or 64·T1."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMER_B
    interval = T1
    while not dialled.final.is_set() and loop.time() < deadline:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(dialled.final.wait(), interval)
            return
        uac.transport.send(cancel, dialled.call.remote_addr)
        interval = min(interval * 2, T2)
