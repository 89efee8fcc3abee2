"""Which volunteers to offer a service case to, best first, with the reasons an operator can read.

Eligible (every one is required):

- the volunteer is ``active`` and ``on_duty``;
- one of their weekly availability windows contains ``at`` in the centre's time zone
  (``HYT_TIMEZONE``, Asia/Shanghai): ``start_minute <= minute < end_minute`` on that weekday;
- they have the item's skill (``ServiceItem.skill``) at ``level >= ServiceItem.min_level``;
- the elder's home is within their ``service_radius_m`` (haversine on the volunteers' home
  coordinates, mean Earth radius);
- their open tasks (offers ``accepted`` on a case that is neither closed nor cancelled) are below
  ``max_concurrent_tasks``, so nobody is double-booked.

Score: a weighted sum of five components, each in [0, 1]; the weights add up to 1, so the score is
in [0, 1] too. ``Candidate.reasons`` holds each component's contribution (weight x component).

=========== ====== =============================================================================
component   weight component value
=========== ====== =============================================================================
distance    0.35   ``1 - d / 5 km``, floored at 0: the nearest help is the fastest help
skill       0.20   ``level / 3`` (1 basic, 2 trained, 3 certified)
continuity  0.15   1 if the volunteer accepted or completed an offer for this elder before, else 0:
                   elders (and their families) open the door more readily to a known face
fairness    0.15   ``1 / (1 + n)``, n = offers accepted in the 7 days before ``at``: spread the
                   load so that the keenest volunteers do not burn out
rating      0.15   ``(rating - 1) / 4`` clamped to [0, 1], for ratings on the 1–5 scale
=========== ====== =============================================================================

Ties go to the nearer volunteer, then the lower id, so the order is deterministic.

Speed: two queries whatever the number of volunteers: the elder's coordinates, then one
statement that applies every filter in SQL (active, on duty, skill and level, weekly window, a
circle on the home coordinates with a 2 % margin, the task limit) and brings each survivor's load
along (open tasks, offers accepted in the fairness window, continuity) from three small grouped
subqueries that read only recent or in-progress offers and this elder's cases, never the whole
history. The statement is built once and cached; Python then does the exact haversine check,
scores every survivor (plain arithmetic) and builds :class:`Candidate` objects for the best
``limit`` only. ``bench/matching.py`` measures it with 10,000 volunteers.
"""

from __future__ import annotations

import datetime as dt
import functools
import heapq
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import Float, Select, and_, bindparam, func, select
from sqlalchemy.orm import Session

from callcenter.db import UTCDateTime, utcnow
from callcenter.models import Case, CaseState, Elder
from callcenter.settings import get_settings
from volunteers.catalog import Catalog, ServiceItem, get_catalog
from volunteers.models import AvailabilityWindow, Offer, OfferStatus, Volunteer, VolunteerSkill

