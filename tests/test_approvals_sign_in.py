"""Approvers sign in with the IdP: Chromium at django-oauth-toolkit's own login page.

Must show: headless Chromium (Debian's, via Playwright) signs an approver in at the IdP's login
page (authorization code + PKCE, state and nonce), the session cookie is HttpOnly and
SameSite=Lax, the approver's click releases a request held with `Prefer: wait=30` (the
requester's opaque token checked by introspection), CSRF is enforced, and sign-out ends the
session.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import peers
import pytest
from approvals_helpers import MODEL
from conftest import UPSTREAM_KEY, entries
from dot_provider import fixture as dot
from playwright.sync_api import expect, sync_playwright

from gateway.config import ConfigError, load

CHROMIUM = "/usr/bin/chromium"
INTROSPECTOR = ("gw-introspect", "gw-introspect-secret")
PAGE_CLIENT = ("gateway-approvals", "approvals-secret")
CLI = ("risk-cli", "risk-cli-secret")


def free_port() -> int:
    """A port for the gateway, known before it starts: the IdP registers its redirect URI."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def config(provider: str, upstream: str, port: int, tmp: Path) -> str:
    keys = tmp / "keys"
    subprocess.run(["gateway", "keys", "init", "--dir", str(keys)], check=True, capture_output=True)
    return f"""
[server]
listen = "127.0.0.1:{port}"

[[identity.issuers]]
name = "staff"
issuer = "{dot.issuer(provider)}"
audience = "inference-gateway"
subject_claim = "preferred_username"  # DOT's `sub` is a user number
introspection = true
introspection_client_id = "{INTROSPECTOR[0]}"
introspection_client_secret_env = "GW_INTROSPECTION_SECRET"

[audit]
dir = "{tmp / "audit"}"
origin = "test.gateway/audit"
signing_key = "{keys / "signing.key"}"
sealing_key = "{keys / "sealing.key"}"

[approvals]
store = "sqlite://{tmp}/approvals.db"
hold_max_s = 30
sign_in_issuer = "staff"
client_id = "{PAGE_CLIENT[0]}"
client_secret_env = "GW_APPROVALS_SECRET"
public_url = "http://127.0.0.1:{port}"

[[connections]]
name = "llama"
upstream = "{upstream}"
credential_env = "TEST_UPSTREAM_KEY"

[[rules]]
id = "credit-risk"
groups = ["underwriters"]
models = ["credit-risk-*"]
action = "approve"
approvers = ["risk-officers"]
"""


@pytest.fixture
def gateway(dot_provider, upstream, tmp_path):
    provider = dot_provider.url
    port = free_port()
    dot.create_client(provider, *INTROSPECTOR)
    dot.create_client(provider, *CLI, grant_type="password")
    dot.create_client(
        provider,
        *PAGE_CLIENT,
        grant_type="authorization-code",
        redirect_uris=f"http://127.0.0.1:{port}/_gateway/approvals/callback",
        algorithm="RS256",
        skip_authorization=True,
    )
    dot.create_user(provider, "uma", "uma-pw", ["underwriters"])
    dot.create_user(provider, "rita", "rita-pw", ["risk-officers"])
    path = tmp_path / "gateway.toml"
    path.write_text(config(provider, upstream.url, port, tmp_path))
    env = {
        **os.environ,
        "TEST_UPSTREAM_KEY": UPSTREAM_KEY,
        "GW_INTROSPECTION_SECRET": INTROSPECTOR[1],
        "GW_APPROVALS_SECRET": PAGE_CLIENT[1],
    }
    with peers.launch(["gateway", "serve", "-c", str(path)], env=env) as peer:
        peer.audit_dir = tmp_path / "audit"  # type: ignore[attr-defined]
        peer.config_path = path  # type: ignore[attr-defined]
        peer.env = env  # type: ignore[attr-defined]
        yield peer


