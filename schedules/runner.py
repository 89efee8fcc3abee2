"""The scheduler process: ``hyt scheduler`` (and a thread of ``hyt serve`` on a small site).

APScheduler 3 only wakes the process up at the triggers' times; what was run lives in the
``scheduler_job_runs`` table, one row per job and slot (a fire time of its trigger). Each wake-up
runs the slots due since the job's last recorded slot:

- a slot is claimed by inserting its row (unique job + slot): never run twice, by this process,
  a restarted one or a second leader during a lease overlap;
- after downtime the missed slots are found from the table and caught up, not skipped: sweeps
  (``coalesce=True``) run once for the newest missed slot, noting how many it covers, because one
  sweep sees everything the missed ones would have; other jobs run every missed slot in order;
- a slot claimed by a leader that died mid-run is marked interrupted by the next leader and run
  again. Jobs are therefore idempotent (visit planning, sweeps): at-least-once runs, once-only
  records.

Other modules add jobs with :func:`register_job` (offer time-outs, SMS reminders) before the
scheduler starts; job state of their own stays in their tables.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Insert, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from callcenter import db
from callcenter.db import utcnow
from callcenter.settings import Settings
from schedules.leader import leadership_for
from schedules.models import JobOutcome, SchedulerJobRun
from schedules.overdue import sweep_overdue
from schedules.settings import ScheduleSettings, get_schedule_settings
from schedules.visit_planner import plan_period
from schedules.visit_plans import Month, local_date
from schedules.watchdog import sweep_silent_terminals

log = structlog.get_logger(__name__)

# Interval triggers count from a fixed origin, so that slots stay the same across restarts.
SLOT_ORIGIN = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
MAX_SLOTS = 100_000  # a bound on catch-up work after very long downtime


@dataclass(frozen=True)
class JobContext:
    sessions: sessionmaker[Session]
    scheduled_for: dt.datetime  # the slot being run
    now: dt.datetime  # when it actually runs
    missed: int  # earlier slots this run covers (coalesced catch-up)
    settings: ScheduleSettings


JobFunc = Callable[[JobContext], Mapping[str, Any] | None]


@dataclass(frozen=True)
class JobSpec:
    name: str
    trigger: Any  # an APScheduler 3 trigger (untyped library)
    func: JobFunc
    # Run once for any number of missed slots (sweeps); False runs each missed slot in order.
    coalesce: bool = True


_registered: dict[str, Callable[[ScheduleSettings], JobSpec]] = {}


def register_job(name: str, make: Callable[[ScheduleSettings], JobSpec]) -> None:
    """Add a job to every scheduler started after this call (the hook for other modules)."""
    _registered[name] = make


def interval(seconds: int) -> IntervalTrigger:
    return IntervalTrigger(seconds=seconds, start_date=SLOT_ORIGIN, timezone=dt.UTC)


@contextmanager
def _transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """Commit on success, roll back on error: the jobs' one place that commits."""
    with sessions.begin() as session:
        yield session


def plan_visits_job(ctx: JobContext) -> dict[str, Any]:
    """Plan this month (elders added since) and next month; idempotent, so daily is harmless."""
    this_month = Month.of(local_date(ctx.now))
    created: dict[str, Any] = {}
    for month in (this_month, this_month.next()):
        with _transaction(ctx.sessions) as session:
            summary = plan_period(session, month=month.key, now=ctx.now, settings=ctx.settings)
        created[month.key] = summary.created_total
        created[f"{month.key}_official_schedule_known"] = summary.official_schedule_known
    return created


def overdue_job(ctx: JobContext) -> dict[str, Any]:
    with _transaction(ctx.sessions) as session:
        result = sweep_overdue(session, now=ctx.now, settings=ctx.settings)
    return {
        "reassigned": len(result.reassigned),
        "escalated": len(result.escalated),
        "assigned": len(result.assigned),
    }


def watchdog_job(ctx: JobContext) -> dict[str, Any]:
    with _transaction(ctx.sessions) as session:
        result = sweep_silent_terminals(session, now=ctx.now, settings=ctx.settings)
    return {
        "newly_silent": result.newly_silent,
        "cases_opened": result.cases_opened,
        "group_cases_opened": result.group_cases_opened,
        "cases_closed": result.cases_closed,
    }


