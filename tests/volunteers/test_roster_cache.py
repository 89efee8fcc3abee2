"""Matching's fast path (the in-memory roster and one load query) against a plain reference.

The reference reads every volunteer, skill, window, case and offer through the ORM and applies
the documented rules one by one in Python; it shares only the scoring arithmetic (``_score``,
``_candidate``), which ``test_matching.py`` checks on its own. On randomized districts, before
and after edits in the same transaction, both must return the very same candidates: ids, order,
distances, scores and explanations.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, delete, event, select, update
from sqlalchemy.orm import Session, selectinload

from callcenter.models import Case, CaseKind, CaseState, Elder
from tests.factories import make_elder
from tests.volunteers.test_matching import make_volunteer, offset
from volunteers.catalog import get_catalog
from volunteers.matching import (
    FAIRNESS_DAYS,
    Candidate,
    _candidate,
    _Eligible,
    _score,
    haversine_m,
    match_volunteers,
    nearest_only,
)
from volunteers.models import (
    AvailabilityWindow,
    Offer,
    OfferStatus,
    Volunteer,
    VolunteerDirectoryVersion,
    VolunteerSkill,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
BASE = dt.datetime(2026, 12, 2, 10, 0, tzinfo=SHANGHAI)  # a Wednesday morning
# Items with different skills and levels: nail trimming needs personal_care 1, bathing 2, grab
# bars repairs 2 (a skill of another category), bulbs appliances 1, water heaters appliances 3.
ITEMS = (
    "personal_care.nail_trimming",
    "personal_care.bathing",
    "safety.grab_bars",
    "appliances.replace_bulb",
    "appliances.water_heater",
)
SKILLS = ("personal_care", "repairs", "appliances", "safety")
_codes = itertools.count(1)


# -- the reference -----------------------------------------------------------------------------


@dataclass
class World:
    """Every row the rules read, loaded plainly through the ORM."""

    elders: dict[int, Elder]
    volunteers: list[Volunteer]
    cases: dict[int, Case]
    offers: list[Offer]

    @classmethod
    def load(cls, session: Session) -> World:
        session.expire_all()
        return cls(
            {e.id: e for e in session.scalars(select(Elder))},
            list(
                session.scalars(
                    select(Volunteer).options(
                        selectinload(Volunteer.skills), selectinload(Volunteer.availability)
                    )
                )
            ),
            {c.id: c for c in session.scalars(select(Case))},
            list(session.scalars(select(Offer))),
        )


def reference_eligible(
    world: World, *, item_code: str, elder_id: int, at: dt.datetime, exclude: set[int]
) -> list[_Eligible]:
    """Every rule of ``volunteers/matching.py``'s docstring, applied by hand to every row."""
    item = get_catalog().item(item_code)
    elder = world.elders[elder_id]
    local = at.astimezone(SHANGHAI)
    weekday, minute = local.weekday(), local.hour * 60 + local.minute
    cases, offers = world.cases, world.offers
    served_statuses = (OfferStatus.ACCEPTED, OfferStatus.COMPLETED)
    found = []
    for v in world.volunteers:
        if not (v.active and v.on_duty) or v.id in exclude:
            continue
        level = next((s.level for s in v.skills if s.category_code == item.skill), 0)
        if level < item.min_level:
            continue
        if not any(
            w.weekday == weekday and w.start_minute <= minute < w.end_minute for w in v.availability
        ):
            continue
        distance = haversine_m(elder.latitude, elder.longitude, v.home_latitude, v.home_longitude)
        if distance > v.service_radius_m:
            continue
        mine = [o for o in offers if o.volunteer_id == v.id]
        open_tasks = sum(
            1
            for o in mine
            if o.status is OfferStatus.ACCEPTED
            and cases[o.case_id].state not in (CaseState.CLOSED, CaseState.CANCELLED)
        )
        if open_tasks >= v.max_concurrent_tasks:
            continue
        since = at - dt.timedelta(days=FAIRNESS_DAYS)
        recent = sum(
            1
            for o in mine
            if o.status in served_statuses and since <= (o.responded_at or o.sent_at) <= at
        )
        served = any(
            o.status in served_statuses and cases[o.case_id].elder_id == elder_id for o in mine
        )
        found.append(
            _Eligible(
                v.id, v.name, v.community, distance, v.max_concurrent_tasks, v.rating, level,
                open_tasks, recent, served,
            )
        )  # fmt: skip
    return found


