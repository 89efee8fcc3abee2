import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from callcenter.demo_district import STREETS, DistrictNotEmpty, seed_district
from callcenter.models import Elder, EmergencyContact
from devices.models import Terminal, TerminalProtocol
from volunteers.models import Volunteer, VolunteerSkill

TODAY = dt.date(2026, 11, 1)


def test_district_is_realistic(session: Session) -> None:
    summary = seed_district(session, seed=7, elders=400, today=TODAY)
    assert (summary.elders, summary.terminals) == (400, 400)
    assert summary.volunteers == 20  # one per 27 elders, at least 20
    elders = session.scalars(select(Elder)).all()
    streets = {name for name, *_ in STREETS}
    for elder in elders:
        age = (TODAY - elder.birth_date).days / 365.25
        assert age >= 75
        assert 23.30 < elder.latitude < 23.47 and 116.66 < elder.longitude < 116.84
        assert elder.street in streets and elder.district == "龙湖区"
        assert elder.name_initials and elder.name_pinyin
    assert session.scalar(select(func.min(func.length(Elder.name)))) >= 2
    contacts = session.scalar(select(func.count(EmergencyContact.id))) or 0
    assert 400 <= contacts <= 1200
    protocols = set(session.scalars(select(Terminal.protocol)))
    assert protocols == set(TerminalProtocol)
    cid_accounts = session.scalars(
        select(Terminal.account).where(Terminal.protocol == TerminalProtocol.CONTACT_ID)
    ).all()
    assert len(cid_accounts) == len(set(cid_accounts))
    assert all(a is not None and len(a) == 4 for a in cid_accounts)
    skills = set(session.scalars(select(VolunteerSkill.category_code)))
    assert "emergency" not in skills and "visits" in skills
    phones = session.scalars(select(Volunteer.phone)).all()
    assert len(phones) == len(set(phones))


def test_same_seed_same_district(session: Session) -> None:
    seed_district(session, seed=11, elders=50, today=TODAY)
    first = session.execute(select(Elder.name, Elder.latitude).order_by(Elder.id)).all()
    session.rollback()
    seed_district(session, seed=11, elders=50, today=TODAY)
    second = session.execute(select(Elder.name, Elder.latitude).order_by(Elder.id)).all()
    assert first == second
    session.rollback()
    seed_district(session, seed=12, elders=50, today=TODAY)
    other = session.execute(select(Elder.name, Elder.latitude).order_by(Elder.id)).all()
    assert other != first


def test_refuses_a_database_with_elders(session: Session) -> None:
    seed_district(session, seed=1, elders=10, today=TODAY)
    with pytest.raises(DistrictNotEmpty):
        seed_district(session, seed=1, elders=10, today=TODAY)
