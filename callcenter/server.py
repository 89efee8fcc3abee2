"""``hyt serve``: web, calls, SCAIP ingress and the scheduler in one process, for a small site."""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack

import structlog
import uvicorn

import schedules.reminders  # noqa: F401  (registers the visit reminder job)
from callcenter import background
from callcenter.settings import Settings
from callcenter.sip.runner import SipServices, start_sip
from callcenter.web.app import create_app
from schedules.runner import SchedulerThread

log = structlog.get_logger(__name__)


async def start_all(
    settings: Settings,
    stack: AsyncExitStack,
    *,
    background_jobs: bool = True,
    scheduler: bool = True,
) -> tuple[SipServices, uvicorn.Server]:
    """Start every part on the running loop; ``stack`` stops them in reverse order.

    ``scheduler`` runs the scheduler's jobs in a thread (visit planning, reminders, the overdue
    sweep, the terminal watchdog); the offer timers and the SMS outbox are ``background_jobs``.
    """
    sip = await start_sip(settings, stack, calls=True, scaip=True)
    config = uvicorn.Config(create_app(), host=settings.http_host, port=settings.http_port,
                            log_level="warning", lifespan="on")  # fmt: skip
    server = uvicorn.Server(config)
    # uvicorn installs its own signal handlers only in server.run(); serve() leaves them to us.
    task = asyncio.get_running_loop().create_task(server.serve())

    async def stop_web() -> None:
        server.should_exit = True
        await task

    stack.push_async_callback(stop_web)
    while not server.started:
        if task.done():
            task.result()  # raises the reason it could not start (e.g. port in use)
        await asyncio.sleep(0.05)
    log.info("web.ready", url=f"http://{settings.http_host}:{settings.http_port}")
    if background_jobs:
        jobs = background.start()
        stack.push_async_callback(background.stop, jobs)
    if scheduler:
        # With its leadership: on PostgreSQL it stands by while another scheduler (`hyt scheduler`
        # or another `hyt serve`) leads; on SQLite, one process is assumed (schedules/leader.py).
        thread = SchedulerThread(settings)
        thread.start()
        stack.push_async_callback(asyncio.to_thread, thread.stop)
    return sip, server


async def serve_all(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        await start_all(settings, stack)
        await stop.wait()
