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

Speed: two statements whatever the number of volunteers. The volunteers' fixed details (active,
on duty, skills and levels, weekly windows, home, radius, task limit, rating) live in memory
(``volunteers/roster_cache.py``), indexed by skill and radius and sorted by latitude; the first
statement reads the elder's coordinates together with the roster's version token (a reload
follows only when the token changed: database triggers change it with every such write, in any
process). Python then keeps the volunteers with the skill and a window now whose latitude band
and longitude box reach the elder, and does the exact haversine check on those. The second
statement reads the survivors' live load (open tasks, offers accepted in the fairness window,
continuity) from three small grouped queries that read only recent or in-progress offers and
this elder's cases, never the whole history. Python drops those at their task limit, scores
every survivor (plain arithmetic) and builds :class:`Candidate` objects for the best ``limit``
only. ``bench/matching.py`` measures it with 10,000 volunteers against the single-statement
path it replaced, and ``tests/volunteers/test_roster_cache.py`` holds it to a plain reference.
"""

from __future__ import annotations

import datetime as dt
import functools
import heapq
import math
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Integer,
    Select,
    String,
    bindparam,
    cast,
    column,
    func,
    literal,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import InstrumentedAttribute, Session

from callcenter.db import UTCDateTime, utcnow
from callcenter.models import Case, CaseState, Elder
from callcenter.settings import get_settings
from volunteers import roster_cache
from volunteers.catalog import Catalog, ServiceItem, get_catalog
from volunteers.models import Offer, OfferStatus

WEIGHTS: dict[str, float] = {
    "distance": 0.35,
    "skill": 0.20,
    "continuity": 0.15,
    "fairness": 0.15,
    "rating": 0.15,
}
DISTANCE_SCALE_M = 5_000.0
FAIRNESS_DAYS = 7
EARTH_RADIUS_M = roster_cache.EARTH_RADIUS_M  # IUGG mean radius
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


# (-score, distance, volunteer id, the _Eligible fields as a plain tuple): sorts best first,
# ties to the nearer, then the lower id.
_Row = tuple[int, str, str | None, float, int, float, int, int, int, bool]
_Ranked = tuple[float, float, int, _Row]


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
def _home_statement(dialect: str) -> Select[Any]:
    """The elder's coordinates and the roster's version, in one round trip."""
    token, written_here = roster_cache.version_columns(dialect)
    return select(Elder.latitude, Elder.longitude, token, written_here).where(
        Elder.id == bindparam("elder_id")
    )


_IdColumn = ColumnElement[int] | InstrumentedAttribute[int]


def _among(dialect: str) -> Callable[[_IdColumn], ColumnElement[bool]]:
    """``vid`` is one of the ``ids`` parameter's, given as one text parameter: the SQL text is
    the same for every call (an expanded ``IN (…)`` is new text for every length, and compiling
    it cost more than running it), and the database hashes the ids."""
    if dialect == "postgresql":
        # '{1,2,3}'. Not ``= ANY(array)``: PostgreSQL estimates that one element by element,
        # ~100 ms of planning for 2,000 ids.
        ids = cast(bindparam("ids", type_=String), ARRAY(Integer))
        return lambda vid: vid.in_(select(func.unnest(ids)))
    # SQLite (and anything else with JSON1): '[1,2,3]'.
    return lambda vid: vid.in_(
        select(column("value", Integer)).select_from(func.json_each(bindparam("ids")))
    )


@contextmanager
def _planned_each_time(session: Session) -> Iterator[None]:
    """Run the next statement unprepared on psycopg (PostgreSQL plans it with these ids).

    psycopg prepares a statement after five runs; PostgreSQL then switches to a generic plan,
    which guesses ten ids and probes the offers index once per id: ~10 ms for 2,000 ids,
    against ~2 ms for the plan made with the ids in hand (bench/matching.py).
    """
    dbapi: Any = session.connection().connection.dbapi_connection
    if not hasattr(dbapi, "prepare_threshold"):
        yield
        return
    threshold = dbapi.prepare_threshold
    dbapi.prepare_threshold = None
    try:
        yield
    finally:
        dbapi.prepare_threshold = threshold


@functools.cache
def _load_statement(dialect: str) -> CompoundSelect:
    """The live load of the given volunteers, as (kind, volunteer id, count) rows.

    Three small grouped queries that read only in-progress or recent offers and this elder's
    cases, never the whole history: kind 0 open tasks, 1 accepted in the fairness window,
    2 served this elder before (count 1).
    """
    among = _among(dialect)
    accepted_at = func.coalesce(Offer.responded_at, Offer.sent_at)
    # Open and recent offers are few and the (status, expires_at) index finds them; SQLite would
    # rather walk the volunteer_id index (in GROUP BY order, or once per id), reading every
    # volunteer's whole history. "+ 0" takes that index out of its choice (SQLite's query
    # planner documentation: disqualifying WHERE clause terms). PostgreSQL plans with the ids in
    # hand and needs no help.
    vid: _IdColumn = (
        Offer.volunteer_id + literal_column("0") if dialect == "sqlite" else Offer.volunteer_id
    )
    open_tasks = (
        select(literal(0), vid, func.count())
        .join(Case, Case.id == Offer.case_id)
        .where(
            Offer.status == OfferStatus.ACCEPTED,
            Case.state.not_in(_FINISHED_CASE_STATES),
            among(vid),
        )
        .group_by(vid)
    )
    recent = (
        select(literal(1), vid, func.count())
        .where(
            Offer.status.in_(_SERVED),
            # An answer comes before its offer expires, so this bound lets the (status,
            # expires_at) index skip old history; a day of slack covers late manual entries.
            Offer.expires_at >= bindparam("since_floor", type_=UTCDateTime()),
            accepted_at >= bindparam("since", type_=UTCDateTime()),
            accepted_at <= bindparam("at", type_=UTCDateTime()),
            among(vid),
        )
        .group_by(vid)
    )
    # This elder's cases come first by their index, whatever the database.
    served = (
        select(literal(2), Offer.volunteer_id, literal(1))
        .join(Case, Case.id == Offer.case_id)
        .where(
            Case.elder_id == bindparam("elder_id"),
            Offer.status.in_(_SERVED),
            among(Offer.volunteer_id),
        )
        .distinct()
    )
    return union_all(open_tasks, recent, served)


def _eligible(
    session: Session,
    *,
    item: ServiceItem,
    elder_id: int,
    at: dt.datetime,
    exclude: Collection[int],
) -> list[_Ranked]:
    """Every volunteer who passes every filter, with their load and score.

    The fixed filters (active, on duty, skill and level, weekly window, radius) run on the
    in-memory roster; the task limit and the score's live parts come from one statement.
    Plain tuples until the end: a match may look at a few thousand volunteers and show 20.
    """
    weekday, minute = _local_slot(at)
    dialect = session.get_bind().dialect.name
    home = session.execute(_home_statement(dialect), {"elder_id": elder_id}).one_or_none()
    if home is None:
        raise LookupError(f"no elder with id {elder_id}")
    lat, lon, token, written_here = home
    near = roster_cache.roster(session, token, bool(written_here)).nearby(
        skill=item.skill, min_level=item.min_level, weekday=weekday, minute=minute, lat=lat, lon=lon
    )
    if exclude:
        excluded = set(exclude)
        near = [n for n in near if n[0] not in excluded]
    if not near:
        return []
    since = at - dt.timedelta(days=FAIRNESS_DAYS)
    ids = [n[0] for n in near]
    params: dict[str, Any] = {
        "ids": ("{%s}" if dialect == "postgresql" else "[%s]") % ",".join(map(str, ids)),
        "at": at,
        "since": since,
        "since_floor": since - dt.timedelta(days=1),
        "elder_id": elder_id,
    }
    load: tuple[dict[int, int], dict[int, int], dict[int, int]] = ({}, {}, {})
    with _planned_each_time(session):
        rows = session.execute(_load_statement(dialect), params).tuples().all()
    for kind, vid, count in rows:
        load[kind][vid] = int(count)
    open_tasks, recent, served = load
    found: list[_Ranked] = []
    for vid, name, community, max_tasks, rating, level, distance in near:
        n_open = open_tasks.get(vid, 0)
        if n_open < max_tasks:
            n_recent, seen = recent.get(vid, 0), vid in served
            score = _score_of(distance, level, seen, n_recent, rating)
            row = (vid, name, community, distance, max_tasks, rating, level, n_open, n_recent, seen)
            found.append((-score, distance, vid, row))
    return found


_W_DISTANCE, _W_SKILL, _W_CONTINUITY, _W_FAIRNESS, _W_RATING = (
    WEIGHTS[k] for k in ("distance", "skill", "continuity", "fairness", "rating")
)


def _score_of(distance_m: float, level: int, served: bool, recent: int, rating: float) -> float:
    """The score of :func:`score_components`, without building its dictionary (hot loop)."""
    return (
        _W_DISTANCE * max(0.0, 1.0 - distance_m / DISTANCE_SCALE_M)
        + _W_SKILL * level / 3.0
        + (_W_CONTINUITY if served else 0.0)
        + _W_FAIRNESS / (1.0 + recent)
        + _W_RATING * min(1.0, max(0.0, (rating - 1.0) / 4.0))
    )


def _score(e: _Eligible) -> float:
    return _score_of(e.distance_m, e.level, e.served, e.recent, e.rating)


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
    ranked = _eligible(
        session, item=item, elder_id=elder_id, at=at or utcnow(), exclude=exclude_volunteer_ids
    )
    # Rank on the exact (unrounded) score; ties to the nearer, then the lower id.
    return [_candidate(_Eligible._make(entry[3])) for entry in heapq.nsmallest(limit, ranked)]


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
    ranked = _eligible(
        session, item=item, elder_id=elder_id, at=at or utcnow(), exclude=exclude_volunteer_ids
    )
    nearest = min(ranked, key=lambda entry: (entry[1], entry[2]), default=None)
    return _candidate(_Eligible._make(nearest[3])) if nearest is not None else None
