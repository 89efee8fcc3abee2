"""pyVoIP's SIP transport, hardened: :class:`HardenedSIPClient` replaces ``SIPClient``'s socket
loop, message dispatch and replies, and adds the timers pyVoIP lacks (RFC 3261 §17).

What stock ``SIPClient`` does wrong here (shared/docs/PYVOIP.md, .notes/sipstack-api.md §8):
every reply goes to the configured server (SIP.py:947, 1653), unknown methods and OPTIONS get no
reply at all (SIP.py:953), ``recv(8192)`` truncates, the receive thread starts 1 s late and
``start()`` REGISTERs. Call-level behaviour (INVITE, CANCEL, BYE, ACK) lives in
:class:`callcenter.sip.pyvoip_hardening.HardenedVoIPPhone`.
"""

from __future__ import annotations

import heapq
import itertools
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

# pyVoIP.SIP imported before pyVoIP.VoIP fails (a circular import inside pyVoIP 1.6.8).
import pyVoIP.VoIP  # noqa: F401
import structlog
from pyVoIP import SIP

from callcenter.sip.pyvoip_fixes import enabled
from callcenter.sip.pyvoip_sipmsg import ALLOW, HardenedSIPMessage, build_response

if TYPE_CHECKING:
    from callcenter.sip.pyvoip_hardening import HardenedVoIPPhone

log = structlog.get_logger(__name__)

T1 = 0.5  # RFC 3261 §17.1.1.1: RTT estimate; T2 = 8·T1 and transaction timeouts = 64·T1
RECEIVE_BUFFER = 1 << 20  # absorb a burst of INVITEs while the one receive thread works


@dataclass(order=True)
class _Timer:
    when: float
    seq: int
    action: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """One thread running due callbacks: retransmissions need timers, and a thread per timer
    (pyVoIP's ``threading.Timer`` habit) would double the thread count under load."""

    def __init__(self) -> None:
        self._heap: list[_Timer] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._running = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="hyt-sip-timers", daemon=True)
        self._thread.start()

    def call_later(self, delay: float, action: Callable[[], None]) -> _Timer:
        timer = _Timer(time.monotonic() + delay, next(self._seq), action)
        with self._cv:
            heapq.heappush(self._heap, timer)
            self._cv.notify()
        return timer

    def stop(self) -> None:
        with self._cv:
            self._running = False
            self._heap.clear()
            self._cv.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._running and (not self._heap or self._heap[0].when > time.monotonic()):
                    delay = self._heap[0].when - time.monotonic() if self._heap else None
                    self._cv.wait(delay)
                if not self._running:
                    return
                timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                try:
                    timer.action()
                except Exception:
                    log.exception("pyvoip.timer_failed")


@dataclass
class _ClientTransaction:
    data: bytes
    dest: tuple[str, int]
    started: float
    interval: float


