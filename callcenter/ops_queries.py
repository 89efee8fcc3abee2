"""Cheap read-only queries behind ``/readyz`` and ``/metrics``, on one connection.

Each query is bounded by an index or by a small table, so that a probe every few seconds costs
the database nothing noticeable: the alarm queue by ``ix_alarms_queue`` (status, priority,
received_at), recent alarms by ``received_at``, the unsent SMS by ``ix_outbox_due`` (status first),
the latest scheduler run by its primary key; offers and terminals are small tables (thousands of
rows, not millions). None of them reads a name, phone number or address.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import Connection, func, select, text

from callcenter.models import Alarm, AlarmKind, AlarmStatus, OutboxMessage, OutboxStatus
from devices.models import Terminal, TerminalStatus
from schedules.models import SchedulerJobRun
from volunteers.models import Offer, OfferStatus

UNSENT = (OutboxStatus.QUEUED, OutboxStatus.SENDING)


def age_s(since: dt.datetime | None, now: dt.datetime) -> float | None:
    return None if since is None else max(0.0, (now - since).total_seconds())


@dataclass(frozen=True, slots=True)
class SchedulerState:
    # True/False on PostgreSQL (is the advisory lock held by some session); None on SQLite.
    lock_held: bool | None
    last_run_at: dt.datetime | None
    last_job: str | None


def _lock_parts(key: int) -> tuple[int, int]:
    """pg_locks shows a bigint advisory key as classid (high 32 bits) and objid (low 32 bits)
    with objsubid 1 (PostgreSQL docs, "pg_locks": advisory locks)."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


def scheduler_state(conn: Connection, *, lock_key: int) -> SchedulerState:
    lock_held: bool | None = None
    if conn.dialect.name == "postgresql":
        high, low = _lock_parts(lock_key)
        lock_held = bool(
            conn.scalar(
                text(
                    # Advisory locks are per database: another database's scheduler on the
                    # same server holds the same key, and must not count as ours.
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database()) "
                    "AND classid::bigint = :high AND objid::bigint = :low AND objsubid = 1"
                ),
                {"high": high, "low": low},
            )
        )
    last = conn.execute(
        select(SchedulerJobRun.started_at, SchedulerJobRun.job_name)
        .order_by(SchedulerJobRun.id.desc())
        .limit(1)
    ).first()
    return SchedulerState(
        lock_held=lock_held,
        last_run_at=last[0] if last else None,
        last_job=last[1] if last else None,
    )


@dataclass(frozen=True, slots=True)
class OutboxState:
    by_status: dict[str, int]  # queued, sending, failed (sent/delivered are not counted)
    oldest_unsent_at: dt.datetime | None
    due: int  # queued and due now (not waiting for a back-off)

    @property
    def unsent(self) -> int:
        return sum(self.by_status.get(s.value, 0) for s in UNSENT)


def outbox_state(conn: Connection, *, now: dt.datetime) -> OutboxState:
    watched = (*UNSENT, OutboxStatus.FAILED)
    rows = conn.execute(
        select(OutboxMessage.status, func.count(), func.min(OutboxMessage.created_at))
        .where(OutboxMessage.status.in_(watched))
        .group_by(OutboxMessage.status)
    ).all()
    by_status = {s.value: 0 for s in watched}
    oldest: dt.datetime | None = None
    for status, count, created in rows:
        by_status[OutboxStatus(status).value] = int(count)
        if OutboxStatus(status) in UNSENT and created is not None:
            oldest = created if oldest is None else min(oldest, created)
    due = conn.scalar(
        select(func.count())
        .select_from(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.QUEUED, OutboxMessage.next_attempt_at <= now)
    )
    return OutboxState(by_status=by_status, oldest_unsent_at=oldest, due=int(due or 0))


@dataclass(frozen=True, slots=True)
class QueueLine:
    status: str  # new (waiting for an operator) or claimed (being handled)
    priority: int
    count: int
    oldest_at: dt.datetime | None


def alarm_queue(conn: Connection) -> list[QueueLine]:
    rows = conn.execute(
        select(Alarm.status, Alarm.priority, func.count(), func.min(Alarm.received_at))
        .where(Alarm.status.in_((AlarmStatus.NEW, AlarmStatus.CLAIMED)))
        .group_by(Alarm.status, Alarm.priority)
    ).all()
    return [QueueLine(AlarmStatus(s).value, int(p), int(c), at) for s, p, c, at in rows]


def recent_alarms(conn: Connection, *, since: dt.datetime) -> dict[tuple[str, int], int]:
    """Alarms received since ``since``, by (kind, priority)."""
    rows = conn.execute(
        select(Alarm.kind, Alarm.priority, func.count())
        .where(Alarm.received_at >= since)
        .group_by(Alarm.kind, Alarm.priority)
    ).all()
    return {(AlarmKind(k).value, int(p)): int(c) for k, p, c in rows}


@dataclass(frozen=True, slots=True)
class OfferCounts:
    by_status: dict[str, int] = field(default_factory=dict)

    def total(self, *statuses: OfferStatus) -> int:
        return sum(self.by_status.get(s.value, 0) for s in statuses)


def offer_counts(conn: Connection) -> OfferCounts:
    rows = conn.execute(select(Offer.status, func.count()).group_by(Offer.status)).all()
    counts = {s.value: 0 for s in OfferStatus}
    counts.update({OfferStatus(s).value: int(c) for s, c in rows})
    return OfferCounts(counts)


def terminal_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(Terminal.status, func.count()).group_by(Terminal.status)).all()
    counts = {s.value: 0 for s in TerminalStatus}
    counts.update({TerminalStatus(s).value: int(c) for s, c in rows})
    return counts
