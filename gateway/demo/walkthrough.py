"""`gateway demo`: the product end to end on loopback, with nothing to set up.

Starts the demo OIDC issuer, the demo model server and the gateway in one process, then drives
a short session with the `openai` SDK and prints what happened at each step. With `--serve` it
keeps everything running and prints curl commands with fresh tokens instead.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import tempfile
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from gateway import logs
from gateway.app import Gateway
from gateway.audit import read_signing_key, verify_log
from gateway.demo.config import UPSTREAM_KEY_ENV, demo_config, demo_config_text
from gateway.demo.issuer import DemoIssuer, start_issuer
from gateway.demo.upstream import start_upstream
from gateway.evidence import build_report

if TYPE_CHECKING:
    import aiohttp
    import openai

ALLOWED_MODEL = "llama-3-8b-instruct"
FORBIDDEN_MODEL = "gpt-4o"
APPROVAL_MODEL = "credit-risk-v1"  # rule credit-risk: a risk officer must approve each call


def run_demo(*, serve: bool, verbose: bool, work: Path | None) -> int:
    import uvloop

    logs.configure("INFO" if verbose else "WARNING")
    work = work or Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    return uvloop.run(_run(serve=serve, work=work))


def _free_port() -> int:
    """A loopback port for the gateway, known before it starts: the approvals page's sign-in
    redirect URI names it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    """The three servers the demo runs, on free loopback ports."""

    issuer: DemoIssuer
    gateway: Gateway
    url: str

    def __init__(self, work: Path) -> None:
        self.work = work

    async def start(self) -> None:
        upstream_key = "sk-demo-" + secrets.token_hex(8)
        os.environ[UPSTREAM_KEY_ENV] = upstream_key
        self.issuer_runner, self.issuer, self.issuer_url = await start_issuer("127.0.0.1", 0)
        self.upstream_runner, self.upstream_url = await start_upstream(
            "127.0.0.1", 0, api_key=upstream_key, token_delay_ms=15
        )
        self.port = _free_port()
        config = demo_config(self.issuer_url, self.upstream_url, self.work, self.port)
        self.gateway = Gateway(config)
        host, port = await self.gateway.start()
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        await self.gateway.stop()
        await self.upstream_runner.cleanup()
        await self.issuer_runner.cleanup()

    def sdk(self, token: str) -> openai.AsyncOpenAI:
        import openai

        return openai.AsyncOpenAI(base_url=f"{self.url}/llama/v1", api_key=token, max_retries=0)


async def _run(*, serve: bool, work: Path) -> int:
    stack = Stack(work)
    await stack.start()
    try:
        print(f"demo issuer   {stack.issuer_url}")
        print(f"demo model    {stack.upstream_url}  (needs a key only the gateway holds)")
        print(f"gateway       {stack.url}")
        print(f"work dir      {work}  (keys and the audit log)\n")
        if serve:
            await _serve_forever(stack)
            return 0
        failures = await _walkthrough(stack)
    finally:
        await stack.stop()
    failures += await asyncio.get_running_loop().run_in_executor(None, _audit_and_evidence, stack)
    print("demo finished" + (f" with {failures} unexpected results" if failures else ""))
    return 1 if failures else 0


def _audit_and_evidence(stack: Stack) -> int:
    """The walk-through's own record, checked the way an auditor would, then reported on.

    The verifier key is derived from the demo's signing key, not read from the log, so the
    check is against a pinned key.
    """
    audit_dir = stack.work / "audit"
    verifier = read_signing_key(stack.work / "keys" / "signing.key").verifier.encode()
    step("the audit log: every decision and exchange, verified after the gateway stopped")
    report = verify_log(audit_dir, verifier)
    print(f"   {report.summary()}")
    print(f"   explore: gateway audit tail --dir {audit_dir}")
    print(f"            gateway audit verify --dir {audit_dir} --verifier {verifier}\n")
    if not report.ok:
        return 1
    step("NIST SP 800-53 evidence for the session, computed from the verified log")
    html = build_report(  # no period given: the whole verified log
        stack.gateway.config, [audit_dir], None, None, stack.work / "evidence", verifier=verifier
    )
    print(f"   report: {html}")
    print(f"   also:   {html.parent / 'evidence.json'}")
    print(f"           {html.parent / 'assessment-results.json'} (OSCAL assessment results)")
    _explain_findings(orjson.loads((html.parent / "evidence.json").read_bytes()))
    return 0


