"""Plan one month of home visits for every elder due, in bulk: ``hyt visits plan --month``.

One pass over the elders in memory, one bulk INSERT; a few queries whatever the district's size
(100,000 elders plan in seconds on PostgreSQL, see BENCHMARKS.md). Idempotent twice over: the
visits of the month already in the table are read first and skipped, and the INSERT ignores any
row that the unique (elder, kind, period) constraint already holds, so a second planner running at
the same moment (a hand run beside the scheduler) cannot make a visit twice either.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import structlog
from sqlalchemy import select
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from callcenter import db
from callcenter.db import utcnow
from callcenter.models import Elder
from schedules.holidays import day_info, days_between, holidays_between, zh_name
from schedules.models import Visit, VisitKind, VisitStatus
from schedules.settings import ScheduleSettings, get_schedule_settings
from schedules.visit_plans import (
    Month,
    VisitSlot,
    VolunteerPool,
    last_visitors,
    local_date,
    slots_for,
    street_of_communities,
)

log = structlog.get_logger(__name__)


@dataclass
class PlanSummary:
    month: str
    elders_due: int = 0
    created: Counter[str] = field(default_factory=Counter)  # by visit kind
    already_planned: int = 0
    window_passed: int = 0  # weeks already over when the plan ran: not planned
    unassigned: int = 0  # nobody can make visits: the overdue sweep tries again
    continuity_possible: int = 0  # elders planned now who had a volunteer before
    continuity_kept: int = 0  # ... and got the same one
    volunteers: int = 0
    load_cap: int | None = None
    max_load: int = 0
    holidays: list[tuple[dt.date, str]] = field(default_factory=list)
    on_holiday: int = 0  # visits whose whole window was holidays
    official_schedule_known: bool = True
    seconds: float = 0.0

    @property
    def created_total(self) -> int:
        return sum(self.created.values())


# Planned-date preference inside a window: working days, then weekends, then holidays.
WORKING, WEEKEND, HOLIDAY = 0, 1, 2


@dataclass
class _Window:
    days: list[dt.date]
    rank: int  # the best preference class the window has


def _window(start: dt.date, end: dt.date, today: dt.date, lead_days: int) -> _Window | None:
    """The days a visit may be planned on: not before the lead time if the window allows,
    never in the past; None when the window is already over."""
    if end < today:
        return None
    first = max(start, today + dt.timedelta(days=lead_days))
    if first > end:
        first = max(start, today)
    infos = [day_info(day) for day in days_between(first, end)]
    by_rank: dict[int, list[dt.date]] = {WORKING: [], WEEKEND: [], HOLIDAY: []}
    for info in infos:
        rank = WORKING if info.working else (HOLIDAY if info.holiday else WEEKEND)
        by_rank[rank].append(info.day)
    rank = min(r for r, days in by_rank.items() if days)
    return _Window(by_rank[rank], rank)


# PostgreSQL: one INSERT … SELECT FROM unnest(arrays). The driver sends six arrays instead of
# 180,000 parameter sets (executemany took 8 of 11 seconds for 100,000 elders), in binary
# (``%(…)b``: text arrays cost another second of quoting in Python).
_PG_INSERT = """
    INSERT INTO visits (elder_id, volunteer_id, kind, period, planned_date, window_end,
                        status, reassign_count, checklist, notes, created_at)
    SELECT e, v, k, p, d, w, %(status)b, 0, '{}', '', %(created_at)b
    FROM unnest(%(elder_id)b::integer[], %(volunteer_id)b::integer[],
                %(kind)b::varchar[], %(period)b::varchar[],
                %(planned_date)b::date[], %(window_end)b::date[]) AS t(e, v, k, p, d, w)
    ON CONFLICT (elder_id, kind, period) DO NOTHING
    RETURNING kind
