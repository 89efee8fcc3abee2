"""Rows for the schedules tests: volunteers who can (or cannot) make visits, elders by risk."""

from __future__ import annotations

import datetime as dt
import itertools

from sqlalchemy.orm import Session

from callcenter.models import Elder, RiskLevel
from tests.factories import make_elder
from volunteers.models import Volunteer, VolunteerSkill

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
_numbers = itertools.count(1)


def local(year: int, month: int, day: int, hour: int = 3) -> dt.datetime:
    """A moment in the centre's time zone (Asia/Shanghai has no DST: a fixed offset is exact)."""
    return dt.datetime(year, month, day, hour, tzinfo=SHANGHAI)


def make_volunteer(
    session: Session, community: str = "金湖社区", *, visits: bool = True, name: str = "林晓燕"
) -> Volunteer:
    n = next(_numbers)
    volunteer = Volunteer(
        code=f"SV{n:05d}",
        name=name,
        phone=f"+86139{n:08d}",
        community=community,
        home_latitude=23.365,
        home_longitude=116.705,
    )
    volunteer.skills = [VolunteerSkill(category_code="visits" if visits else "errands")]
    session.add(volunteer)
    session.flush()
    return volunteer


def make_elders(
    session: Session,
    count: int,
    risk: RiskLevel = RiskLevel.MEDIUM,
    *,
    street: str = "金霞街道",
    community: str = "金湖社区",
) -> list[Elder]:
    return [
        make_elder(session, risk_level=risk, street=street, community=community)
        for _ in range(count)
    ]
