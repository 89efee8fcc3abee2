"""The live queue's change feed: one database poller per web process, fanned out to every open
event stream.

Each poll reads a short marker of the alarm table (max id, counts, last claim and handle times:
:func:`callcenter.console.queue_marker`) and the ids of life-safety alarms nobody has claimed
past the flag threshold (:func:`callcenter.supervision.flagged_alarm_ids`); when either changed,
it reads the queue once and serialises it into the event every stream sends. The queue is the
console's page of it (:func:`callcenter.console.queue`: every life-safety alarm, the first
others, counts of the rest), so that a storm's thousands of waiting alarms do not make every
change cost seconds and every event megabytes (issue #7). A stream's first event is the feed's
current snapshot too: a reconnecting console costs no queue read. Streams wait on the
feed instead of polling themselves, and the consoles render the queue from the event instead of
each fetching it: 50 open consoles cost the database one small query per interval and one queue
read per change, instead of 50 of each (``bench/console_sse.py`` measures it). Polling the
database (rather than an in-memory publisher) is what lets any web worker see alarms stored by
another worker, the call handler or the SCAIP ingress.

A feed belongs to one event loop (uvicorn runs one per worker); its poller runs while at least
one stream listens and stops with the last one.

When the database cannot be reached (refused, dropped, or the marker query has no answer within
:data:`READ_DEADLINE_S`), the poller keeps running: it says so once in the log
(``console.feed.database_down``, then ``console.feed.database_back``) and in the feed's status,
which every stream sends on as a ``status`` event, so that the consoles show it instead of a
queue that silently stopped changing (issue #7). Once a read succeeds again the queue is read
afresh and sent to every stream. Only the marker query (milliseconds, whatever the queue's
length) is held to the deadline: a queue read that is slow while the database answers is not an
outage (with the whole read judged, a storm's long queue made the feed tell every console
"database down" while PostgreSQL was up); while it lasts, the marker is asked again each
deadline, and that answer decides.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import structlog
from sqlalchemy import exc as sa_exc

from callcenter import db
from callcenter.console import queue, queue_marker
from callcenter.db import utcnow
from callcenter.supervision import flagged_alarm_ids
from callcenter.supervision_settings import get_supervision_settings
from callcenter.web.queue_view import queue_counts, queue_items

State = tuple[str, tuple[int, ...]]  # the marker and the flagged ids

log = structlog.get_logger(__name__)
T = TypeVar("T")

# How often the one poller of a process reads the marker. One query per interval whatever the
# number of consoles, so it can be short: the delay to a console is about half of it on average.
POLL_S = 0.2
# How often it reads while the database is down.
DOWN_POLL_S = 1.0
# A marker read that has not answered by then counts as the database being down (a dead host
# drops packets and connecting waits for the kernel's TCP timeout, minutes); the poller goes on
# waiting for that same read and starts no other, so a hanging database ties up one thread (two
# if it hangs during a queue read).
READ_DEADLINE_S = 5.0

# SQLSTATEs that mean the server cannot be used now, rather than that one statement failed
# (PostgreSQL manual, Appendix A): class 08 connection exception, class 53 insufficient resources
# (disk full, too many connections), 57P01-57P03 (shut down, crashed, not yet accepting
# connections), class 58 system error (I/O). Not a deadlock (40P01) or a cancelled statement
# (57014): psycopg calls those OperationalError too, but the database is up.
_DOWN_SQLSTATES = ("08", "53", "57P01", "57P02", "57P03", "58")


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be used now (the app answers 503 for it)."""
    if isinstance(exc, sa_exc.TimeoutError):
        return True  # no pooled connection came free: every one is stuck on the database
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True  # SQLAlchemy's own test: the driver's error was a disconnect
    if not isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return False
    # No SQLSTATE: the driver failed without an answer from the server (refused, dropped, timed
    # out); SQLite's errors carry none either (a locked, missing or unreadable file).
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate is None or str(sqlstate).startswith(_DOWN_SQLSTATES)


