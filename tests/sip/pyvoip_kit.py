"""Helpers for the pyVoIP backend tests: a hand-driven SIP/RTP peer on 127.0.0.1 and a phone.

Messages are written by hand (not by a SIP library) so that each test states exactly what goes on
the wire. Every socket binds port 0: no fixed ports, safe under ``pytest -n``.
"""

from __future__ import annotations

import os
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from callcenter.sip import pyvoip_fixes
from callcenter.sip.pyvoip_call import HardenedVoIPCall
from callcenter.sip.pyvoip_hardening import HardenedVoIPPhone

# The regression-test audit: HYT_PYVOIP_DISABLE_FIXES=cancel,rtp-robust switches those fixes
# off (see callcenter/sip/pyvoip_fixes.py); each test must then fail.
pyvoip_fixes.DISABLED.update(
    f for f in os.environ.get("HYT_PYVOIP_DISABLE_FIXES", "").split(",") if f
)

HOST = "127.0.0.1"
WAIT = 5.0  # generous: a loaded 2-core CI machine


def wait_for(predicate: Callable[[], object], timeout: float = WAIT) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def status(msg: bytes) -> int:
    return int(msg.split(b" ", 2)[1]) if msg.startswith(b"SIP/2.0 ") else 0


def headers(msg: bytes, name: str) -> list[str]:
    head = msg.split(b"\r\n\r\n", 1)[0].decode()
    wanted = name.lower()
    return [
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")[1:]
        if line.split(":", 1)[0].strip().lower() == wanted
    ]


def header(msg: bytes, name: str) -> str:
    found = headers(msg, name)
    return found[0] if found else ""


def cseq_method(msg: bytes) -> str:
    return header(msg, "CSeq").split()[-1] if header(msg, "CSeq") else ""


def body(msg: bytes) -> bytes:
    return msg.split(b"\r\n\r\n", 1)[1]


def sdp_port(msg: bytes) -> int:
    for line in body(msg).decode().splitlines():
        if line.startswith("m=audio"):
            return int(line.split()[1])
    raise AssertionError(f"no m=audio in {msg!r}")


def to_tag(msg: bytes) -> str:
    return header(msg, "To").split(";tag=")[1].split(";")[0]


def sdp(rtp_port: int, payload_types: str = "0 101", extra: str = "") -> str:
    names = {"0": "PCMU/8000", "8": "PCMA/8000", "101": "telephone-event/8000"}
    maps = "".join(f"a=rtpmap:{pt} {names[pt]}\r\n" for pt in payload_types.split() if pt in names)
    return (
        f"v=0\r\no=term 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP {payload_types}\r\n{maps}a=fmtp:101 0-15\r\n{extra}"
    )


class Peer:
    """A UDP socket playing a terminal or a proxy."""

    def __init__(self, host: str = HOST) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        self.seen: list[bytes] = []

    @property
    def addr(self) -> tuple[str, int]:
        return self.host, self.port

    def send(self, data: str | bytes, dest: tuple[str, int]) -> None:
        self.sock.sendto(data.encode() if isinstance(data, str) else data, dest)

    def recv(self, timeout: float) -> bytes | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, _ = self.sock.recvfrom(65535)
        except TimeoutError:
            return None
        self.seen.append(data)
        return data

    def expect(self, predicate: Callable[[bytes], bool], timeout: float = WAIT) -> bytes:
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            data = self.recv(left)
            if data is not None and predicate(data):
                return data
        raise AssertionError(f"nothing matching within {timeout}s; got {self.seen[-5:]!r}")

    def expect_response(self, code: int, method: str = "INVITE", timeout: float = WAIT) -> bytes:
        return self.expect(lambda m: status(m) == code and cseq_method(m) == method, timeout)

    def collect(self, duration: float) -> list[bytes]:
        end = time.monotonic() + duration
        got: list[bytes] = []
        while (left := end - time.monotonic()) > 0:
            data = self.recv(left)
            if data is not None:
                got.append(data)
        return got

    def close(self) -> None:
        self.sock.close()