WEIGHTS: dict[str, float] = {
    "distance": 0.35,
    "skill": 0.20,
    "continuity": 0.15,
    "fairness": 0.15,
    "rating": 0.15,
}
DISTANCE_SCALE_M = 5_000.0
FAIRNESS_DAYS = 7
EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius
_M_PER_DEG_LAT = math.pi * EARTH_RADIUS_M / 180.0
_SQL_MARGIN = 1.02
# Cases in these states hold nobody any more: an accepted offer on them is not an open task.
_FINISHED_CASE_STATES = (CaseState.CLOSED, CaseState.CANCELLED)
_SERVED = (OfferStatus.ACCEPTED, OfferStatus.COMPLETED)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True, slots=True)
class Candidate:
    """One eligible volunteer, with the score and what it is made of."""

    volunteer_id: int
    name: str
    distance_m: float
    skill_level: int
    score: float
    reasons: dict[str, float]
    rating: float = 0.0
    served_elder_before: bool = False
    accepted_last_7_days: int = 0
    open_tasks: int = 0
    max_tasks: int = 0
    community: str | None = field(default=None)

    def explain_zh(self) -> str:
        r = self.reasons
        continuity = "曾服务该老人" if self.served_elder_before else "未服务过该老人"
        return (
            f"距离{self.distance_m / 1000:.2f}公里 +{r['distance']:.2f}；"
            f"技能{self.skill_level}级 +{r['skill']:.2f}；"
            f"{continuity} +{r['continuity']:.2f}；"
            f"近{FAIRNESS_DAYS}天接单{self.accepted_last_7_days}次 +{r['fairness']:.2f}；"
            f"评分{self.rating:.1f} +{r['rating']:.2f}；"
            f"总分{self.score:.2f}"
        )

    def explain_en(self) -> str:
        r = self.reasons
        continuity = "served this elder before" if self.served_elder_before else "new to this elder"
        return (
            f"{self.distance_m / 1000:.2f} km away +{r['distance']:.2f}; "
            f"skill level {self.skill_level} +{r['skill']:.2f}; "
            f"{continuity} +{r['continuity']:.2f}; "
            f"{self.accepted_last_7_days} accepted in {FAIRNESS_DAYS} days "
            f"+{r['fairness']:.2f}; "
            f"rating {self.rating:.1f} +{r['rating']:.2f}; "
            f"score {self.score:.2f}"
        )

    def as_json(self) -> dict[str, Any]:
        """For the API: the numbers and both explanations."""
        return {
            "volunteer_id": self.volunteer_id,
            "name": self.name,
            "community": self.community,
            "distance_m": round(self.distance_m),
            "skill_level": self.skill_level,
            "rating": self.rating,
            "served_elder_before": self.served_elder_before,
            "accepted_last_7_days": self.accepted_last_7_days,
            "open_tasks": self.open_tasks,
            "max_tasks": self.max_tasks,
            "score": self.score,
            "reasons": dict(self.reasons),
            "explain_zh": self.explain_zh(),
            "explain_en": self.explain_en(),
        }


class _Eligible(NamedTuple):
    volunteer_id: int
    name: str
    community: str | None
    distance_m: float
    max_tasks: int
    rating: float
    level: int
    open_tasks: int
    recent: int
    served: bool


def score_components(
    *, distance_m: float, skill_level: int, served_before: bool, recent_accepted: int, rating: float
) -> dict[str, float]:
    """Each component's contribution to the score (weight x value), as documented above."""
    values = {
        "distance": max(0.0, 1.0 - distance_m / DISTANCE_SCALE_M),
        "skill": skill_level / 3.0,
        "continuity": 1.0 if served_before else 0.0,
        "fairness": 1.0 / (1.0 + recent_accepted),
        "rating": min(1.0, max(0.0, (rating - 1.0) / 4.0)),
    }
    return {name: round(WEIGHTS[name] * value, 4) for name, value in values.items()}


def _local_slot(at: dt.datetime) -> tuple[int, int]:
    if at.tzinfo is None:
        raise ValueError("'at' must be timezone-aware (the centre stores UTC)")
    local = at.astimezone(get_settings().tz)
    return local.weekday(), local.hour * 60 + local.minute