def reference_ranking(eligible: list[_Eligible], limit: int) -> list[Candidate]:
    """Best score first; ties to the nearer, then the lower id."""
    ranked = sorted(eligible, key=lambda e: (-_score(e), e.distance_m, e.volunteer_id))
    return [_candidate(e) for e in ranked[:limit]]


# -- a random district -------------------------------------------------------------------------


def random_point(rng: random.Random, centre: tuple[float, float], km: float) -> tuple[float, float]:
    bearing = rng.uniform(0, 2 * math.pi)
    distance = km * 1000 * math.sqrt(rng.random())
    lat, lon = offset(
        *centre, north_m=distance * math.cos(bearing), east_m=distance * math.sin(bearing)
    )
    return lat, (lon + 180.0) % 360.0 - 180.0  # across the antimeridian, as stored


def random_windows(rng: random.Random) -> list[tuple[int, int, int]]:
    windows = []
    for day in range(7):
        if rng.random() < 0.3:
            continue
        # Edges on the hours the queries use (10:00, 13:30, …) as well as anywhere.
        edges = sorted(rng.sample([*range(0, 1441, 30), *rng.sample(range(1441), 6)], k=4))
        windows.append((day, edges[0], max(edges[1], edges[0] + 1)))
        if rng.random() < 0.4 and edges[2] < edges[3]:
            windows.append((day, edges[2], edges[3]))
    return windows


def random_volunteer(session: Session, rng: random.Random, centre: tuple[float, float]) -> int:
    v = make_volunteer(
        session,
        at=random_point(rng, centre, 6.0),
        skills={code: rng.randint(1, 3) for code in rng.sample(SKILLS, k=rng.randint(0, 3))},
        windows=random_windows(rng),
        service_radius_m=rng.choice((300, 1000, 2000, 3000, 5000, rng.randint(100, 8000))),
        active=rng.random() < 0.9,
        on_duty=rng.random() < 0.85,
        max_concurrent_tasks=rng.randint(1, 3),
        rating=round(rng.uniform(1.0, 5.0), 1),
    )
    return v.id


def random_history(
    session: Session, rng: random.Random, elder_ids: list[int], volunteer_ids: list[int]
) -> None:
    """Cases in every state, each with offers in every status, answered around ``BASE``."""
    for _ in range(60):
        opened = BASE - dt.timedelta(minutes=rng.randint(-3 * 24 * 60, 12 * 24 * 60))
        case = Case(
            code=f"R{next(_codes):06d}",
            kind=CaseKind.SERVICE,
            state=rng.choice(list(CaseState)),
            priority=3,
            elder_id=rng.choice(elder_ids),
            category_code="personal_care",
            item_code=ITEMS[0],
            opened_at=opened,
            opened_by="test",
            state_changed_at=opened,
        )
        session.add(case)
        session.flush()
        for vid in rng.sample(volunteer_ids, k=rng.randint(1, 4)):
            sent = opened + dt.timedelta(minutes=1)
            session.add(
                Offer(
                    case_id=case.id,
                    volunteer_id=vid,
                    status=rng.choice(list(OfferStatus)),
                    sent_at=sent,
                    expires_at=sent + dt.timedelta(minutes=3),
                    # Unanswered offers count from when they were sent (coalesce).
                    responded_at=None
                    if rng.random() < 0.2
                    else sent + dt.timedelta(seconds=rng.randint(0, 180)),
                )
            )
    session.flush()


def random_edit(session: Session, rng: random.Random, volunteer_ids: list[int]) -> None:
    """One change of the kind the roster caches, made in the test's transaction."""
    vid = rng.choice(volunteer_ids)
    v = session.get(Volunteer, vid)
    assert v is not None
    match rng.randrange(6):
        case 0:
            v.service_radius_m = rng.choice((500, 4000, 9000))
        case 1:
            v.on_duty = not v.on_duty
        case 2:
            v.home_latitude, v.home_longitude = v.home_latitude + 0.005, v.home_longitude - 0.005
        case 3:
            v.skills = [VolunteerSkill(category_code=rng.choice(SKILLS), level=rng.randint(1, 3))]
        case 4:
            v.availability = [
                AvailabilityWindow(weekday=d, start_minute=s, end_minute=e)
                for d, s, e in random_windows(rng)
            ]
        case _:
            v.rating, v.max_concurrent_tasks = round(rng.uniform(1, 5), 1), rng.randint(1, 3)
    session.flush()


