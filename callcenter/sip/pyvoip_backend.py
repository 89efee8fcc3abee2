"""The second call-handler backend: pyVoIP 1.6.8 (hardened) in its threads, behind our interface.

pyVoIP is threaded: one SIP receive thread, a timer thread, two RTP threads per answered call and
a short-lived thread per new call that hands it to asyncio. Everything the call flow sees is on
the event loop: each new INVITE becomes a :class:`PyVoipCall` whose ``on_call`` coroutine is
scheduled with ``run_coroutine_threadsafe``; blocking pyVoIP work runs in ``asyncio.to_thread``.
Audio crosses the interface as 16-bit PCM and is converted to pyVoIP's 8-bit unsigned here.
"""

from __future__ import annotations

import asyncio
import audioop
import concurrent.futures
import contextlib
import threading

import structlog
from pyVoIP.VoIP import CallState, InvalidStateError

from callcenter.sip.aiosipua_backend import edge_address
from callcenter.sip.interface import SAMPLE_RATE, CallCallback, CallEnded, CallInfo
from callcenter.sip.pyvoip_call import TELEPHONE_EVENT, HardenedVoIPCall
from callcenter.sip.pyvoip_hardening import HardenedVoIPPhone
from callcenter.sip.pyvoip_sipmsg import parse_name_addr, split_commas, uri_user

log = structlog.get_logger(__name__)

DIGIT_POLL_S = 0.02  # get_dtmf() is a non-blocking read of pyVoIP's digit buffer
STOP_GRACE_S = 2.0


def to_pyvoip_audio(pcm: bytes) -> bytes:
    """16-bit signed LE PCM → pyVoIP's 8-bit *unsigned* linear (same rate): audioop's 8-bit is
    signed, so add the 128 bias (RTP.py:490 removes it again before μ-law encoding)."""
    pcm = pcm[: len(pcm) - len(pcm) % 2]
    return audioop.bias(audioop.lin2lin(pcm, 2, 1), 1, 128)


def call_info(call: HardenedVoIPCall) -> CallInfo:
    req = call.request
    caller = parse_name_addr(str(req.fields.get("From", "")))
    pai = str(req.fields.get("P-Asserted-Identity", ""))
    asserted = parse_name_addr(split_commas(pai)[0]).user if pai else ""
    return CallInfo(
        call_id=call.call_id,
        caller_user=caller.user,
        caller_display=asserted or caller.display,
        dialled_user=uri_user(req.uri),
        source=req.source,
        request_key=f"{req.from_tag}:{req.cseq}",
        # pyVoIP's own SIPClient keeps no receipt time; our transport (HardenedSIPClient) reads
        # the socket itself and stamps each message, so this is when the INVITE arrived, not
        # when pyVoIP's callback thread got round to the call.
        received_at=req.received_at,
    )


