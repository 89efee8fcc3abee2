"""pyVoIP 1.6.8, hardened: every defect of shared/docs/PYVOIP.md that can reach an alarm.

Two kinds of change, both explicit:

* :func:`harden` replaces a few methods **on pyVoIP's own classes** (the monkey-patches), for
  defects in stateless code every RTP/SIP object shares. It is idempotent and keeps the originals
  in :data:`STOCK`. Installed: ``RTPMessage.parse`` and ``RTPClient.parse_telephone_event``
  ("rtp-robust"), ``RTPClient.encode_packet`` ("pcmu-only"), ``SIPMessage.parse_raw_header``
  ("header-tolerant").
* Subclasses for the stateful defects: :class:`HardenedVoIPPhone` (calls, ports, INVITE, CANCEL,
  ACK, BYE), :class:`HardenedVoIPCall`, and in sibling modules ``HardenedSIPClient``
  (pyvoip_transport), ``HardenedSIPMessage`` (pyvoip_sipmsg), ``HardenedRTPClient`` (pyvoip_rtp).

The defect ids used in ``enabled(...)`` guards are listed in :mod:`callcenter.sip.pyvoip_fixes`.
Registration is never used: the centre is a UAS, reached directly or through Kamailio.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

# pyVoIP.SIP imported before pyVoIP.VoIP fails (a circular import inside pyVoIP 1.6.8).
import pyVoIP.VoIP  # noqa: F401
import structlog
from pyVoIP import RTP, SIP
from pyVoIP.VoIP import CallState, InvalidStateError, NoPortsAvailableError, PhoneStatus
from pyVoIP.VoIP import VoIP as stock

from callcenter.sip import pyvoip_rtp
from callcenter.sip.pyvoip_call import (
    FINISHED_TTL,
    TELEPHONE_EVENT,
    Finished,
    HardenedVoIPCall,
    negotiate,
    reason_phrase,
)
from callcenter.sip.pyvoip_fixes import enabled
from callcenter.sip.pyvoip_rtp import HardenedRTPClient
from callcenter.sip.pyvoip_sipmsg import (
    HardenedSIPMessage,
    OfferError,
    answer_sdp,
    build_request,
    is_loose_route,
    parse_audio_offer,
    parse_name_addr,
    parse_raw_header_tolerant,
    uri_hostport,
)
from callcenter.sip.pyvoip_transport import T1, HardenedSIPClient
from callcenter.sip.sdp_check import sdp_problem

log = structlog.get_logger(__name__)

_PATCHES: list[tuple[type, str, Any]] = [
    (RTP.RTPMessage, "parse", pyvoip_rtp.parse_rtp_checked),
    (RTP.RTPClient, "parse_telephone_event", pyvoip_rtp.parse_telephone_event_checked),
    (RTP.RTPClient, "encode_packet", pyvoip_rtp.encode_packet_labelled),
    (SIP.SIPMessage, "parse_raw_header", staticmethod(parse_raw_header_tolerant)),
]
STOCK: dict[tuple[type, str], Any] = {}
_harden_lock = threading.Lock()


def harden() -> None:
    """Install the monkey-patches on pyVoIP's classes (see module docstring). Idempotent."""
    with _harden_lock:
        for cls, name, replacement in _PATCHES:
            if (cls, name) not in STOCK:
                STOCK[(cls, name)] = cls.__dict__[name]
                setattr(cls, name, replacement)


