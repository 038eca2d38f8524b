"""`gateway demo --serve` prints a sign-in link; an approver signs in at the demo issuer's login
page in headless Chromium and releases a request held with `Prefer: wait=30`."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import threading
import time

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
START_TIMEOUT_S = 60.0


@pytest.fixture
def demo(tmp_path):
    """`gateway demo --serve`, and what it printed up to `Ctrl-C stops.`."""
    proc = subprocess.Popen(
        ["gateway", "demo", "--serve", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    printed = []
    deadline = time.monotonic() + START_TIMEOUT_S
    while not printed or "Ctrl-C stops." not in printed[-1]:
        assert proc.poll() is None, "".join(printed)
        printed.append(lines.get(timeout=max(deadline - time.monotonic(), 0.1)))
    yield "".join(printed)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(40)  # drains in-flight requests first
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_demo_prints_a_sign_in_link_that_signs_an_approver_in(demo) -> None:
    login = re.search(r"approve it in a browser: (\S+/_gateway/approvals/login)", demo)
    assert login, demo
    gateway = login.group(1).removesuffix("/_gateway/approvals/login")
    alice = re.search(r"Bearer (\S+)' -d '\{\"model\":\"llama", demo).group(1)
    body = {"model": "credit-risk-v1", "messages": [{"role": "user", "content": "score"}]}
    held: dict = {}

    def request() -> None:
        held["response"] = httpx.post(
            f"{gateway}/llama/v1/chat/completions",
            json=body,
            headers={
                "authorization": f"Bearer {alice}",
                "prefer": "wait=30",
                "x-approval-reason": "quarterly review",
            },
            timeout=40,
        )

    thread = threading.Thread(target=request)
    thread.start()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(login.group(1))
        expect(page.locator("h1")).to_have_text("Demo issuer: sign in")
        page.click("#as-rita")
        page.wait_for_url(f"{gateway}/_gateway/approvals")
        expect(page.locator("#who")).to_contain_text("rita@example.com (risk-officers)")
        row = page.locator("#rows tr", has_text="alice@example.com")
        expect(row).to_have_count(1, timeout=10_000)
        row.locator("button.approve").click()
        thread.join(30)
        # A session that ends (its cookie gone, as when the ID token expires) shows the
        # sign-in link again at the page's next refresh.
        page.context.clear_cookies()
        expect(page.locator("#signin-link")).to_be_visible(timeout=10_000)
        browser.close()
    assert held["response"].status_code == 200, held["response"].text
