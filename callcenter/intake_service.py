"""The asynchronous face of intake: database work on a thread pool, never on the SIP event loop.

SIPSTACK.md measured it: an event-loop stall over ~500 ms makes terminals re-send their INVITE
and calls are lost. A commit can take that long on a busy disk, so every call into the database
from the SIP processes goes through :class:`IntakeService`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from callcenter import intake
from callcenter.settings import Settings
from devices.registry import KnownTerminal, identify

T = TypeVar("T")


class IntakeService:
    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._pool = ThreadPoolExecutor(
            max_workers=settings.db_threads, thread_name_prefix="hyt-db"
        )

    async def _run(self, fn: Callable[[Session], T]) -> T:
        def work() -> T:
            with self._sessions() as session:
                return fn(session)

        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    async def identify(
        self, *, sip_user: str = "", caller_number: str = "", account: str = ""
    ) -> KnownTerminal | None:
        return await self._run(
            functools.partial(
                identify,
                sip_user=sip_user,
                caller_number=caller_number,
                account=account,
                region=self._settings.phone_region,
            )
        )

    async def record(self, press: intake.Press) -> intake.Recorded:
        """Store the alarm; raises if the database cannot: then nothing may be acknowledged."""
        return await self._run(
            functools.partial(
                intake.record_alarm,
                press=press,
                repeat_window_s=self._settings.repeat_window_s,
                retry_window_s=self._settings.retry_window_s,
            )
        )

    async def acknowledge(self, alarm_id: int) -> None:
        await self._run(functools.partial(intake.acknowledge, alarm_id=alarm_id))

    async def touch_terminal(self, terminal_id: int, battery_pct: int | None = None) -> None:
        from callcenter.db import utcnow
        from devices.registry import touch

        def work(session: Session) -> None:
            touch(session, terminal_id, utcnow(), battery_pct)
            session.commit()

        await self._run(work)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
