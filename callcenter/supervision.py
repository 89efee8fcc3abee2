"""What the shift supervisor (班长) watches, without HTTP: today's alarms and cases by kind and
state, answer-time compliance, open cases past their target, silent terminals, escalated visits,
volunteers on duty now, and life-safety alarms nobody has claimed.

"Today" is the centre's local day (``HYT_TIMEZONE``), as UTC bounds. **An alarm is answered
when an operator takes it**: its ``claimed_at``, set by the claim (one conditional UPDATE) or,
for an alarm handled straight from the queue without a claim, by the outcome. Its answer time is
``claimed_at - received_at``, both the centre's clock. ``acknowledged_at`` is not an answer: it is
when the *terminal* was told (kiss-off, prompt), which the call handler does by itself before any
operator hears of the alarm. Periodic test reports (stored handled, never in the queue) are not
counted.

The dataclasses here are also the JSON API's shapes (``/api/supervisor`` names
:class:`SupervisorReport` as its response model): pydantic reads their fields, in order, for the
answer and the OpenAPI schema, so a field added here is documented and served at once.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import computed_field
from sqlalchemy import ColumnElement, distinct, func, select
from sqlalchemy.orm import Session

from callcenter.case_targets import past_target, target_at
from callcenter.cases import OPEN_STATES
from callcenter.models import PRIORITY_BY_KIND, Alarm, AlarmKind, AlarmStatus, Case, Elder
from devices.models import Terminal, TerminalStatus
from schedules.overdue import EscalatedVisit, escalated_visits
from schedules.watchdog import late_condition
from volunteers.models import AvailabilityWindow, Volunteer

# The kinds the console treats as life-safety (callcenter.console.is_life_safety).
LIFE_SAFETY_KINDS = (AlarmKind.LIFE_SAFETY, AlarmKind.UNIDENTIFIED)
LIST_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Day:
    date: dt.date
    start: dt.datetime  # UTC, inclusive
    end: dt.datetime  # UTC, exclusive


def local_day(now: dt.datetime, tz: dt.tzinfo) -> Day:
    """The centre's local day around ``now``, as UTC bounds."""
    date = now.astimezone(tz).date()
    start = dt.datetime.combine(date, dt.time(), tzinfo=tz)
    end = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    return Day(date, start.astimezone(dt.UTC), end.astimezone(dt.UTC))


# -- today's counts ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KindCounts:
    kind: str
    total: int
    by_state: dict[str, int]


def _by_kind(rows: Sequence[tuple[str, str, int]]) -> list[KindCounts]:
    states: dict[str, dict[str, int]] = defaultdict(dict)
    for kind, state, n in rows:
        states[str(kind)][str(state)] = int(n)
    return [
        KindCounts(kind, sum(by.values()), dict(sorted(by.items())))
        for kind, by in sorted(states.items())
    ]


def alarms_by_kind(session: Session, day: Day) -> list[KindCounts]:
    """Alarms received today by kind and status (new, claimed, handled)."""
    rows = session.execute(
        select(Alarm.kind, Alarm.status, func.count())
        .where(Alarm.received_at >= day.start, Alarm.received_at < day.end)
        .group_by(Alarm.kind, Alarm.status)
    ).all()
    return _by_kind([(k.value, s.value, n) for k, s, n in rows])


def cases_by_kind(session: Session, day: Day) -> list[KindCounts]:
    """Cases opened today by kind and their state now."""
    rows = session.execute(
        select(Case.kind, Case.state, func.count())
        .where(Case.opened_at >= day.start, Case.opened_at < day.end)
        .group_by(Case.kind, Case.state)
    ).all()
    return _by_kind([(k.value, s.value, n) for k, s, n in rows])


# -- answer-time compliance --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ThresholdShare:
    within_s: int
    met: int  # answered within the threshold (inclusive)
    missed: int  # answered later, or still unanswered and already waiting longer
    pending: int  # unanswered and not yet past the threshold: counted neither way yet

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented stacking
    @property
    def share(self) -> float | None:
        """met / (met + missed); None when nothing can be judged yet."""
        judged = self.met + self.missed
        return self.met / judged if judged else None


@dataclass(frozen=True, slots=True)
class Compliance:
    group: str  # "all" or "life_safety"
    alarms: int
    answered: int
    waiting: int
    median_answer_s: float | None
    max_answer_s: float | None
    thresholds: list[ThresholdShare]


