"""Screenshots of the console while the demo's centre runs: what the README shows a newcomer.

``hyt demo --screenshots DIR`` takes them after the scripted loop, against the running centre,
with the Chromium the browser tests use (Playwright is a development dependency; without it the
demo says so and goes on). They are pictures of this run's data, not of a mock-up.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# Headless in a container: no sandbox (we run as root), no GPU, no background traffic.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
QUEUE_PNG = "demo-console-queue.png"
SCREEN_POP_PNG = "demo-console-screen-pop.png"


class ScreenshotsUnavailable(RuntimeError):
    """Playwright or Chromium is missing: the demo goes on without pictures."""


async def take_screenshots(base: str, username: str, password: str, out_dir: Path) -> list[Path]:
    """Log in as the demo operator, photograph the live queue, claim the top alarm, photograph
    the screen pop. Returns the files written."""
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError as exc:  # a production install has no dev extras
        raise ScreenshotsUnavailable(
            "playwright is not installed (pip install -e '.[dev]')"
        ) from exc
    if not Path(CHROMIUM).exists():
        raise ScreenshotsUnavailable(f"{CHROMIUM} not found (apt-get install chromium)")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 950}, locale="zh-CN")
            page.set_default_timeout(15_000)
            await page.goto(base + "/console")
            await page.fill("#username", username)
            await page.fill("#password", password)
            await page.click("#login-button")
            await expect(page.locator("#live")).to_have_text("实时", timeout=15_000)
            rows = page.locator("#queue-body tr[data-alarm-id]")
            # The demo leaves alarms waiting (the SOS, the pendant's Contact ID alarm); wait for
            # the first paint of the queue rather than a fixed time.
            with contextlib.suppress(AssertionError):
                await expect(rows.first).to_be_visible(timeout=5_000)
            written.append(out_dir / QUEUE_PNG)
            await page.screenshot(path=str(written[-1]), full_page=True)
            claim = page.locator("#queue-body tr[data-alarm-id] button.claim").first
            if await claim.count():
                await claim.click()
                await expect(page.locator("#pop-name")).not_to_be_empty(timeout=15_000)
                written.append(out_dir / SCREEN_POP_PNG)
                await page.screenshot(path=str(written[-1]), full_page=True)
        finally:
            await browser.close()
    return written
