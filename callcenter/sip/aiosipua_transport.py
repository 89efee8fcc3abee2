"""aiosipua 0.7.1's UDP transport, with hostile datagrams met by one structured log line.

The library logs every datagram it cannot parse with a full traceback through the standard
logger: a stream of junk then floods the log with multi-line, non-JSON text. Here an unreadable
datagram is one ``sip.unreadable`` warning naming the source and the reason, and a keep-alive
(CRLF, RFC 5626 §4.4.1) is not an error at all. The method overridden is private to the pinned
library version (see aiosipua_uas.py).
"""

from __future__ import annotations

import structlog
from aiosipua import SipMessage, SipRequest
from aiosipua.transport import UdpSipTransport, _stamp_via_received

log = structlog.get_logger(__name__)

# What a reason may quote of a hostile datagram: enough to recognise it, not to flood the log.
REASON_CHARS = 160


class CentreTransport(UdpSipTransport):
    def _dispatch(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip(b"\r\n\x00 \t"):
            return  # a keep-alive (or an empty datagram): nothing to answer
        try:
            msg = SipMessage.parse(data)
            if isinstance(msg, SipRequest):
                _stamp_via_received(msg, addr)
        except Exception as exc:  # anything the parser raises on hostile bytes
            log.warning(
                "sip.unreadable",
                source=f"{addr[0]}:{addr[1]}",
                bytes=len(data),
                reason=f"{type(exc).__name__}: {exc}"[:REASON_CHARS],
            )
            return
        if self.on_message is not None:
            try:
                self.on_message(msg, addr)
            except Exception:
                log.exception("sip.handler_failed", source=f"{addr[0]}:{addr[1]}")
