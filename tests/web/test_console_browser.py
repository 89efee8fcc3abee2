"""The console in a real browser (Debian's Chromium through Playwright) against the whole centre
(web + SIP in one loop, as ``hyt serve`` runs it) on a fresh SQLite database: a real SIP press
appears in the live queue, the operator claims it, sees the screen pop, dispatches volunteers,
sees a signed SMS acceptance arrive, and closes the case."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy import select
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from callcenter import db
from callcenter.demo import free_port
from callcenter.intake import Press, record_alarm
from callcenter.models import Alarm, AlarmKind, AlarmSource, Case, Role
from callcenter.settings import Settings, get_settings
from callcenter.web.auth import add_user
from devices.models import TerminalProtocol
from devices.simulator import press
from tests.factories import make_elder, make_terminal
from volunteers.models import AvailabilityWindow, Offer, Volunteer, VolunteerSkill
from volunteers.sms_settings import webhook_auth_token

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
PASSWORD = "correct horse battery"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
T = TypeVar("T")
pytestmark = pytest.mark.slow


class Centre:
    """The centre on its own event loop in a background thread, stopped in reverse order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="centre", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        from callcenter.server import start_all

        self._stop = asyncio.Event()
        try:
            async with AsyncExitStack() as stack:
                await start_all(self.settings, stack, background_jobs=False, scheduler=False)
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # reported to the test thread by start()
            self._error = exc
            self._ready.set()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(30), "the centre did not start within 30 s"
        if self._error is not None:
            raise self._error

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the centre did not stop within 30 s"


@dataclass
class World:
    centre: Centre
    base: str
    sip: tuple[str, int]
    sip_user: str
    elder_name: str
    sos_elder_id: int