class PyVoipCall:
    """One inbound call (implements :class:`callcenter.sip.interface.CallHandle`)."""

    def __init__(self, call: HardenedVoIPCall, loop: asyncio.AbstractEventLoop) -> None:
        self._call = call
        self._loop = loop
        self._info = call_info(call)
        self._ended = asyncio.Event()
        self._play_until = 0.0
        call.on_end(self._on_end)  # runs in a pyVoIP thread

    def _on_end(self, _reason: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed: nobody waits
            self._loop.call_soon_threadsafe(self._ended.set)

    @property
    def info(self) -> CallInfo:
        return self._info

    @property
    def ended(self) -> bool:
        return self._call.state == CallState.ENDED

    def _raise_if_ended(self) -> None:
        if self.ended:
            raise CallEnded(self._info.call_id)

    async def answer(self) -> None:
        self._raise_if_ended()
        if self._call.state == CallState.ANSWERED:
            return
        if TELEPHONE_EVENT not in self._call.codecs.values():
            # No RFC 4733 in the offer: we could not hear a digit (same rule as aiosipua's).
            await self.reject(488, "Not Acceptable Here")
            raise CallEnded(self._info.call_id)
        try:
            await asyncio.to_thread(self._call.answer)
        except InvalidStateError as exc:  # CANCELled meanwhile: 487 was sent, never a 200
            raise CallEnded(self._info.call_id) from exc

    async def reject(self, status: int, reason: str = "") -> None:
        if self._call.state != CallState.RINGING:
            return
        with contextlib.suppress(InvalidStateError):
            await asyncio.to_thread(self._call.reject, status, reason)

    async def collect_digits(
        self, count: int, *, first_timeout: float, inter_digit_timeout: float
    ) -> str:
        digits = ""
        deadline = self._loop.time() + first_timeout
        while len(digits) < count:
            self._raise_if_ended()
            digit = self._call.get_dtmf(1)
            if digit:
                digits += digit
                deadline = self._loop.time() + inter_digit_timeout
                continue
            if self._loop.time() >= deadline:
                break
            await asyncio.sleep(DIGIT_POLL_S)
        return digits

    def clear_digits(self) -> None:
        self._call.clear_dtmf()

    async def play(self, pcm: bytes) -> None:
        self._raise_if_ended()
        if self._call.state != CallState.ANSWERED:
            return  # not answered: nothing to play into
        audio = to_pyvoip_audio(pcm)
        self._call.write_audio(audio)  # queued: pyVoIP's transmitter sends 20 ms per packet
        now = self._loop.time()
        # Prompts queue up behind each other: wait for this one's end, not just its length.
        self._play_until = max(self._play_until, now) + len(audio) / SAMPLE_RATE
        if await self.wait_ended(self._play_until - now):
            raise CallEnded(self._info.call_id)

    async def hangup(self) -> None:
        if not self.ended:
            await asyncio.to_thread(self._call.hangup)

    async def wait_ended(self, timeout: float | None = None) -> bool:
        if self.ended:
            return True
        try:
            await asyncio.wait_for(self._ended.wait(), timeout)
        except TimeoutError:
            return self.ended
        return True


class PyVoipBackend:
    """A SIP UAS on ``host:port`` (``port=0``: any free port, read ``.port`` after start)."""

    name = "pyvoip"

    def __init__(
        self,
        host: str,
        port: int,
        rtp_port_low: int = 20000,
        rtp_port_high: int = 29999,
        advertised_host: str | None = None,
        *,
        edge: str = "",
    ) -> None:
        self.host = host
        self.edge = edge  # "host[:port]" of the SIP edge: then only it may send us requests
        self.port = port
        self._rtp = (rtp_port_low, rtp_port_high)
        self.advertised_host = advertised_host
        self._phone: HardenedVoIPPhone | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_call: CallCallback | None = None
        self._running: set[concurrent.futures.Future[None]] = set()
        self._running_lock = threading.Lock()

    @property
    def active_calls(self) -> int:
        return len(self._phone.calls) if self._phone is not None else 0

    async def start(self, on_call: CallCallback) -> None:
        if self._phone is not None:
            raise RuntimeError("backend already started")
        self._loop = asyncio.get_running_loop()
        self._on_call = on_call
        phone = HardenedVoIPPhone(
            self.host,
            self.port,
            rtp_port_low=self._rtp[0],
            rtp_port_high=self._rtp[1],
            advertised_host=self.advertised_host,
            call_callback=self._incoming,
        )
        if self.edge:
            phone.sip.allowed_sources = frozenset({edge_address(self.edge)})
        await asyncio.to_thread(phone.start)
        self._phone = phone
        self.port = phone.sip_port
        log.info("sip.listening", backend=self.name, host=self.host, port=self.port)

    def _incoming(self, call: HardenedVoIPCall) -> None:
        """pyVoIP's call callback (its own thread): hand the call to the event loop."""
        assert self._loop is not None
        handle = PyVoipCall(call, self._loop)
        future = asyncio.run_coroutine_threadsafe(self._run(handle), self._loop)
        with self._running_lock:
            self._running.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: concurrent.futures.Future[None]) -> None:
        with self._running_lock:
            self._running.discard(future)

    async def _run(self, handle: PyVoipCall) -> None:
        assert self._on_call is not None
        try:
            await self._on_call(handle)
        except CallEnded:
            pass
        except Exception:
            log.exception("sip.call_failed", backend=self.name, call_id=handle.info.call_id)
        finally:
            if not handle.ended:  # the flow returned without ending the call: do not leave it
                await handle.reject(500, "Server Internal Error")
                await handle.hangup()

    async def stop(self) -> None:
        phone, self._phone = self._phone, None
        if phone is None:
            return
        await asyncio.to_thread(phone.stop)  # ends every call: their flows see CallEnded
        with self._running_lock:
            running = [asyncio.wrap_future(f) for f in self._running]
        if running:
            _, late = await asyncio.wait(running, timeout=STOP_GRACE_S)
            for future in late:
                future.cancel()
        log.info("sip.stopped", backend=self.name)