class Dialog:
    """One call from a terminal: builds its requests the way a UAC does (RFC 3261 §8.1, §12.2)."""

    def __init__(self, peer: Peer, phone_port: int, *, rtp_port: int = 9) -> None:
        self.peer = peer
        self.dest = (HOST, phone_port)
        self.call_id = f"{uuid.uuid4().hex}@{HOST}"
        self.from_tag = uuid.uuid4().hex[:8]
        self.branch = f"z9hG4bK{uuid.uuid4().hex[:12]}"
        self.rtp_port = rtp_port
        self.remote_tag = ""
        self.uri = f"sip:2000@{HOST}:{phone_port}"

    def request(
        self,
        method: str,
        *,
        cseq: int = 1,
        branch: str | None = None,
        body_text: str = "",
        extra: str = "",
        via: str | None = None,
        to_tag: str | None = None,
        content_type: str = "application/sdp",
    ) -> str:
        tag = self.remote_tag if to_tag is None else to_tag
        me = f"{self.peer.host}:{self.peer.port}"
        via = via or f"SIP/2.0/UDP {me};branch={branch or self.branch}"
        ctype = f"Content-Type: {content_type}\r\n" if body_text else ""
        return (
            f"{method} {self.uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
            f'From: "Alarm 7" <sip:alarm7@{me}>;tag={self.from_tag}\r\n'
            f"To: <sip:2000@{HOST}>{';tag=' + tag if tag else ''}\r\nCall-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nContact: <sip:alarm7@{me}>\r\n"
            f"{extra}{ctype}Content-Length: {len(body_text.encode())}\r\n\r\n{body_text}"
        )

    def invite(
        self, payload_types: str = "0 101", *, extra: str = "", via: str | None = None
    ) -> str:
        body_text = sdp(self.rtp_port, payload_types)
        return self.request("INVITE", body_text=body_text, extra=extra, via=via, to_tag="")

    def send(self, text: str) -> None:
        self.peer.send(text, self.dest)

    def ack(self, cseq: int = 1) -> None:
        new_branch = f"z9hG4bK{uuid.uuid4().hex[:12]}"  # ACK for a 2xx is its own transaction
        self.send(self.request("ACK", cseq=cseq, branch=new_branch))

    def bye(self, cseq: int = 2) -> None:
        self.send(self.request("BYE", cseq=cseq, branch=f"z9hG4bK{uuid.uuid4().hex[:12]}"))


class Calls:
    """The phone's call callback: queues each call; optionally answers it at once."""

    def __init__(self, answer: bool = False) -> None:
        self.answer = answer
        self.queue: queue.Queue[HardenedVoIPCall] = queue.Queue()
        self.started_at: list[float] = []

    def __call__(self, call: HardenedVoIPCall) -> None:
        self.started_at.append(time.monotonic())
        if self.answer:
            call.answer()
        self.queue.put(call)

    def next(self, timeout: float = WAIT) -> HardenedVoIPCall:
        return self.queue.get(timeout=timeout)


def rtp_range(width: int = 40) -> tuple[int, int]:
    low = random.randrange(30000, 60000 - width, 2)
    return low, low + width - 1


@contextmanager
def running_phone(
    calls: Calls | None = None,
    *,
    rtp: tuple[int, int] | None = None,
    server: tuple[str, int] | None = None,
    t1: float = 0.5,
) -> Iterator[HardenedVoIPPhone]:
    low, high = rtp or rtp_range()
    phone = HardenedVoIPPhone(
        HOST, 0, rtp_port_low=low, rtp_port_high=high, call_callback=calls, server=server, t1=t1
    )
    phone.sip.register_timeout = 1  # only reached when the "no-register" fix is switched off
    phone.start()
    try:
        yield phone
    finally:
        phone.stop()
    # stop() joins what it started: no SIP, timer, RTP or callback thread outlives the phone.
    assert wait_for(lambda: not hyt_threads(), 3), hyt_threads()


def hyt_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("hyt-")]


def rtp_event(code: int, seq: int, timestamp: int, *, marker: bool, end: bool = False) -> bytes:
    """An RFC 4733 telephone-event packet, payload type 101."""
    header_bytes = bytes([0x80, (0x80 if marker else 0) | 101]) + seq.to_bytes(2, "big")
    header_bytes += timestamp.to_bytes(4, "big") + (0x1234).to_bytes(4, "big")
    return header_bytes + bytes([code, 0x8A if end else 0x0A]) + (320).to_bytes(2, "big")


def send_digit(sock: Peer, dest: tuple[str, int], code: int, seq: int, timestamp: int) -> None:
    for i in range(3):
        sock.send(rtp_event(code, seq + i, timestamp, marker=i == 0, end=i == 2), dest)
