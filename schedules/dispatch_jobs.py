"""The dispatch issue's timers, run by the scheduler: offer waves that expired move on, and the
SMS outbox is sent. Imported by ``hyt scheduler`` before it starts (registration by import)."""

from __future__ import annotations

from typing import Any

from schedules.runner import JobContext, JobSpec, interval, register_job
from schedules.settings import ScheduleSettings
from volunteers.offers import expire_and_advance
from volunteers.outbox_sender import backend_from_settings, send_due

OFFER_TICK_S = 5
OUTBOX_TICK_S = 5


def advance_offers_job(ctx: JobContext) -> dict[str, Any]:
    with ctx.sessions() as session:
        return {"cases_moved": expire_and_advance(session, now=ctx.now)}


def send_outbox_job(ctx: JobContext) -> dict[str, Any]:
    return {"sent": send_due(ctx.sessions, backend_from_settings(), now=ctx.now)}


def _offers(_settings: ScheduleSettings) -> JobSpec:
    return JobSpec("offers.advance", interval(OFFER_TICK_S), advance_offers_job)


def _outbox(_settings: ScheduleSettings) -> JobSpec:
    return JobSpec("outbox.send", interval(OUTBOX_TICK_S), send_outbox_job)


register_job("offers.advance", _offers)
register_job("outbox.send", _outbox)
