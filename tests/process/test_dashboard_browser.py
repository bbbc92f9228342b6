"""The dashboard in a real browser: headless Chromium from the distribution's
packages, driven by Playwright for Python pointed at the system browser.

A ``coordinator serve`` process (the example app, approval above 10 euros, so
o-1002 waits); the example orders are submitted through the API; the runs list fills
in by itself; a compensated order's timeline shows its failure and undo; the
approvals queue shows o-1002, and a click on "approve" completes it, as the API
then says. Every page is also checked at 375 px: nothing wider than the screen.
Screenshots go to the test's directory, or to ``$DASHBOARD_SCREENSHOTS`` (how the
ones in docs/screenshots/ are made).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ORDERS = ROOT / "examples" / "orders" / "orders.jsonl"
OPERATOR = "ada-operator-secret-0001"
VIEWER = "vic-viewer-secret-000002"
TOKENS = f"ada:operator,approver:{OPERATOR} vic:viewer:{VIEWER}"
WAIT_MS = 15_000
READY = re.compile(r"on (http://[\d.]+:\d+) ")


def chromium() -> str:
    """The system's Chromium (Debian: apt-get install chromium); skip without it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail("no Chromium on PATH: apt-get install -y chromium (.ci/run does)")
    pytest.skip("no Chromium on PATH: apt-get install -y chromium")


@asynccontextmanager
async def server(
    work: Path, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> AsyncIterator[str]:
    """``coordinator serve --port 0 ARGS`` (approval above 10 euros; by default its
    state in ``work``); its base URL once it says it listens."""
    log = work / "serve.log"
    env = {**os.environ, **(env or {}), "COORDINATOR_API_TOKENS": TOKENS, "PYTHONPATH": str(ROOT), "COLUMNS": "300"}
    where = args or ("--state-dir", str(work / "state"))
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent_coordinator",
            "serve",
            "--port",
            "0",
            "--param",
            "approval_threshold_cents=1000",
            *where,
            stdout=out,
            stderr=out,
            cwd=cwd or work,
            env=env,
        )
    try:
        for _ in range(300):
            match = READY.search(log.read_text())
            if match:
                break
            if proc.returncode is not None:
                raise AssertionError(f"the server exited {proc.returncode}:\n{log.read_text()}")
            await asyncio.sleep(0.05)  # polling the server's output for its ready line, bounded
        else:
            raise AssertionError(f"the server never said it listens:\n{log.read_text()}")
        yield match[1]
    finally:
        proc.terminate()
        await proc.wait()


async def test_the_dashboard_lists_explains_and_approves_in_a_real_browser(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    browser_path = chromium()
    shots = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path)
    await asyncio.to_thread(shots.mkdir, parents=True, exist_ok=True)
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    async with server(tmp_path) as base, httpx.AsyncClient(base_url=base, timeout=30) as api, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(base + "/")
        await expect(page.locator("#error")).to_contain_text("enter an API token")
        await page.fill("#token", VIEWER)
        await page.click("#login button")
        await expect(page.locator("#count")).to_have_text("0 runs", timeout=WAIT_MS)

        for line in ORDERS.read_text().splitlines():
            if line.strip():
                answer = await api.post("/workflows/order-fulfilment/runs", json=json.loads(line), headers=operator)
                assert answer.status_code == 202, answer.text
        # The list updates by itself: every order, each with its outcome.
        rows = page.locator("#runs tbody tr")
        await expect(rows).to_have_count(8, timeout=WAIT_MS)
        await expect(page.locator("#runs tbody tr", has_text="o-1004")).to_contain_text("compensated", timeout=WAIT_MS)
        await expect(page.locator("#runs tbody tr", has_text="o-1002")).to_contain_text("awaiting_approval")
        await page.screenshot(path=str(shots / "runs.png"))

        # A compensated order's timeline: the failure, then the undo of what was done.
        await page.click("text=o-1004")
        await expect(page.locator("#header")).to_contain_text("card declined", timeout=WAIT_MS)
        timeline = page.locator("#timeline")
        for event in ("OrderPlaced", "InventoryReserved", "PaymentFailed", "InventoryReleased", "OrderCancelled"):
            await expect(timeline).to_contain_text(event)
        await expect(page.locator("#steps tbody tr", has_text="payment")).to_contain_text("failed")
        await page.screenshot(path=str(shots / "timeline.png"), full_page=True)

        # The approvals queue, and an approval by a click -- as a token that may approve.
        await page.goto(base + "/ui/approvals")
        await page.fill("#token", OPERATOR)
        await page.click("#login button")
        waiting = page.locator("#approvals tbody tr", has_text="o-1002")
        await expect(waiting).to_contain_text("payment", timeout=WAIT_MS)
        await page.screenshot(path=str(shots / "approvals.png"))
        await waiting.locator("input").fill("checked with the customer")
        await waiting.locator("button.approve").click()
        await expect(waiting).to_contain_text("approved", timeout=WAIT_MS)

        for _ in range(300):  # the API says how it ended; the approval ran in the server
            detail = (await api.get("/runs/o-1002", headers=operator)).json()
            if detail["status"] == "completed":
                break
            await asyncio.sleep(0.05)  # polling the run's record, bounded
        assert detail["status"] == "completed", detail
        approved = next(e for e in detail["timeline"] if e["type"] == "PaymentApproved")
        assert approved["by"] == "ada"  # the token's name, not a field anyone could type

        # Readable at 375 px: no page is wider than the screen (tables scroll inside).
        await page.set_viewport_size({"width": 375, "height": 800})
        for path in ("/", "/ui/runs/o-1004", "/ui/approvals"):
            await page.goto(base + path)
            await expect(page.locator("main h1")).to_be_visible()
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, f"{path} is {width}px wide at 375px"
        await page.goto(base + "/")
        await expect(page.locator("#runs tbody tr")).to_have_count(8, timeout=WAIT_MS)
        await page.screenshot(path=str(shots / "runs-375.png"))
        await browser.close()
