"""Run a database probe with a deadline, on a few threads of its own.

A probe must answer on time even when the database hangs (a dead host drops packets: connecting
waits for the kernel's TCP timeout, minutes). The probe runs on a daemon thread and the caller
waits at most its deadline; a hung probe keeps its thread until the driver gives up, and being a
daemon it never holds up the process's exit. At most :data:`MAX_PROBES` run at once: a hanging
database ties up that many threads and no more, later probes time out waiting for a slot.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
MAX_PROBES = 4
_slots = threading.BoundedSemaphore(MAX_PROBES)


class ProbeTimeout(Exception):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"no answer within {timeout_s:g} s")
        self.timeout_s = timeout_s


def run_with_deadline(fn: Callable[[], T], timeout_s: float) -> T:
    """``fn()``'s result, or :class:`ProbeTimeout` after ``timeout_s`` (``fn`` keeps running)."""
    deadline = time.monotonic() + timeout_s
    if not _slots.acquire(timeout=timeout_s):
        raise ProbeTimeout(timeout_s)  # every slot held by a probe that hangs
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def work() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the caller, whatever it is
            future.set_exception(exc)
        finally:
            _slots.release()

    threading.Thread(target=work, name="hyt-probe", daemon=True).start()
    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()))
    except concurrent.futures.TimeoutError:
        raise ProbeTimeout(timeout_s) from None


async def run_with_deadline_async(fn: Callable[[], T], timeout_s: float) -> T:
    """As :func:`run_with_deadline`, awaited: the event loop is never blocked (the waiting
    thread returns at the deadline at the latest)."""
    return await asyncio.to_thread(run_with_deadline, fn, timeout_s)