def _compliance(
    group: str, rows: list[tuple[dt.datetime, dt.datetime | None]], now: dt.datetime,
    within: Sequence[int],
) -> Compliance:  # fmt: skip
    answer_s = [(claimed - received).total_seconds() for received, claimed in rows if claimed]
    wait_s = [(now - received).total_seconds() for received, claimed in rows if claimed is None]
    shares = []
    for limit in within:
        met = sum(1 for s in answer_s if s <= limit)
        late_waiting = sum(1 for s in wait_s if s > limit)
        shares.append(
            ThresholdShare(
                limit, met, len(answer_s) - met + late_waiting, len(wait_s) - late_waiting
            )
        )
    return Compliance(
        group=group,
        alarms=len(rows),
        answered=len(answer_s),
        waiting=len(wait_s),
        median_answer_s=statistics.median(answer_s) if answer_s else None,
        max_answer_s=max(answer_s) if answer_s else None,
        thresholds=shares,
    )


def answer_compliance(
    session: Session, day: Day, *, now: dt.datetime, within: Sequence[int]
) -> list[Compliance]:
    """The share of today's alarms answered within each of ``within`` seconds: for all alarms an
    operator must answer, and for the life-safety ones alone. Times are compared in Python to
    the microsecond (no date arithmetic in SQL: the same result on both databases)."""
    rows = session.execute(
        select(Alarm.kind, Alarm.received_at, Alarm.claimed_at).where(
            Alarm.received_at >= day.start,
            Alarm.received_at < day.end,
            Alarm.kind != AlarmKind.TEST,
        )
    ).all()
    everything = [(received, claimed) for _, received, claimed in rows]
    life_safety = [(r, c) for kind, r, c in rows if kind in LIFE_SAFETY_KINDS]
    return [
        _compliance("all", everything, now, within),
        _compliance("life_safety", life_safety, now, within),
    ]


# -- open cases past their target --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LateCase:
    id: int
    code: str
    kind: str
    state: str
    priority: int
    elder_name: str | None
    summary: str
    opened_at: dt.datetime
    target_at: dt.datetime
    late_s: int


def cases_past_target(
    session: Session, *, now: dt.datetime, limit: int = LIST_LIMIT
) -> tuple[int, list[LateCase]]:
    """Open cases past their target (``callcenter.case_targets``): how many, and the most urgent
    ``limit``. Members of a grouped case (a street-wide terminal silence) are counted in their
    group, not one by one."""
    where = (Case.state.in_(OPEN_STATES), Case.parent_id.is_(None), past_target(now))
    count = session.scalar(select(func.count()).select_from(Case).where(*where)) or 0
    rows = session.execute(
        select(Case, Elder.name)
        .outerjoin(Elder, Elder.id == Case.elder_id)
        .where(*where)
        .order_by(Case.priority, Case.opened_at, Case.id)
        .limit(limit)
    ).all()
    late = []
    for case, name in rows:
        target = target_at(case)
        late.append(
            LateCase(
                case.id,
                case.code,
                case.kind.value,
                case.state.value,
                case.priority,
                name,
                case.summary[:200],
                case.opened_at,
                target,
                int((now - target).total_seconds()),
            )
        )
    return count, late


# -- silent terminals --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SilentTerminal:
    id: int
    serial: str
    status: str
    elder_name: str | None
    street: str | None
    community: str | None
    last_seen_at: dt.datetime | None
    report_interval_s: int
    silent_s: int


def silent_terminals(
    session: Session, *, now: dt.datetime, grace_s: int, limit: int = LIST_LIMIT
) -> tuple[int, list[SilentTerminal]]:
    """Terminals in service not heard from for their report interval plus ``grace_s``, by the
    watchdog's own condition (``schedules.watchdog.late_condition``), whether or not its sweep
    has marked them yet: how many, and the longest silent ``limit``."""
    in_service = Terminal.status != TerminalStatus.RETIRED
    intervals = session.scalars(select(distinct(Terminal.report_interval_s)).where(in_service))
    late = late_condition(list(intervals), now, grace_s)
    count = session.scalar(select(func.count()).select_from(Terminal).where(in_service, late)) or 0
    seen = func.coalesce(Terminal.last_seen_at, Terminal.created_at)
    rows = session.execute(
        select(Terminal, Elder.name, Elder.street, Elder.community, seen)
        .outerjoin(Elder, Elder.id == Terminal.elder_id)
        .where(in_service, late)
        .order_by(seen, Terminal.id)
        .limit(limit)
    ).all()
    return count, [
        SilentTerminal(
            t.id,
            t.serial,
            t.status.value,
            name,
            street,
            community,
            t.last_seen_at,
            t.report_interval_s,
            int((now - _utc(since)).total_seconds()),
        )
        for t, name, street, community, since in rows
    ]


def _utc(value: dt.datetime) -> dt.datetime:
    # coalesce() of two UTC columns comes back untyped: naive on SQLite, aware on PostgreSQL.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# -- volunteers on duty now --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OnDuty:
    total: int
    by_community: dict[str, int]


