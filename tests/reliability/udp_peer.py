"""A loopback UDP socket that plays a terminal: it sends whatever it is given, keeps every SIP
response by the branch of its top Via, and answers every request the centre sends it (the
``<mrs>`` MESSAGE, a BYE) with 200 so that the centre stops retransmitting."""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass

_BRANCH = re.compile(rb"^(?:Via|v)\s*:[^\r\n]*?branch=([^;,\s]+)", re.IGNORECASE | re.MULTILINE)
_HEADER = r"^{name}\s*:\s*(.*?)\r?$"


@dataclass
class Reply:
    status: int
    text: str


def header(text: str, name: str) -> str:
    match = re.search(_HEADER.format(name=name), text, re.IGNORECASE | re.MULTILINE)
    return match.group(1).strip() if match else ""


class UdpPeer:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.port: int = self.sock.getsockname()[1]
        self.replies: dict[str, list[Reply]] = {}
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def send(self, data: bytes, target: tuple[str, int]) -> None:
        self.sock.sendto(data, target)

    def _receive(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(70000)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode("utf-8", "replace")
            if text.startswith("SIP/2.0 "):
                match = _BRANCH.search(data)
                branch = match.group(1).decode() if match else ""
                with self._lock:
                    self.replies.setdefault(branch, []).append(Reply(int(text.split()[1]), text))
                continue
            with self._lock:
                self.requests.append(text)
            if not text.startswith("ACK "):
                self.sock.sendto(ok_to(text), source)

    def statuses(self, branch: str) -> list[int]:
        with self._lock:
            return [reply.status for reply in self.replies.get(branch, [])]

    def final(self, branch: str, timeout: float = 5.0) -> Reply | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                finals = [r for r in self.replies.get(branch, []) if r.status >= 200]
            if finals:
                return finals[0]
            time.sleep(0.01)
        return None

    def mrs_for(self, ref: str, timeout: float = 5.0) -> Mrs | None:
        """The centre's ``<mrs>`` MESSAGE echoing ``ref``, if one came."""
        deadline = time.monotonic() + timeout
        needle = f"<ref>{ref}</ref>"
        while time.monotonic() < deadline:
            with self._lock:
                found = [r for r in self.requests if r.startswith("MESSAGE ") and needle in r]
            if found:
                return mrs_fields(found[0])
            time.sleep(0.02)
        return None


@dataclass(frozen=True)
class Mrs:
    ref: str
    snu: int


def mrs_fields(message: str) -> Mrs:
    body = message.split("\r\n\r\n", 1)[1]
    ref = re.search(r"<ref>(.*?)</ref>", body, re.DOTALL)
    snu = re.search(r"<snu>(\d+)</snu>", body)
    assert ref and snu, body
    return Mrs(ref.group(1), int(snu.group(1)))


def ok_to(request: str) -> bytes:
    lines = [line for line in request.split("\r\n\r\n", 1)[0].split("\r\n") if line]
    keep = [
        line
        for line in lines[1:]
        if line.split(":", 1)[0].strip().lower() in ("via", "v", "from", "f", "to", "t",
                                                     "call-id", "i", "cseq")
    ]  # fmt: skip
    return ("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode()


def sip_request(
    method: str, target: tuple[str, int], local_port: int, *, user: str, dialled: str = "centre",
    body: bytes = b"", content_type: str = "", branch: str | None = None,
    call_id: str | None = None, cseq: int = 1, to_tag: str = "", from_tag: str = "peer",
) -> tuple[str, bytes]:  # fmt: skip
    """A well-formed request from ``user`` at the peer: (its branch, its bytes)."""
    host, port = target
    branch = branch or f"z9hG4bK-{uuid.uuid4().hex[:12]}"
    lines = [
        f"{method} sip:{dialled}@{host}:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch={branch};rport",
        f"From: <sip:{user}@127.0.0.1:{local_port}>;tag={from_tag}",
        f"To: <sip:{dialled}@{host}:{port}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id or uuid.uuid4().hex}@peer",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:{user}@127.0.0.1:{local_port}>",
        "Max-Forwards: 70",
    ]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return branch, ("\r\n".join(lines) + "\r\n\r\n").encode() + body
