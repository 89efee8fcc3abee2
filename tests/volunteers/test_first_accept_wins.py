"""First to accept wins: one conditional UPDATE decides, under 50 simultaneous accepts."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from callcenter import db
from callcenter.cases import open_case
from callcenter.models import Case, CaseKind, CaseState, OutboxMessage
from tests.factories import make_elder
from volunteers.models import Offer, OfferStatus, Volunteer
from volunteers.offers import accept_offer

RACERS = 50
RUNS = 50


def make_volunteers(session: Session, count: int) -> list[int]:
    ids = []
    for n in range(count):
        volunteer = Volunteer(
            code=f"R{n:03d}",
            name=f"志愿者{n}",
            phone=f"+86139{n:08d}",
            home_latitude=23.36,
            home_longitude=116.70,
        )
        session.add(volunteer)
        session.flush()
        ids.append(volunteer.id)
    return ids


def offered_case(session: Session, elder_id: int, volunteer_ids: list[int]) -> list[int]:
    now = dt.datetime.now(dt.UTC)
    case = open_case(
        session,
        kind=CaseKind.SERVICE,
        priority=3,
        actor="test",
        elder_id=elder_id,
        category_code="appliances",
        item_code="appliances.replace_bulb",
    )
    expires = now + dt.timedelta(minutes=3)
    offers = [
        Offer(case_id=case.id, volunteer_id=v, wave=1, expires_at=expires) for v in volunteer_ids
    ]
    session.add_all(offers)
    session.flush()
    return [o.id for o in offers]


def race(engine: Engine, offer_ids: list[int]) -> list[str]:
    barrier = threading.Barrier(len(offer_ids))

    def one(offer_id: int) -> str:
        barrier.wait()  # everyone presses "accept" at the same moment
        with Session(engine) as session:
            outcome = accept_offer(session, offer_id)
            session.commit()
            return outcome

    with ThreadPoolExecutor(max_workers=len(offer_ids)) as pool:
        return list(pool.map(one, offer_ids))


@pytest.mark.parametrize("runs", [RUNS])
def test_exactly_one_winner_every_time_on_postgresql(fresh_postgres_url: str, runs: int) -> None:
    engine = db.make_engine(fresh_postgres_url, pool_size=RACERS + 5, max_overflow=0)
    with Session(engine) as s:
        elder_id = make_elder(s).id
        volunteer_ids = make_volunteers(s, RACERS)
        s.commit()
    for _ in range(runs):
        with Session(engine) as s:
            offer_ids = offered_case(s, elder_id, volunteer_ids)
            s.commit()
        outcomes = race(engine, offer_ids)
        assert outcomes.count("accepted") == 1, outcomes
        # The losers learn it from the UPDATE's row count ("taken"), or find their offer
        # already stood down by the winner ("not_pending").
        assert set(outcomes) - {"accepted"} <= {"taken", "not_pending"}
        with Session(engine) as s:
            offer = s.get(Offer, offer_ids[0])
            assert offer is not None
            case = s.get(Case, offer.case_id)
            assert case is not None and case.state is CaseState.HANDLE
            statuses = s.scalars(select(Offer.status).where(Offer.case_id == case.id)).all()
            assert statuses.count(OfferStatus.ACCEPTED) == 1
            assert case.assigned_volunteer_id in volunteer_ids
    engine.dispose()


def test_one_winner_on_sqlite_too(fresh_url: str) -> None:
    if not fresh_url.startswith("sqlite"):
        return  # the PostgreSQL case is the test above, with 50 runs
    engine = db.make_engine(fresh_url)
    with Session(engine) as s:
        elder_id = make_elder(s).id
        volunteer_ids = make_volunteers(s, 10)
        offer_ids = offered_case(s, elder_id, volunteer_ids)
        s.commit()
    outcomes = race(engine, offer_ids)
    assert outcomes.count("accepted") == 1, outcomes
    with Session(engine) as s:
        stood_down = s.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.idempotency_key.like("stood_down:%"))
        )
        # Every other volunteer is told once that they are not needed.
        assert stood_down == 9
    engine.dispose()
