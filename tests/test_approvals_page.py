"""The approvers' web page in headless Chromium (Debian's, driven by Playwright).

Must show: a request held with `Prefer: wait=30` is answered within a second of an approver's
click; the requester cannot approve it (even though rob is in the approvers' group); the log
names both people.
"""

from __future__ import annotations

import threading

import httpx
import peers
import pytest
from approvals_helpers import MODEL, Client, approvals_config, woken, woken_by_decision
from conftest import entries
from playwright.sync_api import Page, expect, sync_playwright

from gateway.demo import pii

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def page():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser.new_page()
        browser.close()


def sign_in(page: Page, url: str, token: str) -> None:
    page.goto(f"{url}/_gateway/approvals")
    page.fill("#token", token)
    page.click("#signin")
    expect(page.locator("#signed-in")).to_be_visible()


def test_approve_in_the_browser_releases_the_held_request(
    page, start_gateway, issuer, upstream, tmp_path
) -> None:
    gateway = start_gateway(approvals_config(issuer.url, upstream.url, tmp_path))
    rob_token = peers.mint(issuer.url, "rob@example.com", ["analysts", "risk-officers"])
    rita_token = peers.mint(issuer.url, "rita@example.com", ["risk-officers"])
    rob = Client(gateway.url, rob_token)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "score " + pii.EMAIL}]}
    held: dict = {}

    def request() -> None:
        response = rob.infer(body, wait=30, reason="quarterly review")
        held.update(response=response)

    thread = threading.Thread(target=request)
    thread.start()

    # The page is static: it loads without a token and says nothing until signed in.
    html = httpx.get(f"{gateway.url}/_gateway/approvals", headers={"accept": "text/html"})
    assert html.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in html.headers["content-security-policy"]

    # The requester sees his own request but cannot approve it.
    sign_in(page, gateway.url, rob_token)
    row = page.locator("#rows tr", has_text="rob@example.com")
    expect(row).to_have_count(1, timeout=10_000)
    row.locator("button.approve").click()
    expect(page.locator("#message")).to_contain_text("nobody may decide on their own request")
    page.click("#signout")

    # An approver signs in, sees requester, model, reason and a masked preview, and approves.
    sign_in(page, gateway.url, rita_token)
    row = page.locator("#rows tr", has_text="rob@example.com")
    expect(row).to_have_count(1, timeout=10_000)
    expect(row).to_contain_text(MODEL)
    expect(row).to_contain_text("quarterly review")
    expect(row.locator("pre")).to_contain_text("[EMAIL]")
    assert pii.EMAIL not in row.inner_text()
    row.locator("input.reason").fill("within limits")
    assert "response" not in held  # still held
    before = woken(gateway.url)
    row.locator("button.approve").click()
    thread.join(30)
    assert held["response"].status_code == 200, held["response"].text
    assert woken_by_decision(before, woken(gateway.url))  # the click released it, not a poll
    expect(page.locator("#message")).to_contain_text(": approved")
    expect(page.locator("#rows tr")).to_have_count(0)

    gateway.stop()
    log = entries(tmp_path / "audit")
    requested = next(e for e in log if e["type"] == "approval.requested")
    decided = next(e for e in log if e["type"] == "approval.decided")
    assert requested["subject"] == "rob@example.com"
    assert (decided["approver"], decided["requester"]) == ("rita@example.com", "rob@example.com")
    assert decided["reason"] == "within limits"
    inference = next(e for e in log if e["type"] == "inference")
    assert inference["approval_id"] == decided["approval_id"]
    assert inference["approved_by"] == ["rita@example.com"]
