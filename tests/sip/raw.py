"""Hand-written SIP and RTP on a UDP socket: for what SIPp cannot send (broken input)."""

from __future__ import annotations

import re
import socket
import struct
import uuid
from dataclasses import dataclass


@dataclass
class Response:
    status: int
    text: str

    def header(self, name: str) -> str:
        match = re.search(rf"^{name}\s*:\s*(.*)$", self.text, re.IGNORECASE | re.MULTILINE)
        return match.group(1).strip() if match else ""


class RawSip:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.call_id = f"{uuid.uuid4().hex}@raw"
        self.tag = uuid.uuid4().hex[:8]

    def close(self) -> None:
        self.sock.close()

    def request(
        self, method: str, *, user: str = "probe", dialled: str = "centre", cseq: int = 1,
        body: str = "", content_type: str = "", extra: str = "", branch: str | None = None,
        to_tag: str = "",
    ) -> str:  # fmt: skip
        host, port = self.target
        branch = branch or f"z9hG4bK-{uuid.uuid4().hex[:10]}"
        lines = [
            f"{method} sip:{dialled}@{host}:{port} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            f"From: <sip:{user}@127.0.0.1:{self.port}>;tag={self.tag}",
            f"To: <sip:{dialled}@{host}:{port}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{user}@127.0.0.1:{self.port}>",
            "Max-Forwards: 70",
        ]
        lines += [line for line in extra.splitlines() if line]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        data = body.replace("\n", "\r\n").encode()
        lines.append(f"Content-Length: {len(data)}")
        message = ("\r\n".join(lines) + "\r\n\r\n").encode() + data
        self.sock.sendto(message, self.target)
        return branch

    def responses(self, until_final: bool = True, timeout: float = 5.0) -> list[Response]:
        """Responses to our last request, up to the first final one."""
        got: list[Response] = []
        self.sock.settimeout(timeout)
        while True:
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                return got
            text = data.decode(errors="replace")
            if not text.startswith("SIP/2.0 "):
                continue  # a request from the centre (e.g. its BYE) is not a response
            got.append(Response(int(text.split()[1]), text))
            if until_final and got[-1].status >= 200:
                return got

    def receive_request(self, timeout: float = 10.0) -> str | None:
        self.sock.settimeout(timeout)
        while True:
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                return None
            text = data.decode(errors="replace")
            if not text.startswith("SIP/2.0 "):
                return text


def sdp_offer(rtp_port: int, payloads: str = "0 101") -> str:
    return (
        "v=0\no=raw 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
        f"m=audio {rtp_port} RTP/AVP {payloads}\na=rtpmap:0 PCMU/8000\n"
        "a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\na=sendrecv\n"
    )


def answered_rtp_port(sdp: str) -> int:
    match = re.search(r"^m=audio (\d+)", sdp, re.MULTILINE)
    assert match, sdp
    return int(match.group(1))


def rtp_packet(seq: int, timestamp: int, payload: bytes, *, pt: int = 101, marker: bool = False,
               ssrc: int = 0x1234) -> bytes:  # fmt: skip
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq, timestamp, ssrc) + payload


def dtmf_event_packets(digit: int, seq: int, timestamp: int) -> list[bytes]:
    """RFC 4733 §2.3: several packets for one event, the last three with the E bit set."""
    packets = []
    for i, duration in enumerate((160, 320, 480, 640, 640, 640)):
        end = i >= 3
        payload = struct.pack("!BBH", digit, (0x80 if end else 0) | 10, duration)
        packets.append(rtp_packet(seq + i, timestamp, payload, marker=i == 0))
    return packets