class HardenedVoIPPhone(stock.VoIPPhone):
    """A SIP UAS on ``host:port`` for inbound calls (``port=0``: any free port, see .sip_port).

    ``call_callback(call)`` runs in a thread of its own, as in pyVoIP, but at once.
    """

    sip: HardenedSIPClient
    calls: dict[str, HardenedVoIPCall]  # type: ignore[assignment]  # only ours are stored

    def __init__(
        self,
        host: str,
        port: int,
        *,
        rtp_port_low: int = 20000,
        rtp_port_high: int = 29999,
        advertised_host: str | None = None,
        call_callback: Callable[[HardenedVoIPCall], None] | None = None,
        server: tuple[str, int] | None = None,
        username: str = "hyt",
        t1: float = T1,
    ) -> None:
        harden()
        advertised = advertised_host or (host if host != "0.0.0.0" else "127.0.0.1")
        server = server or (advertised, port)  # only pyVoIP's own paths would send there
        super().__init__(
            server[0], server[1], username, "", myIP=advertised, callCallback=None,
            sipPort=port, rtpPortLow=rtp_port_low, rtpPortHigh=rtp_port_high,
        )  # fmt: skip
        self.bind_host = host
        self.on_call = call_callback  # pyVoIP's callCallback is typed for its own VoIPCall
        self.sip = HardenedSIPClient(
            self, bind_host=host, port=port, advertised_host=advertised, server=server,
            username=username, t1=t1,
        )  # fmt: skip
        self.lock = threading.RLock()
        self._free_ports = deque(range(rtp_port_low + rtp_port_low % 2, rtp_port_high + 1, 2))
        if not self._free_ports:
            raise stock.InvalidRangeError("the RTP port range holds no even port")
        self._held_ports: set[int] = set()
        self._finished: dict[str, Finished] = {}
        self._callback_threads: list[threading.Thread] = []
        self._stopping = False

    @property
    def sip_port(self) -> int:
        return int(self.sip.myPort)

    def start(self) -> None:
        self._status = PhoneStatus.REGISTERING
        self.sip.start()
        self.NSD = True
        self._status = PhoneStatus.REGISTERED  # pyVoIP's only "running" state; nothing registered

    def stop(self, failed: bool = False) -> None:
        """Refuse ringing calls (503: the terminal or Kamailio tries elsewhere), BYE answered
        ones, close every socket and join every thread we started."""
        self._status = PhoneStatus.DEREGISTERING
        with self.lock:
            self._stopping = True  # from here on, new INVITEs get 503 and answer() refuses
            calls = list(self.calls.values())
            for call in calls:
                if call.state == CallState.RINGING:
                    self._reject_locked(call, 503, "Service Unavailable")
                elif call.state == CallState.ANSWERED:
                    self._send_bye(call)
                    self._end(call, "stopped")
        self.sip.stop()  # outside the lock: the timer thread may be waiting for it
        for call in calls:
            for client in call.RTPClients:
                if isinstance(client, HardenedRTPClient):
                    client.join(2.0)
        for thread in self._callback_threads:
            if thread is not threading.current_thread():
                thread.join(2.0)
        self.NSD = False
        self._status = PhoneStatus.FAILED if failed else PhoneStatus.INACTIVE

    def call(self, number: str) -> stock.VoIPCall:
        # Outgoing calls are not part of this backend: pyVoIP's ACK for them carries a random
        # To-tag (upstream issue #272: the far end drops the call after 30 s).
        raise NotImplementedError("the pyvoip backend takes inbound calls only")

    # -- RTP ports: a free-list (defect "rtp-ports") ---------------------------------------

    def request_port(self, blocking: bool = True) -> int:
        """An even port (RFC 3550 §11), O(1). pyVoIP scans the whole range against a list that
        only grows (VoIP.py:703, 85 ms after 1,000 calls) and on exhaustion frees live ports."""
        if not enabled("rtp-ports"):
            return int(super().request_port(blocking))
        with self.portsLock:
            for _ in range(len(self._free_ports)):
                port = self._free_ports.popleft()
                if _udp_port_free(self.bind_host, port):
                    self._held_ports.add(port)
                    return port
                self._free_ports.append(port)  # taken by another process: try it later
        raise NoPortsAvailableError("No ports were available to be assigned")

    def release_port(self, port: int) -> None:
        """Called once the port's socket is closed (or was never opened)."""
        if not enabled("rtp-ports"):
            return  # pyVoIP never releases an inbound call's port
        with self.portsLock:
            if port in self._held_ports:
                self._held_ports.discard(port)
                self._free_ports.append(port)

    def release_ports(self, call: stock.VoIPCall | None = None) -> None:
        """pyVoIP's bookkeeping (VoIPCall.__del__ calls it): ours is release_port()."""

    def free_port_count(self) -> int:
        with self.portsLock:
            return len(self._free_ports)

    # -- INVITE ---------------------------------------------------------------------------

    def handle_invite(self, req: HardenedSIPMessage) -> None:
        with self.lock:
            self._forget_finished()
            if self._stopping:
                self.sip.send_response(req, 503, reason_phrase(503))
                return
            call = self.calls.get(req.call_id)
            if req.to_tag:
                self._handle_reinvite(call, req)
                return
            if call is not None:
                if call.invite_branch == req.branch:
                    # RFC 3261 §17.2.1: a re-sent INVITE gets the last response again.
                    if enabled("absorb-retransmit"):
                        self.sip.send_raw(call.last_invite_response, self.sip.reply_address(req))
                    return
                self.sip.send_response(req, 482, "Loop Detected")  # RFC 3261 §8.2.2.2 (merged)
                return
            done = self._finished.get(req.call_id)
            if done is not None and done.invite_branch == req.branch:
                if done.final is not None and enabled("absorb-retransmit"):
                    self.sip.send_raw(done.final, self.sip.reply_address(req))
                return
            self._new_call(req)

    def _new_call(self, req: HardenedSIPMessage) -> None:
        if enabled("100-trying"):
            self.sip.send_response(req, 100, "Trying")
        if req.content and (problem := sdp_problem(req.content)) is not None:
            if enabled("sdp-errors"):  # junk for an offer never becomes a call (nor an alarm)
                self._refuse(req, 488, problem)
            return
        try:
            if req.headers.get("Content-Type") != "application/sdp" or not req.content:
                raise OfferError("no SDP offer")  # we never make the offer in a 200
            offer = parse_audio_offer(req.content)
        except OfferError as exc:
            if enabled("sdp-errors"):
                self._refuse(req, 488, str(exc))
            return
        codecs = negotiate(offer)
        if not any(name != TELEPHONE_EVENT for name in codecs.values()):
            self._refuse(req, 488, "PCMU (G.711 mu-law) required")
            return
        try:
            port = self.request_port()
        except NoPortsAvailableError:
            self._refuse(req, 503, "no RTP port free", extra=[("Retry-After", "5")])
            return
        call = HardenedVoIPCall(self, req, random.randint(1, 2**31), offer, codecs, port)
        self.calls[call.call_id] = call
        call.last_invite_response = self.sip.send_response(
            req, 180, "Ringing", to_tag=call.to_tag, extra=self._dialog_headers(call)
        )
        self._dispatch(call)

    def _refuse(
        self,
        req: HardenedSIPMessage,
        code: int,
        why: str,
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        tag = self.sip.gen_tag()
        warning = [("Warning", f'399 {self.myIP} "{why}"')]
        final = self.sip.send_response(
            req, code, reason_phrase(code), to_tag=tag, extra=[*warning, *extra]
        )
        self._finished[req.call_id] = Finished(
            req.branch, tag, final, expires=time.monotonic() + FINISHED_TTL
        )
        log.warning("pyvoip.call.refused", call_id=req.call_id[:100], status=code, why=why,
                    source=f"{req.source[0]}:{req.source[1]}")  # fmt: skip

    def _dialog_headers(self, call: HardenedVoIPCall) -> list[tuple[str, str]]:
        # RFC 3261 §12.1.1: a dialog-creating response copies Record-Route, in order, so the
        # caller's ACK/BYE pass through the proxies that asked to stay in the path.
        headers = [("Record-Route", rr) for rr in call.route_set] if enabled("record-route") else []
        contact = f"<sip:{self.sip.username}@{self.myIP}:{self.sip_port}>"
        return [*headers, ("Contact", contact), ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS")]

    def _dispatch(self, call: HardenedVoIPCall) -> None:
        if self.on_call is None:
            self._reject_locked(call, 486, "Busy Here")
            return
        thread: threading.Thread
        if enabled("no-delay"):
            thread = threading.Thread(target=self._run_callback, args=(call,), daemon=True)
        else:
            thread = threading.Timer(1, self._run_callback, [call])  # VoIP.py:583
        thread.name = f"hyt-call:{call.call_id[:24]}"
        self._callback_threads = [t for t in self._callback_threads if t.is_alive()]
        self._callback_threads.append(thread)
        thread.start()

    def _run_callback(self, call: HardenedVoIPCall) -> None:
        assert self.on_call is not None
        try:
            self.on_call(call)
        except Exception:
            log.exception("pyvoip.call.callback_failed", call_id=call.call_id)
            with contextlib.suppress(InvalidStateError):
                self.reject_call(call, 500, "")

    def _handle_reinvite(self, call: HardenedVoIPCall | None, req: HardenedSIPMessage) -> None:
        if call is None or req.to_tag != call.to_tag:
            self.sip.send_response(req, 481, reason_phrase(481))
            return
        if not enabled("re-invite"):
            return
        if call.state == CallState.RINGING:
            # RFC 3261 §14.2: a second INVITE before our final response.
            self.sip.send_response(req, 500, reason_phrase(500), extra=[("Retry-After", "2")])
            return
        if req.branch in call.reinvites:
            self.sip.send_raw(call.reinvites[req.branch], self.sip.reply_address(req))
            return  # a re-sent re-INVITE (RFC 3261 §17.2.1)
        if req.content:
            try:
                offer = parse_audio_offer(req.content)
            except OfferError as exc:
                warning = [("Warning", f'399 {self.myIP} "{exc}"')]
                self.sip.send_response(req, 488, reason_phrase(488), extra=warning)
                return
            for client in call.RTPClients:  # the running media follows the new address
                client.outIP, client.outPort = offer.address, offer.port
        ok = self._send_ok(call, req)
        call.reinvites[req.branch] = ok

    # -- answer, reject, hang up (called from the application's threads) -------------------

    def answer_call(self, call: HardenedVoIPCall) -> None:
        with self.lock:
            if call.state != CallState.RINGING or self._stopping:
                # After a CANCEL (487 sent) or BYE: pyVoIP would answer anyway (defect "cancel").
                raise InvalidStateError("Call is not ringing")
            try:
                for client in call.RTPClients:
                    client.start()  # bind before the 200 announces the port
            except OSError as exc:
                log.warning("pyvoip.call.rtp_bind_failed", call_id=call.call_id, error=str(exc))
                self._reject_locked(call, 500, "Server Internal Error")
                raise InvalidStateError("RTP port could not be bound") from exc
            call.state = CallState.ANSWERED
            call.last_invite_response = self._send_ok(call, call.request)

    def _send_ok(self, call: HardenedVoIPCall, req: HardenedSIPMessage) -> bytes:
        body = answer_sdp(
            host=self.myIP,
            port=call.rtp_port,
            session_id=int(call.session_id),
            codecs=call.codecs,
            direction=call.offer.direction,
        )
        ok = self.sip.send_response(
            req, 200, "OK", to_tag=call.to_tag, extra=self._dialog_headers(call), body=body,
            content_type="application/sdp",
        )  # fmt: skip
        if enabled("2xx-retransmit"):
            call.unacked[req.cseq] = ok
            dest = self.sip.reply_address(req)
            started = time.monotonic()
            self.sip.timers.call_later(
                self.sip.t1, lambda: self._retransmit_ok(call, req.cseq, dest, started, self.sip.t1)
            )
        return ok

    def _retransmit_ok(
        self,
        call: HardenedVoIPCall,
        cseq: int,
        dest: tuple[str, int],
        started: float,
        interval: float,
    ) -> None:
        """RFC 3261 §13.3.1.4: resend the 2xx (T1 doubling to T2) until its ACK; after 64·T1
        without one, confirm and end the call with a BYE."""
        with self.lock:
            ok = call.unacked.get(cseq)
            if ok is None or call.state != CallState.ANSWERED:
                return
            if time.monotonic() - started >= 64 * self.sip.t1:
                log.warning("pyvoip.call.no_ack", call_id=call.call_id)
                self._send_bye(call)
                self._end(call, "no-ack")
                return
            self.sip.send_raw(ok, dest)
            interval = min(2 * interval, self.sip.t2)
            self.sip.timers.call_later(
                interval, lambda: self._retransmit_ok(call, cseq, dest, started, interval)
            )

    def reject_call(self, call: HardenedVoIPCall, code: int, reason: str = "") -> None:
        if not 300 <= code <= 699:
            raise ValueError(f"a rejection is a final response 3xx-6xx, not {code}")
        with self.lock:
            if call.state == CallState.RINGING:
                self._reject_locked(call, code, reason or reason_phrase(code))
            elif call.state == CallState.ANSWERED:
                raise InvalidStateError("Call is answered: hang up instead")

    def _reject_locked(self, call: HardenedVoIPCall, code: int, reason: str) -> None:
        final = self.sip.send_response(call.request, code, reason, to_tag=call.to_tag)
        self._end(call, f"rejected-{code}", final=final)

    def hangup_call(self, call: HardenedVoIPCall) -> None:
        with self.lock:
            if call.state == CallState.ANSWERED:
                self._send_bye(call)
                self._end(call, "local-bye")
            elif call.state == CallState.RINGING:
                self._reject_locked(call, 480, reason_phrase(480))

    def _send_bye(self, call: HardenedVoIPCall) -> None:
        if not enabled("bye-route"):
            self.sip.bye(call.request)  # SIP.py:1653: INVITE's Via stack, no Route, to the server
            return
        # RFC 3261 §12.2.1.1: Request-URI = remote target, Route = the route set; our own Via.
        # The first hop is the first route (§8.1.2), or where the INVITE came from: that also
        # reaches a terminal behind NAT, whose Contact may be a private address.
        route = [r.strip() for r in call.route_set]
        ruri = call.remote_target
        hop = uri_hostport(parse_name_addr(route[0]).uri) if route else call.source
        if route and not is_loose_route(route[0]):  # strict router: it becomes the R-URI
            ruri, route = parse_name_addr(route[0]).uri, [*route[1:], f"<{call.remote_target}>"]
        branch = self.sip.gen_branch()
        call.local_cseq = call.local_cseq + 1 if call.local_cseq else call.request.cseq + 1
        request = call.request
        headers = [
            ("Via", f"SIP/2.0/UDP {self.myIP}:{self.sip_port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            *(("Route", r) for r in route),
            ("From", f"{request.fields['To']};tag={call.to_tag}"),
            ("To", str(request.fields["From"])),
            ("Call-ID", call.call_id),
            ("CSeq", f"{call.local_cseq} BYE"),
            ("User-Agent", self.sip.user_agent),
        ]
        self.sip.send_request(build_request("BYE", ruri, headers), hop, branch)

    # -- CANCEL, ACK, BYE from the far end (SIP receive thread) ----------------------------

    def handle_cancel(self, req: HardenedSIPMessage) -> None:
        with self.lock:
            call = self.calls.get(req.call_id)
            if call is None or call.invite_branch != req.branch:
                done = self._finished.get(req.call_id)
                if done is not None and done.invite_branch == req.branch:
                    self.sip.send_response(req, 200, "OK", to_tag=done.to_tag)  # a re-sent CANCEL
                elif enabled("481"):
                    self.sip.send_response(req, 481, reason_phrase(481))  # RFC 3261 §9.2
                else:
                    self.sip.send_response(req, 200, "OK")  # pyVoIP: 200 to any CANCEL
                return
            self.sip.send_response(req, 200, "OK", to_tag=call.to_tag)
            if enabled("cancel") and call.state == CallState.RINGING:
                # RFC 3261 §9.2: the INVITE ends with 487; answer() now raises.
                call.end_reason = "cancelled"
                self._reject_locked(call, 487, "Request Terminated")

    def handle_ack(self, req: HardenedSIPMessage) -> None:
        with self.lock:
            call = self.calls.get(req.call_id)
            if call is not None:
                call.unacked.pop(req.cseq, None)  # stops the 2xx retransmission

    def handle_bye(self, req: HardenedSIPMessage) -> None:
        with self.lock:
            call = self.calls.get(req.call_id)
            if call is None or req.to_tag != call.to_tag:
                done = self._finished.get(req.call_id)
                if done is not None and done.bye_response and done.bye_branch == req.branch:
                    self.sip.send_raw(done.bye_response, self.sip.reply_address(req))
                elif enabled("481"):
                    self.sip.send_response(req, 481, reason_phrase(481))  # RFC 3261 §15.1.2
                else:
                    self.sip.send_response(req, 200, "OK")  # pyVoIP: 200 to any BYE
                return
            ok = self.sip.send_response(req, 200, "OK")
            final = None
            if call.state == CallState.RINGING:  # BYE on the early dialog: the INVITE gets 487
                final = self.sip.send_response(
                    call.request, 487, "Request Terminated", to_tag=call.to_tag
                )
            self._end(call, "remote-bye", final=final)
            self._finished[call.call_id].bye_branch = req.branch
            self._finished[call.call_id].bye_response = ok

    # -- the end of a call --------------------------------------------------------------------

    def _end(self, call: HardenedVoIPCall, reason: str, *, final: bytes | None = None) -> None:
        """Mark ended, stop media (the port returns once its socket closes), remember the call
        for re-sent requests, and tell the listeners. Caller holds self.lock."""
        call.state = CallState.ENDED
        call.end_reason = call.end_reason or reason
        call.unacked.clear()
        for client in call.RTPClients:
            client.stop()
        self.calls.pop(call.call_id, None)
        self.sip.tagLibrary.pop(call.call_id, None)
        self._finished[call.call_id] = Finished(
            call.invite_branch, call.to_tag, final, expires=time.monotonic() + FINISHED_TTL
        )
        call.notify_end()

    def _forget_finished(self) -> None:
        now = time.monotonic()
        for call_id in [c for c, f in self._finished.items() if f.expires < now]:
            del self._finished[call_id]


def _udp_port_free(host: str, port: int) -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((host, port))
    except OSError:
        return False
    finally:
        probe.close()
    return True
