"""pyVoIP's RTP side, hardened: packet parsing, DTMF events, the receive buffer, the threads.

Three functions here replace methods of pyVoIP's own classes (installed by
:func:`callcenter.sip.pyvoip_hardening.harden`, so they protect every RTPClient); the rest is the
:class:`HardenedRTPClient` subclass our calls use.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import weakref
from collections.abc import Callable

import structlog
from pyVoIP import RTP

from callcenter.sip.pyvoip_fixes import enabled

log = structlog.get_logger(__name__)

STOCK_RTPMESSAGE_PARSE = RTP.RTPMessage.parse
STOCK_PARSE_TELEPHONE_EVENT = RTP.RTPClient.parse_telephone_event
STOCK_ENCODE_PACKET = RTP.RTPClient.encode_packet

DTMF_KEYS = "0123456789*#ABCD"  # RFC 4733 §3.2 events 0-15
RECEIVE_BUFFER_BYTES = 16_000  # 2 s of 8 kHz 8-bit audio: our calls never read received audio
SILENCE = b"\x80"  # pyVoIP's 8-bit unsigned linear silence
_LAST_EVENT: weakref.WeakKeyDictionary[RTP.RTPClient, tuple[int, int, int]] = (
    weakref.WeakKeyDictionary()
)  # per client: the last RFC 4733 event seen (SSRC, timestamp, code)


def parse_rtp_checked(self: RTP.RTPMessage, packet: bytes) -> None:
    """Replaces ``RTPMessage.parse`` (RTP.py:252), which indexes past the end of short packets
    (empty, 1-byte, truncated header): TypeError/ValueError escape RTPClient.recv's handler and
    end the call's receive thread, so later DTMF is lost (defect "rtp-robust").

    RFC 3550 §5.1: a 12-byte fixed header, CSRCs, an optional extension, optional padding; any
    inconsistency raises RTPParseError, which the receive loop skips.
    """
    if not enabled("rtp-robust"):
        STOCK_RTPMESSAGE_PARSE(self, packet)
        return
    if len(packet) < 12:
        raise RTP.RTPParseError(f"RTP packet of {len(packet)} bytes")
    first, second = packet[0], packet[1]
    self.version = first >> 6
    if self.version not in self.RTPCompatibleVersions:
        raise RTP.RTPParseError(f"RTP Version {self.version} not compatible.")
    self.padding, self.extension, self.CC = bool(first & 0x20), bool(first & 0x10), first & 0x0F
    self.marker, pt = bool(second & 0x80), second & 0x7F
    if pt in self.assoc:
        self.payload_type = self.assoc[pt]
    else:
        try:
            self.payload_type = RTP.PayloadType(pt)
        except ValueError:
            raise RTP.RTPParseError(f"RTP Payload type {pt} not found.") from None
    self.sequence, self.timestamp, self.SSRC = struct.unpack("!HII", packet[2:12])
    offset = 12 + 4 * self.CC
    self.CSRC = [packet[i : i + 4] for i in range(12, offset, 4)]
    if self.extension:  # RFC 3550 §5.3.1: 4-byte header, then `length` 32-bit words
        if len(packet) < offset + 4:
            raise RTP.RTPParseError("truncated RTP header extension")
        offset += 4 + 4 * int.from_bytes(packet[offset + 2 : offset + 4], "big")
    end = len(packet)
    if self.padding:
        end -= packet[-1]
    if offset > end or (self.padding and packet[-1] == 0):
        raise RTP.RTPParseError("RTP header longer than the packet")
    self.payload = packet[offset:end]


def parse_telephone_event_checked(self: RTP.RTPClient, packet: RTP.RTPMessage) -> None:
    """Replaces ``RTPClient.parse_telephone_event`` (RTP.py:533): ``key[payload[0]]`` raises
    IndexError for event 16 (hook flash) and for an empty payload, ending the receive thread
    (defect "rtp-robust"). RFC 4733 §2.3: the payload is 4 bytes; events above 15 are not digits.

    A digit is reported on its first packet: the marker bit (pyVoIP's only rule), or, if that
    packet was lost, the first packet of a new event (new timestamp or code, RFC 4733 §2.5.1.2).
    """
    if not enabled("rtp-robust"):
        STOCK_PARSE_TELEPHONE_EVENT(self, packet)
        return
    payload = packet.payload
    if len(payload) < 4:
        raise RTP.RTPParseError(f"telephone-event payload of {len(payload)} bytes")
    event = payload[0]
    if event >= len(DTMF_KEYS):
        return
    key = (packet.SSRC, packet.timestamp, event)
    last = _LAST_EVENT.get(self)
    _LAST_EVENT[self] = key
    if (packet.marker or key != last) and self.dtmf is not None:
        self.dtmf(DTMF_KEYS[event])


def encode_packet_labelled(self: RTP.RTPClient, payload: bytes) -> bytes:
    """Replaces ``RTPClient.encode_packet`` (RTP.py:457), which encodes μ-law for PCMA too:
    distorted audio on A-law lines (defect "pcmu-only"; we also never offer PCMA)."""
    if enabled("pcmu-only") and self.preference == RTP.PayloadType.PCMA:
        return bytes(self.encode_pcma(payload))
    return bytes(STOCK_ENCODE_PACKET(self, payload))


class BoundedRTPPacketManager(RTP.RTPPacketManager):
    """The receive buffer, bounded (defect "rtp-jump").

    pyVoIP writes each packet into a BytesIO at ``timestamp - first timestamp`` (RTP.py:193): one
    packet 200 M samples ahead makes a 200 MB buffer, and every packet is also kept in ``log``
    for the whole call. Here only the next ``limit`` bytes after the read position are kept; a
    packet further ahead (a jump, or nobody reading) re-anchors the buffer at that packet.
    """

    def __init__(self, limit: int = RECEIVE_BUFFER_BYTES) -> None:
        super().__init__()
        self._limit = limit
        self._pending = bytearray()
        self._base: int | None = None  # RTP timestamp of _pending[0]
        self._lock = threading.Lock()

    def write(self, offset: int, data: bytes) -> None:
        if not enabled("rtp-jump"):
            super().write(offset, data)
            return
        with self._lock:
            if self._base is None:
                self._base = offset
            # Serial-number arithmetic (RFC 3550 §5.1: timestamps wrap at 2**32).
            rel = (offset - self._base + 2**31) % 2**32 - 2**31
            if rel < 0:  # late: keep only what is still ahead of the read position
                data, rel = data[-rel:], 0
            if rel + len(data) > self._limit:
                if rel > self._limit:
                    self._base, self._pending = offset, bytearray(data[-self._limit :])
                    return
                drop = rel + len(data) - self._limit
                del self._pending[:drop]
                self._base, rel = (self._base + drop) % 2**32, rel - drop
            if len(self._pending) < rel:
                self._pending += SILENCE * (rel - len(self._pending))
            self._pending[rel : rel + len(data)] = data

    def read(self, length: int = 160) -> bytes:
        if not enabled("rtp-jump"):
            return bytes(super().read(length))
        with self._lock:
            chunk = bytes(self._pending[:length])
            del self._pending[:length]
            if self._base is not None:
                self._base = (self._base + len(chunk)) % 2**32
        return chunk + SILENCE * (length - len(chunk))

    def held_bytes(self) -> int:
        """Memory the buffer holds (the tests compare it with pyVoIP's)."""
        if not enabled("rtp-jump"):
            return len(self.buffer.getbuffer()) + sum(len(v) for v in self.log.values())
        return len(self._pending)


class HardenedRTPClient(RTP.RTPClient):
    """pyVoIP's RTPClient with a receive loop that survives any datagram, one start only, and a
    socket that is closed (then ``on_closed`` runs: the port may be reused) when it stops."""

    def __init__(
        self,
        assoc: dict[int, RTP.PayloadType],
        in_ip: str,
        in_port: int,
        out_ip: str,
        out_port: int,
        sendrecv: RTP.TransmitType,
        dtmf: Callable[[str], None] | None = None,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(assoc, in_ip, in_port, out_ip, out_port, sendrecv, dtmf=dtmf)
        self.pmin = BoundedRTPPacketManager()
        self.bad_packets = 0
        self._on_closed = on_closed
        self._start_lock = threading.Lock()
        self._rx: threading.Thread | None = None
        self._tx: threading.Thread | None = None

    def start(self) -> None:
        """Bind and start the threads, once. pyVoIP's start() (RTP.py:337) makes a new socket and
        new threads each time it runs (re-INVITE: duplicated threads, and the transmitter can
        send on the new socket before bind(), which then fails: "re-invite" defect)."""
        with self._start_lock:
            if self._rx is not None:
                return
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((self.inIP, self.inPort))
            except OSError:
                sock.close()
                raise
            sock.setblocking(False)
            self.sin = self.sout = sock  # only now: nobody may send on an unbound socket
            self.NSD = True
            self._tx = threading.Thread(
                target=self.trans, name=f"hyt-rtp-tx:{self.inPort}", daemon=True
            )
            self._rx = threading.Thread(
                target=self._receive, name=f"hyt-rtp-rx:{self.inPort}", daemon=True
            )
            self._tx.start()
            self._rx.start()

    def stop(self) -> None:
        """Ask the threads to end. Never blocks: the receive thread closes the socket."""
        with self._start_lock:
            self.NSD = False
            started = self._rx is not None
        if not started:
            self._closed()

    def join(self, timeout: float) -> None:
        rx = self._rx
        if rx is not None and rx is not threading.current_thread():
            rx.join(timeout)

    @property
    def running(self) -> bool:
        return self._rx is not None and self._rx.is_alive()

    def _receive(self) -> None:
        try:
            while self.NSD:
                try:
                    ready, _, _ = select.select([self.sin], [], [], 0.1)
                    if ready:
                        self.parse_packet(self.sin.recv(2048))
                except (BlockingIOError, RTP.RTPParseError, OSError):  # what RTP.py:375 skips
                    self.bad_packets += 1
                except Exception as exc:  # anything else used to end this thread
                    if not enabled("rtp-robust"):
                        raise
                    self.bad_packets += 1
                    log.debug("pyvoip.rtp.bad_packet", port=self.inPort, error=repr(exc)[:120])
        finally:
            self.NSD = False
            if self._tx is not None:
                self._tx.join(1.0)
            self.sin.close()
            self._closed()

    def _closed(self) -> None:
        callback, self._on_closed = self._on_closed, None
        if callback is not None:
            callback()
