"""The dashboard in Debian's Chromium (Playwright drives /usr/bin/chromium; nothing is downloaded):
log in, submit from the form, watch the row reach `stored` with its cost, play the video, cancel
a slow one from its page, redrive a dead letter. Screenshots go to
.vidpipe/test-artifacts/browser/ (gitignored); the path is printed."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from tests.e2e.gateway_harness import API_KEY, start_gateway
from tests.e2e.harness import Pipeline
from vidpipe.ops.offsets import end_offsets

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".vidpipe" / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CORE = ("submitter", "poller", "fetcher", "recorder")


async def _letters(pipeline: Pipeline) -> int:
    topic = pipeline.settings.topics.deadletter
    return sum((await end_offsets(pipeline.bootstrap_servers, [topic])).values())


async def test_submit_watch_play_and_redrive_in_chromium(pipeline: Pipeline) -> None:
    for name in CORE:
        pipeline.start(name)
    gateway = start_gateway(pipeline)
    # A message that is not JSON: the submitter and the recorder dead-letter it.
    await pipeline.publish_raw(b"this is not json", key="browser-poison")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {ARTIFACTS}")

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(f"{gateway.url}/")
            await page.fill("#api-key", API_KEY)
            await page.click("#login-form button[type=submit]")
            await expect(page.locator("#page-requests")).to_be_visible()

            # Submit from the form; the row appears and reaches `stored`.
            await page.fill("#prompt", "a kingfisher over a river, seen from the browser")
            await page.click("#submit")
            result = page.locator("#submit-result")
            await expect(result).to_have_text(re.compile(r"^accepted: "), timeout=30_000)
            rid = await result.get_attribute("data-request-id")
            assert rid
            status = page.locator(f'#requests tr[data-request-id="{rid}"] td.status')
            await expect(status).to_have_text("stored", timeout=120_000)
            # Its final cost, from the versioned price table (docs/costs.md).
            cost = page.locator(f'#requests tr[data-request-id="{rid}"] td.cost')
            await expect(cost).to_have_text(re.compile(r"^\$[0-9]+\.[0-9]{2}$"))
            await page.screenshot(path=ARTIFACTS / "requests.png", full_page=True)

            # One request: the timeline from the log, and the video plays (it has a duration).
            await page.click(f'#requests tr[data-request-id="{rid}"] a')
            await expect(page.locator("#timeline li[data-event-type=VideoStored]")).to_have_count(
                1, timeout=30_000
            )
            await expect(page.locator('dd[data-fact="provider job id"]')).not_to_be_empty()
            await page.wait_for_function(
                "() => { const v = document.querySelector('#video');"
                " return v && v.readyState >= 1 && v.duration > 0; }",
                timeout=30_000,
            )
            duration = await page.evaluate("document.querySelector('#video').duration")
            assert duration > 1, duration
            played = await page.evaluate("document.querySelector('#video').play().then(() => true)")
            assert played is True
            await page.wait_for_function(
                "() => document.querySelector('#video').currentTime > 0", timeout=30_000
            )
            await page.screenshot(path=ARTIFACTS / "request.png", full_page=True)

            # A slow one, cancelled from its page: the job is stopped and the record says so.
            await page.click("nav a[data-page=requests]")
            await page.fill("#prompt", "a slow heron, cancelled from the browser [emulator:slow]")
            await page.click("#submit")
            await expect(result).not_to_have_attribute("data-request-id", rid, timeout=30_000)
            slow = await result.get_attribute("data-request-id")
            assert slow and slow != rid
            await page.goto(f"{gateway.url}/#/request/{slow}")
            await expect(page.locator('dd[data-fact="provider job id"]')).not_to_be_empty(
                timeout=60_000
            )
            await page.click("#cancel")
            await expect(page.locator("#cancel-result")).to_have_text(
                re.compile(r"^cancel requested"), timeout=30_000
            )
            await expect(page.locator('dd[data-fact="status"]')).to_have_text(
                "cancelled", timeout=60_000
            )
            await expect(page.locator("#cancel")).to_be_hidden()
            await page.screenshot(path=ARTIFACTS / "cancelled.png", full_page=True)

            # The stages: groups with members, and the dead letter redriven from its button.
            await page.click("nav a[data-page=stages]")
            submitter_row = page.locator(
                f'#groups tr[data-group="{pipeline.settings.group_id("submitter")}"]'
            )
            await expect(submitter_row).to_contain_text("Stable", timeout=30_000)
            letters = page.locator("#deadletters tbody tr")
            for _ in range(60):
                if await letters.count():
                    break
                await page.reload()
                await asyncio.sleep(1)
            await expect(letters.first).to_be_visible()
            before = await _letters(pipeline)
            await page.screenshot(path=ARTIFACTS / "stages.png", full_page=True)
            await letters.first.locator("button.redrive").click()
            await expect(page.locator("#redrive-result")).to_have_text(
                re.compile(r"^redriven: [1-9]"), timeout=60_000
            )
            # Still poison: the redriven copy is dead-lettered again, as a new letter.
            deadline = time.monotonic() + 60
            while await _letters(pipeline) <= before:
                assert time.monotonic() < deadline, "the redriven message never came back"
                await asyncio.sleep(0.5)
            await page.screenshot(path=ARTIFACTS / "redriven.png", full_page=True)
        finally:
            await browser.close()
