"""An operator's SIP desk phone written by hand (raw UDP), and tone detection for what it hears.

SIPp can send audio but cannot say what audio it received; this phone can. It answers the
centre's INVITE (or refuses it, busy), sends a steady tone as its "voice", keeps every RTP
payload it hears, hangs up with BYE or takes the centre's.
"""

from __future__ import annotations

import array
import math
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiortp.codecs.g711 import PcmuCodec

RATE = 8000


def _header(text: str, name: str) -> str:
    match = re.search(rf"^{name}\s*:\s*(.*)$", text, re.IGNORECASE | re.MULTILINE)
    return match.group(1).strip() if match else ""


def _headers(text: str, name: str) -> list[str]:
    return [m.strip() for m in re.findall(rf"^{name}\s*:\s*(.*)$", text, re.I | re.M)]


def tone_frames(hz: float, level: float = 0.3) -> Iterator[bytes]:
    """Endless 20 ms μ-law frames of a sine."""
    codec = PcmuCodec()
    n = 0
    while True:
        pcm = b"".join(
            struct.pack("<h", int(level * 32767 * math.sin(2 * math.pi * hz * (n + i) / RATE)))
            for i in range(160)
        )
        n += 160
        yield codec.encode(pcm)


@dataclass
class FakePhone:
    tone_hz: float = 1000.0
    busy_first: int = 0  # refuse this many INVITEs with 486 before answering
    ring_only: bool = False  # never answer: ring until CANCELled (then 487)
    answer_on_cancel: bool = False  # answer just as the CANCEL arrives (the 200 crosses it)
    ignore_first: int = 0  # drop this many INVITE copies (lost on the way)
    sip: socket.socket = field(init=False)
    rtp: socket.socket = field(init=False)
    invites: list[str] = field(default_factory=list)
    acks: list[str] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    byes: list[str] = field(default_factory=list)
    heard: bytearray = field(default_factory=bytearray)  # decoded 16-bit PCM
    answered: threading.Event = field(default_factory=threading.Event)
    bye_received: threading.Event = field(default_factory=threading.Event)
    bye_answered: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.tag = uuid.uuid4().hex[:8]
        self._stop = threading.Event()
        self._talking = threading.Event()
        self._invite = ""
        self._source: tuple[str, int] = ("127.0.0.1", 0)
        self._media: tuple[str, int] | None = None
        self._last_final = b""
        self._answers_left = self.busy_first
        self._threads = [
            threading.Thread(target=self._signalling, daemon=True),
            threading.Thread(target=self._listen, daemon=True),
            threading.Thread(target=self._talk, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def uri(self) -> str:
        return f"sip:desk@127.0.0.1:{self.sip.getsockname()[1]}"

    @property
    def contact(self) -> str:
        """Not the URI it was called at: the dialog's requests must go here (RFC 3261 §12)."""
        return f"sip:line1@127.0.0.1:{self.sip.getsockname()[1]}"

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        self.sip.close()
        self.rtp.close()

    # -- SIP ------------------------------------------------------------------------------

    def _signalling(self) -> None:
        self.sip.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data, source = self.sip.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            text = data.decode(errors="replace")
            method = text.split(" ", 1)[0]
            if text.startswith("SIP/2.0 "):
                if "BYE" in _header(text, "CSeq") and text.split()[1] == "200":
                    self.bye_answered.set()
            elif method == "INVITE":
                self._on_invite(text, source)
            elif method == "ACK":
                self.acks.append(text)
                if self.answered.is_set():
                    self._talking.set()
            elif method == "BYE":
                self.byes.append(text)
                self.sip.sendto(self._response(text, "200 OK"), source)
                self._talking.clear()
                self.bye_received.set()
            elif method == "CANCEL":
                self.cancels.append(text)
                self.sip.sendto(self._response(text, "200 OK"), source)
                if self.answer_on_cancel:
                    self._answer(self._invite, source)
                else:
                    self._last_final = self._response(self._invite, "487 Request Terminated")
                    self.sip.sendto(self._last_final, source)

    def _on_invite(self, text: str, source: tuple[str, int]) -> None:
        if self.ignore_first > 0:
            self.ignore_first -= 1
            return
        if text == self._invite:  # a retransmission: the same answer again
            if self._last_final:
                self.sip.sendto(self._last_final, source)
            return
        self.invites.append(text)
        self._invite, self._source = text, source
        self.sip.sendto(self._response(text, "180 Ringing"), source)
        if self._answers_left > 0:
            self._answers_left -= 1
            self._last_final = self._response(text, "486 Busy Here")
            self.sip.sendto(self._last_final, source)
            return
        if self.ring_only or self.answer_on_cancel:
            self._last_final = b""
            return
        self._answer(text, source)

    def _answer(self, text: str, source: tuple[str, int]) -> None:
        body = text.split("\r\n\r\n", 1)[1]
        ip = re.search(r"^c=IN IP4 (\S+)", body, re.M)
        port = re.search(r"^m=audio (\d+)", body, re.M)
        assert ip and port, body
        self._media = (ip.group(1), int(port.group(1)))
        rtp_port = self.rtp.getsockname()[1]
        sdp = (
            "v=0\r\no=desk 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
        )
        self._last_final = self._response(text, "200 OK", sdp)
        self.sip.sendto(self._last_final, source)
        self.answered.set()

    def _response(self, request: str, status: str, sdp: str = "") -> bytes:
        to = _header(request, "To")
        if ";tag=" not in to:
            to += f";tag={self.tag}"
        lines = [f"SIP/2.0 {status}"]
        lines += [f"Via: {via}" for via in _headers(request, "Via")]
        lines += [
            f"From: {_header(request, 'From')}",
            f"To: {to}",
            f"Call-ID: {_header(request, 'Call-ID')}",
            f"CSeq: {_header(request, 'CSeq')}",
            f"Contact: <{self.contact}>",
        ]
        if sdp:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(sdp)}")
        return ("\r\n".join(lines) + "\r\n\r\n" + sdp).encode()

    def hang_up(self) -> None:
        """BYE in the dialog the centre's INVITE made (RFC 3261 §12.2.1.1)."""
        invite = self._invite
        contact = re.search(r"<([^>]+)>", _header(invite, "Contact"))
        assert contact, invite
        to = _header(invite, "To")
        lport = self.sip.getsockname()[1]
        lines = [
            f"BYE {contact.group(1)} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK-{uuid.uuid4().hex[:10]};rport",
            f"From: {to};tag={self.tag}",
            f"To: {_header(invite, 'From')}",
            f"Call-ID: {_header(invite, 'Call-ID')}",
            "CSeq: 1 BYE",
            "Max-Forwards: 70",
            "Content-Length: 0",
        ]
        self._talking.clear()
        self.sip.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), self._source)

    # -- RTP ------------------------------------------------------------------------------

    def _listen(self) -> None:
        codec = PcmuCodec()
        self.rtp.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = self.rtp.recv(2048)
            except (TimeoutError, OSError):
                continue
            if len(data) > 12 and data[1] & 0x7F == 0:
                self.heard += codec.decode(data[12:])

    def _talk(self) -> None:
        frames = tone_frames(self.tone_hz)
        seq, timestamp, ssrc = 1, 0, 0x0DE5C
        next_at = time.monotonic()
        while not self._stop.is_set():
            if not self._talking.wait(0.1) or self._media is None:
                next_at = time.monotonic()
                continue
            header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
            self.rtp.sendto(header + next(frames), self._media)
            seq, timestamp = seq + 1, timestamp + 160
            next_at += 0.02
            time.sleep(max(0.0, next_at - time.monotonic()))


def tone_share(pcm: bytes, hz: float, *, block: int = 400) -> float:
    """The share of 50 ms blocks whose energy is mostly (over half) one tone of ``hz``
    (Goertzel's single-bin DFT). Silent blocks do not count either way."""
    samples = array.array("h", pcm[: len(pcm) - len(pcm) % 2])
    coeff = 2 * math.cos(2 * math.pi * hz / RATE)
    loud = dominated = 0
    for start in range(0, len(samples) - block + 1, block):
        chunk = samples[start : start + block]
        energy = sum(x * x for x in chunk)
        if energy < block * 300**2:  # quieter than about -40 dBFS: silence
            continue
        loud += 1
        s1 = s2 = 0.0
        for x in chunk:
            s1, s2 = x + coeff * s1 - s2, s1
        power = s1 * s1 + s2 * s2 - coeff * s1 * s2
        # A pure sine filling the block gives power ≈ energy · block / 2.
        if power / (energy * block / 2) > 0.5:
            dominated += 1
    return dominated / loud if loud else 0.0


def seconds_of(pcm: bytes | bytearray) -> float:
    return len(pcm) / 2 / RATE