@dataclass(frozen=True, slots=True)
class Snapshot:
    marker: str
    flagged: tuple[int, ...]  # unclaimed life-safety alarms past the flag threshold
    # The event's data, serialised once for every stream: the marker, the console's page of the
    # queue and its counts (supervisors': with the flagged ids and flags), so that no console
    # has to fetch it.
    operator_data: str = ""
    supervisor_data: str = ""
    read_at: dt.datetime | None = None  # when the queue was read (its items' wait_s)

    @property
    def state(self) -> State:
        return self.marker, self.flagged

    def key(self, supervisor: bool) -> object:
        """What a stream's event depends on: a supervisor's also on the flags."""
        return self.state if supervisor else self.marker

    def data(self, supervisor: bool) -> str:
        return self.supervisor_data if supervisor else self.operator_data

    def first_data(self, supervisor: bool, now: dt.datetime) -> str:
        """The data of a stream's first event: this snapshot, which may be minutes old (it is
        read when something changes), with ``age_s`` added so that the console counts its
        items' waits on from ``wait_s`` + ``age_s``."""
        data = self.data(supervisor)
        if not data.endswith("}") or self.read_at is None:
            return json.dumps({"marker": self.marker})  # a snapshot without a queue
        age_s = max(0.0, (now - self.read_at).total_seconds())
        return f'{data[:-1]}, "age_s": {age_s:.1f}}}'


def read_state() -> State:
    """The marker and the flagged ids: the feed's small read of every poll, and the one its
    "database down" judgement is based on."""
    flag_s = get_supervision_settings().life_safety_flag_s
    with db.read_scope() as session:
        now = utcnow()
        return queue_marker(session), flagged_alarm_ids(session, now=now, older_than_s=flag_s)


def read_snapshot(previous: Snapshot | None = None) -> Snapshot:
    """One short read-only unit of work (never a transaction held across a stream). The queue
    is read and serialised only when the marker or the flags changed since ``previous``; the
    marker and the queue come from the same transaction, so they agree."""
    flag_s = get_supervision_settings().life_safety_flag_s
    with db.read_scope() as session:
        now = utcnow()
        marker = queue_marker(session)
        flagged = flagged_alarm_ids(session, now=now, older_than_s=flag_s)
        if previous is not None and previous.state == (marker, flagged):
            return previous
        page = queue(session, now=now)
    counts = queue_counts(page).model_dump(mode="json")
    views = [
        [i.model_dump(mode="json") for i in queue_items(page.rows, now=now, supervisor=sup,
                                                         flag_s=flag_s)]
        for sup in (False, True)
    ]  # fmt: skip
    return Snapshot(
        marker,
        flagged,
        json.dumps({"marker": marker, "queue": views[0], **counts}, ensure_ascii=False),
        json.dumps({"marker": marker, "flagged": list(flagged), "queue": views[1], **counts},
                   ensure_ascii=False),
        read_at=now,
    )  # fmt: skip


