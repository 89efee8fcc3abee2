"""The default call-handler backend: aiosipua + aiortp on one asyncio event loop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections import deque

import structlog
from aiosipua import DialogState, IncomingCall, SipRequest
from aiosipua.header_codec import parse_uri
from aiosipua.rtp_bridge import CallSession
from aiosipua.sdp_negotiate import SdpNegotiationError

from callcenter.sip.aiosipua_transport import CentreTransport
from callcenter.sip.aiosipua_uac import CentreUAC, OutgoingLeg, place_call
from callcenter.sip.aiosipua_uas import CentreUAS, MessageHandler
from callcenter.sip.interface import AudioSink, CallCallback, CallEnded, CallInfo
from callcenter.sip.pacer import Pacer
from callcenter.sip.rtp_guard import guard_dtmf_receiver
from callcenter.sip.rtp_out import RtpOut

log = structlog.get_logger(__name__)

PCMU = 0
DTMF_DIGITS = frozenset("0123456789*#ABCD")
BYE_TIMEOUT = 8.0


def telephone_event_pt(call: IncomingCall) -> int | None:
    """The offer's RFC 4733 payload type, if it offers PCMU too; None means we cannot serve it."""
    offer = call.sdp_offer
    audio = offer.audio if offer else None
    if offer is None or audio is None or audio.port == 0 or offer.rtp_address is None:
        return None
    if not any(c.payload_type == PCMU for c in audio.codecs):
        return None
    return next(
        (c.payload_type for c in audio.codecs if c.encoding_name.lower() == "telephone-event"),
        None,
    )


def uri_user(text: str) -> str:
    """The user part of a SIP URI (``sip:lht000001@host`` → ``lht000001``), or ""."""
    text = text.strip()
    if "<" in text:
        text = text[text.index("<") + 1 : text.rindex(">") if ">" in text else len(text)]
    try:
        return parse_uri(text).user or ""
    except (ValueError, IndexError):
        return ""


def request_key(invite: SipRequest) -> str:
    """From tag and CSeq: the terminal's own request, whatever Via the SIP edge put on top."""
    from_addr = invite.from_addr
    tag = (from_addr.tag or "") if from_addr else ""
    cseq = (invite.headers.get_first("cseq") or "").split()
    return f"{tag}:{cseq[0] if cseq else ''}"


def contact_uri(header: str) -> str:
    """The URI of a Contact header value (``"x" <sip:u@h:p>;expires=60`` → ``sip:u@h:p``)."""
    text = header.split(",", 1)[0].strip()
    if "<" in text and ">" in text:
        return text[text.index("<") + 1 : text.index(">")]
    return text.split(";", 1)[0].strip()


def edge_address(edge: str) -> str:
    """``kamailio.local:5060`` / ``10.0.0.5`` / ``[::1]:5060`` → the IP requests come from."""
    host = edge.rsplit(":", 1)[0] if edge.count(":") == 1 else edge
    host = host.strip("[]")
    return socket.gethostbyname(host) if not host.replace(".", "").isdigit() else host


SIP_RCVBUF = 8 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def enlarge_receive_buffer(sock: socket.socket | None, size: int = SIP_RCVBUF) -> int:
    """A storm arrives faster than any loop iteration: give the kernel room to queue it.

    The default (net.core.rmem_max, 208 KiB on Debian) overflowed at 100 calls/s: the kernel
    counted thousands of RcvbufErrors and INVITEs were dropped. As root, SO_RCVBUFFORCE goes
    past the sysctl cap; otherwise the cap applies (raise net.core.rmem_max on the host).
    """
    if sock is None:
        return 0
    for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
            break
        except OSError:
            continue
    granted: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if granted < size:
        log.warning("sip.small_receive_buffer", bytes=granted, wanted=size)
    return granted


PORT_ATTEMPTS = 16  # RTP ports tried for one call before it is refused with 500


class PortPool:
    """Even RTP ports (RTCP takes the odd one above), handed out and always given back."""

    def __init__(self, low: int, high: int) -> None:
        self._free = deque(range(low + low % 2, high - 1, 2))

    def acquire(self) -> int:
        if not self._free:
            raise RuntimeError("no free RTP port")
        return self._free.popleft()

    def release(self, port: int) -> None:
        self._free.append(port)

    def __len__(self) -> int:
        return len(self._free)


