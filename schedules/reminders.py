"""Visit reminders by SMS: the evening before the visit and the morning of it.

The job ``visits.remind`` runs every ``HYT_SCHEDULER_REMIND_EVERY_S`` and queues, through the
outbox (:func:`volunteers.sms.queue_sms`), the reminders whose time has come:

- *eve*: at ``HYT_VISIT_REMINDER_EVENING_AT`` (18:00) ``HYT_VISIT_REMINDER_DAYS_BEFORE`` days
  before the planned date ("明天");
- *morning*: at ``HYT_VISIT_REMINDER_MORNING_AT`` (07:30) on the planned date ("今天");

each until ``HYT_VISIT_REMINDER_LATEST_AT`` (21:00) that day and not after: a scheduler that
was down all evening does not text volunteers at night, the morning reminder comes instead.

Each reminder is queued once: its idempotency key names the visit, the volunteer, the planned
date and which reminder, so the job may run any number of times, and a visit given to another
volunteer or moved to another day is reminded afresh. Only open visits with a volunteer are
reminded (:func:`schedules.visit_plans.due_reminders`): none for a visit done, cancelled,
handed back or escalated, none for a day already past.

The text carries the visit's short code, the community and the volunteer's signed link
(:mod:`volunteers.visit_links`), never the elder's name, address or health: the page behind
the link shows what the visit needs.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from callcenter.models import Elder, OutboxMessage
from callcenter.phones import PhoneError
from callcenter.settings import get_settings
from schedules.models import Visit
from schedules.runner import JobContext, JobSpec, interval, register_job
from schedules.settings import ScheduleSettings, get_schedule_settings
from schedules.visit_plans import due_reminders
from volunteers import sms_texts
from volunteers.models import Volunteer
from volunteers.sms import queue_sms
from volunteers.visit_links import visit_code, visit_link

log = structlog.get_logger(__name__)

JOB_NAME = "visits.remind"
CHUNK = 5_000  # keys per IN list: below SQLite's bound-parameter limit

T = TypeVar("T")


class Reminder(enum.StrEnum):
    EVE = "eve"
    MORNING = "morning"


@dataclass
class ReminderSummary:
    queued: int = 0
    already_queued: int = 0
    skipped: int = 0  # volunteer inactive or with a phone number that cannot be texted


def due_now(local_now: dt.datetime, settings: ScheduleSettings) -> dict[dt.date, Reminder]:
    """Planned date → the reminder due for visits on that date at ``local_now`` (local time)."""
    clock = local_now.time()
    if clock >= settings.clock(settings.visit_reminder_latest_at):
        return {}
    today = local_now.date()
    due: dict[dt.date, Reminder] = {}
    lead = settings.visit_reminder_days_before
    if lead > 0 and clock >= settings.clock(settings.visit_reminder_evening_at):
        due[today + dt.timedelta(days=lead)] = Reminder.EVE
    if clock >= settings.clock(settings.visit_reminder_morning_at):
        due[today] = Reminder.MORNING
    return due


def reminder_key(visit: Visit, kind: Reminder) -> str:
    return f"visit_reminder:{visit.id}:{visit.volunteer_id}:{visit.planned_date:%Y%m%d}:{kind}"


def _when(kind: Reminder, lead_days: int) -> str:
    if kind is Reminder.MORNING:
        return "今天"
    return {1: "明天", 2: "后天"}.get(lead_days, f"{lead_days}天后")


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _existing_keys(session: Session, keys: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(list(keys)):
        found.update(
            session.scalars(
                select(OutboxMessage.idempotency_key).where(
                    OutboxMessage.idempotency_key.in_(chunk)
                )
            )
        )
    return found


def _by_id(session: Session, columns: Any, id_column: Any, ids: set[int]) -> dict[int, Any]:
    rows: dict[int, Any] = {}
    for chunk in _chunks(sorted(ids)):
        for row in session.execute(select(id_column, *columns).where(id_column.in_(chunk))):
            rows[row[0]] = row
    return rows


def send_visit_reminders(
    session: Session, *, now: dt.datetime, settings: ScheduleSettings | None = None
) -> ReminderSummary:
    """Queue the reminders due at ``now`` that are not queued yet. Caller commits."""
    settings = settings or get_schedule_settings()
    summary = ReminderSummary()
    due = due_now(now.astimezone(get_settings().tz), settings)
    if not due:
        return summary
    visits = [
        (visit, due[visit.planned_date])
        for visit in due_reminders(session, now, settings=settings)
        if visit.planned_date in due
    ]
    if not visits:
        return summary
    keys = {reminder_key(visit, kind) for visit, kind in visits}
    existing = _existing_keys(session, keys)
    todo = [(visit, kind) for visit, kind in visits if reminder_key(visit, kind) not in existing]
    summary.already_queued = len(visits) - len(todo)
    volunteer_ids = {v.volunteer_id for v, _ in todo if v.volunteer_id is not None}
    volunteers = _by_id(session, (Volunteer.phone, Volunteer.active), Volunteer.id, volunteer_ids)
    communities = _by_id(session, (Elder.community,), Elder.id, {v.elder_id for v, _ in todo})
    for visit, kind in todo:
        assert visit.volunteer_id is not None  # due_reminders lists assigned visits only
        _, phone, active = volunteers[visit.volunteer_id]
        if not active:
            summary.skipped += 1
            log.warning("visit.reminder_skipped", visit_id=visit.id,
                        volunteer_id=visit.volunteer_id, reason="volunteer inactive")  # fmt: skip
            continue
        text = sms_texts.visit_reminder_text(
            when=_when(kind, settings.visit_reminder_days_before),
            community=communities[visit.elder_id][1],
            link=visit_link(visit.id, visit.volunteer_id),
            code=visit_code(visit.id),
        )
        try:
            queue_sms(session, to=phone, body=text, key=reminder_key(visit, kind))
        except (PhoneError, ValueError) as exc:  # one bad number must not stop the others
            summary.skipped += 1
            log.error("visit.reminder_failed", visit_id=visit.id,
                      volunteer_id=visit.volunteer_id, error=str(exc))  # fmt: skip
            continue
        summary.queued += 1
    session.flush()
    log.info("visit.reminders", queued=summary.queued, already=summary.already_queued,
             skipped=summary.skipped, due={str(d): k.value for d, k in due.items()})  # fmt: skip
    return summary


def remind_job(ctx: JobContext) -> dict[str, Any]:
    with ctx.sessions.begin() as session:
        result = send_visit_reminders(session, now=ctx.now, settings=ctx.settings)
    return {
        "queued": result.queued,
        "already_queued": result.already_queued,
        "skipped": result.skipped,
    }


def _spec(settings: ScheduleSettings) -> JobSpec:
    return JobSpec(JOB_NAME, interval(settings.scheduler_remind_every_s), remind_job)


register_job(JOB_NAME, _spec)
