"""The console's "接通通话 Connect call" button in a real browser (Debian's Chromium through
Playwright), against the whole centre in one loop as ``hyt serve`` runs it: a SIPp terminal's SOS
press, the operator claims it, clicks the button, their desk phone rings and is answered, the
console shows the call connected, then ended with its recording."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from sqlalchemy.orm import Session

from callcenter import db
from callcenter.demo import free_port
from callcenter.models import Role
from callcenter.settings import get_settings
from callcenter.web.auth import add_user
from devices.models import TerminalProtocol
from tests.factories import make_elder, make_terminal
from tests.sip.pcap import write_tone_pcap
from tests.sip.sip_phone import FakePhone, seconds_of
from tests.sip.sipp import call_scenario, run_sipp
from tests.web.test_console_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    SCREENSHOTS,
    Centre,
    log_in,
)

pytestmark = pytest.mark.slow


@dataclass
class World:
    base: str
    sip: tuple[str, int]
    sip_user: str
    phone: FakePhone


@pytest.fixture
def world(
    sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    path = tmp_path / "voice.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    http_port, sip_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    for name, value in {
        "HYT_DATABASE_URL": url,
        "HYT_HTTP_PORT": str(http_port),
        "HYT_SIP_PORT": str(sip_port),
        "HYT_HTTP_HOST": "127.0.0.1",
        "HYT_SIP_HOST": "127.0.0.1",
        "HYT_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "HYT_VOICE_HOLD_REMINDER_S": "0",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    previous = db.get_engine()
    engine = db.make_engine(url)
    db.use_engine(engine)
    phone = FakePhone(tone_hz=1000)
    with Session(engine) as s:
        operator = add_user(s, username="op1", password=PASSWORD, role=Role.OPERATOR)
        operator.sip_uri = phone.uri
        terminal = make_terminal(s, make_elder(s, name="林惜娥"), TerminalProtocol.EXTENSION)
        sip_user = terminal.sip_user or ""
        s.commit()
    centre = Centre(get_settings())
    centre.start()
    try:
        yield World(f"http://127.0.0.1:{http_port}", ("127.0.0.1", sip_port), sip_user, phone)
    finally:
        centre.stop()
        phone.close()
        db.use_engine(previous)
        engine.dispose()
        get_settings.cache_clear()


def test_connect_call_button(world: World, tmp_path: Path) -> None:
    pcap = write_tone_pcap(tmp_path / "elder.pcap", 440, seconds=20)
    sos = call_scenario(user=world.sip_user, dialled="110", hangup="centre", dtmf_pcap=pcap)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p, ThreadPoolExecutor(1) as pool:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 950}, locale="zh-CN")
            page.set_default_timeout(15_000)
            expect.set_options(timeout=15_000)
            log_in(page, world.base)
            elder = pool.submit(run_sipp, sos, world.sip, timeout_s=50)
            row = page.locator("#queue-body tr[data-alarm-id]")
            expect(row).to_have_count(1, timeout=20_000)
            expect(page.locator("#voice-panel")).to_be_hidden()
            row.locator("button.claim").click()
            expect(page.locator("#pop-name")).to_contain_text("林惜娥")
            button = page.locator("#voice-connect")
            expect(button).to_have_text("接通通话")
            button.click()
            calls = page.locator("#voice-calls li.voice-call")
            expect(calls.first).to_have_attribute("data-state", "connected")
            expect(button).to_be_disabled()  # one call at a time
            expect(calls.first).to_contain_text("通话中")
            page.screenshot(path=str(SCREENSHOTS / "console-voice.png"), full_page=True)
            world.phone.answered.wait(5)
            page.wait_for_timeout(1500)  # a little conversation
            world.phone.hang_up()
            assert elder.result(timeout=40).ok  # the elder's terminal got the centre's BYE
            expect(calls.first).to_have_attribute("data-state", "ended")
            expect(calls.first).to_contain_text("接警员挂机")
            expect(calls.first.locator("audio")).to_have_count(1)
            expect(button).to_be_enabled()
            assert seconds_of(world.phone.heard) > 1
        finally:
            browser.close()
