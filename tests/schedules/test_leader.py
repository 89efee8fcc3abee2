"""Two scheduler processes on one PostgreSQL: one runs the jobs; kill it, the other takes over."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from callcenter import db
from schedules.models import JobOutcome, SchedulerJobRun

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = (
    "from callcenter.logging_setup import configure_logging; configure_logging(); "
    "from callcenter.settings import get_settings; "
    "from schedules.runner import run_scheduler; run_scheduler(get_settings())"
)
WATCHDOG = "terminals.watchdog"
DEADLINE_S = 60.0  # the "takes over within a minute"; generous for a loaded machine

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(fresh_postgres_url: str) -> Iterator[Engine]:
    engine = db.make_engine(fresh_postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def start_scheduler(
    fresh_postgres_url: str, tmp_path: Path
) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "HYT_DATABASE_URL": fresh_postgres_url,
        "HYT_SCHEDULER_LEADER_RETRY_S": "0.5",
        "HYT_SCHEDULER_WATCHDOG_EVERY_S": "1",
        "HYT_SCHEDULER_OVERDUE_EVERY_S": "2",
        "HYT_SCHEDULER_FIRST_RUN_LOOKBACK_S": "2",
        "HYT_SCHEDULER_LEASE_S": "10",
    }

    def start(name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:  # only the processes this test started, by their own id
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _runs(engine: Engine) -> list[SchedulerJobRun]:
    with Session(engine) as session:
        query = select(SchedulerJobRun).where(SchedulerJobRun.job_name == WATCHDOG)
        return list(session.scalars(query.order_by(SchedulerJobRun.scheduled_for)))


def _runners(engine: Engine) -> set[str]:
    return {run.runner.rsplit(":", 1)[1] for run in _runs(engine)}


def _wait_for(condition: Callable[[], bool], what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > DEADLINE_S:
            raise AssertionError(f"not within {DEADLINE_S} s: {what}")
        time.sleep(0.2)
    return time.monotonic() - started


def test_one_leader_runs_the_jobs_and_the_standby_takes_over(
    engine: Engine, start_scheduler: Callable[[str], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    first = start_scheduler("first")
    _wait_for(lambda: str(first.pid) in _runners(engine), "the first scheduler runs jobs")
    second = start_scheduler("second")
    log = tmp_path / "second.log"
    _wait_for(lambda: "scheduler.standby" in log.read_text(errors="replace"), "second standing by")
    before = len(_runs(engine))
    time.sleep(3)  # six lock attempts by the second process
    assert second.poll() is None and first.poll() is None
    assert _runners(engine) == {str(first.pid)}  # the standby ran nothing
    assert len(_runs(engine)) > before  # while the leader went on

    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    took = _wait_for(lambda: str(second.pid) in _runners(engine), "the standby takes over")
    assert took < DEADLINE_S
    print(f"take-over in {took:.1f} s after kill -9")
    _wait_for(
        lambda: sum(r.runner.endswith(f":{second.pid}") for r in _runs(engine)) >= 3,
        "the new leader keeps running",
    )

    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0  # a clean stop on SIGTERM

    runs = [r for r in _runs(engine) if r.outcome is not JobOutcome.RUNNING]
    assert all(r.outcome is JobOutcome.OK for r in runs), [r.outcome for r in runs]
    # One leader at a time: the first's runs all come before the second's.
    owners = [r.runner.rsplit(":", 1)[1] for r in runs]
    switch = owners.index(str(second.pid))
    assert set(owners[:switch]) == {str(first.pid)} and set(owners[switch:]) == {str(second.pid)}
    # Nothing skipped, nothing doubled: each run covers exactly the slots since the one before.
    for previous, run in itertools.pairwise(runs):
        gap = (run.scheduled_for - previous.scheduled_for) / dt.timedelta(seconds=1)
        assert gap == run.missed + 1, (previous.scheduled_for, run.scheduled_for, run.missed)