def default_jobs(settings: ScheduleSettings, timezone: str) -> list[JobSpec]:
    hour, minute = settings.scheduler_plan_at.split(":")
    jobs = [
        JobSpec(
            "visits.plan",
            CronTrigger(hour=int(hour), minute=int(minute), timezone=timezone),
            plan_visits_job,
        ),
        JobSpec("visits.overdue", interval(settings.scheduler_overdue_every_s), overdue_job),
        JobSpec("terminals.watchdog", interval(settings.scheduler_watchdog_every_s), watchdog_job),
    ]
    return jobs + [make(settings) for make in _registered.values()]


def fire_times(trigger: Any, after: dt.datetime, until: dt.datetime) -> list[dt.datetime]:
    """The trigger's fire times in (after, until], at most MAX_SLOTS (the newest kept)."""
    if isinstance(trigger, IntervalTrigger) and trigger.jitter is None:
        # Arithmetic instead of a loop: a week of one-minute slots is 10,080 steps.
        first = trigger.get_next_fire_time(None, after + dt.timedelta(microseconds=1))
        if first is None or first > until:
            return []
        step = trigger.interval
        count = min(math.floor((until - first) / step) + 1, MAX_SLOTS)
        last = first + step * (math.floor((until - first) / step))
        return [last - step * k for k in range(count - 1, -1, -1)]
    times: list[dt.datetime] = []
    moment = after + dt.timedelta(microseconds=1)
    while True:
        fire = trigger.get_next_fire_time(None, moment)
        if fire is None or fire > until:
            return times[-MAX_SLOTS:]
        times.append(fire)
        moment = fire + dt.timedelta(microseconds=1)


class JobRunner:
    """Runs each job's due slots, claiming and recording them in ``scheduler_job_runs``."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: ScheduleSettings,
        *,
        runner_id: str | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.runner_id = runner_id or f"{socket.gethostname()}:{os.getpid()}"

    def mark_interrupted(self) -> int:
        """Slots left running by a dead leader: run them again. Only a new leader calls this."""
        with _transaction(self.sessions) as session:
            result = session.execute(
                update(SchedulerJobRun)
                .where(SchedulerJobRun.outcome == JobOutcome.RUNNING)
                .values(outcome=JobOutcome.INTERRUPTED)
                .execution_options(synchronize_session=False)
            )
        count = int(getattr(result, "rowcount", 0) or 0)
        if count:
            log.warning("scheduler.runs_interrupted", count=count)
        return count

    def due_slots(self, spec: JobSpec, now: dt.datetime) -> list[dt.datetime]:
        with self.sessions() as session:
            last = session.scalar(
                select(func.max(SchedulerJobRun.scheduled_for)).where(
                    SchedulerJobRun.job_name == spec.name,
                    SchedulerJobRun.outcome != JobOutcome.INTERRUPTED,
                )
            )
        if last is None:
            last = now - dt.timedelta(seconds=self.settings.scheduler_first_run_lookback_s)
        return fire_times(spec.trigger, last, now)

    def _insert(self, session: Session) -> Insert:
        if session.get_bind().dialect.name == "postgresql":
            return postgresql.insert(SchedulerJobRun).on_conflict_do_nothing()
        return sqlite.insert(SchedulerJobRun).on_conflict_do_nothing()

    def _claim(self, name: str, slot: dt.datetime, missed: int) -> int | None:
        """The run's id if this process gets the slot; None if someone else has it."""
        now = utcnow()
        with _transaction(self.sessions) as session:
            run_id = session.scalar(
                self._insert(session)
                .values(
                    job_name=name,
                    scheduled_for=slot,
                    started_at=now,
                    outcome=JobOutcome.RUNNING,
                    attempts=1,
                    missed=missed,
                    runner=self.runner_id,
                    detail={},
                )
                .returning(SchedulerJobRun.id)
            )
            if run_id is None:
                # Taken: only a slot whose runner died mid-run may be taken over.
                run_id = session.scalar(
                    update(SchedulerJobRun)
                    .where(
                        SchedulerJobRun.job_name == name,
                        SchedulerJobRun.scheduled_for == slot,
                        SchedulerJobRun.outcome == JobOutcome.INTERRUPTED,
                    )
                    .values(
                        outcome=JobOutcome.RUNNING,
                        attempts=SchedulerJobRun.attempts + 1,
                        started_at=now,
                        runner=self.runner_id,
                        missed=missed,
                    )
                    .returning(SchedulerJobRun.id)
                    .execution_options(synchronize_session=False)
                )
        return run_id

    def _finish(self, run_id: int, outcome: JobOutcome, detail: Mapping[str, Any]) -> None:
        with _transaction(self.sessions) as session:
            session.execute(
                update(SchedulerJobRun)
                .where(SchedulerJobRun.id == run_id)
                .values(finished_at=utcnow(), outcome=outcome, detail=dict(detail))
                .execution_options(synchronize_session=False)
            )

    def run_due(self, spec: JobSpec, now: dt.datetime | None = None) -> list[int]:
        """Run ``spec``'s due slots up to ``now``; the ids of the runs this call made."""
        now = now or utcnow()
        slots = self.due_slots(spec, now)
        if not slots:
            return []
        batches = [(slots[-1], len(slots) - 1)] if spec.coalesce else [(s, 0) for s in slots]
        ran: list[int] = []
        for slot, missed in batches:
            run_id = self._claim(spec.name, slot, missed)
            if run_id is None:
                continue
            ctx = JobContext(self.sessions, slot, utcnow(), missed, self.settings)
            try:
                detail = spec.func(ctx) or {}
                outcome = JobOutcome.OK
            except Exception as exc:  # recorded; the next slot runs as usual
                log.exception("scheduler.job_failed", job=spec.name, slot=slot.isoformat())
                detail, outcome = {"error": repr(exc)[:500]}, JobOutcome.ERROR
            self._finish(run_id, outcome, detail)
            ran.append(run_id)
            log.info(
                "scheduler.job_ran",
                job=spec.name,
                slot=slot.isoformat(),
                missed=missed,
                outcome=outcome.value,
            )
        return ran