def volunteers_on_duty(session: Session, *, now: dt.datetime, tz: dt.tzinfo) -> OnDuty:
    """Active volunteers marked on duty whose weekly window holds ``now`` in the centre's time
    zone: the same rule matching applies (``start_minute <= minute < end_minute``)."""
    local = now.astimezone(tz)
    minute = local.hour * 60 + local.minute
    in_window = select(AvailabilityWindow.volunteer_id).where(
        AvailabilityWindow.weekday == local.weekday(),
        AvailabilityWindow.start_minute <= minute,
        AvailabilityWindow.end_minute > minute,
    )
    rows = session.execute(
        select(Volunteer.community, func.count())
        .where(
            Volunteer.active.is_(True),
            Volunteer.on_duty.is_(True),
            Volunteer.id.in_(in_window),
        )
        .group_by(Volunteer.community)
    ).all()
    counts: dict[str, int] = defaultdict(int)
    for community, n in rows:
        counts[community or ""] += int(n)
    by_community = dict(sorted(counts.items()))
    return OnDuty(sum(by_community.values()), by_community)


# -- life-safety alarms nobody has claimed -----------------------------------------------------
@dataclass(frozen=True, slots=True)
class WaitingAlarm:
    id: int
    kind: str
    elder_name: str | None
    caller: str
    received_at: dt.datetime
    wait_s: int


def _unclaimed(now: dt.datetime, older_than_s: int) -> tuple[ColumnElement[bool], ...]:
    # The priority is implied by the kind (PRIORITY_BY_KIND, set at intake) but naming it lets
    # the queue index (status, priority, received_at) find these rows: with status alone,
    # SQLite's planner judges the index unselective once ANALYZE has seen a million handled
    # alarms and walks ix_alarms_received_at instead (200 ms a poll instead of under 1 ms).
    priorities = sorted({PRIORITY_BY_KIND[kind] for kind in LIFE_SAFETY_KINDS})
    return (
        Alarm.status == AlarmStatus.NEW,
        Alarm.priority.in_(priorities),
        Alarm.kind.in_(LIFE_SAFETY_KINDS),
        Alarm.received_at < now - dt.timedelta(seconds=older_than_s),
    )


def unclaimed_life_safety(
    session: Session, *, now: dt.datetime, older_than_s: int
) -> list[WaitingAlarm]:
    """Life-safety alarms no operator has taken for more than ``older_than_s``, longest first.
    Not only today's: one that came in before midnight and still waits matters most."""
    rows = session.execute(
        select(Alarm, Elder.name)
        .outerjoin(Elder, Elder.id == Alarm.elder_id)
        .where(*_unclaimed(now, older_than_s))
        .order_by(Alarm.received_at, Alarm.id)
    ).all()
    return [
        WaitingAlarm(
            a.id,
            a.kind.value,
            name,
            a.caller,
            a.received_at,
            int((now - a.received_at).total_seconds()),
        )
        for a, name in rows
    ]


def flagged_alarm_ids(session: Session, *, now: dt.datetime, older_than_s: int) -> tuple[int, ...]:
    """The ids of :func:`unclaimed_life_safety`: what the live stream pushes to supervisors
    (by the queue index: status first)."""
    where = _unclaimed(now, older_than_s)
    return tuple(sorted(session.scalars(select(Alarm.id).where(*where))))


# -- the whole view ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SupervisorReport:
    now: dt.datetime
    day: dt.date
    alarms: list[KindCounts]
    cases: list[KindCounts]
    compliance: list[Compliance]
    answer_within_s: list[int]
    late_cases_count: int
    late_cases: list[LateCase]
    silent_terminals_count: int
    silent_terminals: list[SilentTerminal]
    escalated_visits_count: int
    escalated_visits: list[EscalatedVisit]
    on_duty: OnDuty
    unclaimed_life_safety: list[WaitingAlarm]
    flag_after_s: int


def supervisor_report(
    session: Session,
    *,
    now: dt.datetime,
    tz: dt.tzinfo,
    within: Sequence[int],
    flag_after_s: int,
    watchdog_grace_s: int,
) -> SupervisorReport:
    day = local_day(now, tz)
    late_count, late = cases_past_target(session, now=now)
    silent_count, silent = silent_terminals(session, now=now, grace_s=watchdog_grace_s)
    visits = escalated_visits(session)
    return SupervisorReport(
        now=now,
        day=day.date,
        alarms=alarms_by_kind(session, day),
        cases=cases_by_kind(session, day),
        compliance=answer_compliance(session, day, now=now, within=within),
        answer_within_s=list(within),
        late_cases_count=late_count,
        late_cases=late,
        silent_terminals_count=silent_count,
        silent_terminals=silent,
        escalated_visits_count=len(visits),
        escalated_visits=visits[:LIST_LIMIT],
        on_duty=volunteers_on_duty(session, now=now, tz=tz),
        unclaimed_life_safety=unclaimed_life_safety(session, now=now, older_than_s=flag_after_s),
        flag_after_s=flag_after_s,
    )