@pytest.fixture
def world(
    sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    path = tmp_path / "console.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    http_port = free_port(socket.SOCK_STREAM)
    sip_port = free_port(socket.SOCK_DGRAM)
    base = f"http://127.0.0.1:{http_port}"
    # The webhook checks Twilio signatures against the public address: ours, here.
    for name, value in {
        "HYT_PUBLIC_BASE_URL": base,
        "HYT_DATABASE_URL": url,
        "HYT_HTTP_PORT": str(http_port),
        "HYT_SIP_PORT": str(sip_port),
        "HYT_HTTP_HOST": "127.0.0.1",
        "HYT_SIP_HOST": "127.0.0.1",
    }.items():
        monkeypatch.setenv(name, value)  # fmt: skip
    get_settings.cache_clear()
    previous = db.get_engine()
    engine = db.make_engine(url)
    db.use_engine(engine)
    with Session(engine, expire_on_commit=False) as s:
        add_user(s, username="op1", password=PASSWORD, role=Role.OPERATOR, display_name="张接警")
        elder = make_elder(s, name="林惜娥", medical_notes="高血压", allergies=["青霉素"])
        terminal = make_terminal(s, elder, TerminalProtocol.DTMF, battery_pct=81)
        sos_elder = make_elder(s, name="陈来顺", name_pinyin="chen lai shun", name_initials="cls")
        for n, (name, dlat) in enumerate((("陈晓燕", 0.002), ("黄志伟", 0.004), ("蔡思敏", 0.006))):
            s.add(Volunteer(
                code=f"BV{n}", name=name, phone=f"+8613900001{n:03d}",
                home_latitude=elder.latitude + dlat, home_longitude=elder.longitude,
                skills=[VolunteerSkill(category_code="appliances", level=2)],
                availability=[AvailabilityWindow(weekday=d, start_minute=0, end_minute=1440)
                              for d in range(7)],
            ))  # fmt: skip
        s.commit()
    centre = Centre(get_settings())
    centre.start()
    try:
        yield World(
            centre, base, ("127.0.0.1", sip_port), terminal.sip_user or "", elder.name, sos_elder.id
        )
    finally:
        centre.stop()
        db.use_engine(previous)
        engine.dispose()
        get_settings.cache_clear()


def sms_reply(base: str, phone: str, body: str) -> str:
    """A volunteer's SMS as Twilio delivers it: signed, to the real webhook."""
    path = "/webhooks/twilio/sms"
    params = {"From": phone, "Body": body, "MessageSid": f"SMbrowser{time.time_ns()}"}
    signature = RequestValidator(webhook_auth_token()).compute_signature(base + path, params)
    response = httpx.post(base + path, data=params, headers={"X-Twilio-Signature": signature})
    response.raise_for_status()
    return response.text


def query(fn: Any) -> Any:
    with db.session_factory()() as session:
        return fn(session)


def log_in(page: Page, base: str) -> None:
    page.goto(base + "/console")
    expect(page).to_have_url(f"{base}/login?next=/console")
    page.fill("#username", "op1")
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    expect(page).to_have_url(f"{base}/console")
    expect(page.locator("#live")).to_have_text("实时")  # the event stream is open


def test_press_to_closed_case_in_the_browser(world: World) -> None:
    started = time.monotonic()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 950}, locale="zh-CN")
            # Generous bounds for a loaded machine; every wait is for a condition, not a sleep.
            page.set_default_timeout(15_000)
            expect.set_options(timeout=15_000)
            log_in(page, world.base)
            expect(page.locator("#queue-empty")).to_be_visible()

            # A real SIP call from the DTMF terminal, service digit "2"; the call goes on
            # (prompt) while the page is watched.
            call = asyncio.run_coroutine_threadsafe(
                press(world.sip, sip_user=world.sip_user, digits="2"), world.centre.loop
            )
            row = page.locator("#queue-body tr[data-alarm-id]")
            expect(row).to_have_count(1, timeout=20_000)
            alarm_id = int(row.get_attribute("data-alarm-id") or 0)
            shown_at_ms = int(row.get_attribute("data-shown-at") or 0)
            alarm = query(lambda s: s.get(Alarm, alarm_id))
            # Honest measure: from the alarm's received_at (the centre's clock, set just before
            # the commit) to the moment the page's script inserted the row (the browser's
            # clock, Date.now(); same machine, same clock).
            latency_s = shown_at_ms / 1000 - alarm.received_at.timestamp()
            print(f"queue latency: {latency_s:.3f} s from received_at to the row in the page")
            assert 0 <= latency_s < 1.0
            assert call.result(60).answered
            expect(row.locator("td.elder")).to_contain_text(world.elder_name)

            # An SOS from another elder (stored as the pendant path stores it) goes to the top,
            # highlighted, although it came later.
            query(lambda s: record_alarm(s, Press(source=AlarmSource.CONTACT_ID,
                                                  kind=AlarmKind.LIFE_SAFETY, dedup_key="sos-1",
                                                  elder_id=world.sos_elder_id)))  # fmt: skip
            rows = page.locator("#queue-body tr[data-alarm-id]")
            expect(rows).to_have_count(2)
            expect(rows.first).to_have_class("life-safety")
            expect(rows.first.locator("td.elder")).to_contain_text("陈来顺")
            row = page.locator(f"#queue-body tr[data-alarm-id='{alarm_id}']")
            expect(row.locator("td.wait")).not_to_have_text("0:00", timeout=5_000)  # ticking
            page.screenshot(path=str(SCREENSHOTS / "console-queue.png"), full_page=True)

            row.locator("button.claim").click()
            expect(page.locator("#pop-name")).to_contain_text(world.elder_name)
            expect(page.locator("#pop-contacts")).to_contain_text("李梅")
            expect(page.locator("#pop-facts")).to_contain_text("青霉素")
            expect(page.locator("#pop-terminals")).to_contain_text("81%")
            expect(page.locator("#case-panel")).to_be_visible()
            expect(row).to_have_attribute("data-status", "claimed")
            page.screenshot(path=str(SCREENSHOTS / "console-screen-pop.png"), full_page=True)

            page.select_option("#category", "appliances")
            page.select_option("#item", "appliances.replace_bulb")
            page.fill("#case-summary", "客厅灯泡坏了")
            page.click("#set-item")
            expect(page.locator("#candidates li.candidate")).to_have_count(3)
            expect(page.locator("#candidates li.candidate").first).to_contain_text("陈晓燕")
            page.click("#dispatch")
            expect(page.locator("#offers li.offer[data-status=pending]")).to_have_count(3)

            page.select_option("#outcome", "sent_volunteers")
            page.click("#save-outcome")
            expect(page.locator("#outcome-msg")).to_have_text("已保存，告警已处理")
            expect(rows).to_have_count(1)  # handled: only the SOS is left
            expect(rows.first).to_contain_text("陈来顺")

            case_id = alarm.case_id
            case_code, phones = query(lambda s: (
                s.get(Case, case_id).code,
                list(s.scalars(select(Volunteer.phone).join(Offer, Offer.volunteer_id
                     == Volunteer.id).where(Offer.case_id == case_id).order_by(Offer.id))),
            ))  # fmt: skip
            answer = sms_reply(world.base, phones[0], f"接 {case_code}")
            expect(page.locator("#offers li.offer[data-status=accepted]")).to_have_count(1)
            expect(page.locator("#offers li.offer[data-status=stood_down]")).to_have_count(2)
            expect(page.locator("#case-state")).to_have_text("处置")

            # The volunteer reports from the phone page; then the operator closes the case.
            link = answer.split("/v/offer/")[1].split("<")[0].split()[0]
            httpx.post(f"{world.base}/v/offer/{link}/arrived")
            httpx.post(f"{world.base}/v/offer/{link}/feedback",
                       data={"what_was_done": "更换了客厅灯泡", "minutes": "20"})  # fmt: skip
            expect(page.locator("#case-state")).to_have_text("反馈")
            page.click("#close-case")
            expect(page.locator("#case-panel")).to_have_attribute("data-state", "closed")
        finally:
            browser.close()
    assert query(lambda s: s.get(Case, case_id).state.value) == "closed"
    print(f"browser test body took {time.monotonic() - started:.1f} s")
