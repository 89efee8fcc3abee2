"""Timed work of a small site, run inside ``hyt serve``: sending the SMS outbox and moving offer
waves on. One process only (``hyt serve`` is the single-process form of the centre); a larger
site runs these from the scheduler process instead."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from callcenter import db
from volunteers.offers import expire_and_advance
from volunteers.outbox_sender import SmsBackend, backend_from_settings, send_due

log = structlog.get_logger(__name__)
TICK_S = 2.0


def _advance_offers() -> int:
    with db.session_factory()() as session:
        return expire_and_advance(session)


def _send_outbox(backend: SmsBackend) -> int:
    return send_due(db.session_factory(), backend)


async def run_forever(tick_s: float = TICK_S, backend: SmsBackend | None = None) -> None:
    """Every ``tick_s``: expire offers and send the next waves, then send due SMS."""
    sms_backend = backend or backend_from_settings()
    jobs: list[tuple[str, Callable[[], int]]] = [
        ("offers.advance", _advance_offers),
        ("outbox.send", lambda: _send_outbox(sms_backend)),
    ]
    while True:
        for name, job in jobs:
            try:
                await asyncio.to_thread(job)
            except Exception:  # the next tick tries again; the state is all in the database
                log.exception("background.job_failed", job=name)
        await asyncio.sleep(tick_s)


def start() -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(run_forever())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
