"""RFC 4733 digits and G.711 tones written as pcaps for SIPp's play_pcap_audio.

SIPp's bundled recordings carry one fixed RTP timestamp each, so the same digit twice in a row is
one event to an RFC 4733 receiver (and there are none for A-D). A Contact ID message needs 16
digits with repeats, at DC-05 speed, so the tests write their own recording.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

EVENTS = {str(d): d for d in range(10)} | {"*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _frame(payload: bytes, src_port: int = 40000, dst_port: int = 40002) -> bytes:
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))  # fmt: skip
    ip = ip[:10] + struct.pack("!H", _ip_checksum(ip)) + ip[12:]
    ethernet = b"\x00" * 12 + b"\x08\x00"
    return ethernet + ip + udp


def write_dtmf_pcap(path: Path, digits: str, *, on_ms: int = 60, off_ms: int = 60,
                    payload_type: int = 101) -> Path:  # fmt: skip
    """Write ``digits`` as RFC 4733 events: one timestamp per digit, packets every 20 ms, the
    end packet sent three times (RFC 4733 §2.5.1.4)."""
    records: list[tuple[float, bytes]] = []
    clock = 0.0
    seq = 1000
    timestamp = 8000
    for digit in digits:
        event = EVENTS[digit.upper()]
        steps = max(on_ms // 20, 1)
        for i in range(steps + 2):
            end = i >= steps - 1
            duration = min(i + 1, steps) * 160
            rtp = struct.pack("!BBHII", 0x80, (0x80 if i == 0 else 0) | payload_type, seq,
                              timestamp, 0x4854)  # fmt: skip
            body = struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
            records.append((clock, rtp + body))
            seq += 1
            if i < steps - 1:
                clock += 0.02
        clock += (on_ms - 20 * (steps - 1) + off_ms) / 1000
        timestamp += (on_ms + off_ms) * 8
    _write_pcap(path, records)
    return path


def write_tone_pcap(path: Path, hz: float, *, seconds: float, level: float = 0.3,
                    payload_type: int = 0, ssrc: int = 0x544F4E45) -> Path:  # fmt: skip
    """A steady sine of ``hz`` as G.711 μ-law RTP (PCMU, payload type 0), 20 ms per packet:
    a voice stand-in whose frequency tells, at the far end, whose audio arrived."""
    from aiortp.codecs.g711 import PcmuCodec

    codec = PcmuCodec()
    records: list[tuple[float, bytes]] = []
    for n in range(int(seconds / 0.02)):
        start = n * 160
        pcm = b"".join(
            struct.pack("<h", int(level * 32767 * math.sin(2 * math.pi * hz * (start + i) / 8000)))
            for i in range(160)
        )
        rtp = struct.pack("!BBHII", 0x80, (0x80 if n == 0 else 0) | payload_type,
                          (1000 + n) & 0xFFFF, start, ssrc)  # fmt: skip
        records.append((n * 0.02, rtp + codec.encode(pcm)))
    _write_pcap(path, records)
    return path


def _write_pcap(path: Path, records: list[tuple[float, bytes]]) -> None:
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for at, payload in records:
        frame = _frame(payload)
        seconds = int(at)
        out += struct.pack("<IIII", seconds, int((at - seconds) * 1e6), len(frame), len(frame))
        out += frame
    path.write_bytes(bytes(out))
