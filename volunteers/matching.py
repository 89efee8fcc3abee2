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

Speed: a constant number of queries whatever the number of volunteers: the elder, the eligible
volunteers (active, on duty, skill, window, a per-volunteer bounding box on the home coordinates,
all in SQL), and one grouped query over the offers of those that pass the exact distance check.
Scoring is plain Python over the survivors.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, case, exists, func, select
from sqlalchemy.orm import Session

from callcenter.db import utcnow
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


@dataclass(frozen=True, slots=True)
class _Eligible:
    volunteer_id: int
    name: str
    community: str | None
    distance_m: float
    max_tasks: int
    rating: float
    level: int


@dataclass(frozen=True, slots=True)
class _Load:
    open_tasks: int = 0
    recent: int = 0
    served: bool = False


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


def _eligible(
    session: Session,
    *,
    item: ServiceItem,
    elder: Elder,
    at: dt.datetime,
    exclude: Collection[int],
) -> list[_Eligible]:
    weekday, minute = _local_slot(at)
    lat, lon = elder.latitude, elder.longitude
    # A box around each volunteer's own radius, wide enough to hold the radius circle: degrees
    # of longitude shrink with the cosine of latitude, taken 1° towards the pole to stay a
    # superset for radii up to ~100 km. The exact haversine check follows in Python.
    deg_lat_per_m = 1.0 / _M_PER_DEG_LAT
    deg_lon_per_m = deg_lat_per_m / max(0.01, math.cos(math.radians(min(89.0, abs(lat) + 1.0))))
    radius = Volunteer.service_radius_m
    on_duty_now = exists().where(
        AvailabilityWindow.volunteer_id == Volunteer.id,
        AvailabilityWindow.weekday == weekday,
        AvailabilityWindow.start_minute <= minute,
        AvailabilityWindow.end_minute > minute,
    )
    query = (
        select(
            Volunteer.id,
            Volunteer.name,
            Volunteer.community,
            Volunteer.home_latitude,
            Volunteer.home_longitude,
            Volunteer.service_radius_m,
            Volunteer.max_concurrent_tasks,
            Volunteer.rating,
            VolunteerSkill.level,
        )
        .join(
            VolunteerSkill,
            and_(
                VolunteerSkill.volunteer_id == Volunteer.id,
                VolunteerSkill.category_code == item.skill,
                VolunteerSkill.level >= item.min_level,
            ),
        )
        .where(
            Volunteer.active.is_(True),
            Volunteer.on_duty.is_(True),
            Volunteer.home_latitude.between(
                lat - radius * deg_lat_per_m, lat + radius * deg_lat_per_m
            ),
            Volunteer.home_longitude.between(
                lon - radius * deg_lon_per_m, lon + radius * deg_lon_per_m
            ),
            on_duty_now,
        )
    )
    if exclude:
        query = query.where(Volunteer.id.not_in(list(exclude)))
    found: list[_Eligible] = []
    for vid, name, community, vlat, vlon, vradius, max_tasks, rating, level in session.execute(
        query
    ):
        distance = haversine_m(lat, lon, vlat, vlon)
        if distance <= vradius:
            found.append(_Eligible(vid, name, community, distance, max_tasks, rating, level))
    return found


def _loads(
    session: Session, volunteer_ids: Iterable[int], *, elder_id: int, at: dt.datetime
) -> dict[int, _Load]:
    """Open tasks, offers accepted in the fairness window, and continuity, in one query."""
    ids = list(volunteer_ids)
    if not ids:
        return {}
    since = at - dt.timedelta(days=FAIRNESS_DAYS)
    accepted_at = func.coalesce(Offer.responded_at, Offer.sent_at)
    open_tasks = func.sum(
        case(
            (
                and_(
                    Offer.status == OfferStatus.ACCEPTED,
                    Case.state.not_in(_FINISHED_CASE_STATES),
                ),
                1,
            ),
            else_=0,
        )
    )
    recent = func.sum(case((and_(accepted_at >= since, accepted_at <= at), 1), else_=0))
    served = func.max(case((Case.elder_id == elder_id, 1), else_=0))
    rows = session.execute(
        select(Offer.volunteer_id, open_tasks, recent, served)
        .join(Case, Case.id == Offer.case_id)
        .where(Offer.volunteer_id.in_(ids), Offer.status.in_(_SERVED))
        .group_by(Offer.volunteer_id)
    )
    return {vid: _Load(int(o or 0), int(r or 0), bool(s)) for vid, o, r, s in rows}


def _candidates(
    session: Session,
    *,
    item_code: str,
    elder_id: int,
    at: dt.datetime | None,
    exclude_volunteer_ids: Collection[int],
    catalog: Catalog | None,
) -> list[Candidate]:
    item = (catalog or get_catalog()).item(item_code)
    elder = session.get(Elder, elder_id)
    if elder is None:
        raise LookupError(f"no elder with id {elder_id}")
    at = at or utcnow()
    eligible = _eligible(session, item=item, elder=elder, at=at, exclude=exclude_volunteer_ids)
    loads = _loads(session, (e.volunteer_id for e in eligible), elder_id=elder_id, at=at)
    out: list[Candidate] = []
    for e in eligible:
        load = loads.get(e.volunteer_id, _Load())
        if load.open_tasks >= e.max_tasks:
            continue
        reasons = score_components(
            distance_m=e.distance_m,
            skill_level=e.level,
            served_before=load.served,
            recent_accepted=load.recent,
            rating=e.rating,
        )
        out.append(
            Candidate(
                volunteer_id=e.volunteer_id,
                name=e.name,
                distance_m=round(e.distance_m, 1),
                skill_level=e.level,
                score=round(sum(reasons.values()), 4),
                reasons=reasons,
                rating=e.rating,
                served_elder_before=load.served,
                accepted_last_7_days=load.recent,
                open_tasks=load.open_tasks,
                max_tasks=e.max_tasks,
                community=e.community,
            )
        )
    return out


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
    found = _candidates(
        session,
        item_code=item_code,
        elder_id=elder_id,
        at=at,
        exclude_volunteer_ids=exclude_volunteer_ids,
        catalog=catalog,
    )
    found.sort(key=lambda c: (-c.score, c.distance_m, c.volunteer_id))
    return found[:limit]


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
    found = _candidates(
        session,
        item_code=item_code,
        elder_id=elder_id,
        at=at,
        exclude_volunteer_ids=exclude_volunteer_ids,
        catalog=catalog,
    )
    return min(found, key=lambda c: (c.distance_m, c.volunteer_id), default=None)
