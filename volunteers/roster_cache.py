"""The volunteers' slow-changing details, kept in memory for matching and reloaded on change.

Kept: every active, on-duty volunteer's name, community, home, radius, task limit, rating,
skills and weekly windows, indexed by skill and service radius and sorted by latitude, so that a
match looks only at the volunteers with the item's skill who live in a band of latitude around
the elder as wide as their radius. Not kept: the live load (open tasks, recent accepts, who
served whom); matching reads that from the database every time.

Freshness: database triggers (migration 0004) put a new token in the one row of
``volunteer_directory_version`` with every write to those details: on SQLite a random one per
row written, on PostgreSQL the writing transaction's id. A match reads the token in its own
transaction (with the elder's coordinates, one round trip) and reloads the roster when the token
is not the one it was loaded at; a transaction that has itself written the details (PostgreSQL:
the token is its own id) loads them for itself and keeps nothing. So a match sees its own
transaction's uncommitted writes as the database does, other processes' commits as soon as they
are visible, and a rolled-back write's token never comes back. The token is read before the
details, so a roster is never older than its token (it can be newer, which only costs one more
reload).

One roster per engine (a process may talk to several databases, as the tests do). Rosters are
immutable; a reload builds a new one and replaces the reference, so readers need no lock.
"""

from __future__ import annotations

import bisect
import math
import weakref
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import BigInteger, ColumnElement, Engine, Text, cast, false, func, select
from sqlalchemy.orm import Session

from volunteers.models import (
    AvailabilityWindow,
    Volunteer,
    VolunteerDirectoryVersion,
    VolunteerSkill,
)

log = structlog.get_logger(__name__)

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius
_M_PER_DEG_LAT = math.pi * EARTH_RADIUS_M / 180.0
# The latitude band and the longitude box are pre-filters: they must keep every volunteer the
# exact haversine keeps. A great circle of length d changes latitude by at most d / R and, never
# leaving latitudes |phi| <= |phi_elder| + d / R, longitude by at most d / (R cos of that): both
# bounds are exact on the sphere; 1 % of slack absorbs floating-point rounding.
_BOX_SLACK = 1.01
_RAD = math.pi / 180.0


# A volunteer who has the skill, is on duty at that minute and lives close enough:
# (volunteer id, name, community, max tasks, rating, level, distance in metres).
Nearby = tuple[int, str, str | None, int, float, int, float]


# A volunteer's weekly windows: for each weekday (0 Monday), its (start, end) minute pairs.
Week = tuple[tuple[tuple[int, int], ...], ...]
# (id, name, community, max tasks, rating): what a match reports besides level and distance.
_Person = tuple[int, str, str | None, int, float]
# (latitude, longitude, level, week, person). Plain tuples of plain values throughout,
# not named tuples: the garbage collector stops tracking those, so that a roster of 10,000
# volunteers does not lengthen every full collection (named tuples stay tracked: +40 ms each).
_Entry = tuple[float, float, int, Week, _Person]


@dataclass(frozen=True, slots=True)
class _Band:
    """The volunteers with one skill and one service radius, sorted by home latitude."""

    radius_m: int
    latitudes: list[float]  # parallel to entries
    entries: list[_Entry]


@dataclass(frozen=True)
class Roster:
    token: int | None
    volunteers: int
    _bands: dict[str, tuple[_Band, ...]]  # by skill

    def nearby(
        self, *, skill: str, min_level: int, weekday: int, minute: int, lat: float, lon: float
    ) -> list[Nearby]:
        """Volunteers with ``skill`` at ``min_level`` or more, a window containing ``minute``
        of ``weekday`` (start inclusive, end exclusive) and the point within their radius by
        haversine. In no particular order."""
        p1 = lat * _RAD
        cos_p1 = math.cos(p1)
        sin, cos, asin, sqrt = math.sin, math.cos, math.asin, math.sqrt
        found: list[Nearby] = []
        for band in self._bands.get(skill, ()):
            radius = band.radius_m
            reach = radius * _BOX_SLACK
            reach_deg = reach / _M_PER_DEG_LAT
            lo = bisect.bisect_left(band.latitudes, lat - reach_deg)
            hi = bisect.bisect_right(band.latitudes, lat + reach_deg)
            if lo == hi:
                continue
            # Metres per degree of longitude at the band's edge nearest a pole: never
            # overstated. Over a pole or across the antimeridian the box is not a box, and
            # longitude is not checked (inf: any difference passes).
            edge = abs(lat) + reach_deg
            m_lon = _M_PER_DEG_LAT * math.cos(edge * _RAD) if edge < 89.0 else 0.0
            if m_lon == 0.0 or abs(lon) + reach / m_lon >= 180.0:
                reach_lon = math.inf
            else:
                reach_lon = reach / m_lon
            for vlat, vlon, level, week, person in band.entries[lo:hi]:
                if level < min_level or abs(vlon - lon) > reach_lon:
                    continue
                for start, end in week[weekday]:
                    if start <= minute < end:
                        break
                else:
                    continue
                # haversine_m with the elder's side worked out once (same arithmetic, same bits).
                p2 = vlat * _RAD
                a = sin((p2 - p1) / 2) ** 2 + cos_p1 * cos(p2) * sin((vlon - lon) * _RAD / 2) ** 2
                distance = 2 * EARTH_RADIUS_M * asin(min(1.0, sqrt(a)))
                if distance <= radius:
                    found.append((*person, level, distance))
        return found