# How to close each gap the demo's own setup leaves (it runs everything on loopback, plain HTTP).
HOW_TO_SATISFY = {
    "SC-8": "give each [[connections]] an https:// upstream (the gateway verifies its "
    "certificate), and let clients reach the gateway only over TLS (a TLS terminator in front "
    "of a loopback listener, or TLS on the listener itself); gateway evidence then reports "
    "SC-8 satisfied",
}


def _explain_findings(evidence: dict[str, Any]) -> None:
    """Say which controls the session does not satisfy, why, and how a deployment would."""
    controls = evidence["controls"]
    counts = {s: sum(c["status"] == s for c in controls) for s in ("satisfied", "not-satisfied")}
    print(f"   controls: {counts['satisfied']} satisfied, {counts['not-satisfied']} not satisfied")
    for control in controls:
        if control["status"] != "not-satisfied":
            continue
        print(f"   {control['id']} ({control['title']}) is not satisfied here:")
        for why in control["gaps"]:
            print(f"     - {why}")
        if control["id"] in HOW_TO_SATISFY:
            advice = (
                "expected in a demo on loopback; to satisfy it, " + HOW_TO_SATISFY[control["id"]]
            )
            print(textwrap.fill(advice, 96, initial_indent="     ", subsequent_indent="     "))
    print()


def step(title: str) -> None:
    print(f"== {title}")