class SchedulerService:
    """The jobs of one leadership term on an APScheduler ``BackgroundScheduler``."""

    def __init__(self, runner: JobRunner, jobs: list[JobSpec]) -> None:
        self.runner = runner
        self.jobs = jobs
        self._scheduler: BackgroundScheduler | None = None

    def start(self) -> None:
        self.runner.mark_interrupted()
        # A new scheduler per term: its in-memory job store holds nothing worth keeping.
        scheduler = BackgroundScheduler(
            timezone=dt.UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        for spec in self.jobs:
            # Run at once: catch up what was missed while no scheduler was leading.
            scheduler.add_job(
                self.runner.run_due,
                trigger=spec.trigger,
                args=[spec],
                id=spec.name,
                name=spec.name,
                next_run_time=utcnow(),
            )
        scheduler.start()
        self._scheduler = scheduler
        log.info("scheduler.started", jobs=[spec.name for spec in self.jobs])

    def stop(self, *, wait: bool = True) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=wait)
            self._scheduler = None
            log.info("scheduler.stopped")


def lead_while_running(
    settings: Settings,
    stop: threading.Event,
    *,
    schedule: ScheduleSettings | None = None,
    jobs: list[JobSpec] | None = None,
) -> None:
    """Stand by until leader, run the jobs while leader, until ``stop`` is set."""
    schedule = schedule or get_schedule_settings()
    db.load_models()
    engine = db.make_engine(settings.database_url)
    sessions = sessionmaker(engine, expire_on_commit=False)
    jobs = jobs if jobs is not None else default_jobs(schedule, settings.timezone)
    service = SchedulerService(JobRunner(sessions, schedule), jobs)
    leadership = leadership_for(
        settings.database_url, key=schedule.scheduler_lock_key, lease_s=schedule.scheduler_lease_s
    )
    retry = schedule.scheduler_leader_retry_s
    log.info("scheduler.standby", retry_s=retry)
    try:
        while not stop.is_set():
            if not leadership.try_acquire():
                stop.wait(retry)
                continue
            try:
                service.start()
            except Exception:  # e.g. the database went away between the lock and the start
                log.exception("scheduler.start_failed")
                service.stop(wait=False)
                leadership.release()
                stop.wait(retry)
                continue
            lost = False
            while not stop.wait(retry):
                if not leadership.still_leader():
                    lost = True
                    break
            # A lost leader does not wait for its jobs: another process may be leading already.
            service.stop(wait=not lost)
            leadership.release()
    finally:
        leadership.dispose()
        engine.dispose()


class SchedulerThread:
    """The scheduler inside another process (``hyt serve``): start(), then stop() at exit."""

    def __init__(self, settings: Settings) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lead_while_running,
            args=(settings, self._stop),
            name="hyt-scheduler",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)


def run_scheduler(settings: Settings) -> None:
    """``hyt scheduler``: run until SIGINT or SIGTERM."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    lead_while_running(settings, stop)