_rosters: weakref.WeakKeyDictionary[Engine, Roster] = weakref.WeakKeyDictionary()


def version_columns(dialect: str) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """The current token, and whether this very transaction wrote it: to be read in the same
    statement as something else (matching reads them with the elder's coordinates)."""
    token = (
        select(VolunteerDirectoryVersion.token)
        .where(VolunteerDirectoryVersion.id == 1)
        .scalar_subquery()
    )
    if dialect == "postgresql":
        # PostgreSQL's token is the id of the transaction that last wrote (migration 0004).
        mine = cast(cast(func.pg_current_xact_id_if_assigned(), Text), BigInteger)
        return token, func.coalesce(token == mine, false())
    # SQLite's token changes with every row written, so its own writes are never "the same".
    return token, false()


def roster(session: Session, token: int | None, written_here: bool = False) -> Roster:
    """The roster for ``session``'s database at ``token`` (read in this transaction).

    ``written_here``: this transaction changed the volunteers' details and has not committed;
    what it reads is for it alone, so it is loaded and not kept.
    """
    engine = session.get_bind()
    key = engine if isinstance(engine, Engine) else engine.engine
    cached = _rosters.get(key)
    if cached is not None and token is not None and cached.token == token and not written_here:
        return cached
    if token is None:
        # The version row is gone (deleted by hand?): correct but slow, a load per match.
        log.warning("roster.no_version_row", table=VolunteerDirectoryVersion.__tablename__)
    loaded = load_roster(session, token)
    if token is not None and not written_here:
        _rosters[key] = loaded
    return loaded


def load_roster(session: Session, token: int | None) -> Roster:
    """Read the details of every active, on-duty volunteer and index them."""
    # The caller's statement before this one flushed the session; Core rows are enough here.
    conn = session.connection()
    # id → (latitude, longitude, radius, person)
    people: dict[int, tuple[float, float, int, _Person]] = {
        vid: (lat, lon, radius, (vid, name, community, max_tasks, rating))
        for vid, name, community, lat, lon, radius, max_tasks, rating in conn.execute(
            select(
                Volunteer.id,
                Volunteer.name,
                Volunteer.community,
                Volunteer.home_latitude,
                Volunteer.home_longitude,
                Volunteer.service_radius_m,
                Volunteer.max_concurrent_tasks,
                Volunteer.rating,
            ).where(Volunteer.active.is_(True), Volunteer.on_duty.is_(True))
        ).tuples()
    }
    days: dict[int, list[list[tuple[int, int]]]] = {}
    for vid, weekday, start, end in conn.execute(
        select(
            AvailabilityWindow.volunteer_id,
            AvailabilityWindow.weekday,
            AvailabilityWindow.start_minute,
            AvailabilityWindow.end_minute,
        )
    ).tuples():
        if vid in people:
            days.setdefault(vid, [[] for _ in range(7)])[weekday].append((start, end))
    # Many volunteers keep the same hours: one shared tuple per distinct week.
    shared: dict[Week, Week] = {}
    weeks: dict[int, Week] = {}
    for vid, week_lists in days.items():
        week = tuple(tuple(day) for day in week_lists)
        weeks[vid] = shared.setdefault(week, week)
    grouped: defaultdict[str, defaultdict[int, list[_Entry]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for vid, skill, level in conn.execute(
        select(VolunteerSkill.volunteer_id, VolunteerSkill.category_code, VolunteerSkill.level)
    ).tuples():
        home = people.get(vid)
        hours = weeks.get(vid)
        if home is not None and hours is not None:
            lat, lon, radius, person = home
            grouped[skill][radius].append((lat, lon, level, hours, person))
    bands: dict[str, tuple[_Band, ...]] = {}
    for skill, by_radius in grouped.items():
        skill_bands = []
        for radius, entries in sorted(by_radius.items()):
            entries.sort(key=lambda e: e[0])
            skill_bands.append(_Band(radius, [e[0] for e in entries], entries))
        bands[skill] = tuple(skill_bands)
    log.info("roster.loaded", volunteers=len(people), with_windows=len(weeks))
    return Roster(token, len(people), bands)


def forget_all() -> None:
    """Drop every cached roster (a cold start, as bench/matching.py times it)."""
    _rosters.clear()
