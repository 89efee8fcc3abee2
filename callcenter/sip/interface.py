"""The one small interface between the centre's call logic and a SIP/RTP stack.

Two backends implement it (``HYT_SIP_BACKEND``): ``aiosipua`` (aiosipua + aiortp, asyncio, the
default) and ``pyvoip`` (pyVoIP 1.6.8, threads, hardened in our adapter). The call flow in
:mod:`callcenter.sip.call_flow` is written once against this interface and runs on both.

Audio crosses the interface as 16-bit signed little-endian PCM, 8 kHz, mono: each backend
converts to what its library takes (aiortp: the same; pyVoIP: 8-bit unsigned).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

SAMPLE_RATE = 8000
BYTES_PER_SAMPLE = 2
FRAME_BYTES = 320  # 20 ms of 16-bit PCM at 8 kHz, one RTP packet


class CallEnded(Exception):
    """The far end hung up (BYE or CANCEL) while we were waiting on the call."""


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What the INVITE told us, before anything is answered."""

    call_id: str
    caller_user: str  # user part of the From URI: the terminal's SIP user
    caller_display: str  # display name or P-Asserted-Identity number, may be empty
    dialled_user: str  # user part of the Request-URI: the extension the button dialled
    source: tuple[str, int]  # where the INVITE came from (the terminal or the SIP edge)
    # The terminal's own request: From tag and CSeq (RFC 3261 §8.2.2.2, merged requests). With
    # the Call-ID it is the same whichever proxy path the INVITE took, so a retransmission, or
    # the same INVITE failed over by the SIP edge to another handler, is never a second alarm.
    # (The top Via branch is the edge's and changes with each handler it tries.)
    request_key: str
    received_at: float = 0.0  # time.time() when the INVITE arrived (for INVITE→alarm figures)
    contact: str = ""  # the INVITE's Contact URI: where the terminal can be called back


class CallHandle(Protocol):
    """One inbound call, as the call flow sees it. Every method is safe after the call ended."""

    @property
    def info(self) -> CallInfo: ...

    @property
    def ended(self) -> bool: ...

    async def answer(self) -> None:
        """Send 200 OK with our SDP (PCMU + telephone-event). Raises CallEnded if cancelled."""
        ...

    async def reject(self, status: int, reason: str = "") -> None:
        """Refuse a call not yet answered (480 while the database is down: the terminal retries)."""
        ...

    async def collect_digits(
        self, count: int, *, first_timeout: float, inter_digit_timeout: float
    ) -> str:
        """Up to ``count`` RFC 2833 digits, fewer on a timeout. Raises CallEnded on hang-up."""
        ...

    def clear_digits(self) -> None:
        """Forget digits received so far (e.g. those that arrived during a prompt)."""
        ...

    async def play(self, pcm: bytes) -> None:
        """Play 16-bit 8 kHz mono PCM and return when it has been sent. Raises CallEnded."""
        ...

    async def hangup(self) -> None:
        """Send BYE (if answered) and release the media. Idempotent."""
        ...

    async def wait_ended(self, timeout: float | None = None) -> bool:
        """Wait for the far end to hang up; True if it did within ``timeout``."""
        ...


CallCallback = Callable[[CallHandle], Awaitable[None]]
AudioSink = Callable[[bytes], None]


class DialFailed(Exception):
    """An outgoing call that was not answered: busy, declined, no answer, unreachable."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}".strip())
        self.status = status
        self.reason = reason


@runtime_checkable
class MediaLeg(Protocol):
    """One call whose audio can be taken and given: an answered inbound call of a backend that
    can bridge, or an outgoing call it placed. Audio is 16-bit 8 kHz mono PCM, as above."""

    @property
    def ended(self) -> bool: ...

    def listen(self, sink: AudioSink | None) -> None:
        """Hand every chunk of audio heard from the far end to ``sink`` (None: stop)."""
        ...

    def send_audio(self, pcm: bytes) -> None:
        """Send ``pcm`` to the far end now (a relay: paced by the other side's packets)."""
        ...

    async def hangup(self) -> None: ...

    async def wait_ended(self, timeout: float | None = None) -> bool: ...


class Dialler(Protocol):
    """A backend that can place outgoing calls (the default backend; pyVoIP's cannot)."""

    async def dial(
        self, uri: str, destination: tuple[str, int], *, caller: str, ring_s: float
    ) -> MediaLeg:
        """Call ``uri`` (INVITE sent to ``destination``), offering PCMU; return when answered.
        Raises :class:`DialFailed`; cancelling the wait sends CANCEL."""
        ...


class CallBackend(Protocol):
    """A SIP user agent server that hands every new inbound call to ``on_call``."""

    name: str

    async def start(self, on_call: CallCallback) -> None: ...

    async def stop(self) -> None: ...
