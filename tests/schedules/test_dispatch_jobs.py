"""The dispatch timers as scheduler jobs: registered by import, and they move expired waves on."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

import schedules.dispatch_jobs as dispatch_jobs
from callcenter.cases import open_case
from callcenter.models import CaseKind
from schedules import runner
from schedules.settings import ScheduleSettings
from tests.factories import make_elder
from volunteers.models import Offer, OfferStatus, Volunteer


def test_jobs_are_registered() -> None:
    assert {"offers.advance", "outbox.send"} <= set(runner._registered)


def test_advance_job_expires_a_passed_wave(fresh_engine: Engine) -> None:
    now = dt.datetime.now(dt.UTC)
    with Session(fresh_engine) as s:
        volunteer = Volunteer(code="J1", name="志愿者", phone="+8613700000777",
                              home_latitude=23.36, home_longitude=116.70)  # fmt: skip
        s.add(volunteer)
        s.flush()
        case = open_case(s, kind=CaseKind.SERVICE, priority=3, actor="test",
                         elder_id=make_elder(s).id, category_code="legal",
                         item_code="legal.inheritance")  # fmt: skip
        s.add(Offer(case_id=case.id, volunteer_id=volunteer.id, wave=3,
                    expires_at=now - dt.timedelta(seconds=1)))  # fmt: skip
        s.commit()
    ctx = runner.JobContext(sessionmaker(fresh_engine), now, now, 0, ScheduleSettings())
    assert dispatch_jobs.advance_offers_job(ctx) == {"cases_moved": 1}
    with Session(fresh_engine) as s:
        assert s.scalars(select(Offer.status)).one() is OfferStatus.EXPIRED
