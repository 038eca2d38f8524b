"""The access log line of each exchange, on the real gateway's stderr."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
from conftest import gateway_config
from peers import wait_for

BODY = {"model": "llama-3-8b", "messages": [], "max_tokens": 1}


def access_lines(gateway) -> dict[str, dict]:
    """request_id -> the access line, for every whole access line so far."""
    lines = {}
    for text in gateway.stderr().splitlines():
        if '"gateway.access"' in text:
            line = orjson.loads(text)
            lines[line["request_id"]] = line
    return lines


def test_one_whole_json_line_per_exchange_without_the_token(gateway, analyst_token) -> None:
    url = f"{gateway.url}/llama/v1/chat/completions"
    auth = {"authorization": f"Bearer {analyst_token}"}

    def call(_: int) -> str:
        with httpx.Client() as client:  # a connection each: exchanges end together
            return client.post(url, json=BODY, headers=auth).headers["x-request-id"]

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(call, range(24)))
    denied = httpx.post(url, json=BODY).headers["x-request-id"]
    lines = wait_for(lambda: (got := access_lines(gateway)).keys() >= {*ids, denied} and got)
    line = lines[ids[0]]
    assert line["level"] == "info" and line["msg"] == "exchange" and line["ts"].endswith("+00:00")
    assert (line["connection"], line["status"], line["decision"]) == ("llama", 200, "allow")
    assert line["subject"] == "alice@example.com" and line["rule"] == "analysts-chat"
    assert line["method"] == "POST" and line["path"] == "/llama/v1/chat/completions"
    assert line["bytes_out"] > 0 and line["duration_ms"] > 0
    assert (lines[denied]["status"], lines[denied]["subject"]) == (401, None)
    assert analyst_token not in gateway.stderr()


def test_the_line_of_an_exchange_drained_at_shutdown_is_written(
    start_gateway, issuer, upstream, analyst_token
) -> None:
    gateway = start_gateway(gateway_config(issuer.url, upstream.url))
    url = f"{gateway.url}/llama/v1/chat/completions"
    headers = {"authorization": f"Bearer {analyst_token}", "x-demo-token-delay-ms": "20"}
    body = {**BODY, "max_tokens": 10, "stream": True}
    with httpx.stream("POST", url, json=body, headers=headers) as response:
        chunks = response.iter_bytes()
        next(chunks)  # the exchange is under way: the stop drains it
        gateway.proc.send_signal(signal.SIGTERM)
        rest = b"".join(chunks)
    assert b"[DONE]" in rest
    assert gateway.proc.wait(10) == 0
    line = access_lines(gateway)[response.headers["x-request-id"]]
    assert (line["status"], line["decision"]) == (200, "allow") and line["bytes_out"] > 0
