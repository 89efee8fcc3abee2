"""The matching path before the in-memory roster (commit 2df7e39), kept as the benchmark's baseline.

Every filter ran in one SQL statement (active, on duty, skill and level, weekly window, a circle on
the home coordinates, the task limit) with the load joined from three grouped subqueries; Python
then did the exact haversine and the ranking. ``bench/matching.py`` times it next to
``volunteers.matching.match_volunteers`` and checks that both return the same candidates.
"""

from __future__ import annotations

import datetime as dt
import functools
import heapq
import math
from typing import Any

from sqlalchemy import Float, Select, and_, bindparam, func, select
from sqlalchemy.orm import Session

from callcenter.db import UTCDateTime
from callcenter.models import Case, Elder
from volunteers.catalog import get_catalog
from volunteers.matching import (
    _FINISHED_CASE_STATES,
    _SERVED,
    EARTH_RADIUS_M,
    FAIRNESS_DAYS,
    Candidate,
    _candidate,
    _Eligible,
    _local_slot,
    _score,
)
from volunteers.models import AvailabilityWindow, Offer, OfferStatus, Volunteer, VolunteerSkill

_M_PER_DEG_LAT = math.pi * EARTH_RADIUS_M / 180.0
_SQL_MARGIN = 1.02


@functools.cache
def _statement() -> Select[Any]:
    lat, lon = bindparam("lat", type_=Float), bindparam("lon", type_=Float)
    m_lat, m_lon = bindparam("m_lat", type_=Float), bindparam("m_lon", type_=Float)
    at = bindparam("at", type_=UTCDateTime())
    since = bindparam("since", type_=UTCDateTime())
    radius = Volunteer.service_radius_m
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
    return (
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


def match_volunteers_before(
    session: Session, *, item_code: str, elder_id: int, at: dt.datetime, limit: int = 20
) -> list[Candidate]:
    item = get_catalog().item(item_code)
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
    found: list[_Eligible] = []
    p1, cos_p1, rad = math.radians(lat), math.cos(math.radians(lat)), math.pi / 180.0
    sin, cos, asin, sqrt = math.sin, math.cos, math.asin, math.sqrt
    rows = session.execute(_statement(), params).tuples()
    for row in rows:
        (
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
        ) = row
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
    ranked = [(-_score(e), e.distance_m, e.volunteer_id, e) for e in found]
    return [_candidate(entry[3]) for entry in heapq.nsmallest(limit, ranked)]
