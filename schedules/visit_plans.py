"""What is due and to whom: visit periods per elder, the volunteer pool, extra visits, reminders.

Periods (the ``period`` column, unique per elder and kind, so planning twice creates nothing
twice):

- monthly ``2026-12``: window the whole month;
- weekly ``2026-W49`` (ISO week): window Monday–Sunday; a week belongs to the month holding its
  Thursday (the ISO 8601 rule), so planning month after month covers every week exactly once;
- quarterly ``2026-Q4``: each low-risk elder gets a slot month in the quarter (id mod 3) so the
  load spreads over the quarter; window until the quarter's end. An elder added after their
  slot month is planned in the next month planned;
- extra ``E202612031405`` (local time of the event): within 24 h of a hospital discharge or a
  bereavement (DOMAIN.md), for the volunteer the elder knows if there is one.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import structlog
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from callcenter.models import Elder
from callcenter.settings import get_settings
from schedules.models import Visit, VisitKind, VisitStatus
from schedules.settings import Frequency, ScheduleSettings, get_schedule_settings
from volunteers.models import Volunteer, VolunteerSkill

log = structlog.get_logger(__name__)

VISITS_SKILL = "visits"  # the catalogue category "探访关怀 visits and care"
# Visits whose volunteer still counts: the last one who visited (or is about to).
CONTINUITY_STATUSES = (VisitStatus.DONE, VisitStatus.CONFIRMED, VisitStatus.PLANNED)
# Visits a volunteer is still expected to make.
OPEN_STATUSES = (VisitStatus.PLANNED, VisitStatus.CONFIRMED, VisitStatus.OVERDUE)
# Visits that weigh on a volunteer's load for the month.
LOAD_STATUSES = (*OPEN_STATUSES, VisitStatus.DONE)


class ExtraVisitReason(enum.StrEnum):
    HOSPITAL_DISCHARGE = "hospital_discharge"
    BEREAVEMENT = "bereavement"
    OTHER = "other"


FREQUENCY_KIND: dict[Frequency, VisitKind] = {
    "weekly": VisitKind.WEEKLY,
    "monthly": VisitKind.MONTHLY,
    "quarterly": VisitKind.QUARTERLY,
}


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        """``YYYY-MM`` → Month; ValueError on anything else."""
        year, sep, month = text.strip().partition("-")
        if not (sep and len(year) == 4 and year.isdigit() and month.isdigit()):
            raise ValueError(f"month {text!r}: write YYYY-MM, e.g. 2026-12")
        if not 1 <= int(month) <= 12:
            raise ValueError(f"month {text!r}: month must be 01–12")
        return cls(int(year), int(month))

    @classmethod
    def of(cls, day: dt.date) -> Month:
        return cls(day.year, day.month)

    @property
    def key(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def first(self) -> dt.date:
        return dt.date(self.year, self.month, 1)

    @property
    def last(self) -> dt.date:
        return self.next().first - dt.timedelta(days=1)

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    @property
    def quarter_key(self) -> str:
        return f"{self.year:04d}-Q{(self.month - 1) // 3 + 1}"

    @property
    def quarter_index(self) -> int:
        """0, 1 or 2: the month's place in its quarter."""
        return (self.month - 1) % 3

    @property
    def quarter_last(self) -> dt.date:
        return Month(self.year, self.month - self.quarter_index + 2).last


def iso_week_key(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year:04d}-W{week:02d}"


def weeks_of(month: Month) -> list[tuple[str, dt.date, dt.date]]:
    """(period, Monday, Sunday) of each ISO week whose Thursday falls in ``month``."""
    thursday = month.first + dt.timedelta(days=(3 - month.first.weekday()) % 7)
    weeks = []
    while thursday.month == month.month:
        monday = thursday - dt.timedelta(days=3)
        weeks.append((iso_week_key(monday), monday, monday + dt.timedelta(days=6)))
        thursday += dt.timedelta(days=7)
    return weeks


class VisitSlot(NamedTuple):
    kind: VisitKind
    period: str
    window_start: dt.date
    plan_end: dt.date  # the planned date falls in the month planned ...
    window_end: dt.date  # ... the visit may be made until here (a quarter's end)


def slots_for(frequency: Frequency, month: Month, elder_id: int) -> tuple[VisitSlot, ...]:
    """The visits an elder with ``frequency`` is due in ``month``."""
    return _slots(frequency, month, elder_id % 3)


