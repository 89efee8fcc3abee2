"""One 20 ms clock for every prompt being played in this process.

A timer per call (or aiortp's paced mode, a clock per session) costs a wake-up per call every
20 ms; under an alarm storm hundreds of calls play at once. One shared tick sends the next frame
of every playing call, and prompts are μ-law-encoded once, not once per call.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiortp.codecs.g711 import PcmuCodec

from callcenter.sip.interface import FRAME_BYTES

FRAME_SECONDS = 0.02


@functools.lru_cache(maxsize=64)
def pcmu_frames(pcm: bytes) -> tuple[bytes, ...]:
    """The prompt as 20 ms μ-law payloads (G.711), computed once per distinct prompt."""
    codec = PcmuCodec()
    padded = pcm + b"\x00" * (-len(pcm) % FRAME_BYTES)
    return tuple(
        codec.encode(padded[i : i + FRAME_BYTES]) for i in range(0, len(padded), FRAME_BYTES)
    )


@dataclass(eq=False)
class _Player:
    frames: tuple[bytes, ...]
    send: Callable[[bytes, bool], object]
    done: asyncio.Future[None]
    position: int = field(default=0)


class Pacer:
    def __init__(self) -> None:
        self._players: set[_Player] = set()
        self._task: asyncio.Task[None] | None = None

    async def play(self, pcm: bytes, send: Callable[[bytes, bool], object]) -> None:
        """Send ``pcm`` through ``send(payload, first)`` one 20 ms frame per tick; return when
        all are sent. ``first`` marks the start of a talkspurt (RFC 3551 §4.1 marker bit)."""
        frames = pcmu_frames(pcm)
        if not frames:
            return
        player = _Player(frames, send, asyncio.get_running_loop().create_future())
        self._players.add(player)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            await player.done
        finally:
            self._players.discard(player)

    async def _run(self) -> None:
        next_tick = time.monotonic()
        while self._players:
            for player in list(self._players):
                if player.done.done():
                    continue
                try:
                    player.send(player.frames[player.position], player.position == 0)
                except Exception as exc:  # a closed session: that call's playback ends
                    player.done.set_exception(exc)
                    continue
                player.position += 1
                if player.position >= len(player.frames):
                    player.done.set_result(None)
            # Absolute schedule: a late tick does not push every later frame back.
            next_tick += FRAME_SECONDS
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            if next_tick < time.monotonic() - 0.2:
                next_tick = time.monotonic()  # fell far behind (a stall): do not burst to catch up
