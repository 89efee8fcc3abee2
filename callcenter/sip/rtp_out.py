"""Our side of one aiortp stream: μ-law frames whose RTP time follows real time.

Shared by prompts (paced by :mod:`callcenter.sip.pacer`) and by the voice bridge (paced by the
other caller's packets). RFC 3550 §5.1: after a silence the timestamp jumps by the silence, and
the first frame of a sound carries the marker bit (RFC 3551 §4.1).
"""

from __future__ import annotations

import time
from typing import Any

from aiortp.codecs.g711 import PcmuCodec

from callcenter.sip.interface import FRAME_BYTES
from callcenter.sip.pacer import FRAME_SECONDS

# A relayed frame arriving this much later than the last one starts a new talkspurt.
TALKSPURT_GAP_S = 3 * FRAME_SECONDS


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
        sender.send_frame_auto(payload, marker=1 if first else 0, addr=rtp._remote_addr)
        self._last_frame_at = now

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