@pytest.mark.parametrize(
    "centre",
    [(23.37, 116.73), (64.1, 179.98), (-33.45, -70.66)],
    ids=["shantou", "antimeridian_north", "south_west"],
)
def test_fast_path_equals_the_reference_on_random_districts(
    fresh_engine: Engine, centre: tuple[float, float]
) -> None:
    """Committed districts (the roster is cached between edits) and uncommitted edits (the
    transaction that wrote them sees them at once)."""
    rng = random.Random(f"roster-{centre}")
    with Session(fresh_engine) as session:
        elder_ids = []
        for _ in range(6):
            lat, lon = random_point(rng, centre, 4.0)
            elder_ids.append(make_elder(session, latitude=lat, longitude=lon).id)
        volunteer_ids = [random_volunteer(session, rng, centre) for _ in range(120)]
        random_history(session, rng, elder_ids, volunteer_ids)
        session.commit()
        non_empty = 0
        world = World.load(session)
        for round_ in range(60):
            if round_ % 10 == 9:
                random_edit(session, rng, volunteer_ids)
                if round_ % 20 == 19:
                    session.commit()
                world = World.load(session)
            elder_id, item = rng.choice(elder_ids), rng.choice(ITEMS)
            at = BASE + dt.timedelta(minutes=rng.randint(-2 * 24 * 60, 4 * 24 * 60))
            if rng.random() < 0.3:  # exactly on a half hour, where window edges are
                at = at.replace(minute=30 * (at.minute // 30), second=0)
            at = at.astimezone(dt.UTC)
            exclude = set(rng.sample(volunteer_ids, k=rng.randint(0, 10)))
            limit = rng.choice((1, 3, 20, 200))
            fast = match_volunteers(
                session,
                item_code=item,
                elder_id=elder_id,
                at=at,
                limit=limit,
                exclude_volunteer_ids=exclude,
            )
            everyone = reference_eligible(
                world, item_code=item, elder_id=elder_id, at=at, exclude=exclude
            )
            assert fast == reference_ranking(everyone, limit), (round_, item, at)
            nearest = nearest_only(
                session, item_code=item, elder_id=elder_id, at=at, exclude_volunteer_ids=exclude
            )
            best = min(everyone, key=lambda e: (e.distance_m, e.volunteer_id), default=None)
            assert nearest == (_candidate(best) if best else None)
            non_empty += bool(fast)
    # The sample is not vacuous: most requests find somebody, and some find nobody.
    assert 20 < non_empty < 60


# -- the token and the cache -------------------------------------------------------------------


def token(session: Session) -> int:
    return session.scalars(
        select(VolunteerDirectoryVersion.token).where(VolunteerDirectoryVersion.id == 1)
    ).one()


NAIL = ITEMS[0]


@pytest.fixture
def district(fresh_engine: Engine) -> tuple[int, int]:
    """(elder id, volunteer id), committed: one volunteer 800 m from one elder."""
    with Session(fresh_engine) as s:
        elder = make_elder(s, latitude=31.0, longitude=121.0)
        volunteer = make_volunteer(s, at=offset(31.0, 121.0, east_m=800))
        s.commit()
        return elder.id, volunteer.id


def found_ids(session: Session, elder_id: int) -> list[int]:
    return [
        c.volunteer_id
        for c in match_volunteers(session, item_code=NAIL, elder_id=elder_id, at=BASE)
    ]


def test_every_cached_kind_of_write_changes_the_token(
    fresh_engine: Engine, district: tuple[int, int]
) -> None:
    """The triggers of migration 0004 are all there (a SQLite batch migration drops them)."""
    _, vid = district
    mine = Volunteer.id == vid
    writes: dict[str, Any] = {
        "insert volunteer": lambda s: make_volunteer(s, at=(31.0, 121.0)),
        "radius": update(Volunteer).where(mine).values(service_radius_m=9),
        "on duty": update(Volunteer).where(mine).values(on_duty=False),
        "rating": update(Volunteer).where(mine).values(rating=2.0),
        "insert skill": lambda s: s.add(
            VolunteerSkill(volunteer_id=vid, category_code="legal", level=1)
        ),
        "skill level": update(VolunteerSkill)
        .where(VolunteerSkill.volunteer_id == vid)
        .values(level=3),
        "delete skill": delete(VolunteerSkill).where(VolunteerSkill.category_code == "legal"),
        "insert window": lambda s: s.add(
            AvailabilityWindow(volunteer_id=vid, weekday=6, start_minute=0, end_minute=60)
        ),
        "window times": update(AvailabilityWindow)
        .where(AvailabilityWindow.volunteer_id == vid)
        .values(end_minute=1439),
        "delete window": delete(AvailabilityWindow).where(AvailabilityWindow.weekday == 6),
        "delete volunteer": delete(Volunteer).where(Volunteer.id != vid),
    }
    seen = set()
    with Session(fresh_engine) as s:
        seen.add(token(s))
    for name, write in writes.items():
        with Session(fresh_engine) as s:
            if callable(write):
                write(s)
            else:
                s.execute(write)
            s.commit()
            now = token(s)
        # A new token, never one seen before (a cached roster would be taken for current).
        assert now not in seen, name
        seen.add(now)


def test_hours_served_do_not_reload_the_roster(
    fresh_engine: Engine, district: tuple[int, int]
) -> None:
    _, vid = district
    with Session(fresh_engine) as s:
        before = token(s)
        v = s.get_one(Volunteer, vid)
        v.hours_served += 1.5  # every task's feedback does this
        v.phone = "+8613700000999"
        s.commit()
        assert token(s) == before


@pytest.fixture
def selects(fresh_engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []
    engine = fresh_engine

    def count(*args: Any) -> None:
        if args[2].lstrip().upper().startswith("SELECT"):
            statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    yield statements
    event.remove(engine, "before_cursor_execute", count)


def test_a_warm_match_asks_the_database_twice_and_an_edit_is_seen_at_once(
    fresh_engine: Engine, district: tuple[int, int], selects: list[str]
) -> None:
    elder_id, vid = district
    with Session(fresh_engine) as session:
        assert found_ids(session, elder_id) == [vid]  # loads the roster
        session.commit()
        selects.clear()
        assert found_ids(session, elder_id) == [vid]
        # The elder's home with the token, then the live load: nothing about the volunteers.
        assert len(selects) == 2
        assert "volunteer_directory_version" in selects[0] and "offers" in selects[1]
        # Each edit in the same transaction is seen by the very next match…
        v = session.get_one(Volunteer, vid)
        steps: list[tuple[int, str, list[int]]] = [
            (500, "personal_care", []),
            (3000, "personal_care", [vid]),
            (3000, "repairs", []),
        ]
        for radius, skill, expected in steps:
            v.service_radius_m = radius
            v.skills = [VolunteerSkill(category_code=skill, level=3)]
            session.flush()
            assert found_ids(session, elder_id) == expected, (radius, skill)
        # … and, rolled back, was never anybody else's.
        session.rollback()
        assert found_ids(session, elder_id) == [vid]
        session.commit()
        # Committed after a match in the middle of it: the next transaction sees the end state.
        v = session.get_one(Volunteer, vid)
        v.on_duty = False
        session.flush()
        assert found_ids(session, elder_id) == []
        v.on_duty = True
        session.commit()
        assert found_ids(session, elder_id) == [vid]


def test_other_sessions_commits_and_rollbacks(
    fresh_engine: Engine, district: tuple[int, int]
) -> None:
    """A commit elsewhere is seen by the next transaction; a rolled-back edit never was."""
    elder_id, vid = district
    with Session(fresh_engine) as reader:
        assert found_ids(reader, elder_id) == [vid]
        reader.commit()
        # A transaction that takes the volunteer off duty, matches (and so reads what only it
        # can see), then rolls back.
        with Session(fresh_engine) as editor:
            editor.execute(update(Volunteer).where(Volunteer.id == vid).values(on_duty=False))
            assert found_ids(editor, elder_id) == []
            editor.rollback()
        assert found_ids(reader, elder_id) == [vid]
        reader.commit()
        # Another process's committed edit.
        with Session(fresh_engine) as editor:
            editor.execute(update(Volunteer).where(Volunteer.id == vid).values(active=False))
            editor.commit()
        assert found_ids(reader, elder_id) == []


def test_a_missing_version_row_still_matches_correctly(
    fresh_engine: Engine, district: tuple[int, int]
) -> None:
    elder_id, vid = district
    with Session(fresh_engine) as session:
        session.execute(delete(VolunteerDirectoryVersion))
        session.commit()
        assert found_ids(session, elder_id) == [vid]
        session.execute(update(Volunteer).where(Volunteer.id == vid).values(on_duty=False))
        session.commit()
        assert found_ids(session, elder_id) == []
