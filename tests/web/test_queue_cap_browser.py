"""The console in Chromium with a storm's long queue: every life-safety alarm and the first
others are listed, and a line at the end says how many more wait unseen (issue #7). Without the
cap the page listed every alarm and had no such line."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from playwright.sync_api import expect, sync_playwright
from sqlalchemy import insert
from sqlalchemy.orm import Session

from callcenter import console, db
from callcenter.db import utcnow
from callcenter.models import PRIORITY_BY_KIND, Alarm, AlarmKind, AlarmSource, AlarmStatus
from tests.web.test_console_browser import CHROMIUM, CHROMIUM_ARGS, World, log_in
from tests.web.test_console_browser import world as world  # the centre on SQLite: a fixture

pytestmark = pytest.mark.slow
WAITING = 1_434  # technical alarms: 200 listed, 1,234 not


def test_the_console_says_how_many_alarms_it_does_not_show(world: World) -> None:
    start = utcnow() - dt.timedelta(hours=1)
    with Session(db.get_engine()) as s:
        s.execute(insert(Alarm), [
            {"received_at": start + n * dt.timedelta(seconds=1), "source": AlarmSource.SCAIP,
             "kind": AlarmKind.TECHNICAL, "priority": PRIORITY_BY_KIND[AlarmKind.TECHNICAL],
             "caller": "", "dedup_key": f"storm-{n}", "status": AlarmStatus.NEW, "raw": {}}
            for n in range(WAITING)
        ])  # fmt: skip
        # A life-safety alarm received after all of them is listed first all the same.
        s.add(Alarm(received_at=utcnow(), source=AlarmSource.SCAIP, kind=AlarmKind.LIFE_SAFETY,
                    priority=1, elder_id=world.sos_elder_id, dedup_key="late-sos"))  # fmt: skip
        s.commit()
    not_shown = WAITING - console.QUEUE_OTHERS_SHOWN
    assert not_shown == 1_234
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 950}, locale="zh-CN")
            page.set_default_timeout(15_000)
            expect.set_options(timeout=15_000)
            log_in(page, world.base)
            rows = page.locator("#queue-body tr[data-alarm-id]")
            expect(rows).to_have_count(1 + console.QUEUE_OTHERS_SHOWN)
            expect(rows.first).to_have_class(re.compile(r"\blife-safety\b"))
            more = page.locator("#queue-more")
            expect(more).to_be_visible()
            expect(more).to_have_text("另有 1,234 条未显示（按紧急程度和等待时间排序）")
            expect(more).to_have_attribute("title", "设备故障 1,234")
            # The line follows the stream: one more alarm waiting, one more not shown.
            with Session(db.get_engine()) as s:
                kind = AlarmKind.TECHNICAL
                s.add(Alarm(source=AlarmSource.SCAIP, kind=kind, priority=PRIORITY_BY_KIND[kind],
                            dedup_key="one-more"))  # fmt: skip
                s.commit()
            expect(more).to_have_text("另有 1,235 条未显示（按紧急程度和等待时间排序）")
            page.goto(world.base + "/console?lang=en")
            expect(page.locator("#queue-more")).to_have_text(
                "1,235 more not shown (sorted by urgency and waiting time)"
            )
        finally:
            browser.close()
