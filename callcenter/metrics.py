"""Prometheus metrics (prometheus-client), served at ``/metrics``.

Most figures are read from the database at scrape time by :class:`DatabaseCollector` (cheap
queries, see :mod:`callcenter.ops_queries`): alarms are stored by call-handler and SCAIP processes
that serve no HTTP, offers move in the scheduler, and several web workers share one database, so
the database is the one place that sees them all, and every process shows the same values.
Counters kept in this process are the events that happen here: login attempts, and answer times
(claim − received), observed when a claim in this web process wins. With several web workers,
scrape each one and ``sum`` them.

Only counts, ages and durations: no label carries a name, phone number, address or id.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import text

from callcenter import db, ops_queries
from callcenter.db import utcnow
from callcenter.db_probe import run_with_deadline
from callcenter.models import PRIORITY_BY_KIND, Alarm, AlarmKind
from callcenter.ops_settings import get_ops_settings
from callcenter.sip import listener_registry
from schedules.settings import get_schedule_settings
from volunteers.models import OfferStatus

log = structlog.get_logger(__name__)

# One registry for the app (not prometheus-client's global one): the tests build many apps.
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

LOGINS = Counter(
    "hyt_logins",
    "Console login attempts, by outcome (ok, failed, rate_limited)",
    ["outcome"],
    registry=REGISTRY,
)
# Seconds from an alarm's arrival to an operator's claim. The buckets straddle the centre's
# targets: life-safety alarms answered within 20 s, service requests within minutes.
ANSWER_SECONDS = Histogram(
    "hyt_alarm_answer_seconds",
    "Time from an alarm's arrival to its claim by an operator (claims in this process)",
    ["priority"],
    buckets=(5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800),
    registry=REGISTRY,
)


def observe_claim(alarm: Alarm, claimed_at: dt.datetime) -> None:
    """Record an answer time; called once per alarm, by the claim that won."""
    seconds = max(0.0, (claimed_at - alarm.received_at).total_seconds())
    ANSWER_SECONDS.labels(priority=str(alarm.priority)).observe(seconds)


@dataclass(frozen=True, slots=True)
class Snapshot:
    ping_s: float
    recent: dict[tuple[str, int], int]
    queue: list[ops_queries.QueueLine]
    offers: ops_queries.OfferCounts
    outbox: ops_queries.OutboxState
    terminals: dict[str, int]
    scheduler: ops_queries.SchedulerState
    at: dt.datetime


def read_snapshot(window_s: int) -> Snapshot:
    """Everything the collector shows, read on one connection."""
    now = utcnow()
    with db.get_engine().connect() as conn:
        started = time.perf_counter()
        conn.execute(text("SELECT 1"))
        ping = time.perf_counter() - started
        snapshot = Snapshot(
            ping_s=ping,
            recent=ops_queries.recent_alarms(conn, since=now - dt.timedelta(seconds=window_s)),
            queue=ops_queries.alarm_queue(conn),
            offers=ops_queries.offer_counts(conn),
            outbox=ops_queries.outbox_state(conn, now=now),
            terminals=ops_queries.terminal_counts(conn),
            scheduler=ops_queries.scheduler_state(
                conn, lock_key=get_schedule_settings().scheduler_lock_key
            ),
            at=now,
        )
        conn.rollback()
    return snapshot


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class DatabaseCollector(Collector):
    """Reads the database at each scrape; with the database down only ``hyt_database_up 0``
    (and the in-process families) are shown, so alerts on absent series fire too."""

    def collect(self) -> Iterator[Metric]:
        ops = get_ops_settings()
        up = _gauge("hyt_database_up", "1 if the database answered this scrape, else 0")
        try:
            snap = run_with_deadline(
                lambda: read_snapshot(ops.metrics_window_s), ops.ready_timeout_s
            )
        except Exception as exc:  # unreachable, timed out, or a query failed: say so
            log.warning("metrics.database_unreachable", error=f"{type(exc).__name__}: {exc}"[:300])
            up.add_metric([], 0)
            yield up
            yield from self._sip()
            return
        up.add_metric([], 1)
        yield up
        ping = _gauge("hyt_database_ping_seconds", "Time of SELECT 1 at this scrape")
        ping.add_metric([], snap.ping_s)
        yield ping
        yield from self._alarms(snap, ops.metrics_window_s)
        yield from self._offers(snap)
        yield from self._outbox(snap)
        yield from self._terminals(snap)
        yield from self._scheduler(snap)
        yield from self._sip()

    @staticmethod
    def _alarms(snap: Snapshot, window_s: int) -> Iterator[Metric]:
        window = _gauge("hyt_metrics_window_seconds", "The window of the *_recent gauges")
        window.add_metric([], window_s)
        yield window
        recent = _gauge(
            "hyt_alarms_recent",
            "Alarms received within hyt_metrics_window_seconds, by kind and priority",
            ["kind", "priority"],
        )
        for kind in AlarmKind:  # every series always present, 0 when quiet
            priority = PRIORITY_BY_KIND[kind]
            recent.add_metric(
                [kind.value, str(priority)], snap.recent.get((kind.value, priority), 0)
            )
        for (kind_value, priority), count in snap.recent.items():
            if PRIORITY_BY_KIND[AlarmKind(kind_value)] != priority:  # a changed priority table
                recent.add_metric([kind_value, str(priority)], count)
        yield recent
        queue = _gauge(
            "hyt_alarm_queue",
            "Alarms in the operators' queue: new (waiting) or claimed, by priority",
            ["status", "priority"],
        )
        oldest = _gauge(
            "hyt_alarm_oldest_waiting_seconds",
            "Age of the oldest alarm no operator has claimed, by priority",
            ["priority"],
        )
        priorities = sorted(set(PRIORITY_BY_KIND.values()))
        lines = {(q.status, q.priority): q for q in snap.queue}
        for status in ("new", "claimed"):
            for priority in sorted(set(priorities) | {p for _, p in lines}):
                line = lines.get((status, priority))
                queue.add_metric([status, str(priority)], line.count if line else 0)
                if status == "new":
                    age = ops_queries.age_s(line.oldest_at if line else None, snap.at)
                    oldest.add_metric([str(priority)], age or 0.0)
        yield queue
        yield oldest

    @staticmethod
    def _offers(snap: Snapshot) -> Iterator[Metric]:
        offers = snap.offers
        # Rows are never deleted and each status moves one way (pending → accepted → completed
        # or dropped; pending → declined / expired / stood down), so these only grow: counters.
        counters = {
            "hyt_offers_sent": ("Offers made to volunteers", tuple(OfferStatus)),
            "hyt_offers_accepted": (
                "Offers a volunteer accepted (and won)",
                (OfferStatus.ACCEPTED, OfferStatus.COMPLETED, OfferStatus.DROPPED),
            ),
            "hyt_offers_declined": ("Offers a volunteer declined", (OfferStatus.DECLINED,)),
            "hyt_offers_expired": ("Offers that got no answer in time", (OfferStatus.EXPIRED,)),
            "hyt_offers_stood_down": (
                "Offers withdrawn because someone else accepted first",
                (OfferStatus.STOOD_DOWN,),
            ),
        }
        for name, (doc, statuses) in counters.items():
            family = CounterMetricFamily(name, doc)
            family.add_metric([], offers.total(*statuses))
            yield family
        pending = _gauge("hyt_offers_pending", "Offers waiting for a volunteer's answer")
        pending.add_metric([], offers.total(OfferStatus.PENDING))
        yield pending

    @staticmethod
    def _outbox(snap: Snapshot) -> Iterator[Metric]:
        messages = _gauge(
            "hyt_outbox_messages",
            "SMS in the outbox not yet sent (queued, sending) or given up (failed)",
            ["status"],
        )
        for status, count in sorted(snap.outbox.by_status.items()):
            messages.add_metric([status], count)
        yield messages
        backlog = _gauge("hyt_outbox_backlog", "SMS waiting to be sent (queued + sending)")
        backlog.add_metric([], snap.outbox.unsent)
        yield backlog
        oldest = _gauge("hyt_outbox_oldest_unsent_seconds", "Age of the oldest unsent SMS")
        oldest.add_metric([], ops_queries.age_s(snap.outbox.oldest_unsent_at, snap.at) or 0.0)
        yield oldest

    @staticmethod
    def _terminals(snap: Snapshot) -> Iterator[Metric]:
        terminals = _gauge(
            "hyt_terminals", "Terminals by status (silent: missed its report)", ["status"]
        )
        for status, count in sorted(snap.terminals.items()):
            terminals.add_metric([status], count)
        yield terminals
        silent = _gauge("hyt_terminals_silent", "Terminals that missed their report window")
        silent.add_metric([], snap.terminals.get("silent", 0))
        yield silent

    @staticmethod
    def _scheduler(snap: Snapshot) -> Iterator[Metric]:
        state = snap.scheduler
        age = ops_queries.age_s(state.last_run_at, snap.at)
        if age is not None:
            last = _gauge("hyt_scheduler_last_run_age_seconds", "Since the last scheduler job run")
            last.add_metric([], age)
            yield last
        if state.lock_held is not None:  # PostgreSQL only: SQLite has no leader lock
            leader = _gauge("hyt_scheduler_leader", "1 if a scheduler holds the leader lock")
            leader.add_metric([], 1 if state.lock_held else 0)
            yield leader

    @staticmethod
    def _sip() -> Iterator[Metric]:
        running = listener_registry.listeners()
        if not running:
            return
        listening = _gauge(
            "hyt_sip_listening",
            "1 if this process's SIP listener socket is open",
            ["backend", "role", "port"],
        )
        for state in running:
            listening.add_metric(
                [state.backend, state.role, str(state.port)], 1 if state.listening else 0
            )
        yield listening


REGISTRY.register(DatabaseCollector())
