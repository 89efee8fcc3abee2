"""Group commit for alarms: many presses in one transaction, life-safety first.

One transaction per alarm, about ten statements each, capped SCAIP intake at about 200
messages/s here (BENCHMARKS.md). The writer threads here take what is queued, highest priority
first, store up to ``batch_max`` alarms in one transaction with a fixed number of statements
(:mod:`callcenter.intake_batch`) and commit once; every waiting caller learns its result only
after that commit, so "stored before acknowledged" holds for each alarm of the batch.

Why a priority queue: in a storm (a power cut makes a whole street's terminals report at once) a
life-safety press must not wait behind hundreds of technical alarms (issue #3, "life-safety
alarms still answered first").

When a batch fails (a retransmission stored by another process at the same moment, a deadlock,
a bad row), it is rolled back and each alarm of it is written alone, so one bad alarm never
takes the others with it and nothing is acknowledged that is not stored.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import structlog
from sqlalchemy.orm import Session, sessionmaker

from callcenter.intake import Press, Recorded, log_stored, record_alarm
from callcenter.intake_batch import store_alarms
from callcenter.models import PRIORITY_BY_KIND, AlarmKind

log = structlog.get_logger(__name__)


@dataclass(order=True)
class _Job:
    priority: int
    seq: int
    press: Press = field(compare=False)
    future: Future[Recorded] = field(compare=False)


_STOP = _Job(priority=1_000_000, seq=0, press=None, future=None)  # type: ignore[arg-type]


class AlarmWriter:
    """Threads that store queued presses in batches; :meth:`submit` returns a future."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        threads: int = 1,
        batch_max: int = 64,
        linger_s: float = 0.0,
        repeat_window_s: int = 900,
        retry_window_s: int = 180,
        autostart: bool = True,
    ) -> None:
        self._sessions = sessions
        self._batch_max = max(1, batch_max)
        self._linger_s = linger_s
        self._repeat_window_s = repeat_window_s
        self._retry_window_s = retry_window_s
        self._queue: queue.PriorityQueue[_Job] = queue.PriorityQueue()
        self._seq = itertools.count(1)  # FIFO within one priority
        self._threads = [
            threading.Thread(target=self._run, name=f"hyt-alarm-writer-{i}", daemon=True)
            for i in range(max(1, threads))
        ]
        self.batches = 0  # for tests and metrics: how many transactions were committed
        if autostart:
            self.start()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, press: Press) -> Future[Recorded]:
        future: Future[Recorded] = Future()
        self._queue.put(_Job(press_priority(press), next(self._seq), press, future))
        return future

    def backlog(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        """Write what is queued, then stop the threads."""
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join()

    # -- the threads -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            jobs = [first]
            stop = False
            # Linger: wait a little for more presses before writing, unless a life-safety one
            # is among them. A batch costs the same eight statements for 1 alarm or 64, and in
            # a call storm they are the handler's biggest use of the GIL after the prompts.
            urgent = _urgent(first)
            until = time.monotonic() + self._linger_s
            while len(jobs) < self._batch_max:
                try:
                    wait = 0.0 if urgent else until - time.monotonic()
                    job = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stop = True
                    break
                jobs.append(job)
                urgent = urgent or _urgent(job)
            self._write(jobs)
            if stop:
                return

    def _write(self, jobs: list[_Job]) -> None:
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        # One lock order for every writer thread (terminal, then elder, by id): two batches
        # touching the same rows wait for each other instead of deadlocking.
        ordered = sorted(jobs, key=_lock_order)
        try:
            with self._sessions() as session:
                results = store_alarms(
                    session,
                    [job.press for job in ordered],
                    repeat_window_s=self._repeat_window_s,
                    retry_window_s=self._retry_window_s,
                )
                session.commit()
        except Exception as exc:
            log.warning("alarm.batch_failed", size=len(jobs), error=type(exc).__name__)
            self._one_by_one(ordered)
            return
        self.batches += 1
        for job, recorded in zip(ordered, results, strict=True):
            log_stored(job.press, recorded)
            job.future.set_result(recorded)

    def _one_by_one(self, jobs: list[_Job]) -> None:
        for job in jobs:
            try:
                with self._sessions() as session:
                    recorded = record_alarm(
                        session,
                        job.press,
                        repeat_window_s=self._repeat_window_s,
                        retry_window_s=self._retry_window_s,
                    )
            except Exception as exc:  # this alarm is not stored: its caller must not ack it
                log.exception("alarm.store_failed", dedup_key=job.press.dedup_key)
                job.future.set_exception(exc)
            else:
                self.batches += 1
                job.future.set_result(recorded)


def press_priority(press: Press) -> int:
    return PRIORITY_BY_KIND[press.kind]


_LIFE_SAFETY = PRIORITY_BY_KIND[AlarmKind.LIFE_SAFETY]


def _urgent(job: _Job) -> bool:
    return job.priority <= _LIFE_SAFETY


def _lock_order(job: _Job) -> tuple[int, int]:
    return (job.press.terminal_id or 0, job.press.elder_id or 0)