class HardenedSIPClient(SIP.SIPClient):
    """The SIP socket of a :class:`HardenedVoIPPhone`: receive, parse, reply, retransmit."""

    phone: HardenedVoIPPhone

    def __init__(
        self,
        phone: HardenedVoIPPhone,
        *,
        bind_host: str,
        port: int,
        advertised_host: str,
        server: tuple[str, int],
        username: str,
        t1: float = T1,
        user_agent: str = "HuYuanTong",
    ) -> None:
        super().__init__(
            server[0], server[1], username, "", phone=phone, myIP=advertised_host, myPort=port
        )
        self.bind_host = bind_host
        self.t1, self.t2 = t1, 8 * t1
        self.user_agent = user_agent
        self.timers = Timers()
        self._pending: dict[str, _ClientTransaction] = {}
        self._pending_lock = threading.Lock()
        self._recv_thread: threading.Thread | None = None
        # With a SIP edge in front (HYT_SIP_REGISTRAR), only the edge may talk to us: terminals
        # are authenticated there, not here (same rule as the aiosipua backend).
        self.allowed_sources: frozenset[str] = frozenset()

    def gen_tag(self) -> str:
        """A random tag (RFC 3261 §19.3: 32 bits of randomness at least). pyVoIP's gen_tag
        (SIP.py) keeps every tag it ever made in a list and scans it for each new one: with
        an OPTIONS probe every few seconds that is a leak and an O(n) search (defect "tag-leak").
        """
        if not enabled("tag-leak"):
            return str(super().gen_tag())
        return uuid.uuid4().hex[:16]

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self.NSD:
            raise RuntimeError("Attempted to start already started SIPClient")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        try:
            sock.bind((self.bind_host, self.myPort))
        except OSError:
            sock.close()
            raise
        self.myPort = sock.getsockname()[1]  # port 0 asks the OS for a free one (tests)
        self.s = self.out = sock
        self.NSD = True
        self.timers.start()
        if not enabled("no-register"):
            self.register()  # SIP.py:1733: blocks on the registrar's answer
        # pyVoIP starts its receive loop with Timer(1, ...) (SIP.py:964): a second of deafness.
        self._recv_thread = threading.Thread(
            target=self.recv_loop, name="hyt-sip-recv", daemon=True
        )
        self._recv_thread.start()

    def stop(self) -> None:
        if not self.NSD:
            return
        self.NSD = False
        if self.registerThread is not None:
            self.registerThread.cancel()
        if self._recv_thread is not None and self._recv_thread is not threading.current_thread():
            self._recv_thread.join(2.0)
        self.timers.stop()
        with self._pending_lock:
            self._pending.clear()
        self.s.close()

    # -- receiving --------------------------------------------------------------------------

    def recv_loop(self) -> None:
        while self.NSD:
            try:
                ready, _, _ = select.select([self.s], [], [], 0.1)
                if not ready:
                    continue
                raw, source = self.s.recvfrom(65535)  # stock recv(8192) truncates
            except (OSError, ValueError):
                continue  # closed under us by stop(): the loop condition ends it
            # Read at once, before parsing: the earliest moment we know of an INVITE (its
            # CallInfo.received_at, the alarm's invite_at). The default backend stamps it in its
            # INVITE callback, after aiosipua's parse: the same event, a parse later.
            received_at = time.time()
            try:
                self.handle_datagram(raw, source, received_at)
            except Exception:
                log.exception("pyvoip.sip.handler_failed", source=f"{source[0]}:{source[1]}")

    def handle_datagram(self, raw: bytes, source: tuple[str, int], received_at: float) -> None:
        if not raw.strip(b"\r\n\x00 \t"):
            return  # RFC 5626 §4.4.1 CRLF keep-alive, or a NUL ping
        try:
            msg = HardenedSIPMessage(raw)
        except Exception as exc:
            log.warning("pyvoip.sip.unreadable", source=f"{source[0]}:{source[1]}",
                        error=str(exc)[:160])  # fmt: skip
            return
        msg.source = source
        msg.received_at = received_at
        if msg.type == SIP.SIPMessageType.RESPONSE:
            if not self.allowed_sources or source[0] in self.allowed_sources:
                self._on_response(msg)
            return
        if not msg.vias:
            return  # nowhere to send a response (RFC 3261 §18.2.2): not a request we can serve
        if self.allowed_sources and source[0] not in self.allowed_sources:
            log.warning("sip.foreign_source", source=source[0])
            if msg.method != "ACK":
                self.send_response(msg, 403, "Forbidden - use the SIP edge")
            return
        if enabled("reply-via"):
            msg.stamp_via(source)
        if msg.version != "SIP/2.0":
            self.send_response(msg, 505, "Version Not Supported")
        elif msg.bad_request:
            log.warning("pyvoip.sip.bad_request", source=f"{source[0]}:{source[1]}",
                        reason=msg.bad_request, method=msg.method[:20])  # fmt: skip
            if msg.method != "ACK":  # RFC 3261 §17: an ACK is never answered
                self.send_response(msg, 400, msg.bad_request)
        elif msg.method == "INVITE":
            self.phone.handle_invite(msg)
        elif msg.method == "ACK":
            self.phone.handle_ack(msg)
        elif msg.method == "BYE":
            self.phone.handle_bye(msg)
        elif msg.method == "CANCEL":
            self.phone.handle_cancel(msg)
        elif msg.method == "OPTIONS":
            if enabled("options"):  # RFC 3261 §11.2: what we support
                allow = [("Allow", ALLOW), ("Accept", "application/sdp")]
                self.send_response(msg, 200, "OK", to_tag=self.gen_tag(), extra=allow)
        elif enabled("405"):
            # RFC 3261 §8.2.1: 405 with Allow. MESSAGE (SCAIP) goes to the other stack's listener.
            log.warning("pyvoip.sip.method_not_allowed", source=f"{source[0]}:{source[1]}",
                        method=msg.method[:20])  # fmt: skip
            self.send_response(
                msg, 405, "Method Not Allowed", to_tag=self.gen_tag(), extra=[("Allow", ALLOW)]
            )

    # -- sending ----------------------------------------------------------------------------

    def reply_address(self, req: HardenedSIPMessage) -> tuple[str, int]:
        if enabled("reply-via"):
            return req.reply_address()
        return self.server, self.port  # pyVoIP: always the configured server (SIP.py:947)

    def send_response(
        self,
        req: HardenedSIPMessage,
        code: int,
        reason: str,
        *,
        to_tag: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> bytes:
        data = build_response(
            req,
            code,
            reason,
            to_tag=to_tag,
            extra=extra,
            body=body,
            content_type=content_type,
            server=self.user_agent,
        )
        self.send_raw(data, self.reply_address(req))
        return data

    def send_raw(self, data: bytes, dest: tuple[str, int]) -> None:
        try:
            self.out.sendto(data, dest)
        except OSError as exc:
            log.warning("pyvoip.sip.send_failed", dest=f"{dest[0]}:{dest[1]}", error=str(exc))

    def send_request(self, data: bytes, dest: tuple[str, int], branch: str) -> None:
        """Send a non-INVITE request and retransmit it until a final response (RFC 3261
        §17.1.2.2: Timer E from T1 doubling to T2, Timer F gives up after 64·T1)."""
        with self._pending_lock:
            self._pending[branch] = _ClientTransaction(data, dest, time.monotonic(), self.t1)
        self.send_raw(data, dest)
        self.timers.call_later(self.t1, lambda: self._retransmit(branch))

    def _retransmit(self, branch: str) -> None:
        with self._pending_lock:
            txn = self._pending.get(branch)
            if txn is None:
                return
            if time.monotonic() - txn.started >= 64 * self.t1:
                del self._pending[branch]
                log.warning("pyvoip.sip.request_timeout", branch=branch, dest=txn.dest[0])
                return
            txn.interval = min(2 * txn.interval, self.t2)
            interval = txn.interval
        self.send_raw(txn.data, txn.dest)
        self.timers.call_later(interval, lambda: self._retransmit(branch))

    def _on_response(self, msg: HardenedSIPMessage) -> None:
        if msg.status_code >= 200:
            with self._pending_lock:
                self._pending.pop(msg.branch, None)