class AiosipuaCall:
    """One inbound call (implements :class:`callcenter.sip.interface.CallHandle`)."""

    def __init__(self, backend: AiosipuaBackend, call: IncomingCall, info: CallInfo) -> None:
        self._backend = backend
        self._call = call
        self._info = info
        self._session: CallSession | None = None
        self._port: int | None = None
        self._digits: asyncio.Queue[str] = asyncio.Queue()
        self._ended = asyncio.Event()
        self._answered = False
        self._rejected = False
        self._out = RtpOut()

    @property
    def info(self) -> CallInfo:
        return self._info

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def _raise_if_ended(self) -> None:
        if self._ended.is_set() or self._call.dialog.state == DialogState.TERMINATED:
            self._ended.set()
            raise CallEnded(self._info.call_id)

    async def answer(self) -> None:
        self._raise_if_ended()
        if self._answered:
            return
        te = telephone_event_pt(self._call)
        offer = self._call.sdp_offer
        if te is None or offer is None:
            # No PCMU, no RTP address, or no telephone-event: we could not hear a digit.
            await self.reject(488, "Not Acceptable Here")
            raise CallEnded(self._info.call_id)
        try:
            for attempt in range(PORT_ATTEMPTS):
                self._port = self._backend.ports.acquire()
                self._session = CallSession(
                    self._backend.media_host,
                    self._port,
                    offer,
                    advertised_ip=self._backend.advertised_host,
                    supported_codecs=[PCMU],  # the default [0, 8] picks PCMA when offered first
                    dtmf_payload_type=te,  # follow the offer's number, or every digit is lost
                )
                self._session.on_dtmf = self._on_dtmf
                try:
                    await self._session.start()  # bind RTP before the 200 announces it
                    break
                except OSError as exc:
                    # Another program holds this port (the range is shared with the machine):
                    # give it back to the end of the pool and take the next one.
                    if exc.errno != errno.EADDRINUSE or attempt == PORT_ATTEMPTS - 1:
                        raise
                    log.warning("rtp.port_in_use", port=self._port, call_id=self._info.call_id)
                    await self._release_media()
            assert self._session is not None
            guard_dtmf_receiver(self._session.rtp_session, self._on_bad_dtmf)
        except (SdpNegotiationError, ValueError, OSError) as exc:
            log.warning("sip.media_failed", call_id=self._info.call_id, reason=repr(exc)[:200])
            await self._release_media()
            await self.reject(488 if not isinstance(exc, OSError) else 500, "")
            raise CallEnded(self._info.call_id) from exc
        # A CANCEL may have arrived while we bound the port: 487 is sent, never a late 200.
        self._raise_if_ended()
        self._call.accept(self._session.sdp_answer)
        self._answered = True

    def _on_bad_dtmf(self, reason: str) -> None:
        log.warning("rtp.bad_dtmf_event", call_id=self._info.call_id, reason=reason)

    def _on_dtmf(self, digit: str, _duration: int) -> None:
        # aiortp reports an event outside RFC 4733's 0-15 as "?": line noise, never a button.
        if digit in DTMF_DIGITS:
            self._digits.put_nowait(digit)
        else:
            log.warning("rtp.bad_dtmf_event", call_id=self._info.call_id)

    async def reject(self, status: int, reason: str = "") -> None:
        if self._answered or self._rejected or self._call.dialog.state == DialogState.TERMINATED:
            return
        self._rejected = True
        self._call.final_status = status  # type: ignore[attr-defined]  # for retransmissions
        self._call.reject(status, reason)
        self._ended.set()
        await self._release_media()

    async def collect_digits(
        self, count: int, *, first_timeout: float, inter_digit_timeout: float
    ) -> str:
        digits = ""
        timeout = first_timeout
        while len(digits) < count:
            self._raise_if_ended()
            getter = asyncio.ensure_future(self._digits.get())
            ender = asyncio.ensure_future(self._ended.wait())
            done, _ = await asyncio.wait(
                {getter, ender}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            ender.cancel()
            if getter in done:
                digits += getter.result()
                timeout = inter_digit_timeout
                continue
            getter.cancel()
            if ender in done:
                raise CallEnded(self._info.call_id)
            break  # timed out
        return digits

    def clear_digits(self) -> None:
        while not self._digits.empty():
            self._digits.get_nowait()

    async def play(self, pcm: bytes) -> None:
        self._raise_if_ended()
        session = self._session
        if session is None or session.rtp_session is None:
            return  # not answered: nothing to play into
        playing = asyncio.ensure_future(self._backend.pacer.play(pcm, self._send_frame))
        ender = asyncio.ensure_future(self._ended.wait())
        try:
            done, _ = await asyncio.wait({playing, ender}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # Stopped from outside (an operator is joining the call): no more frames.
            playing.cancel()
            raise
        finally:
            ender.cancel()
        if playing not in done:
            playing.cancel()
            raise CallEnded(self._info.call_id)
        playing.result()

    def _send_frame(self, payload: bytes, first: bool) -> None:
        session = self._session
        if session is None or session.rtp_session is None:
            raise CallEnded(self._info.call_id)
        self._out.send_payload(session.rtp_session, payload, first)

    # -- media for the voice bridge (callcenter.sip.interface.MediaLeg) ------------------

    def listen(self, sink: AudioSink | None) -> None:
        session = self._session
        if session is not None:
            session.on_audio = (lambda pcm, _ts: sink(pcm)) if sink is not None else None

    def send_audio(self, pcm: bytes) -> None:
        session = self._session
        if session is None or session.rtp_session is None or self._ended.is_set():
            return
        self._out.send_pcm(session.rtp_session, pcm)

    async def hangup(self) -> None:
        if self._answered and not self._ended.is_set():
            self._ended.set()
            bye = self._call.hangup()
            if bye is not None:
                # The library sends a BYE once; UDP needs it retransmitted (RFC 3261 §17.1.2).
                self._backend.uas.spawn(self._await_bye(bye))
        self._ended.set()
        await self._release_media()

    async def _await_bye(self, bye: SipRequest) -> None:
        with contextlib.suppress(TimeoutError):
            await self._backend.uas.request(
                bye, self._call.source_addr, timeout=BYE_TIMEOUT, already_sent=True
            )

    async def wait_ended(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._ended.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def far_end_hung_up(self) -> None:
        self._ended.set()
        self._backend.uas.spawn(self._release_media())

    async def _release_media(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        if self._port is not None:
            self._backend.ports.release(self._port)
            self._port = None


class AiosipuaBackend:
    """A SIP UAS on ``host:port``; each new INVITE goes to ``on_call``, each MESSAGE to
    ``on_message`` (SCAIP)."""

    name = "aiosipua"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        rtp_port_low: int = 20000,
        rtp_port_high: int = 29999,
        advertised_host: str | None = None,
        on_message: MessageHandler | None = None,
        user_agent: str = "HuYuanTong",
        edge: str = "",
    ) -> None:
        self.host = host
        self.port = port
        self.media_host = host
        self.advertised_host = advertised_host or (None if host != "0.0.0.0" else "127.0.0.1")
        self.ports = PortPool(rtp_port_low, rtp_port_high)
        self.pacer = Pacer()
        advertised = (self.advertised_host, port) if self.advertised_host else None
        self.user_agent = user_agent
        transport = CentreTransport(local_addr=(host, port))
        # One socket for both roles: the UAS hands responses to our requests to the UAC, and
        # in-dialog requests (a BYE) on calls we placed reach it through the UAS.
        self.uac = CentreUAC(transport, advertised_addr=advertised)
        self.uas = CentreUAS(
            transport, user_agent=user_agent, advertised_addr=advertised, uac=self.uac
        )
        self.uas.on_sip_message = on_message
        if edge:
            self.uas.allowed_sources = frozenset({edge_address(edge)})
        self._calls: dict[str, AiosipuaCall] = {}
        self._legs: dict[str, OutgoingLeg] = {}
        self._on_call: CallCallback | None = None

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    async def start(self, on_call: CallCallback) -> None:
        self._on_call = on_call
        self.uas.on_invite = self._invite
        self.uas.on_bye = lambda call, _req: self._far_end_ended(call.call_id)
        self.uas.on_cancel = lambda req, _addr: self._far_end_ended(req.call_id or "")
        await self.uas.start()
        udp = getattr(self.uas.transport, "_udp_transport", None)  # aiosipua 0.7.1, pinned
        enlarge_receive_buffer(udp.get_extra_info("socket") if udp else None)
        log.info("sip.listening", backend=self.name, host=self.host, port=self.port)

    def _invite(self, call: IncomingCall) -> None:
        invite = call.invite
        from_addr = invite.from_addr
        asserted = uri_user(invite.get_header("p-asserted-identity") or "")
        info = CallInfo(
            call_id=call.call_id,
            caller_user=(from_addr.uri.user or "") if from_addr else "",
            caller_display=asserted
            or ((from_addr.display_name or "").strip('" ') if from_addr else ""),
            dialled_user=uri_user(invite.uri),
            source=call.source_addr,
            request_key=request_key(invite),
            received_at=time.time(),
            contact=contact_uri(invite.get_header("contact") or ""),
        )
        handle = AiosipuaCall(self, call, info)
        self._calls[call.call_id] = handle
        call.ringing()  # 180 at once: the terminal knows the centre is there
        self.uas.spawn(self._run(handle))

    async def _run(self, handle: AiosipuaCall) -> None:
        assert self._on_call is not None
        try:
            await self._on_call(handle)
        finally:
            if not handle.ended:
                await handle.reject(500, "Server Internal Error")
                await handle.hangup()
            self._calls.pop(handle.info.call_id, None)

    def _far_end_ended(self, call_id: str) -> None:
        handle = self._calls.get(call_id) or self._legs.get(call_id)
        if handle is not None:
            handle.far_end_hung_up()

    async def dial(
        self, uri: str, destination: tuple[str, int], *, caller: str, ring_s: float
    ) -> OutgoingLeg:
        """Place an outgoing call (implements :class:`callcenter.sip.interface.Dialler`)."""
        leg = await place_call(self, uri, destination, caller=caller, ring_s=ring_s)
        self._legs[leg.call_id] = leg
        leg.on_released = lambda: self._legs.pop(leg.call_id, None)
        return leg

    async def stop(self) -> None:
        for handle in list(self._calls.values()):
            await handle.hangup()
        for leg in list(self._legs.values()):
            await leg.hangup()
        await self.uas.stop()
