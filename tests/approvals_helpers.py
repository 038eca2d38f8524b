"""What the approval tests share: the config, identities, request helpers, a webhook receiver."""

from __future__ import annotations

import http.server
import re
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import peers
from conftest import audited_config, launch_gateway
from pgcluster import free_port

MODEL = "credit-risk-v1"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "score jane.doe@example.com"}]}


def approvals_config(
    issuer: str,
    upstream: str,
    tmp: Path,
    *,
    webhook_url: str | None = None,
    store: str | None = None,
) -> str:
    """audited_config plus [approvals] (SQLite in tmp unless `store`) and three approve rules:

    - credit-risk (credit-risk-*): one risk officer, reason required;
    - dual-control (dual-*): two distinct risk officers;
    - short-lived (short-*): expires after 1 s.
    """
    hook = f'webhook_url = "{webhook_url}"' if webhook_url else ""
    return (
        audited_config(issuer, upstream, tmp)
        + f"""
[approvals]
store = "{store or f"sqlite://{tmp}/approvals.db"}"
timeout_s = 600
hold_max_s = 30
{hook}

[[rules]]
id = "credit-risk"
groups = ["analysts"]
connections = ["llama"]
models = ["credit-risk-*"]
action = "approve"
approvers = ["risk-officers"]
reason_required = true

[[rules]]
id = "dual-control"
groups = ["analysts"]
connections = ["llama"]
models = ["dual-*"]
action = "approve"
approvers = ["risk-officers"]
min_approvals = 2

[[rules]]
id = "short-lived"
groups = ["analysts"]
connections = ["llama"]
models = ["short-*"]
action = "approve"
approvers = ["risk-officers"]
timeout_s = 1
"""
    )


def start_replicas(
    issuer: peers.Peer, upstream: peers.Peer, tmp_path_factory: Any, store: str, n: int
) -> list[peers.Peer]:
    """`n` gateway processes sharing one approval store, each with its own audit log whose
    origin names it (replica{i}.test/audit), each on a port of its own that a restart keeps;
    `peer.config_path` and `peer.audit_dir` are set."""
    replicas = []
    for i in range(n):
        tmp = tmp_path_factory.mktemp(f"replica{i}")
        config = tmp / "gateway.toml"
        text = approvals_config(issuer.url, upstream.url, tmp, store=store)
        text = text.replace("test.gateway/audit", f"replica{i}.test/audit")
        config.write_text(text.replace("127.0.0.1:0", f"127.0.0.1:{free_port()}", 1))
        replica = launch_gateway(config)
        replica.config_path = config  # type: ignore[attr-defined]
        replica.audit_dir = tmp / "audit"  # type: ignore[attr-defined]
        replicas.append(replica)
    return replicas


class Client:
    """One identity talking to one gateway (through a balancer: `pin` sets `x-replica`)."""

    def __init__(self, url: str, token: str, pin: str | None = None) -> None:
        self.url = url
        self.auth = {"authorization": f"Bearer {token}"}
        if pin is not None:
            self.auth["x-replica"] = pin

    def infer(
        self,
        body: dict[str, Any] | None = None,
        *,
        wait: int | None = None,
        approval_id: str | None = None,
        reason: str | None = "monthly credit review",
        timeout: float = 40.0,
    ) -> httpx.Response:
        headers = dict(self.auth)
        if wait is not None:
            headers["prefer"] = f"wait={wait}"
        if approval_id is not None:
            headers["x-approval-id"] = approval_id
        if reason is not None:
            headers["x-approval-reason"] = reason
        return httpx.post(
            f"{self.url}/llama/v1/chat/completions",
            json=body or BODY,
            headers=headers,
            timeout=timeout,
        )

    def ticket(self, body: dict[str, Any] | None = None, **kw: Any) -> str:
        response = self.infer(body, **kw)
        assert response.status_code == 202, response.text
        return response.json()["approval"]["id"]

    def decide(self, approval_id: str, verb: str, reason: str | None = None) -> httpx.Response:
        return httpx.post(
            f"{self.url}/_gateway/approvals/{approval_id}/{verb}",
            json={"reason": reason},
            headers=self.auth,
            timeout=10.0,
        )

    def get(self, path: str = "") -> httpx.Response:
        return httpx.get(f"{self.url}/_gateway/approvals{path}", headers=self.auth, timeout=10.0)


class WebhookReceiver:
    """A local HTTP server recording JSON bodies POSTed to it; fails the first `fail_first`."""

    def __init__(self, fail_first: int = 0) -> None:
        self.events: list[dict[str, Any]] = []
        self.attempts = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.attempts += 1
                if receiver.attempts <= fail_first:
                    self.send_response(503)
                else:
                    receiver.events.append(orjson.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def woken(url: str) -> dict[str, float]:
    """gateway_approval_holds_woken_total by its `by` label, from a gateway's metrics."""
    text = httpx.get(f"{url}/_gateway/metrics", timeout=10).text
    found = re.findall(r'^gateway_approval_holds_woken_total\{by="(\w+)"\} (\S+)$', text, re.M)
    return {by: float(n) for by, n in found}


def woken_by_decision(before: dict[str, float], after: dict[str, float]) -> bool:
    """The hold was woken by the decision itself (this process, or the store's notification
    too), never by a poll."""
    gained = {by: after.get(by, 0) - before.get(by, 0) for by in {*before, *after}}
    return gained.get("poll", 0) == 0 and sum(gained.values()) >= 1