@functools.lru_cache(maxsize=256)
def _slots(frequency: Frequency, month: Month, quarter_slot: int) -> tuple[VisitSlot, ...]:
    # Cached: the same few answers for 100,000 elders.
    if frequency == "weekly":
        weeks = weeks_of(month)
        return tuple(VisitSlot(VisitKind.WEEKLY, key, mon, sun, sun) for key, mon, sun in weeks)
    if frequency == "monthly":
        return (VisitSlot(VisitKind.MONTHLY, month.key, month.first, month.last, month.last),)
    if quarter_slot <= month.quarter_index:
        quarter = (month.quarter_key, month.first, month.last, month.quarter_last)
        return (VisitSlot(VisitKind.QUARTERLY, *quarter),)
    return ()


def frequency_of(elder: Elder, settings: ScheduleSettings | None = None) -> Frequency:
    """How often ``elder`` is visited: by risk level, from configuration."""
    return (settings or get_schedule_settings()).frequency_for(elder.risk_level.value)


def local_date(at: dt.datetime) -> dt.date:
    """The centre's calendar day (Asia/Shanghai by default) of a UTC instant."""
    return at.astimezone(get_settings().tz).date()


@dataclass
class VolunteerPool:
    """Volunteers who can do visits, with their load in one month, for fair assignment.

    Each choice prefers the volunteer the elder already knows (continuity), then the least
    loaded one of the elder's community, of the street, of the district. A volunteer takes no
    more than ``cap`` visits a month while another has room (fairness). Loads only grow while a
    pool is in use, so heaps with lazily refreshed entries give the least loaded in O(log n).
    """

    load: dict[int, int]
    community_of: dict[int, str | None]
    street_of_community: dict[str, str]
    cap: int | None = None
    _heaps: dict[tuple[str, str], list[tuple[int, int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for vid, load in self.load.items():
            community = self.community_of.get(vid)
            keys = [("all", "")]
            if community:
                keys.append(("community", community))
                if community in self.street_of_community:
                    keys.append(("street", self.street_of_community[community]))
            for key in keys:
                self._heaps.setdefault(key, []).append((load, vid))
        for heap in self._heaps.values():
            heapq.heapify(heap)

    @classmethod
    def for_month(
        cls,
        session: Session,
        month: Month,
        street_of_community: dict[str, str],
        *,
        settings: ScheduleSettings | None = None,
    ) -> VolunteerPool:
        """Everyone active with the visits skill, loaded with their visits in ``month``."""
        settings = settings or get_schedule_settings()
        rows = session.execute(
            select(Volunteer.id, Volunteer.community)
            .join(VolunteerSkill, VolunteerSkill.volunteer_id == Volunteer.id)
            .where(Volunteer.active.is_(True), VolunteerSkill.category_code == VISITS_SKILL)
        ).all()
        load = {vid: 0 for vid, _ in rows}
        counts = session.execute(
            select(Visit.volunteer_id, func.count())
            .where(
                Visit.volunteer_id.is_not(None),
                Visit.planned_date.between(month.first, month.last),
                Visit.status.in_(LOAD_STATUSES),
            )
            .group_by(Visit.volunteer_id)
        ).all()
        for vid, count in counts:
            if vid in load:
                load[vid] = count
        pool = cls(load, {vid: community for vid, community in rows}, street_of_community)
        pool.set_fair_cap(0, settings)
        return pool

    def set_fair_cap(self, new_visits: int, settings: ScheduleSettings) -> None:
        """Cap each volunteer at the average load (after ``new_visits`` more) times the slack."""
        if not self.load:
            self.cap = None
            return
        total = sum(self.load.values()) + new_visits
        cap = max(1, math.ceil(total / len(self.load) * settings.visit_load_slack))
        if settings.visit_max_per_volunteer_month:
            cap = min(cap, settings.visit_max_per_volunteer_month)
        self.cap = cap

    def fits(self, vid: int, need: int) -> bool:
        return self.cap is None or self.load[vid] + need <= self.cap

    def _least_loaded(
        self, key: tuple[str, str], need: int, exclude: Iterable[int], respect_cap: bool
    ) -> int | None:
        heap = self._heaps.get(key)
        if not heap:
            return None
        excluded = set(exclude)
        set_aside: list[tuple[int, int]] = []
        found: int | None = None
        while heap:
            load, vid = heap[0]
            if load != self.load[vid]:
                heapq.heapreplace(heap, (self.load[vid], vid))
                continue
            if vid in excluded:
                set_aside.append(heapq.heappop(heap))
                continue
            if not respect_cap or self.fits(vid, need):
                found = vid
            break  # the least loaded does not fit: nobody here does
        for item in set_aside:
            heapq.heappush(heap, item)
        return found

    def choose(
        self,
        *,
        community: str,
        street: str,
        need: int = 1,
        preferred: int | None = None,
        exclude: Iterable[int] = (),
        respect_cap: bool = True,
    ) -> tuple[int | None, bool]:
        """The volunteer for ``need`` more visits of one elder, and whether it is continuity."""
        excluded = set(exclude)
        if (
            preferred is not None
            and preferred in self.load
            and preferred not in excluded
            and (not respect_cap or self.fits(preferred, need))
        ):
            return preferred, True
        for key in (("community", community), ("street", street), ("all", "")):
            vid = self._least_loaded(key, need, excluded, respect_cap)
            if vid is not None:
                return vid, False
        return None, False

    def take(self, vid: int, need: int = 1) -> None:
        self.load[vid] += need


def street_of_communities(session: Session) -> dict[str, str]:
    """community → street, from where the elders live (volunteers record only a community)."""
    rows = session.execute(select(Elder.community, Elder.street).distinct()).all()
    return {community: street for community, street in rows}


def last_visitors(
    session: Session, *, since: dt.date, elder_ids: Iterable[int] | None = None
) -> dict[int, int]:
    """elder id → the volunteer of their most recent visit (done or still to be made)."""
    ranked = (
        select(
            Visit.elder_id,
            Visit.volunteer_id,
            func.row_number()
            .over(
                partition_by=Visit.elder_id,
                order_by=(Visit.planned_date.desc(), Visit.id.desc()),
            )
            .label("rank"),
        )
        .where(
            Visit.volunteer_id.is_not(None),
            Visit.status.in_(CONTINUITY_STATUSES),
            Visit.planned_date >= since,
        )
        .subquery()
    )
    query = select(ranked.c.elder_id, ranked.c.volunteer_id).where(ranked.c.rank == 1)
    if elder_ids is not None:
        query = query.where(ranked.c.elder_id.in_(list(elder_ids)))
    return {elder_id: vid for elder_id, vid in session.execute(query).all()}


def extra_period(at: dt.datetime) -> str:
    return f"E{at.astimezone(get_settings().tz):%Y%m%d%H%M}"


def request_extra_visit(
    session: Session,
    elder_id: int,
    reason: str,
    at: dt.datetime,
    *,
    settings: ScheduleSettings | None = None,
) -> Visit:
    """An extra visit within 24 h of an event (hospital discharge, bereavement …) at ``at``.

    Idempotent: the same event (elder, minute) gives back the same visit. Continuity comes before
    the fair cap here: after a loss, the elder should see a face they know.
    """
    settings = settings or get_schedule_settings()
    period = extra_period(at)
    existing = session.scalar(
        select(Visit).where(
            Visit.elder_id == elder_id, Visit.kind == VisitKind.EXTRA, Visit.period == period
        )
    )
    if existing is not None:
        return existing
    elder = session.get_one(Elder, elder_id)
    start = local_date(at)
    pool = VolunteerPool.for_month(
        session, Month.of(start), {elder.community: elder.street}, settings=settings
    )
    since = start - dt.timedelta(days=settings.visit_continuity_lookback_days)
    preferred = last_visitors(session, since=since, elder_ids=[elder_id]).get(elder_id)
    volunteer_id, _ = pool.choose(
        community=elder.community, street=elder.street, preferred=preferred, respect_cap=False
    )
    visit = Visit(
        elder_id=elder_id,
        volunteer_id=volunteer_id,
        kind=VisitKind.EXTRA,
        period=period,
        planned_date=start,
        window_end=local_date(at + dt.timedelta(hours=settings.extra_visit_within_h)),
        status=VisitStatus.PLANNED,
        reassign_count=0,
        checklist={},
        notes=f"额外探访 extra visit: {reason}",
    )
    session.add(visit)
    session.flush()
    log.info(
        "visit.extra_requested",
        visit_id=visit.id,
        elder_id=elder_id,
        reason=reason,
        volunteer_id=volunteer_id,
        continuity=volunteer_id is not None and volunteer_id == preferred,
    )
    return visit


def due_reminders(
    session: Session, now: dt.datetime, *, settings: ScheduleSettings | None = None
) -> list[Visit]:
    """Visits whose volunteer should be reminded now: planned from today to the reminder lead.

    The boundary to the SMS outbox (volunteers/sms.py): it sends, keyed by visit, volunteer and
    planned date, so a reminder is queued once even though this list repeats until the visit.
    """
    settings = settings or get_schedule_settings()
    today = local_date(now)
    last = today + dt.timedelta(days=settings.visit_reminder_days_before)
    return list(
        session.scalars(
            select(Visit)
            .where(
                and_(
                    Visit.status.in_(OPEN_STATUSES),
                    Visit.volunteer_id.is_not(None),
                    Visit.planned_date.between(today, last),
                )
            )
            .order_by(Visit.planned_date, Visit.id)
        )
    )
