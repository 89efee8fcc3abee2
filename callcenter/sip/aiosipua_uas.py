"""aiosipua 0.7.1's user agent server with the gaps SIPSTACK.md lists closed in our code.

Each hook names the gap it closes. They touch private attributes of aiosipua (``_handlers``,
``_calls``, ``_answered``), which is why the version is pinned exactly in pyproject.toml; the
conformance tests in tests/sip/ fail if an upgrade changes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiosipua import (
    DialogState,
    SipRequest,
    SipResponse,
    SipUAS,
    generate_branch,
    generate_call_id,
    generate_tag,
)
from aiosipua.header_codec import stringify_uri
from aiosipua.message import missing_required_headers

from callcenter.sip.sdp_check import offer_problem

log = structlog.get_logger(__name__)

# Python 3.11's UDP transport class does not inherit asyncio.DatagramTransport, so aiosipua's
# connection_made assertion fails once at start-up; the transport is kept anyway (harmless).
logging.getLogger("asyncio").addFilter(
    lambda record: "_UdpProtocol.connection_made" not in record.getMessage()
)

T1 = 0.5  # RFC 3261 §17: retransmission base
T2 = 4.0
TIMER_F = 32.0  # non-INVITE transaction timeout (64·T1)


@dataclass(frozen=True, slots=True)
class SipReply:
    """What our MESSAGE handler wants said back: the final response, and an optional reply
    MESSAGE sent after it (SCAIP's ``<mrs>``)."""

    status: int
    reason: str
    followup_body: bytes | None = None
    followup_content_type: str = "application/scaip+xml"


MessageHandler = Callable[[SipRequest, tuple[str, int]], Awaitable[SipReply]]


def content_length_problem(msg: SipRequest | SipResponse) -> str | None:
    """What is wrong with the message's Content-Length (RFC 3261 §20.14: 1*DIGIT, and the
    datagram must hold that many bytes of body), or None. UDP may leave it out."""
    declared = msg.headers.get_first("content-length")
    if declared is None:
        return None
    declared = declared.strip()
    if not declared.isascii() or not declared.isdigit():
        return "unreadable Content-Length"
    if int(declared) > len(msg.body):
        return "body shorter than Content-Length"
    return None


def _branch(req: SipRequest | SipResponse) -> str:
    via = req.via
    return via[0].branch or "" if via else ""


class CentreUAS(SipUAS):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: dict[str, asyncio.Future[SipResponse]] = {}
        self._orig_invite = self._handlers["INVITE"]
        self._orig_cancel = self._handlers["CANCEL"]
        self._handlers["INVITE"] = self._invite_hook
        self._handlers["CANCEL"] = self._cancel_hook
        # MESSAGE: SCAIP alarm data (SS 91100). Registering it also puts it in OPTIONS' Allow.
        self._handlers["MESSAGE"] = self._message_hook
        self.on_sip_message: MessageHandler | None = None
        # Non-INVITE server transactions: a retransmitted MESSAGE gets the same answer.
        self._message_answers: dict[str, SipResponse | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # With a SIP edge in front (HYT_SIP_REGISTRAR), only the edge may talk to us: terminals
        # are authenticated there, not here.
        self.allowed_sources: frozenset[str] = frozenset()

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` as a task we keep a reference to (asyncio keeps only weak ones)."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- gap: responses to our own out-of-dialog requests are dropped by the library --------

    def _on_message(self, msg: SipRequest | SipResponse, addr: tuple[str, int]) -> None:
        if self.allowed_sources and addr[0] not in self.allowed_sources:
            log.warning("sip.foreign_source", source=addr[0])
            if isinstance(msg, SipRequest) and msg.method.upper() != "ACK":
                self._send_error(msg, 403, "Forbidden - use the SIP edge")
            return
        source = f"{addr[0]}:{addr[1]}"
        if (problem := content_length_problem(msg)) is not None:
            # RFC 3261 §18.3: a datagram shorter than its Content-Length is truncated; a request
            # gets 400, a response is discarded. The library would pass on the partial body
            # (a truncated INVITE became a call with half an SDP).
            method = msg.method[:20] if isinstance(msg, SipRequest) else "response"
            log.warning("sip.bad_content_length", problem=problem, source=source, method=method)
            if isinstance(msg, SipRequest) and method != "ACK" and msg.headers.get("via"):
                self._send_error(msg, 400, f"Bad Request - {problem}")
            return
        if isinstance(msg, SipRequest) and (missing := missing_required_headers(msg)):
            # RFC 3261 §8.1.1 (the library's own check logs an unstructured line).
            method = msg.method[:20]
            log.warning("sip.missing_headers", missing=",".join(missing), source=source,
                        method=method)  # fmt: skip
            if "via" not in missing and method != "ACK":
                self._send_error(msg, 400, "Bad Request - missing " + ", ".join(missing))
            return
        if isinstance(msg, SipResponse):
            future = self._pending.get(_branch(msg))
            if future is not None:
                if msg.status_code >= 200 and not future.done():
                    future.set_result(msg)
                return
        super()._on_message(msg, addr)

    # -- gap: 405 without Allow (RFC 3261 §21.4.6 requires it) ----------------------------

    def _send_error(
        self,
        request: SipRequest,
        status_code: int,
        reason: str,
        *,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        if status_code == 405:
            log.warning("sip.method_not_allowed", method=request.method[:20],
                        call_id=(request.call_id or "")[:100])  # fmt: skip
            extra_headers = {**(extra_headers or {}), "Allow": ", ".join(self._handlers)}
        super()._send_error(request, status_code, reason, extra_headers=extra_headers)

    # -- gap: a re-sent INVITE opened a second dialog; unreadable SDP got no response -------

    def _invite_hook(self, req: SipRequest, addr: tuple[str, int]) -> None:
        call = self._calls.get(req.call_id or "")
        branch = _branch(req)
        to_tag = req.to_addr.tag if req.to_addr else None
        if call is not None and branch and not to_tag and _branch(call.invite) == branch:
            # RFC 3261 §17.2.1: a retransmission of the INVITE we are already handling.
            if call.dialog.state == DialogState.EARLY and not call._answered:
                call.trying()
            elif final := getattr(call, "final_status", None):
                call._send_response(final, "")
            return  # an answered call's own 2xx retransmission timer covers the rest
        if (problem := offer_problem(req.content_type, req.body or b"")) is not None:
            # Junk for an offer never becomes a call (nor an unknown caller's alarm).
            log.warning("sip.invite_rejected", call_id=(req.call_id or "")[:100],
                        reason=problem, source=f"{addr[0]}:{addr[1]}")  # fmt: skip
            self._send_error(req, 400, "Bad Request - unreadable SDP")
            return
        try:
            self._orig_invite(req, addr)
        except Exception as exc:  # parse_sdp raises ValueError for e.g. a non-numeric port
            log.warning("sip.invite_rejected", call_id=(req.call_id or "")[:100],
                        reason=repr(exc)[:200], source=f"{addr[0]}:{addr[1]}")  # fmt: skip
            txn = self.transactions.match_request(req)
            if txn is not None:
                self.transactions.remove(txn)
            self._calls.pop(req.call_id or "", None)
            self._send_error(req, 400, "Bad Request - unreadable SDP")

    # -- gap: a CANCEL crossing our 200 dropped the answered call ---------------------------

    def _cancel_hook(self, req: SipRequest, addr: tuple[str, int]) -> None:
        branch = _branch(req)
        txn = self.transactions.get_server(branch, "INVITE") if branch else None
        call = self._calls.get(txn.request.call_id or "") if txn and txn.request else None
        if call is not None and call._answered:
            # RFC 3261 §9.2: CANCEL after the final response has no effect on the call.
            self.transport.send_reply(call.dialog.create_response(req, 200, "OK"))
            return
        self._orig_cancel(req, addr)

    # -- gap: MESSAGE needs a handler; the answer waits for our commit ----------------------

    def _message_hook(self, req: SipRequest, addr: tuple[str, int]) -> None:
        key = f"{req.call_id}|{req.headers.get_first('cseq')}|{_branch(req)}"
        if key in self._message_answers:
            answer = self._message_answers[key]
            if answer is not None:
                self.transport.send_reply(answer)  # retransmission after our final answer
            return  # still being stored: the final answer will come
        self._message_answers[key] = None
        self.spawn(self._answer_message(key, req, addr))

    async def _answer_message(self, key: str, req: SipRequest, addr: tuple[str, int]) -> None:
        try:
            if self.on_sip_message is None:
                reply = SipReply(405, "Method Not Allowed")
            else:
                reply = await self.on_sip_message(req, addr)
        except Exception:
            log.exception("sip.message_failed", call_id=req.call_id)
            # Not stored: no 200. The terminal retries (SCAIP devices resend on no answer).
            reply = SipReply(500, "Server Internal Error")
        response = self._response_to(req, reply.status, reply.reason)
        self.transport.send_reply(response)
        self._message_answers[key] = response
        asyncio.get_running_loop().call_later(TIMER_F, self._message_answers.pop, key, None)
        if reply.followup_body is not None and req.from_addr is not None:
            await self._send_followup(req, addr, reply)

    def _response_to(self, req: SipRequest, status: int, reason: str) -> SipResponse:
        resp = SipResponse(status_code=status, reason_phrase=reason)
        for via in req.headers.get("via"):
            resp.headers.append("Via", via)
        to = req.headers.get_first("to") or ""
        resp.headers.set_single("From", req.headers.get_first("from") or "")
        resp.headers.set_single("To", to if ";tag=" in to else f"{to};tag={generate_tag()}")
        resp.headers.set_single("Call-ID", req.call_id or "")
        resp.headers.set_single("CSeq", req.headers.get_first("cseq") or "")
        if self.user_agent:
            resp.headers.set_single("User-Agent", self.user_agent)
        return resp

    async def _send_followup(self, req: SipRequest, addr: tuple[str, int], reply: SipReply) -> None:
        assert req.from_addr is not None
        # stringify_uri, not str(): str() of aiosipua's SipUri is its dataclass repr, which a
        # lenient peer (SIPp) accepted and Kamailio rightly refused as a Request-URI.
        to_uri = stringify_uri(req.from_addr.uri)
        from_uri = stringify_uri(req.to_addr.uri) if req.to_addr else f"sip:centre@{addr[0]}"
        try:
            # Same Call-ID as the terminal's MESSAGE: devices match the <mrs> by <ref>, but
            # simple UAs (and SIPp) match by Call-ID; out of a dialog either is allowed.
            await self.send_message(
                to_uri,
                addr,
                from_uri,
                reply.followup_body or b"",
                reply.followup_content_type,
                call_id=req.call_id,
            )
        except TimeoutError:
            log.warning("sip.followup_unanswered", to=to_uri)

    # -- our own out-of-dialog requests, retransmitted per RFC 3261 §17.1.2 ----------------

    async def request(
        self, req: SipRequest, addr: tuple[str, int], *, timeout: float = TIMER_F,
        already_sent: bool = False,
    ) -> SipResponse:  # fmt: skip
        loop = asyncio.get_running_loop()
        branch = _branch(req)
        future: asyncio.Future[SipResponse] = loop.create_future()
        self._pending[branch] = future
        deadline, interval = loop.time() + timeout, T1
        try:
            while True:
                if not already_sent:
                    self.transport.send(req, addr)
                already_sent = False
                wait = max(0.0, min(interval, deadline - loop.time()))
                try:
                    return await asyncio.wait_for(asyncio.shield(future), wait)
                except TimeoutError:
                    if loop.time() >= deadline:
                        raise
                    interval = min(interval * 2, T2)
        finally:
            self._pending.pop(branch, None)

    async def send_message(
        self,
        to_uri: str,
        addr: tuple[str, int],
        from_uri: str,
        body: bytes,
        content_type: str,
        *,
        call_id: str | None = None,
    ) -> SipResponse:
        host, port = self.advertised_addr or self.transport.local_addr
        req = SipRequest(method="MESSAGE", uri=to_uri)
        req.headers.append("Via", f"SIP/2.0/UDP {host}:{port};branch={generate_branch()};rport")
        for name, value in (
            ("Max-Forwards", "70"),
            ("From", f"<{from_uri}>;tag={generate_tag()}"),
            ("To", f"<{to_uri}>"),
            ("Call-ID", call_id or generate_call_id(host)),
            ("CSeq", "1 MESSAGE"),
            ("Content-Type", content_type),
        ):
            req.headers.set_single(name, value)
        req.body = body
        return await self.request(req, addr)