def test_approver_signs_in_at_the_idp_and_releases_a_held_request(gateway, dot_provider):
    provider = dot_provider.url
    uma = dot.password_token(provider, *CLI, "uma", "uma-pw")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "score this applicant"}]}
    held: dict = {}

    def request() -> None:
        held["response"] = httpx.post(
            f"{gateway.url}/llama/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {uma}", "prefer": "wait=30"},
            timeout=40,
        )

    thread = threading.Thread(target=request)
    thread.start()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{gateway.url}/_gateway/approvals")
        expect(page.locator("#token")).to_be_hidden()  # no pasted tokens on this page
        page.click("#signin-link")
        # The IdP's own login page, on the IdP's origin.
        page.wait_for_url(f"{provider}/accounts/login/**")
        page.fill("#username", "rita")
        page.fill("#password", "rita-pw")
        page.click("#sign-in")
        page.wait_for_url(f"{gateway.url}/_gateway/approvals")
        expect(page.locator("#who")).to_contain_text("rita (risk-officers)")

        session = next(c for c in context.cookies() if c["name"] == "gateway_approvals_session")
        assert session["httpOnly"] and session["sameSite"] == "Lax"
        assert not session["secure"]  # plain http on loopback; Secure under TLS/https
        assert session["path"] == "/_gateway/approvals"
        signin_cookie = [c for c in context.cookies() if c["name"] == "gateway_approvals_signin"]
        assert signin_cookie == []  # the flow's state, nonce and verifier are gone

        # The cookie alone does not decide: a POST without the page's CSRF token is refused.
        approval_id = httpx.get(
            f"{gateway.url}/_gateway/approvals?status=pending",
            headers={"authorization": f"Bearer {uma}"},
        ).json()["approvals"][0]["id"]
        forged = httpx.post(
            f"{gateway.url}/_gateway/approvals/{approval_id}/approve",
            cookies={session["name"]: session["value"]},
        )
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_failed"
        assert "response" not in held

        # Nothing is kept server-side: another replica (its own process) knows the session.
        assert replica_session(gateway, {session["name"]: session["value"]}) == "rita"

        row = page.locator("#rows tr", has_text="uma")
        expect(row).to_have_count(1, timeout=10_000)
        expect(row).to_contain_text(MODEL)
        row.locator("button.approve").click()
        thread.join(30)
        assert held["response"].status_code == 200, held["response"].text
        expect(page.locator("#message")).to_contain_text(": approved")

        page.click("#signout")
        expect(page.locator("#signin-link")).to_be_visible()
        assert not [c for c in context.cookies() if c["name"] == session["name"]]
        browser.close()

    gateway.stop()
    decided = next(e for e in entries(gateway.audit_dir) if e["type"] == "approval.decided")
    assert (decided["approver"], decided["requester"]) == ("rita", "uma")


def replica_session(gateway: peers.Peer, cookies: dict[str, str]) -> str:
    """Who a second gateway process, same config but its own port and log, says is signed in."""
    text = gateway.config_path.read_text()
    port = gateway.url.rsplit(":", 1)[1]
    replica = gateway.config_path.parent / "replica"
    text = text.replace(f'listen = "127.0.0.1:{port}"', 'listen = "127.0.0.1:0"')
    text = text.replace(str(gateway.audit_dir), str(replica / "audit"))
    path = gateway.config_path.parent / "replica.toml"
    path.write_text(text)
    with peers.launch(["gateway", "serve", "-c", str(path)], env=gateway.env) as other:
        answer = httpx.get(f"{other.url}/_gateway/approvals/session", cookies=cookies)
    assert answer.status_code == 200, answer.text
    return answer.json()["subject"]


def test_callback_without_a_sign_in_in_progress_is_refused(gateway) -> None:
    response = httpx.get(f"{gateway.url}/_gateway/approvals/callback?code=x&state=y")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "sign_in_failed"
    login = httpx.get(f"{gateway.url}/_gateway/approvals/login")
    assert login.status_code == 302
    flow = login.cookies.get("gateway_approvals_signin")
    state = flow.split(".")[0]
    wrong = httpx.get(
        f"{gateway.url}/_gateway/approvals/callback?code=x&state=not-{state}",
        cookies={"gateway_approvals_signin": flow},
    )
    assert wrong.status_code == 401 and "state does not match" in wrong.json()["error"]["message"]
    for param in ("code_challenge_method=S256", "nonce=", "state=", "response_type=code"):
        assert param in login.headers["location"]


SIGN_IN = """
[identity]
issuer = "https://idp.example.com"
audience = "gw"

[approvals]
store = "sqlite:///tmp/approvals.db"
sign_in_issuer = "default"
client_id = "page"
public_url = "https://gateway.example.com"
"""


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (('"default"', '"staff"'), "approvals.sign_in_issuer", "no issuer named 'staff'"),
        (('client_id = "page"\n', ""), "approvals.client_id", "needs the page's client id"),
        (("https://gateway", "http://gateway"), "approvals.public_url", "must use https"),
        (('public_url = "https://gateway.example.com"\n', ""), "approvals.public_url", "needs"),
        (('sign_in_issuer = "default"\n', ""), "approvals.client_id", "only with sign_in_issuer"),
    ],
)
def test_bad_sign_in_config_names_the_key(tmp_path, change, key, problem) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(SIGN_IN.replace(*change))
    with pytest.raises(ConfigError) as err:
        load(path)
    assert (err.value.key, problem in err.value.problem) == (key, True), err.value
    path.write_text(SIGN_IN)
    assert load(path).approvals.public_url == "https://gateway.example.com"