"""


@dataclass
class _NewVisits:
    """The visits to create, column by column (what the PostgreSQL INSERT takes)."""

    elder_id: list[int] = field(default_factory=list)
    volunteer_id: list[int | None] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    period: list[str] = field(default_factory=list)
    planned_date: list[dt.date] = field(default_factory=list)
    window_end: list[dt.date] = field(default_factory=list)

    def insert(self, session: Session, now: dt.datetime) -> Counter[str]:
        """Insert all, skipping any (elder, kind, period) already there (a concurrent planner's);
        the visits inserted, by kind."""
        if not self.elder_id:
            return Counter()
        columns = {name: getattr(self, name) for name in _COLUMNS}
        if session.get_bind().dialect.name == "postgresql":
            # The psycopg connection under the session's transaction: same commit, same rollback.
            driver = session.connection().connection.driver_connection
            assert driver is not None  # a session inside a transaction always has one
            params = {**columns, "status": VisitStatus.PLANNED.value, "created_at": now}
            with driver.cursor() as cursor:
                cursor.execute(_PG_INSERT, params)
                return Counter(kind for (kind,) in cursor.fetchall())
        table = Visit.metadata.tables[Visit.__tablename__]
        rows = [
            {
                **dict(zip(_COLUMNS, values, strict=True)),
                "status": VisitStatus.PLANNED.value,
                "reassign_count": 0,
                "checklist": {},
                "notes": "",
                "created_at": now,
            }
            for values in zip(*columns.values(), strict=True)
        ]
        unique = ["elder_id", "kind", "period"]
        session.execute(sqlite.insert(table).on_conflict_do_nothing(index_elements=unique), rows)
        # SQLite's BEGIN IMMEDIATE held the write lock since the pre-check: nothing was skipped.
        return Counter(self.kind)


_COLUMNS = ("elder_id", "volunteer_id", "kind", "period", "planned_date", "window_end")


def plan_period(
    session: Session,
    *,
    month: str,
    now: dt.datetime,
    settings: ScheduleSettings | None = None,
) -> PlanSummary:
    """Create the visits of ``month`` (YYYY-MM) for every active elder due; the caller commits.

    One volunteer per elder for the month (all of a weekly elder's visits go to the same person),
    the one who visited last time if they have room under the fair cap, else the least loaded of
    the elder's community, street, district. Planned dates avoid public holidays and are spread
    over each volunteer's working days.
    """
    started = time.perf_counter()
    settings = settings or get_schedule_settings()
    period = Month.parse(month)
    today = local_date(now)
    summary = PlanSummary(month=period.key)

    elders = session.execute(
        select(Elder.id, Elder.risk_level, Elder.street, Elder.community).where(
            Elder.active.is_(True)
        )
    ).all()
    wanted: dict[int, tuple[VisitSlot, ...]] = {}
    for elder_id, risk, _, _ in elders:
        slots = slots_for(settings.frequency_for(risk.value), period, elder_id)
        if slots:
            wanted[elder_id] = slots
    summary.elders_due = len(wanted)

    periods = {slot.period for slots in wanted.values() for slot in slots}
    existing = set(
        session.execute(
            select(Visit.elder_id, Visit.kind, Visit.period).where(Visit.period.in_(periods))
        ).all()
    )
    windows: dict[tuple[dt.date, dt.date], _Window | None] = {}
    needs: dict[int, list[tuple[VisitSlot, _Window]]] = {}
    for elder_id, slots in wanted.items():
        for slot in slots:
            if (elder_id, slot.kind, slot.period) in existing:
                summary.already_planned += 1
                continue
            key = (slot.window_start, slot.plan_end)
            if key not in windows:
                windows[key] = _window(*key, today, settings.visit_plan_lead_days)
            window = windows[key]
            if window is None:
                summary.window_passed += 1
                continue
            needs.setdefault(elder_id, []).append((slot, window))

    pool = VolunteerPool.for_month(session, period, street_of_communities(session))
    pool.set_fair_cap(sum(len(n) for n in needs.values()), settings)
    summary.volunteers, summary.load_cap = len(pool.load), pool.cap
    since = period.first - dt.timedelta(days=settings.visit_continuity_lookback_days)
    previous = last_visitors(session, since=since)
    place = {elder_id: (street, community) for elder_id, _, street, community in elders}
    # Elders who know a volunteer go first, so that their volunteer's room is not taken first;
    # then the largest needs (weekly elders), which fit under the cap only while loads are low.
    order = sorted(needs, key=lambda e: (e not in previous, -len(needs[e]), e))
    per_volunteer: Counter[int] = Counter()  # to spread each volunteer's visits over the days
    new = _NewVisits()
    for elder_id in order:
        street, community = place[elder_id]
        elder_needs = needs[elder_id]
        preferred = previous.get(elder_id)
        vid, continuity = pool.choose(
            community=community, street=street, need=len(elder_needs), preferred=preferred
        )
        if vid is None:  # everyone is at the cap: an uneven load beats a visit nobody makes
            vid, _ = pool.choose(community=community, street=street, respect_cap=False)
        if preferred is not None:
            summary.continuity_possible += 1
            summary.continuity_kept += continuity
        if vid is None:
            summary.unassigned += len(elder_needs)
        else:
            pool.take(vid, len(elder_needs))
        for slot, window in elder_needs:
            if slot.kind is VisitKind.WEEKLY or vid is None:
                index = elder_id
            else:
                index = per_volunteer[vid]
                per_volunteer[vid] += 1
            summary.on_holiday += window.rank == HOLIDAY
            new.elder_id.append(elder_id)
            new.volunteer_id.append(vid)
            new.kind.append(slot.kind.value)
            new.period.append(slot.period)
            new.planned_date.append(window.days[index % len(window.days)])
            new.window_end.append(slot.window_end)
    summary.created = new.insert(session, now)
    summary.already_planned += len(new.elder_id) - summary.created_total
    session.flush()

    summary.max_load = max(pool.load.values(), default=0)
    summary.holidays = [
        (i.day, i.holiday or "") for i in holidays_between(period.first, period.last)
    ]
    # Known when the month itself and every planned date lie in a year chinese-calendar knows.
    dates = {*new.planned_date, period.first, period.last}
    summary.official_schedule_known = all(day_info(day).official for day in dates)
    summary.seconds = time.perf_counter() - started
    log.info(
        "visit.plan_done",
        month=period.key,
        created=summary.created_total,
        already=summary.already_planned,
        unassigned=summary.unassigned,
        official_schedule_known=summary.official_schedule_known,
        seconds=round(summary.seconds, 2),
    )
    return summary


def summary_lines(summary: PlanSummary) -> list[str]:
    """The summary for people: Chinese first, English second."""
    kinds = {"monthly": "每月", "weekly": "每周", "quarterly": "每季", "extra": "额外"}
    created = "，".join(f"{kinds[k]} {n}" for k, n in sorted(summary.created.items())) or "0"
    created_en = ", ".join(f"{k} {n}" for k, n in sorted(summary.created.items())) or "0"
    lines = [
        f"{summary.month} 探访计划 visit plan",
        f"  应访长者 elders due: {summary.elders_due}",
        f"  新建探访 visits created: {summary.created_total}（{created}）/ {created_en}",
        f"  已有计划 already planned: {summary.already_planned}",
        f"  延续上次志愿者 same volunteer as last time: "
        f"{summary.continuity_kept}/{summary.continuity_possible}",
        f"  志愿者 volunteers: {summary.volunteers}，每人上限 cap {summary.load_cap}，"
        f"最多 max {summary.max_load}",
    ]
    if summary.window_passed:
        lines.append(f"  已过期未排 windows already over, not planned: {summary.window_passed}")
    if summary.unassigned:
        lines.append(f"  未分配志愿者 without a volunteer: {summary.unassigned}")
    if summary.holidays:
        names = "、".join(f"{d:%m-%d} {zh_name(n)}" for d, n in summary.holidays)
        names_en = ", ".join(f"{d:%m-%d} {n}" for d, n in summary.holidays)
        lines.append(f"  已避开节假日 holidays avoided: {names} / {names_en}")
    if summary.on_holiday:
        lines.append(f"  窗口内全为假日 planned on a holiday (no other day): {summary.on_holiday}")
    if not summary.official_schedule_known:
        lines.append(
            "  注意：国务院放假安排尚未公布（chinese-calendar 无该年数据），"
            "按周末、法定节日及农历节日推算，调休日未计入。"
        )
        lines.append(
            "  Note: the official holiday schedule is not known yet; planned on weekends, "
            "statutory and lunar holidays only, swapped working days not counted."
        )
    return lines


def plan_cli(month: str) -> int:
    """``hyt visits plan --month YYYY-MM``: plan, commit, print the summary; the exit code."""
    try:
        Month.parse(month)
    except ValueError as exc:
        print(f"月份格式错误 bad month: {exc}", file=sys.stderr)
        return 2
    with db.session_scope() as session:
        summary = plan_period(session, month=month, now=utcnow())
    print("\n".join(summary_lines(summary)))
    return 0
