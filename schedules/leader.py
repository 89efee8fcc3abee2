"""Which scheduler process is the active one: a PostgreSQL advisory lock on its own connection.

APScheduler 3 cannot share a job store between processes (its FAQ), so exactly one scheduler
may run jobs. Every scheduler process tries ``pg_try_advisory_lock`` on a dedicated connection;
the one that gets it is the leader, the others try again every ``HYT_SCHEDULER_LEADER_RETRY_S``.
The lock is a session lock: PostgreSQL releases it when the leader's connection ends. A leader
killed outright has its socket closed by the kernel and loses the lock at once; a leader whose
host vanishes (no FIN) is cut off by TCP keepalives and ``tcp_user_timeout`` on both ends after
about ``HYT_SCHEDULER_LEASE_S`` (the lease). The leader checks its lock connection at the same
interval (the heartbeat) and stops its jobs as soon as the check fails, so two leaders overlap at
most for that long; the job-run claims (``scheduler_job_runs``) keep a slot from running twice
even then.

SQLite has no advisory locks and is the embedded database of one small site: there a single
scheduler process is assumed (``hyt serve`` or ``hyt scheduler``, not both) and leadership is
always granted. Should two run anyway, the job-run claims still run each slot once.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

import structlog
from sqlalchemy import Connection, text
from sqlalchemy.pool import NullPool

from callcenter import db

log = structlog.get_logger(__name__)


class Leadership(Protocol):
    def try_acquire(self) -> bool: ...
    def still_leader(self) -> bool: ...
    def release(self) -> None: ...
    def dispose(self) -> None: ...


class SingleProcessLeadership:
    """SQLite: one scheduler process is assumed, so it always leads."""

    def try_acquire(self) -> bool:
        return True

    def still_leader(self) -> bool:
        return True

    def release(self) -> None:
        return None

    def dispose(self) -> None:
        return None


class AdvisoryLockLeadership:
    """PostgreSQL: the holder of session advisory lock ``key`` leads."""

    def __init__(self, url: str, *, key: int, lease_s: int) -> None:
        self.key = key
        self.lease_s = lease_s
        # Keepalive probes fit the lease: idle a third of it, then three probes in the rest.
        idle = max(1, lease_s // 3)
        interval = max(1, lease_s // 9)
        self._engine = db.make_engine(
            url,
            poolclass=NullPool,  # a dead connection must stay dead, never be quietly replaced
            isolation_level="AUTOCOMMIT",  # no transaction held open for the lock's lifetime
            connect_args={
                "application_name": "hyt-scheduler",
                "connect_timeout": max(2, lease_s // 6),
                "keepalives": 1,
                "keepalives_idle": idle,
                "keepalives_interval": interval,
                "keepalives_count": 3,
                "tcp_user_timeout": lease_s * 1000,
            },
        )
        self._conn: Connection | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never waits for it."""
        if self._conn is not None:
            return self.still_leader()
        try:
            conn = self._engine.connect()
        except Exception as exc:  # the database is down: stand by and try again
            log.warning("scheduler.leader_connect_failed", error=str(exc))
            return False
        try:
            # The server drops this session if the leader's host vanishes: same lease there.
            idle = max(1, self.lease_s // 3)
            conn.execute(text(f"SET tcp_keepalives_idle = {idle}"))
            conn.execute(text(f"SET tcp_keepalives_interval = {max(1, self.lease_s // 9)}"))
            conn.execute(text("SET tcp_keepalives_count = 3"))
            conn.execute(text(f"SET statement_timeout = {self.lease_s * 500}"))
            got = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}))
        except Exception as exc:
            log.warning("scheduler.leader_lock_failed", error=str(exc))
            conn.close()
            return False
        if not got:
            conn.close()
            return False
        self._conn = conn
        log.info("scheduler.leader_acquired", key=self.key)
        return True

    def still_leader(self) -> bool:
        """The heartbeat: is the lock connection alive and does it hold the lock?"""
        if self._conn is None:
            return False
        try:
            held = self._conn.scalar(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid() AND granted"
                )
            )
        except Exception as exc:
            log.error("scheduler.leader_lost", error=str(exc))
            self._drop()
            return False
        if not held:
            log.error("scheduler.leader_lost", error="advisory lock no longer held")
            self._drop()
            return False
        return True

    def release(self) -> None:
        if self._conn is None:
            return
        with contextlib.suppress(Exception):
            self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
                self._conn.close()
        self._conn = None

    def dispose(self) -> None:
        self.release()
        self._engine.dispose()


def leadership_for(url: str, *, key: int, lease_s: int) -> Leadership:
    """Advisory-lock leadership on PostgreSQL; always-leader on SQLite (one process)."""
    if url.startswith("sqlite"):
        return SingleProcessLeadership()
    return AdvisoryLockLeadership(url, key=key, lease_s=lease_s)