async def _walkthrough(stack: Stack) -> int:
    import openai

    alice = stack.issuer.mint("alice@example.com", ["analysts"])
    failures = 0

    step("alice (group analysts) asks llama-3-8b-instruct: allowed by rule analysts-chat")
    async with stack.sdk(alice) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model=ALLOWED_MODEL,
            messages=[{"role": "user", "content": "What does an inference gateway do?"}],
            max_tokens=24,
        )
        answer = raw.parse()
        print(f"   200, x-request-id {raw.headers['x-request-id']}")
        print(f"   answer: {answer.choices[0].message.content.strip()}\n")

        step("alice streams an answer: tokens arrive while the model is still generating")
        started = time.perf_counter()
        first = None
        text = ""
        stream = await sdk.chat.completions.create(
            model=ALLOWED_MODEL,
            messages=[{"role": "user", "content": "Stream me a sentence."}],
            max_tokens=40,
            stream=True,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter() - started
                text += chunk.choices[0].delta.content
        total = time.perf_counter() - started
        print(
            f"   first token after {first * 1000:.0f} ms, whole answer after {total * 1000:.0f} ms"
        )
        print(f"   answer: {text.strip()}\n")

        step("alice asks for a customer record: PII is masked inline, even split across events")
        text = ""
        stream = await sdk.chat.completions.create(
            model=ALLOWED_MODEL,
            messages=[{"role": "user", "content": "Show me the customer's pii."}],
            stream=True,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        print(f"   answer: {text.strip()}")
        print("   (the originals are kept only encrypted, in the audit log's sealed/)\n")

        step(f"alice asks {FORBIDDEN_MODEL}: no rule allows it, so the default deny applies")
        failures += await _expect(
            sdk.chat.completions.create(model=FORBIDDEN_MODEL, messages=[]),
            openai.PermissionDeniedError,
        )

    step("a call with no valid token")
    async with stack.sdk("no-token") as anonymous:
        failures += await _expect(
            anonymous.chat.completions.create(model=ALLOWED_MODEL, messages=[]),
            openai.AuthenticationError,
        )
    failures += await _approval(stack, alice)
    return failures


async def _approval(stack: Stack, alice: str) -> int:
    """A call held for a human: a second identity approves it over the approvals API."""
    import aiohttp

    rita = stack.issuer.mint("rita@example.com", ["risk-officers"])
    # alice is a risk officer too here: even so, nobody approves their own request.
    alice_officer = stack.issuer.mint("alice@example.com", ["analysts", "risk-officers"])
    step(f"alice asks {APPROVAL_MODEL}: rule credit-risk holds it until a risk officer approves")
    async with stack.sdk(alice) as sdk, aiohttp.ClientSession(stack.url) as http:
        held = asyncio.get_running_loop().create_task(
            sdk.chat.completions.with_raw_response.create(
                model=APPROVAL_MODEL,
                messages=[{"role": "user", "content": "Score applicant 42 for a credit line."}],
                max_tokens=24,
                extra_headers={"prefer": "wait=30", "x-approval-reason": "quarterly review"},
            )
        )
        pending = await _pending(http, rita)
        approval_id = pending["id"]
        print(f"   held: {approval_id}, requested by {pending['requester']}")
        print(f"   reason: {pending['reason']}; preview (masked): {pending['preview'][:60]}...")
        own = await _decide(http, alice_officer, approval_id, "approve")
        print(f"   alice, also a risk officer, tries to approve it: {own[0]}: {own[1]}")
        status, result = await _decide(http, rita, approval_id, "approve")
        print(f"   rita@example.com approves: {status}")
        raw = await held
        answer = raw.parse().choices[0].message.content.strip()
        print(f"   200 after approval, x-request-id {raw.headers['x-request-id']}")
        print(f"   answer: {answer}")
        print(f"   requested by {pending['requester']}, approved by {', '.join(result)}\n")
    return 0 if own[0] == 403 and status == 200 else 1


async def _pending(http: aiohttp.ClientSession, token: str) -> dict[str, Any]:
    """The first pending approval the approver can see (the held request shows up at once)."""
    headers = {"authorization": f"Bearer {token}", "accept": "application/json"}
    for _ in range(100):
        async with http.get("/_gateway/approvals?status=pending", headers=headers) as response:
            approvals = (await response.json())["approvals"]
        if approvals:
            return approvals[0]
        await asyncio.sleep(0.05)
    raise RuntimeError("the held request never showed up as a pending approval")


async def _decide(
    http: aiohttp.ClientSession, token: str, approval_id: str, verb: str
) -> tuple[int, list[str] | str]:
    """POST approve|deny: (status, who approved so far) or (status, the refusal's message)."""
    headers = {"authorization": f"Bearer {token}"}
    path = f"/_gateway/approvals/{approval_id}/{verb}"
    async with http.post(path, json={"reason": "demo"}, headers=headers) as response:
        body = await response.json()
    if response.status != 200:
        return response.status, body["error"]["message"]
    return 200, [d["approver"] for d in body["approval"]["decisions"]]


async def _expect(call, error: type[openai.APIStatusError]) -> int:
    try:
        await call
    except error as exc:
        print(f"   {exc.status_code}: {exc.body['message'] if exc.body else exc.message}\n")
        return 0
    print(f"   unexpected: the call succeeded, expected {error.__name__}\n")
    return 1


async def _serve_forever(stack: Stack) -> None:
    alice = stack.issuer.mint("alice@example.com", ["analysts"], ttl_s=8 * 3600)
    ivan = stack.issuer.mint("ivan@example.com", ["interns"], ttl_s=8 * 3600)
    body = '{"model":"llama-3-8b-instruct","messages":[{"role":"user","content":"hello"}]}'
    url = f"{stack.url}/llama/v1/chat/completions"
    text = demo_config_text(stack.issuer_url, stack.upstream_url, stack.work, stack.port)
    print("Config in use:\n" + text)
    print("Try (tokens valid for 8 hours):\n")
    print(f"  curl -s {url} -H 'authorization: Bearer {alice}' -d '{body}'\n")
    stream_body = body.replace('"hello"}]', '"tell me pii"}],"stream":true')
    print(f"  curl -sN {url} -H 'authorization: Bearer {alice}' -d '{stream_body}'\n")
    print(f"  curl -s {url} -H 'authorization: Bearer {ivan}' -d '{body}'   # 403\n")
    print(f"  curl -s {url} -d '{body}'   # 401\n")
    rita = stack.issuer.mint("rita@example.com", ["risk-officers"], ttl_s=8 * 3600)
    held = body.replace("llama-3-8b-instruct", "credit-risk-v1")
    print(
        f"  curl -s {url} -H 'authorization: Bearer {alice}' -H 'prefer: wait=30' "
        f"-H 'x-approval-reason: quarterly review' -d '{held}'   # held for approval\n"
    )
    print(f"  approve it in a browser: {stack.url}/_gateway/approvals/login")
    print("  (sign in as rita@example.com at the demo issuer's login page), or:")
    print(f"  GATEWAY_URL={stack.url} GATEWAY_TOKEN={rita} gateway approvals list\n")
    print(f"  curl -s {stack.url}/_gateway/health\n\nCtrl-C stops.", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
