"""Visit reminders, with time travel: the evening before at 18:00 and the morning of at 07:30,
each queued once however often the job runs, and none for visits that no longer need one."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from pydantic import ValidationError
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from callcenter.db import utcnow
from callcenter.models import OutboxMessage
from schedules import reminders, runner
from schedules.models import SchedulerJobRun, Visit, VisitKind, VisitStatus
from schedules.reminders import send_visit_reminders
from schedules.runner import JobRunner, default_jobs
from schedules.settings import ScheduleSettings
from tests.factories import make_elder
from tests.schedules.builders import SHANGHAI, make_volunteer
from volunteers.models import Volunteer
from volunteers.sms import MAX_SMS_CHARS

SETTINGS = ScheduleSettings(scheduler_first_run_lookback_s=3600)
VISIT_DAY = dt.date(2026, 12, 3)  # a Thursday


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    """A moment in December 2026, Asia/Shanghai."""
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=SHANGHAI)


def visit_for(
    session: Session,
    volunteer: Volunteer | None,
    *,
    planned: dt.date = VISIT_DAY,
    status: VisitStatus = VisitStatus.PLANNED,
) -> Visit:
    elder = make_elder(session, name="翁淑珍", address="金砂东路88号3栋402室",
                       medical_notes="高血压")  # fmt: skip
    visit = Visit(elder_id=elder.id, volunteer_id=volunteer.id if volunteer else None,
                  kind=VisitKind.MONTHLY, period="2026-12", planned_date=planned,
                  window_end=dt.date(2026, 12, 31), status=status)  # fmt: skip
    session.add(visit)
    session.flush()
    return visit


def remind_at(session: Session, moment: dt.datetime) -> reminders.ReminderSummary:
    """Run the reminder step with the clock set to ``moment`` (as the job runs it)."""
    with time_machine.travel(moment, tick=False):
        return send_visit_reminders(session, now=utcnow(), settings=SETTINGS)


def outbox(session: Session) -> list[OutboxMessage]:
    return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_evening_reminder_not_before_18_and_only_once(session: Session) -> None:
    volunteer = make_volunteer(session)
    visit = visit_for(session, volunteer)
    for moment in (at(1, 18), at(2, 7, 30), at(2, 12), at(2, 17, 59)):
        assert remind_at(session, moment).queued == 0, moment
    assert outbox(session) == []

    assert remind_at(session, at(2, 18)).queued == 1
    for moment in (at(2, 18, 5), at(2, 19, 30), at(2, 20, 59)):
        again = remind_at(session, moment)
        assert (again.queued, again.already_queued) == (0, 1)
    [sms] = outbox(session)
    assert sms.to == volunteer.phone
    assert sms.idempotency_key == f"visit_reminder:{visit.id}:{volunteer.id}:20261203:eve"
    assert sms.body.startswith(f"【呼援通】提醒：您明天有上门探访V{visit.id}（金湖社区）")
    assert "/v/visit/" in sms.body and len(sms.body) <= MAX_SMS_CHARS
    # Minimum personal data: no name, address or health in a text that travels in clear.
    for private in ("淑珍", "翁", "金砂东路", "高血压"):
        assert private not in sms.body


def test_morning_reminder_on_the_day_only_from_07_30(session: Session) -> None:
    volunteer = make_volunteer(session)
    visit = visit_for(session, volunteer)
    remind_at(session, at(2, 18, 30))
    assert remind_at(session, at(3, 7, 29)).queued == 0
    assert remind_at(session, at(3, 7, 30)).queued == 1
    assert remind_at(session, at(3, 10)).queued == 0
    eve, morning = outbox(session)
    assert eve.idempotency_key.endswith(":eve") and "明天" in eve.body
    assert morning.idempotency_key == f"visit_reminder:{visit.id}:{volunteer.id}:20261203:morning"
    assert "您今天有上门探访" in morning.body
    # Each carries its own signed link to the same visit page.
    assert eve.body.split(" ")[-1] != morning.body.split(" ")[-1]


def test_a_missed_evening_does_not_text_at_night(session: Session) -> None:
    """Scheduler down all evening: no SMS at 22:00 or 03:00; the morning one comes instead."""
    visit_for(session, make_volunteer(session))
    assert remind_at(session, at(2, 21)).queued == 0
    assert remind_at(session, at(2, 22, 30)).queued == 0
    assert remind_at(session, at(3, 3)).queued == 0
    assert remind_at(session, at(3, 8)).queued == 1
    assert [m.idempotency_key.rsplit(":", 1)[1] for m in outbox(session)] == ["morning"]


def test_none_for_visits_done_cancelled_unassigned_or_past(session: Session) -> None:
    volunteer = make_volunteer(session)
    for status in (VisitStatus.DONE, VisitStatus.CANCELLED, VisitStatus.HANDED_BACK,
                   VisitStatus.ESCALATED):  # fmt: skip
        visit_for(session, volunteer, status=status)
    visit_for(session, None)  # nobody assigned yet: the overdue sweep assigns it first
    yesterday = visit_for(session, volunteer, planned=VISIT_DAY - dt.timedelta(days=1))
    # On the 3rd: the visits of the 3rd need none, the one of the 2nd is past.
    for moment in (at(3, 7, 45), at(3, 12), at(3, 18, 30)):
        assert remind_at(session, moment).queued == 0
    assert outbox(session) == []
    # On the 2nd: no evening reminder for the closed visits of the 3rd; the open visit of the
    # 2nd, which the scheduler missed in the morning, still gets its reminder that day.
    assert remind_at(session, at(2, 18, 30)).queued == 1
    assert [m.idempotency_key for m in outbox(session)] == [
        f"visit_reminder:{yesterday.id}:{volunteer.id}:20261202:morning"
    ]


def test_a_reassigned_visit_reminds_its_new_volunteer(session: Session) -> None:
    first, second = make_volunteer(session), make_volunteer(session, name="陈志明")
    visit = visit_for(session, first)
    remind_at(session, at(2, 18))
    visit.volunteer_id = second.id  # handed back or reassigned by the overdue sweep
    session.flush()
    assert remind_at(session, at(2, 19)).queued == 1
    assert [m.to for m in outbox(session)] == [first.phone, second.phone]


def test_an_inactive_volunteer_is_not_texted(session: Session) -> None:
    volunteer = make_volunteer(session)
    volunteer.active = False
    visit_for(session, volunteer)
    result = remind_at(session, at(2, 18, 30))
    assert (result.queued, result.skipped) == (0, 1) and outbox(session) == []


def test_reminder_times_are_configuration() -> None:
    custom = ScheduleSettings(visit_reminder_evening_at="19:15", visit_reminder_morning_at="8:00")
    eve, morning = reminders.Reminder.EVE, reminders.Reminder.MORNING
    second = dt.date(2026, 12, 2)
    assert reminders.due_now(at(2, 7, 59), custom) == {}
    assert reminders.due_now(at(2, 8), custom) == {second: morning}
    assert reminders.due_now(at(2, 19, 14), custom) == {second: morning}
    assert reminders.due_now(at(2, 19, 15), custom) == {second: morning, VISIT_DAY: eve}
    assert reminders.due_now(at(2, 21), custom) == {}  # the latest time: quiet until morning
    with pytest.raises(ValidationError, match="HH:MM"):
        ScheduleSettings(visit_reminder_morning_at="7h30")
    with pytest.raises(ValidationError, match="before HYT_VISIT_REMINDER_LATEST_AT"):
        ScheduleSettings(visit_reminder_evening_at="22:00")


def test_the_scheduler_job_queues_each_reminder_once(fresh_engine: Engine) -> None:
    """Through the job runner: registered by import, run every five minutes all evening."""
    assert reminders.JOB_NAME in {spec.name for spec in default_jobs(SETTINGS, "Asia/Shanghai")}
    sessions = sessionmaker(fresh_engine, expire_on_commit=False)
    with sessions.begin() as s:
        visit_id = visit_for(s, make_volunteer(s)).id
    spec = runner._registered[reminders.JOB_NAME](SETTINGS)
    job_runner = JobRunner(sessions, SETTINGS)
    moment = at(2, 17, 30)
    while moment <= at(3, 9):
        with time_machine.travel(moment, tick=False):
            job_runner.run_due(spec, utcnow())
        moment += dt.timedelta(minutes=5)
    with sessions() as s:
        keys = s.scalars(select(OutboxMessage.idempotency_key).order_by(OutboxMessage.id)).all()
        runs = s.scalar(select(func.count()).where(SchedulerJobRun.job_name == reminders.JOB_NAME))
    assert [key.rsplit(":", 1)[1] for key in keys] == ["eve", "morning"]
    assert all(f":{visit_id}:" in key for key in keys)
    assert runs is not None and runs > 150  # every slot ran; two texts came of it
