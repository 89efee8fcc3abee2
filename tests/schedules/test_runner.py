"""Job runs recorded in the database: run once per slot, missed slots caught up after downtime."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest
import time_machine
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from callcenter.models import RiskLevel
from schedules import runner
from schedules.models import JobOutcome, SchedulerJobRun, Visit
from schedules.runner import (
    JobContext,
    JobRunner,
    JobSpec,
    SchedulerService,
    default_jobs,
    fire_times,
    interval,
    register_job,
)
from schedules.settings import ScheduleSettings
from tests.schedules.builders import make_elders, make_volunteer

SETTINGS = ScheduleSettings(scheduler_first_run_lookback_s=3600)
T0 = dt.datetime(2026, 12, 1, 8, 3, 20, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


class Counting:
    """A job that remembers each context it ran with."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[JobContext] = []
        self.fail = fail

    def __call__(self, ctx: JobContext) -> Mapping[str, Any]:
        self.calls.append(ctx)
        if self.fail:
            raise RuntimeError("boom")
        return {"n": len(self.calls)}


@pytest.fixture
def sessions(fresh_engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(fresh_engine, expire_on_commit=False)


def _runs(sessions: sessionmaker[Session], name: str) -> list[SchedulerJobRun]:
    with sessions() as session:
        query = select(SchedulerJobRun).where(SchedulerJobRun.job_name == name)
        return list(session.scalars(query.order_by(SchedulerJobRun.scheduled_for)))


def _run_at(job_runner: JobRunner, spec: JobSpec, at: dt.datetime) -> list[int]:
    with time_machine.travel(at, tick=False):
        return job_runner.run_due(spec, at)


def test_fire_times_are_pure_functions_of_the_trigger() -> None:
    every_ten = interval(600)
    assert fire_times(every_ten, T0, T0 + 25 * MINUTE) == [
        dt.datetime(2026, 12, 1, 8, 10, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 1, 8, 20, tzinfo=dt.UTC),
    ]
    assert fire_times(every_ten, T0, T0 + 5 * MINUTE) == []
    daily = CronTrigger(hour=2, minute=30, timezone="Asia/Shanghai")
    days = fire_times(daily, T0, T0 + dt.timedelta(days=3))
    # 02:30 in Shanghai is 18:30 UTC the day before.
    assert [d.astimezone(dt.UTC).isoformat() for d in days] == [
        "2026-12-01T18:30:00+00:00",
        "2026-12-02T18:30:00+00:00",
        "2026-12-03T18:30:00+00:00",
    ]


def test_each_slot_runs_once_and_downtime_is_caught_up(sessions: sessionmaker[Session]) -> None:
    job = Counting()
    spec = JobSpec("test.sweep", interval(600), job)
    first = JobRunner(sessions, SETTINGS, runner_id="a:1")
    assert len(_run_at(first, spec, T0)) == 1  # the newest slot of the first-run lookback
    assert job.calls[0].scheduled_for == dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
    assert _run_at(first, spec, T0 + MINUTE) == []  # the same slot: not run twice
    # A restarted process (another runner) does not double it either.
    second = JobRunner(sessions, SETTINGS, runner_id="b:2")
    assert _run_at(second, spec, T0 + MINUTE) == []

    # 45 minutes down: 4 slots missed (8:10 … 8:40); a sweep runs once for them all.
    assert len(_run_at(second, spec, T0 + 45 * MINUTE)) == 1
    runs = _runs(sessions, "test.sweep")
    assert [(r.scheduled_for.strftime("%H:%M"), r.missed, r.runner) for r in runs] == [
        ("08:00", 5, "a:1"),  # the first run covers the lookback's hour
        ("08:40", 3, "b:2"),
    ]
    assert all(r.outcome is JobOutcome.OK and r.finished_at is not None for r in runs)
    assert runs[1].detail == {"n": 2}


def test_jobs_that_must_not_coalesce_run_every_missed_slot(
    sessions: sessionmaker[Session],
) -> None:
    job = Counting()
    spec = JobSpec("test.each", interval(600), job, coalesce=False)
    job_runner = JobRunner(sessions, SETTINGS)
    _run_at(job_runner, spec, T0)
    job.calls.clear()
    assert len(_run_at(job_runner, spec, T0 + 45 * MINUTE)) == 4
    assert [c.scheduled_for.strftime("%H:%M") for c in job.calls] == [
        "08:10",
        "08:20",
        "08:30",
        "08:40",
    ]


def test_a_slot_left_running_by_a_dead_leader_runs_again(sessions: sessionmaker[Session]) -> None:
    spec = JobSpec("test.crash", interval(600), Counting())
    slot = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
    with sessions.begin() as session:  # what a leader killed mid-run leaves behind
        session.add(SchedulerJobRun(job_name=spec.name, scheduled_for=slot, runner="dead:9"))
    heir = JobRunner(sessions, SETTINGS, runner_id="heir:1")
    assert heir.mark_interrupted() == 1
    assert len(_run_at(heir, spec, T0)) == 1
    [run] = _runs(sessions, spec.name)
    assert (run.scheduled_for, run.attempts, run.outcome, run.runner) == (
        slot,
        2,
        JobOutcome.OK,
        "heir:1",
    )


def test_a_failing_job_is_recorded_and_the_next_slot_still_runs(
    sessions: sessionmaker[Session],
) -> None:
    spec = JobSpec("test.fail", interval(600), Counting(fail=True))
    job_runner = JobRunner(sessions, SETTINGS)
    _run_at(job_runner, spec, T0)
    _run_at(job_runner, spec, T0 + 10 * MINUTE)
    runs = _runs(sessions, spec.name)
    assert [r.outcome for r in runs] == [JobOutcome.ERROR, JobOutcome.ERROR]
    assert "boom" in runs[0].detail["error"]


def test_default_jobs_and_the_registration_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_registered", {})
    register_job("offers.timeouts", lambda s: JobSpec("offers.timeouts", interval(30), Counting()))
    names = [spec.name for spec in default_jobs(SETTINGS, "Asia/Shanghai")]
    assert names == ["visits.plan", "visits.overdue", "terminals.watchdog", "offers.timeouts"]


def test_the_real_jobs_run_through_the_runner(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        make_elders(session, 3, RiskLevel.MEDIUM)
        make_volunteer(session)
    job_runner = JobRunner(sessions, SETTINGS)
    at = dt.datetime(2026, 11, 24, 19, 0, tzinfo=dt.UTC)  # 03:00 on 25 November in Shanghai
    for spec in default_jobs(SETTINGS, "Asia/Shanghai"):
        assert len(_run_at(job_runner, spec, at)) == 1, spec.name
    [plan] = _runs(sessions, "visits.plan")
    assert plan.outcome is JobOutcome.OK
    # This month too: elders added since the last plan still get their November visit.
    assert (plan.detail["2026-11"], plan.detail["2026-12"]) == (3, 3)
    with sessions() as session:
        assert len(session.scalars(select(Visit)).all()) == 6
    assert _run_at(job_runner, default_jobs(SETTINGS, "Asia/Shanghai")[0], at) == []


def test_the_apscheduler_service_starts_runs_and_stops(sessions: sessionmaker[Session]) -> None:
    ran = threading.Event()

    def job(ctx: JobContext) -> None:
        ran.set()

    service = SchedulerService(
        JobRunner(sessions, SETTINGS), [JobSpec("test.live", interval(1), job)]
    )
    service.start()
    try:
        assert ran.wait(30)  # the catch-up run at start; bounded for a loaded machine
        deadline = time.monotonic() + 30
        while len(_runs(sessions, "test.live")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        service.stop()
    runs = _runs(sessions, "test.live")
    assert len(runs) >= 2 and len({r.scheduled_for for r in runs}) == len(runs)
