"""Matching volunteers to a service case: each filter, the ranking and its explanation."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event
from sqlalchemy.orm import Session

from callcenter.cases import open_case, transition
from callcenter.models import CaseKind, CaseState, Elder
from tests.factories import make_elder
from volunteers.matching import (
    EARTH_RADIUS_M,
    WEIGHTS,
    Candidate,
    _candidate,
    _Eligible,
    haversine_m,
    match_volunteers,
    nearest_only,
)
from volunteers.models import AvailabilityWindow, Offer, OfferStatus, Volunteer, VolunteerSkill

SHANGHAI = ZoneInfo("Asia/Shanghai")
# Wednesday 2 December 2026, 10:00 in Shanghai.
WEDNESDAY_10 = dt.datetime(2026, 12, 2, 10, 0, tzinfo=SHANGHAI)
ALWAYS = [(day, 0, 1440) for day in range(7)]
NAIL = "personal_care.nail_trimming"  # skill personal_care, min_level 1
BATHING = "personal_care.bathing"  # skill personal_care, min_level 2

_numbers = itertools.count(1)
_areas = itertools.count(1)


def offset(
    lat: float, lon: float, *, north_m: float = 0.0, east_m: float = 0.0
) -> tuple[float, float]:
    """A point ``north_m`` / ``east_m`` metres away (small distances on a sphere)."""
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon


def make_volunteer(
    session: Session,
    *,
    at: tuple[float, float],
    skills: dict[str, int] | None = None,
    windows: Sequence[tuple[int, int, int]] = ALWAYS,
    **fields: Any,
) -> Volunteer:
    n = next(_numbers)
    values: dict[str, Any] = {
        "code": f"TM{n:05d}",
        "name": f"测试志愿者{n}",
        "phone": f"+86137{n:08d}",
        "community": "金湖社区",
        "home_latitude": at[0],
        "home_longitude": at[1],
        "service_radius_m": 3000,
        "rating": 4.5,
        "max_concurrent_tasks": 2,
    }
    values.update(fields)
    volunteer = Volunteer(**values)
    volunteer.skills = [
        VolunteerSkill(category_code=code, level=level)
        for code, level in (skills if skills is not None else {"personal_care": 2}).items()
    ]
    volunteer.availability = [
        AvailabilityWindow(weekday=d, start_minute=s, end_minute=e) for d, s, e in windows
    ]
    session.add(volunteer)
    session.flush()
    return volunteer


@pytest.fixture
def elder(session: Session) -> Elder:
    """An elder in an area of their own, far from every other test's volunteers."""
    k = next(_areas)
    return make_elder(session, latitude=30.0 + (k % 40) * 0.5, longitude=100.0 + (k // 40) * 0.5)


def home(elder: Elder, **metres: float) -> tuple[float, float]:
    return offset(elder.latitude, elder.longitude, **metres)


def give_offer(
    session: Session,
    volunteer: Volunteer,
    *,
    elder_id: int,
    status: OfferStatus,
    responded_at: dt.datetime = WEDNESDAY_10 - dt.timedelta(days=1),
    case_state: CaseState = CaseState.DISPATCH,
) -> Offer:
    case = open_case(
        session,
        kind=CaseKind.SERVICE,
        priority=3,
        actor="test",
        elder_id=elder_id,
        item_code=NAIL,
        category_code="personal_care",
    )
    if case_state is not CaseState.DISPATCH:
        transition(session, case, case_state, actor="test")
    offer = Offer(
        case_id=case.id,
        volunteer_id=volunteer.id,
        status=status,
        sent_at=responded_at - dt.timedelta(minutes=2),
        responded_at=responded_at,
        expires_at=responded_at + dt.timedelta(minutes=3),
    )
    session.add(offer)
    session.flush()
    return offer


def ids(found: Sequence[Candidate]) -> list[int]:
    return [c.volunteer_id for c in found]


# -- filters: each one proven by a volunteer who fails only that one ---------------------------

SPOILERS: dict[str, dict[str, Any]] = {
    "inactive": {"active": False},
    "off_duty": {"on_duty": False},
    "no_window_now": {"windows": [(2, 8 * 60, 9 * 60), (3, 0, 1440)]},  # Wed 08–09, Thu
    "other_skill": {"skills": {"repairs": 3}},
    "level_too_low": {"skills": {"personal_care": 1}},  # bathing needs level 2
    "outside_radius": {"service_radius_m": 1000, "distance": 1100},
}


@pytest.mark.parametrize("flaw", sorted(SPOILERS))
def test_each_filter_excludes_its_counter_example(
    session: Session, elder: Elder, flaw: str
) -> None:
    fields = dict(SPOILERS[flaw])
    distance = fields.pop("distance", 500)
    good = make_volunteer(session, at=home(elder, east_m=500))
    bad = make_volunteer(session, at=home(elder, north_m=distance), **fields)
    found = match_volunteers(session, item_code=BATHING, elder_id=elder.id, at=WEDNESDAY_10)
    assert ids(found) == [good.id]
    # The counter-example is eligible once its one flaw is gone: that flaw alone kept it out.
    FIXES[flaw](bad)
    session.flush()
    found = match_volunteers(session, item_code=BATHING, elder_id=elder.id, at=WEDNESDAY_10)
    assert sorted(ids(found)) == sorted([good.id, bad.id])


def _fix_skill(v: Volunteer) -> None:
    v.skills = [VolunteerSkill(category_code="personal_care", level=2)]


def _fix_window(v: Volunteer) -> None:
    v.availability = [
        AvailabilityWindow(weekday=d, start_minute=s, end_minute=e) for d, s, e in ALWAYS
    ]


FIXES: dict[str, Callable[[Volunteer], None]] = {
    "inactive": lambda v: setattr(v, "active", True),
    "off_duty": lambda v: setattr(v, "on_duty", True),
    "no_window_now": _fix_window,
    "other_skill": _fix_skill,
    "level_too_low": _fix_skill,
    "outside_radius": lambda v: setattr(v, "service_radius_m", 1200),
}


def test_task_limit_counts_only_open_accepted_offers(session: Session, elder: Elder) -> None:
    other_elder = make_elder(session, latitude=elder.latitude, longitude=elder.longitude)
    busy = make_volunteer(session, at=home(elder, east_m=300), max_concurrent_tasks=1)
    give_offer(session, busy, elder_id=other_elder.id, status=OfferStatus.ACCEPTED)
    # Finished work and accepted offers on closed or cancelled cases hold nobody.
    free = make_volunteer(session, at=home(elder, east_m=400), max_concurrent_tasks=1)
    give_offer(session, free, elder_id=other_elder.id, status=OfferStatus.COMPLETED)
    give_offer(
        session,
        free,
        elder_id=other_elder.id,
        status=OfferStatus.ACCEPTED,
        case_state=CaseState.CANCELLED,
    )
    give_offer(session, free, elder_id=other_elder.id, status=OfferStatus.PENDING)
    two = make_volunteer(session, at=home(elder, east_m=500), max_concurrent_tasks=2)
    give_offer(session, two, elder_id=other_elder.id, status=OfferStatus.ACCEPTED)

    found = {
        c.volunteer_id: c
        for c in match_volunteers(session, item_code=NAIL, elder_id=elder.id, at=WEDNESDAY_10)
    }
    assert set(found) == {free.id, two.id}
    assert found[two.id].open_tasks == 1
    assert found[free.id].open_tasks == 0


def test_the_items_skill_is_used_not_its_category(session: Session, elder: Elder) -> None:
    # safety.grab_bars is in the safety category but needs the repairs skill at level 2.
    fitter = make_volunteer(session, at=home(elder, east_m=200), skills={"repairs": 2})
    make_volunteer(session, at=home(elder, east_m=100), skills={"safety": 3})
    found = match_volunteers(
        session, item_code="safety.grab_bars", elder_id=elder.id, at=WEDNESDAY_10
    )
    assert ids(found) == [fitter.id]


def test_no_volunteer_outside_radius_and_none_inside_missed(session: Session, elder: Elder) -> None:
    """Around the radius in every direction: the SQL box must never drop an eligible one."""
    rng = random.Random(7)
    expected = set()
    for _ in range(60):
        radius = rng.choice((500, 2000, 5000, 20_000))
        bearing = rng.uniform(0, 2 * math.pi)
        distance = radius * rng.uniform(0.95, 1.05)
        at = home(elder, north_m=distance * math.cos(bearing), east_m=distance * math.sin(bearing))
        v = make_volunteer(session, at=at, service_radius_m=radius)
        if haversine_m(elder.latitude, elder.longitude, *at) <= radius:
            expected.add(v.id)
    found = match_volunteers(session, item_code=NAIL, elder_id=elder.id, at=WEDNESDAY_10, limit=100)
    assert set(ids(found)) == expected
    assert 10 < len(expected) < 50  # the sample really straddles the boundary


# -- time zone ---------------------------------------------------------------------------------


def test_windows_are_read_in_shanghai_time(session: Session, elder: Elder) -> None:
    # Sunday 29 November 2026, 23:30 UTC is Monday 30 November, 07:30 in Shanghai.
    at = dt.datetime(2026, 11, 29, 23, 30, tzinfo=dt.UTC)
    monday_morning = make_volunteer(
        session, at=home(elder, east_m=100), windows=[(0, 7 * 60, 8 * 60)]
    )
    # Would match if the window were read in UTC (Sunday 23:00–24:00): it must not.
    sunday_night = make_volunteer(
        session, at=home(elder, east_m=200), windows=[(6, 23 * 60, 24 * 60)]
    )
    found = match_volunteers(session, item_code=NAIL, elder_id=elder.id, at=at)
    assert ids(found) == [monday_morning.id]
    assert sunday_night.id not in ids(found)


def test_window_start_is_inclusive_end_is_exclusive(session: Session, elder: Elder) -> None:
    v = make_volunteer(session, at=home(elder, east_m=100), windows=[(2, 10 * 60, 11 * 60)])
    for local, expected in (
        (WEDNESDAY_10, [v.id]),
        (WEDNESDAY_10 + dt.timedelta(minutes=59, seconds=59), [v.id]),
        (WEDNESDAY_10 + dt.timedelta(hours=1), []),
        (WEDNESDAY_10 - dt.timedelta(seconds=1), []),
    ):
        assert ids(match_volunteers(session, item_code=NAIL, elder_id=elder.id, at=local)) == (
            expected
        ), local


def test_naive_time_is_refused(session: Session, elder: Elder) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        match_volunteers(session, item_code=NAIL, elder_id=elder.id, at=dt.datetime(2026, 12, 2))


# -- ranking -----------------------------------------------------------------------------------


def test_ranking_prefers_near_skilled_and_well_rated(session: Session, elder: Elder) -> None:
    near = make_volunteer(session, at=home(elder, east_m=200))
    far = make_volunteer(session, at=home(elder, east_m=2500))
    certified = make_volunteer(session, at=home(elder, east_m=2500), skills={"personal_care": 3})
    well_rated = make_volunteer(session, at=home(elder, east_m=2500), rating=5.0)
    found = match_volunteers(session, item_code=NAIL, elder_id=elder.id, at=WEDNESDAY_10)
    assert ids(found)[0] == near.id
    assert ids(found).index(certified.id) < ids(found).index(far.id)
    assert ids(found).index(well_rated.id) < ids(found).index(far.id)
    assert [c.score for c in found] == sorted((c.score for c in found), reverse=True)


def test_ties_go_to_the_nearer_then_the_lower_id(session: Session, elder: Elder) -> None:
    a = make_volunteer(session, at=home(elder, east_m=1000))
    b = make_volunteer(session, at=home(elder, north_m=1000))
    found = match_volunteers(session, item_code=NAIL, elder_id=elder.id, at=WEDNESDAY_10)
    assert ids(found) == sorted([a.id, b.id])


def test_continuity_lifts_a_volunteer_who_served_this_elder(session: Session, elder: Elder) -> None:
    other_elder = make_elder(session, latitude=elder.latitude, longitude=elder.longitude)
    stranger = make_volunteer(session, at=home(elder, east_m=600))
    known = make_volunteer(session, at=home(elder, east_m=900))
    served_elsewhere = make_volunteer(session, at=home(elder, east_m=900))
    long_ago = WEDNESDAY_10 - dt.timedelta(days=90)
    give_offer(
        session, known, elder_id=elder.id, status=OfferStatus.COMPLETED, responded_at=long_ago
    )
    give_offer(
        session,
        served_elsewhere,
        elder_id=other_elder.id,
        status=OfferStatus.COMPLETED,
        responded_at=long_ago,
    )
    # A declined offer is not service.
    give_offer(session, stranger, elder_id=elder.id, status=OfferStatus.DECLINED)
    found = {
        c.volunteer_id: c
        for c in match_volunteers(session, item_code=NAIL, elder_id=elder.id, at=WEDNESDAY_10)
    }
    assert found[known.id].served_elder_before
    assert found[known.id].reasons["continuity"] == WEIGHTS["continuity"]
    assert found[served_elsewhere.id].reasons["continuity"] == 0.0
    assert found[stranger.id].reasons["continuity"] == 0.0
    assert found[known.id].score > found[stranger.id].score


def test_fairness_favours_those_with_less_recent_work(session: Session, elder: Elder) -> None:
    other_elder = make_elder(session, latitude=elder.latitude, longitude=elder.longitude)
    busy = make_volunteer(session, at=home(elder, east_m=500), max_concurrent_tasks=9)
    rested = make_volunteer(session, at=home(elder, east_m=500), max_concurrent_tasks=9)
    for days in (1, 2, 3):
        give_offer(
            session,
            busy,
            elder_id=other_elder.id,
            status=OfferStatus.COMPLETED,
            responded_at=WEDNESDAY_10 - dt.timedelta(days=days),
        )
    # Work older than the 7-day window no longer counts.
    for days in (8, 20):
        give_offer(
            session,
            rested,
            elder_id=other_elder.id,
            status=OfferStatus.COMPLETED,
            responded_at=WEDNESDAY_10 - dt.timedelta(days=days),
        )
    found = {
        c.volunteer_id: c
        for c in match_volunteers(session, item_code=NAIL, elder_id=elder.id, at=WEDNESDAY_10)
    }
    assert found[busy.id].accepted_last_7_days == 3
    assert found[rested.id].accepted_last_7_days == 0
    assert found[busy.id].reasons["fairness"] == pytest.approx(WEIGHTS["fairness"] / 4)
    assert found[rested.id].reasons["fairness"] == WEIGHTS["fairness"]
    assert (
        ids(match_volunteers(session, item_code=NAIL, elder_id=elder.id, at=WEDNESDAY_10))[0]
        == rested.id
    )


def test_exclusions_limit_and_nearest_only(session: Session, elder: Elder) -> None:
    near_low = make_volunteer(
        session, at=home(elder, east_m=100), rating=1.0, skills={"personal_care": 1}
    )
    vs = [
        make_volunteer(
            session, at=home(elder, east_m=400 + 50 * i), rating=5.0, skills={"personal_care": 3}
        )
        for i in range(5)
    ]
    found = match_volunteers(session, item_code=NAIL, elder_id=elder.id, at=WEDNESDAY_10, limit=3)
    assert ids(found) == [v.id for v in vs[:3]]  # the nearest is not the best here
    nearest = nearest_only(session, item_code=NAIL, elder_id=elder.id, at=WEDNESDAY_10)
    assert nearest is not None and nearest.volunteer_id == near_low.id
    rest = match_volunteers(
        session,
        item_code=NAIL,
        elder_id=elder.id,
        at=WEDNESDAY_10,
        exclude_volunteer_ids=[v.id for v in vs],
    )
    assert ids(rest) == [near_low.id]
    assert (
        nearest_only(
            session,
            item_code=NAIL,
            elder_id=elder.id,
            at=WEDNESDAY_10,
            exclude_volunteer_ids=[near_low.id, *(v.id for v in vs)],
        )
        is None
    )


def test_unknown_item_and_elder(session: Session, elder: Elder) -> None:
    with pytest.raises(KeyError):
        match_volunteers(session, item_code="no.such_item", elder_id=elder.id, at=WEDNESDAY_10)
    with pytest.raises(LookupError):
        match_volunteers(session, item_code=NAIL, elder_id=10**9, at=WEDNESDAY_10)


# -- explanation -------------------------------------------------------------------------------


def test_score_is_the_sum_of_its_explained_parts(session: Session, elder: Elder) -> None:
    v = make_volunteer(
        session, at=home(elder, east_m=1250), rating=4.6, skills={"personal_care": 2}
    )
    give_offer(session, v, elder_id=elder.id, status=OfferStatus.COMPLETED)
    (c,) = match_volunteers(session, item_code=NAIL, elder_id=elder.id, at=WEDNESDAY_10)
    assert set(c.reasons) == set(WEIGHTS)
    assert sum(c.reasons.values()) == pytest.approx(c.score, abs=1e-3)
    assert c.reasons["distance"] == pytest.approx(0.35 * (1 - 1250 / 5000), abs=1e-3)
    assert c.reasons["skill"] == pytest.approx(0.2 * 2 / 3, abs=1e-4)
    assert c.reasons["fairness"] == pytest.approx(0.15 / 2)  # one accepted yesterday
    assert c.reasons["rating"] == pytest.approx(0.15 * 3.6 / 4)
    assert c.explain_zh() == (
        "距离1.25公里 +0.26；技能2级 +0.13；曾服务该老人 +0.15；近7天接单1次 +0.07；"
        f"评分4.6 +0.14；总分{c.score:.2f}"
    )
    assert c.explain_en() == (
        "1.25 km away +0.26; skill level 2 +0.13; served this elder before +0.15; "
        f"1 accepted in 7 days +0.07; rating 4.6 +0.14; score {c.score:.2f}"
    )
    data = c.as_json()
    assert data["explain_zh"] == c.explain_zh() and data["reasons"] == c.reasons


# -- speed: a constant number of queries -------------------------------------------------------


@pytest.fixture
def select_counter(session: Session) -> Iterator[list[str]]:
    statements: list[str] = []
    engine = session.connection().engine

    def count(*args: Any) -> None:
        if args[2].lstrip().upper().startswith("SELECT"):
            statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    yield statements
    event.remove(engine, "before_cursor_execute", count)


def test_query_count_does_not_grow_with_volunteers(
    session: Session, elder: Elder, select_counter: list[str]
) -> None:
    counts = []
    for batch in (3, 40):
        for i in range(batch):
            v = make_volunteer(session, at=home(elder, east_m=10 * i))
            give_offer(session, v, elder_id=elder.id, status=OfferStatus.COMPLETED)
        session.expire_all()
        select_counter.clear()
        found = match_volunteers(
            session, item_code=NAIL, elder_id=elder.id, at=WEDNESDAY_10, limit=100
        )
        counts.append(len(select_counter))
        assert found
    # Refreshing the elder, its home with the roster token, the roster's reload (three, as the
    # volunteers changed) and the live load: the same six for 3 or 43 volunteers.
    assert counts[0] == counts[1] <= 6


@given(
    distance=st.floats(0, 60_000),
    level=st.integers(1, 3),
    served=st.booleans(),
    recent=st.integers(0, 50),
    rating=st.floats(0, 5),
)
def test_the_fast_score_is_the_sum_of_the_explained_parts(
    distance: float, level: int, served: bool, recent: int, rating: float
) -> None:
    """The ranking's arithmetic and the explanation's components never drift apart."""
    e = _Eligible(1, "x", None, distance, 2, rating, level, 0, recent, served)
    c = _candidate(e)
    assert c.score == pytest.approx(sum(c.reasons.values()), abs=1e-3)
    assert 0.0 <= c.score <= 1.0