@functools.cache
def _statement(with_exclusions: bool) -> Select[Any]:
    """The matching query, built once: only its parameters change between calls."""
    lat, lon = bindparam("lat", type_=Float), bindparam("lon", type_=Float)
    m_lat, m_lon = bindparam("m_lat", type_=Float), bindparam("m_lon", type_=Float)
    at = bindparam("at", type_=UTCDateTime())
    since = bindparam("since", type_=UTCDateTime())
    radius = Volunteer.service_radius_m
    # Equirectangular metres, shrunk by the caller by a 2 % margin (equirectangular is within
    # 0.1 % of haversine at these distances), so that the SQL test is a superset of the exact
    # one that follows in Python. Plain float arithmetic: no numeric, no trigonometry in SQL.
    dy = (Volunteer.home_latitude - lat) * m_lat
    dx = (Volunteer.home_longitude - lon) * m_lon
    accepted_at = func.coalesce(Offer.responded_at, Offer.sent_at)

    open_tasks = (
        select(Offer.volunteer_id.label("vid"), func.count().label("n"))
        .join(Case, Case.id == Offer.case_id)
        .where(Offer.status == OfferStatus.ACCEPTED, Case.state.not_in(_FINISHED_CASE_STATES))
        .group_by(Offer.volunteer_id)
        .subquery("open_tasks")
    )
    recent = (
        select(Offer.volunteer_id.label("vid"), func.count().label("n"))
        .where(
            Offer.status.in_(_SERVED),
            # An answer comes before its offer expires, so this bound lets the (status,
            # expires_at) index skip old history; a day of slack covers late manual entries.
            Offer.expires_at >= bindparam("since_floor", type_=UTCDateTime()),
            accepted_at >= since,
            accepted_at <= at,
        )
        .group_by(Offer.volunteer_id)
        .subquery("recent")
    )
    served = (
        select(Offer.volunteer_id.label("vid"))
        .join(Case, Case.id == Offer.case_id)
        .where(Case.elder_id == bindparam("elder_id"), Offer.status.in_(_SERVED))
        .distinct()
        .subquery("served")
    )
    on_duty_now = select(AvailabilityWindow.volunteer_id).where(
        AvailabilityWindow.weekday == bindparam("weekday"),
        AvailabilityWindow.start_minute <= bindparam("minute"),
        AvailabilityWindow.end_minute > bindparam("minute"),
    )
    open_count = func.coalesce(open_tasks.c.n, 0)
    query = (
        select(
            Volunteer.id,
            Volunteer.name,
            Volunteer.community,
            Volunteer.home_latitude,
            Volunteer.home_longitude,
            radius,
            Volunteer.max_concurrent_tasks,
            Volunteer.rating,
            VolunteerSkill.level,
            open_count,
            func.coalesce(recent.c.n, 0),
            served.c.vid,
        )
        .join(
            VolunteerSkill,
            and_(
                VolunteerSkill.volunteer_id == Volunteer.id,
                VolunteerSkill.category_code == bindparam("skill"),
                VolunteerSkill.level >= bindparam("min_level"),
            ),
        )
        .outerjoin(open_tasks, open_tasks.c.vid == Volunteer.id)
        .outerjoin(recent, recent.c.vid == Volunteer.id)
        .outerjoin(served, served.c.vid == Volunteer.id)
        .where(
            Volunteer.active.is_(True),
            Volunteer.on_duty.is_(True),
            dy * dy + dx * dx <= radius * radius,
            Volunteer.id.in_(on_duty_now),
            open_count < Volunteer.max_concurrent_tasks,
        )
    )
    if with_exclusions:
        query = query.where(Volunteer.id.not_in(bindparam("exclude", expanding=True)))
    return query


def _eligible(
    session: Session,
    *,
    item: ServiceItem,
    elder_id: int,
    at: dt.datetime,
    exclude: Collection[int],
) -> list[_Eligible]:
    """Every volunteer who passes every filter, with their load, in one statement."""
    weekday, minute = _local_slot(at)
    home = session.execute(
        select(Elder.latitude, Elder.longitude).where(Elder.id == elder_id)
    ).one_or_none()
    if home is None:
        raise LookupError(f"no elder with id {elder_id}")
    lat, lon = home
    since = at - dt.timedelta(days=FAIRNESS_DAYS)
    params: dict[str, Any] = {
        "lat": lat,
        "lon": lon,
        "m_lat": _M_PER_DEG_LAT / _SQL_MARGIN,
        "m_lon": _M_PER_DEG_LAT * math.cos(math.radians(lat)) / _SQL_MARGIN,
        "at": at,
        "since": since,
        "since_floor": since - dt.timedelta(days=1),
        "elder_id": elder_id,
        "weekday": weekday,
        "minute": minute,
        "skill": item.skill,
        "min_level": item.min_level,
    }
    if exclude:
        params["exclude"] = list(exclude)
    found: list[_Eligible] = []
    # haversine_m with the elder's side worked out once: this loop runs per eligible volunteer.
    p1, cos_p1, rad = math.radians(lat), math.cos(math.radians(lat)), math.pi / 180.0
    sin, cos, asin, sqrt = math.sin, math.cos, math.asin, math.sqrt
    rows = session.execute(_statement(bool(exclude)), params).tuples()
    for (
        vid,
        name,
        community,
        vlat,
        vlon,
        radius,
        max_tasks,
        rating,
        level,
        n_open,
        n_recent,
        seen,
    ) in rows:
        p2 = vlat * rad
        a = sin((p2 - p1) / 2) ** 2 + cos_p1 * cos(p2) * sin((vlon - lon) * rad / 2) ** 2
        distance = 2 * EARTH_RADIUS_M * asin(min(1.0, sqrt(a)))
        if distance <= radius:
            found.append(
                _Eligible(
                    vid, name, community, distance, max_tasks, rating, level,
                    int(n_open), int(n_recent), seen is not None,
                )
            )  # fmt: skip
    return found


