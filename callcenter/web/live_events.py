"""The live queue's change feed: one database poller per web process, fanned out to every open
event stream.

Each poll reads a short marker of the alarm table (max id, counts, last claim and handle times:
:func:`callcenter.console.queue_marker`) and the ids of life-safety alarms nobody has claimed
past the flag threshold (:func:`callcenter.supervision.flagged_alarm_ids`); when either changed,
it reads the queue once and serialises it into the event every stream sends. Streams wait on the
feed instead of polling themselves, and the consoles render the queue from the event instead of
each fetching it: 50 open consoles cost the database one small query per interval and one queue
read per change, instead of 50 of each (``bench/console_sse.py`` measures it). Polling the
database (rather than an in-memory publisher) is what lets any web worker see alarms stored by
another worker, the call handler or the SCAIP ingress.

A feed belongs to one event loop (uvicorn runs one per worker); its poller runs while at least
one stream listens and stops with the last one.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from callcenter import db
from callcenter.console import queue, queue_marker
from callcenter.db import utcnow
from callcenter.supervision import flagged_alarm_ids
from callcenter.supervision_settings import get_supervision_settings
from callcenter.web.queue_view import queue_items

log = structlog.get_logger(__name__)

# How often the one poller of a process reads the marker. One query per interval whatever the
# number of consoles, so it can be short: the delay to a console is about half of it on average.
POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class Snapshot:
    marker: str
    flagged: tuple[int, ...]  # unclaimed life-safety alarms past the flag threshold
    # The event's data, serialised once for every stream: the marker and the whole queue
    # (supervisors': with the flagged ids and flags), so that no console has to fetch it.
    operator_data: str = ""
    supervisor_data: str = ""

    @property
    def state(self) -> tuple[str, tuple[int, ...]]:
        return self.marker, self.flagged

    def key(self, supervisor: bool) -> object:
        """What a stream's event depends on: a supervisor's also on the flags."""
        return self.state if supervisor else self.marker

    def data(self, supervisor: bool) -> str:
        return self.supervisor_data if supervisor else self.operator_data


def read_snapshot(previous: Snapshot | None = None) -> Snapshot:
    """One short read-only unit of work (never a transaction held across a stream). The queue
    is read and serialised only when the marker or the flags changed since ``previous``."""
    flag_s = get_supervision_settings().life_safety_flag_s
    with db.read_scope() as session:
        now = utcnow()
        marker = queue_marker(session)
        flagged = flagged_alarm_ids(session, now=now, older_than_s=flag_s)
        if previous is not None and previous.state == (marker, flagged):
            return previous
        rows = queue(session, now=now)
        views = [
            [i.model_dump(mode="json") for i in queue_items(rows, now=now, supervisor=sup,
                                                             flag_s=flag_s)]
            for sup in (False, True)
        ]  # fmt: skip
    return Snapshot(
        marker,
        flagged,
        json.dumps({"marker": marker, "queue": views[0]}, ensure_ascii=False),
        json.dumps({"marker": marker, "flagged": list(flagged), "queue": views[1]},
                   ensure_ascii=False),
    )  # fmt: skip


class AlarmFeed:
    def __init__(self, read: Callable[[Snapshot | None], Snapshot], poll_s: float) -> None:
        self._read = read
        self.poll_s = poll_s
        self.snapshot: Snapshot | None = None
        self.version = 0  # goes up by one whenever the snapshot changes
        self._changed = asyncio.Event()
        self._listeners = 0
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        while True:
            try:
                snapshot = await asyncio.to_thread(self._read, self.snapshot)
            except Exception:
                # A database blip: the streams stay open and the next poll tries again.
                log.exception("live_events.poll_failed")
            else:
                if self.snapshot is None or snapshot.state != self.snapshot.state:
                    self.snapshot = snapshot
                    self.version += 1
                    changed, self._changed = self._changed, asyncio.Event()
                    changed.set()
            await asyncio.sleep(self.poll_s)

    @asynccontextmanager
    async def listening(self) -> AsyncIterator[AlarmFeed]:
        """Hold the poller running while the caller streams; the first read is done on entry."""
        self._listeners += 1
        try:
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._poll())
            await self.wait(0, timeout=10.0)  # the first snapshot (or none if the DB is down)
            yield self
        finally:
            self._listeners -= 1
            if self._listeners == 0 and self._task is not None:
                self._task.cancel()
                self._task = None
                self.snapshot, self.version = None, self.version + 1

    async def wait(self, seen_version: int, *, timeout: float) -> bool:
        """Wait until the snapshot is newer than ``seen_version``; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.version == seen_version or self.snapshot is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False
        return True


_feeds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AlarmFeed] = (
    weakref.WeakKeyDictionary()
)


def current_feed() -> AlarmFeed:
    """The feed of the running event loop (one per web worker)."""
    loop = asyncio.get_running_loop()
    feed = _feeds.get(loop)
    if feed is None:
        feed = _feeds[loop] = AlarmFeed(read_snapshot, POLL_S)
    return feed
