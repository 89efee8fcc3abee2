"""RtpOut packs prompt frames itself (callcenter/sip/rtp_out.py): the datagrams must be the
ones aiortp's own sender would have sent from the same state, and the sender's counters (its
RTCP sender reports use them) must move the same way."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aiortp import RTPSession

from callcenter.sip.pacer import pcmu_frames
from callcenter.sip.rtp_out import RtpOut


async def _session(sink: socket.socket) -> RTPSession:
    return await RTPSession.create(
        local_addr=("127.0.0.1", 0), remote_addr=sink.getsockname(), payload_type=0
    )


def _sink() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    return sock


def _state(sender: Any) -> tuple[int, ...]:
    return (
        sender._sequence_number,
        sender._current_timestamp,
        sender._last_rtp_timestamp,
        sender._packets_sent,
        sender._octets_sent,
    )


def _set_state(sender: Any, state: tuple[int, ...]) -> None:
    (
        sender._sequence_number,
        sender._current_timestamp,
        sender._last_rtp_timestamp,
        sender._packets_sent,
        sender._octets_sent,
    ) = state


@pytest.mark.parametrize("start_sequence", [1000, 0xFFFE])  # and across the 16-bit wrap
def test_frames_are_the_bytes_aiortp_would_send(start_sequence: int) -> None:
    asyncio.run(_frames_are_the_bytes_aiortp_would_send(start_sequence))


async def _frames_are_the_bytes_aiortp_would_send(start_sequence: int) -> None:
    sink = _sink()
    session = await _session(sink)
    try:
        sender: Any = session._sender
        sender._sequence_number = start_sequence
        sender._current_timestamp = 0xFFFFFF00  # the 32-bit timestamp wraps too
        frames = pcmu_frames(bytes(range(256)) * 20)[:5]
        start = _state(sender)

        ours = RtpOut()
        for i, frame in enumerate(frames):
            ours.send_payload(session, frame, first=i == 0)
        ours_bytes = [sink.recv(2048) for _ in frames]
        ours_state = _state(sender)

        _set_state(sender, start)
        for i, frame in enumerate(frames):
            sender.send_frame_auto(frame, marker=1 if i == 0 else 0, addr=session._remote_addr)
        theirs_bytes = [sink.recv(2048) for _ in frames]

        assert ours_bytes == theirs_bytes
        assert ours_state == _state(sender)
        assert ours_bytes[0][1] & 0x80 and not any(b[1] & 0x80 for b in ours_bytes[1:])
    finally:
        await session.close()
        sink.close()


def test_a_new_talkspurt_jumps_the_timestamp_by_the_silence() -> None:
    """RFC 3550 §5.1: the timestamp follows the sampling clock through a silence."""
    asyncio.run(_a_new_talkspurt_jumps_the_timestamp())


async def _a_new_talkspurt_jumps_the_timestamp() -> None:
    sink = _sink()
    session = await _session(sink)
    try:
        out = RtpOut()
        frame = pcmu_frames(b"\x00" * 320)[0]
        out.send_payload(session, frame, first=True)
        await asyncio.sleep(0.1)  # five frames of silence
        out.send_payload(session, frame, first=True)
        first, second = (sink.recv(2048) for _ in range(2))
        gap = int.from_bytes(second[4:8], "big") - int.from_bytes(first[4:8], "big")
        assert gap >= 160 * 5
        assert int.from_bytes(second[2:4], "big") == int.from_bytes(first[2:4], "big") + 1
    finally:
        await session.close()
        sink.close()