_W_DISTANCE, _W_SKILL, _W_CONTINUITY, _W_FAIRNESS, _W_RATING = (
    WEIGHTS[k] for k in ("distance", "skill", "continuity", "fairness", "rating")
)


def _score(e: _Eligible) -> float:
    """The score of :func:`score_components`, without building its dictionary (hot loop)."""
    return (
        _W_DISTANCE * max(0.0, 1.0 - e.distance_m / DISTANCE_SCALE_M)
        + _W_SKILL * e.level / 3.0
        + (_W_CONTINUITY if e.served else 0.0)
        + _W_FAIRNESS / (1.0 + e.recent)
        + _W_RATING * min(1.0, max(0.0, (e.rating - 1.0) / 4.0))
    )


def _candidate(e: _Eligible) -> Candidate:
    reasons = score_components(
        distance_m=e.distance_m,
        skill_level=e.level,
        served_before=e.served,
        recent_accepted=e.recent,
        rating=e.rating,
    )
    return Candidate(
        volunteer_id=e.volunteer_id,
        name=e.name,
        distance_m=round(e.distance_m, 1),
        skill_level=e.level,
        # The exact score, rounded once: the shown order is then the ranking's order.
        score=round(_score(e), 4),
        reasons=reasons,
        rating=e.rating,
        served_elder_before=e.served,
        accepted_last_7_days=e.recent,
        open_tasks=e.open_tasks,
        max_tasks=e.max_tasks,
        community=e.community,
    )


def match_volunteers(
    session: Session,
    *,
    item_code: str,
    elder_id: int,
    at: dt.datetime | None = None,
    limit: int = 20,
    exclude_volunteer_ids: Collection[int] = (),
    catalog: Catalog | None = None,
) -> list[Candidate]:
    """The eligible volunteers for ``item_code`` at the elder's home, best score first.

    ``exclude_volunteer_ids``: volunteers already asked for this case (earlier waves).
    Raises ``KeyError`` for an unknown item and ``LookupError`` for an unknown elder.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    item = (catalog or get_catalog()).item(item_code)
    eligible = _eligible(
        session, item=item, elder_id=elder_id, at=at or utcnow(), exclude=exclude_volunteer_ids
    )
    # Rank on the exact (unrounded) score; ties to the nearer, then the lower id.
    ranked = [(-_score(e), e.distance_m, e.volunteer_id, e) for e in eligible]
    return [_candidate(entry[3]) for entry in heapq.nsmallest(limit, ranked)]


def nearest_only(
    session: Session,
    *,
    item_code: str,
    elder_id: int,
    at: dt.datetime | None = None,
    exclude_volunteer_ids: Collection[int] = (),
    catalog: Catalog | None = None,
) -> Candidate | None:
    """Baseline for comparisons: the single nearest eligible volunteer, score ignored."""
    item = (catalog or get_catalog()).item(item_code)
    eligible = _eligible(
        session, item=item, elder_id=elder_id, at=at or utcnow(), exclude=exclude_volunteer_ids
    )
    nearest = min(eligible, key=lambda e: (e.distance_m, e.volunteer_id), default=None)
    return _candidate(nearest) if nearest is not None else None