class AlarmFeed:
    """``read(previous)`` reads a snapshot (the queue only when the state changed since
    ``previous``). With ``state``, each poll first reads the state alone, held to
    :data:`READ_DEADLINE_S`, and ``read`` runs only when it changed, with no deadline of its
    own (slow is not down); without, the whole ``read`` is held to the deadline."""

    def __init__(
        self,
        read: Callable[[Snapshot | None], Snapshot],
        poll_s: float,
        *,
        state: Callable[[], State] | None = None,
    ) -> None:
        self._read = read
        self._state = state
        self.poll_s = poll_s
        self.snapshot: Snapshot | None = None
        # Since when the database cannot be read (None: it answered the last read, or unknown).
        self.database_down_since: dt.datetime | None = None
        # The outage the log was told about: kept when the poller stops (the streams end while
        # the database is down, their reconnections refused), so that the next poller logs the
        # end of that outage rather than the start of another.
        self._outage_since: dt.datetime | None = None
        self.version = 0  # goes up by one whenever the snapshot or the database status changes
        self._changed = asyncio.Event()
        self._listeners = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def database_down(self) -> bool:
        return self.database_down_since is not None

    def status_data(self) -> str:
        """The data of a ``status`` event: ``{"database": "down", "since": …}`` or ``"up"``."""
        since = self.database_down_since
        if since is None:
            return json.dumps({"database": "up"})
        return json.dumps({"database": "down", "since": since.isoformat()})

    def _publish(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _went_down(self, error: str) -> None:
        if self._outage_since is None:
            self._outage_since = utcnow()
            # Once per outage, not once per poll: the log says when it started and ended.
            log.error("console.feed.database_down", error=error[:300])
        if self.database_down_since is None:
            self.database_down_since = self._outage_since
            self._publish()

    def _came_back(self) -> None:
        if self._outage_since is not None:
            down_s = (utcnow() - self._outage_since).total_seconds()
            log.info("console.feed.database_back", down_s=round(down_s, 1))
            self._outage_since = None

    async def _within_deadline(self, read: Callable[[], T]) -> T:
        reading = asyncio.ensure_future(asyncio.to_thread(read))
        try:
            done, _ = await asyncio.wait({reading}, timeout=READ_DEADLINE_S)
            if not done:
                self._went_down(f"no answer within {READ_DEADLINE_S:g} s")
            return await reading
        finally:
            reading.cancel()  # the poller stopped: nobody wants the read's result any more

    async def _read_within_deadline(self) -> Snapshot:
        # After an outage the queue is read afresh: the last one serialised may be long stale.
        previous = None if self._outage_since is not None else self.snapshot
        if self._state is None:
            return await self._within_deadline(lambda: self._read(previous))
        state_now = self._state
        state = await self._within_deadline(state_now)
        if previous is not None and previous.state == state:
            return previous
        reading = asyncio.ensure_future(asyncio.to_thread(self._read, None))
        try:
            while True:
                done, _ = await asyncio.wait({reading}, timeout=READ_DEADLINE_S)
                if done:
                    return await reading
                # The queue read is slow: the database is down only if the marker says so
                # (it raises or hangs past the deadline); if it answers, wait on.
                await self._within_deadline(state_now)
        finally:
            reading.cancel()

    async def _poll(self) -> None:
        while True:
            try:
                snapshot = await self._read_within_deadline()
            except Exception as exc:
                if database_unreachable(exc):
                    self._went_down(f"{type(exc).__name__}: {exc}")
                else:
                    # Not the database being down (a bug in a query): the streams stay open,
                    # the next poll tries again, and the traceback goes to the log.
                    log.exception("live_events.poll_failed")
            else:
                self._came_back()
                if self.database_down_since is not None:
                    self.database_down_since = None
                    self.snapshot = snapshot
                    self._publish()
                elif self.snapshot is None or snapshot.state != self.snapshot.state:
                    self.snapshot = snapshot
                    self._publish()
            # While the database is down each read is a connection attempt: try less often.
            pause = max(self.poll_s, DOWN_POLL_S) if self.database_down else self.poll_s
            await asyncio.sleep(pause)

    @asynccontextmanager
    async def listening(self) -> AsyncIterator[AlarmFeed]:
        """Hold the poller running while the caller streams; the first read is done on entry."""
        self._listeners += 1
        try:
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._poll())
            await self.wait(0, timeout=10.0)  # the first snapshot, or the database is down
            yield self
        finally:
            self._listeners -= 1
            if self._listeners == 0 and self._task is not None:
                self._task.cancel()
                self._task = None
                self.snapshot, self.version = None, self.version + 1
                self.database_down_since = None  # unknown until the next poller reads

    async def wait(self, seen_version: int, *, timeout: float) -> bool:
        """Wait until the snapshot or the database status is newer than ``seen_version``; False
        on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.version == seen_version or (self.snapshot is None and not self.database_down):
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
        feed = _feeds[loop] = AlarmFeed(read_snapshot, POLL_S, state=read_state)
    return feed
