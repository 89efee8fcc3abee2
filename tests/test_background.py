"""`hyt serve`'s timed work: expired offer waves move on, and queued SMS are sent."""

from __future__ import annotations

import asyncio
import datetime as dt
import io

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from callcenter import background, db
from callcenter.cases import open_case
from callcenter.models import Case, CaseKind, CaseState, OutboxMessage, OutboxStatus
from tests.factories import make_elder
from volunteers.models import Offer, OfferStatus, Volunteer
from volunteers.outbox_sender import ConsoleBackend
from volunteers.sms import queue_sms


def test_expired_wave_escalates_and_outbox_is_sent(fresh_engine: Engine) -> None:
    previous = db.get_engine()
    db.use_engine(fresh_engine)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    with Session(fresh_engine) as s:
        elder = make_elder(s)
        volunteer = Volunteer(code="B1", name="志愿者", phone="+8613700000999",
                              home_latitude=23.36, home_longitude=116.70)  # fmt: skip
        s.add(volunteer)
        s.flush()
        case = open_case(s, kind=CaseKind.SERVICE, priority=3, actor="test", elder_id=elder.id,
                         category_code="legal", item_code="legal.inheritance")  # fmt: skip
        s.add(Offer(case_id=case.id, volunteer_id=volunteer.id, wave=4, sent_at=past,
                    expires_at=past + dt.timedelta(minutes=3)))  # fmt: skip
        queue_sms(s, to="+8613700000999", body="【呼援通】测试", key="bg-test")
        s.commit()
        case_id = case.id
    printed = io.StringIO()

    async def one_tick() -> None:
        task = asyncio.get_running_loop().create_task(
            background.run_forever(tick_s=0.05, backend=ConsoleBackend(printed))
        )
        await asyncio.sleep(1.0)
        await background.stop(task)

    try:
        asyncio.run(one_tick())
    finally:
        db.use_engine(previous)
    with Session(fresh_engine) as s:
        assert s.scalars(select(Offer.status)).one() is OfferStatus.EXPIRED
        # Wave 4 was the category's last: nobody is left to ask, so an operator takes it.
        assert s.get(Case, case_id).state is CaseState.ESCALATED  # type: ignore[union-attr]
        assert s.scalars(select(OutboxMessage.status)).one() is OutboxStatus.SENT
    assert "测试" in printed.getvalue()
