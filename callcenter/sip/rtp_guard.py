"""Malformed telephone-event packets, met with one log line instead of a traceback each.

aiortp 0.8.0 (pinned) raises ValueError out of its datagram callback for a telephone-event
payload shorter than RFC 4733's 4 bytes; asyncio then logs the whole traceback for every such
packet, so a hostile or broken sender floods the log. The call itself survives either way (the
next packet is read as usual). Here the packet is dropped with the ``rtp.bad_dtmf_event`` warning
the call handler already uses for events out of range.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def guard_dtmf_receiver(rtp_session: Any, on_malformed: Callable[[str], None]) -> None:
    """Wrap the session's RFC 4733 receiver so that an unreadable event is reported, not
    raised. ``rtp_session`` is aiortp's ``RTPSession`` (``CallSession.rtp_session``)."""
    receiver = getattr(rtp_session, "_dtmf_receiver", None)
    if receiver is None:
        return
    handle = receiver.handle_packet

    def guarded(packet: Any) -> None:
        try:
            handle(packet)
        except ValueError as exc:
            on_malformed(str(exc))

    receiver.handle_packet = guarded
