"""The asynchronous face of intake: database work on a thread pool, never on the SIP event loop.

SIPSTACK.md measured it: an event-loop stall over ~500 ms makes terminals re-send their INVITE
and calls are lost. A commit can take that long on a busy disk, so every call into the database
from the SIP processes goes through :class:`IntakeService`. Two things keep the database off the
path of every call during a storm: terminals are identified from an in-memory directory, and
acknowledgement times are written in batches.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import structlog
from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session, sessionmaker

from callcenter import intake
from callcenter.alarm_writer import AlarmWriter
from callcenter.db import utcnow
from callcenter.models import Alarm
from callcenter.settings import Settings
from devices.directory import TerminalDirectory
from devices.registry import KnownTerminal

log = structlog.get_logger(__name__)
T = TypeVar("T")
ACK_FLUSH_S = 0.1


class IntakeService:
    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._pool = ThreadPoolExecutor(
            max_workers=settings.db_threads, thread_name_prefix="hyt-db"
        )
        self.directory = TerminalDirectory(sessions, region=settings.phone_region)
        self.writer = AlarmWriter(
            sessions,
            threads=settings.alarm_writers or (1 if settings.is_sqlite else 2),
            batch_max=settings.alarm_batch_max,
            linger_s=settings.alarm_linger_ms / 1000,
            repeat_window_s=settings.repeat_window_s,
            retry_window_s=settings.retry_window_s,
        )
        self._acks: dict[int, dt.datetime] = {}
        self._ack_task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        count = await self.run(lambda _session: self.directory.reload())
        log.info("directory.loaded", entries=count)
        self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def run(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` on the database thread pool."""

        def work() -> T:
            with self._sessions() as session:
                return fn(session)

        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    async def identify(
        self, *, sip_user: str = "", caller_number: str = "", account: str = ""
    ) -> KnownTerminal | None:
        found = self.directory.lookup(
            sip_user=sip_user, caller_number=caller_number, account=account
        )
        if found is not None:
            return found

        def from_database(session: Session) -> KnownTerminal | None:
            return self.directory.identify(
                session, sip_user=sip_user, caller_number=caller_number, account=account
            )

        return await self.run(from_database)

    async def record(self, press: intake.Press) -> intake.Recorded:
        """Store the alarm (committed when this returns); raises if the database cannot: then
        nothing may be acknowledged."""
        return await asyncio.wrap_future(self.writer.submit(press))

    async def acknowledge(self, alarm_id: int) -> None:
        """Note that the terminal was told; written with others in one statement shortly after."""
        self._acks.setdefault(alarm_id, utcnow())
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.get_running_loop().create_task(self._flush_acks())

    async def _flush_acks(self) -> None:
        await asyncio.sleep(ACK_FLUSH_S)
        while self._acks:
            batch, self._acks = self._acks, {}
            rows = [{"alarm_id": k, "at": v} for k, v in batch.items()]

            def write(session: Session, rows: list[dict[str, object]] = rows) -> None:
                alarms = Alarm.__table__
                session.connection().execute(
                    update(alarms)  # type: ignore[arg-type]  # a Table, typed as FromClause
                    .where(alarms.c.id == bindparam("alarm_id"))
                    .where(alarms.c.acknowledged_at.is_(None))
                    .values(acknowledged_at=bindparam("at")),
                    rows,
                )
                session.commit()

            try:
                await self.run(write)
            except Exception:
                log.exception("alarm.ack_write_failed", count=len(rows))
                for row in rows:  # keep them for the next try; an ack time is worth keeping
                    self._acks.setdefault(row["alarm_id"], row["at"])  # type: ignore[arg-type]
                await asyncio.sleep(1.0)

    async def flush(self) -> None:
        """Write pending acknowledgements now (on shutdown, and in tests)."""
        if self._ack_task is not None:
            await self._ack_task

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.directory.refresh_s)
            try:
                await self.run(lambda _session: self.directory.reload())
            except Exception:
                log.exception("directory.reload_failed")  # keep the last snapshot

    async def aclose(self) -> None:
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        await asyncio.to_thread(self.writer.close)
        await self.flush()
        self._pool.shutdown(wait=True, cancel_futures=False)

    def close(self) -> None:
        self.writer.close()
        self._pool.shutdown(wait=True, cancel_futures=False)
