"""Our side of one aiortp stream: μ-law frames whose RTP time follows real time.

Shared by prompts (paced by :mod:`callcenter.sip.pacer`) and by the voice bridge (paced by the
other caller's packets). RFC 3550 §5.1: after a silence the timestamp jumps by the silence, and
the first frame of a sound carries the marker bit (RFC 3551 §4.1).

Frames are packed here, not by aiortp's sender: in an alarm storm the prompts are most of the
call handler's event-loop time (10,000 frames/s at 100 calls/s), and aiortp builds a packet
object per frame and passes it through four layers before ``sendto``. The 12-byte header
(RFC 3550 §5.1) is packed once per frame here, with the sender's own sequence number,
timestamp and SSRC, and its counters kept, so that its RTCP sender reports stay right.
``tests/sip/test_rtp_out.py`` checks the bytes against aiortp's own packing.
"""

from __future__ import annotations

import struct
import time
from typing import Any

from aiortp.codecs.g711 import PcmuCodec

from callcenter.sip.interface import FRAME_BYTES
from callcenter.sip.pacer import FRAME_SECONDS

# A relayed frame arriving this much later than the last one starts a new talkspurt.
TALKSPURT_GAP_S = 3 * FRAME_SECONDS

# RFC 3550 §5.1: V=2, no padding, no extension, no CSRC; then M + PT, sequence, timestamp, SSRC.
_HEADER = struct.Struct("!BBHII")
_VERSION_2 = 0x80


class RtpOut:
    def __init__(self) -> None:
        self._last_frame_at: float | None = None
        self._codec = PcmuCodec()
        self._pending = b""

    def send_payload(self, rtp: Any, payload: bytes, first: bool) -> None:
        """One μ-law frame on ``rtp`` (an ``aiortp.RTPSession``, pinned 0.8.0: there is no
        public API for the timestamp or the marker)."""
        sender = rtp._sender
        now = time.monotonic()
        if first and self._last_frame_at is not None:
            silent_frames = max(0, round((now - self._last_frame_at) / FRAME_SECONDS) - 1)
            for _ in range(silent_frames):
                sender.advance_timestamp()
        self._last_frame_at = now
        rtp_transport = rtp._rtp_transport
        transport = rtp_transport._transport
        if sender._enable_history or sender._duplicate_tx or transport is None:
            # Options we never turn on (NACK history, duplicate sending), or a stream not bound
            # yet: the library's own path. (A closed stream keeps its transport; asyncio drops
            # what is sent on it, as it does on the library's path.)
            sender.send_frame_auto(payload, marker=1 if first else 0, addr=rtp._remote_addr)
            return
        timestamp = sender._current_timestamp
        sequence = sender._sequence_number
        header = _HEADER.pack(
            _VERSION_2,
            (0x80 if first else 0) | sender._payload_type,
            sequence,
            timestamp,
            sender._ssrc,
        )
        target = rtp._remote_addr or rtp_transport._remote_addr  # as aiortp's RtpTransport.send
        if target is not None:
            transport.sendto(header + payload, target)
        sender._sequence_number = (sequence + 1) & 0xFFFF
        sender._packets_sent += 1
        sender._octets_sent += len(payload)
        sender._last_rtp_timestamp = timestamp
        sender._current_timestamp = (timestamp + sender._timestamp_increment) & 0xFFFFFFFF

    def send_pcm(self, rtp: Any, pcm: bytes) -> None:
        """Relay 16-bit PCM as whole 20 ms frames (a part frame waits for the next chunk)."""
        data = self._pending + pcm
        whole = len(data) - len(data) % FRAME_BYTES
        self._pending = data[whole:]
        for offset in range(0, whole, FRAME_BYTES):
            last = self._last_frame_at
            first = last is None or time.monotonic() - last > TALKSPURT_GAP_S
            payload = self._codec.encode(data[offset : offset + FRAME_BYTES])
            self.send_payload(rtp, payload, first)
