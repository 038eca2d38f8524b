"""A held-back tail flushed after a stream's last event carries no other location's raw text.

The masker sends the remainder of a location it held back in a flush event built from the
last event that carried it. That event, as the upstream sent it, also held the other masked
locations' unmasked text; copied as it was, the flush leaked them. Reproduced with two text
locations under different top-level keys, as TGI-like servers send (`token.text` beside
`generated_text`).
"""

from __future__ import annotations

import httpx
import standins
from conftest import gateway_config

EVENTS = (
    b'data: {"a":{"text":"mail bob@exa"},"b":{"text":"x"}}\n\n',
    b'data: {"a":{"text":"mple.org now"},"b":{"text":"carol@example.org"}}\n\n',
)


def two_location_stream(head: standins.Head) -> bytes:
    body = b"".join(EVENTS)
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )


def test_flush_events_carry_no_raw_text_of_other_locations(
    issuer, start_gateway, analyst_token
) -> None:
    with standins.raw_upstream(two_location_stream) as standin:
        config = (
            gateway_config(issuer.url, standin.url)
            + f"""
[[connections]]
name = "tgi"
upstream = "{standin.url}"

[[rules]]
id = "analysts-tgi"
groups = ["analysts"]
connections = ["tgi"]
action = "allow"
mask = ["email"]
mask_paths = ["$.a.text", "$.b.text"]
"""
        )
        gateway = start_gateway(config)
        response = httpx.post(
            f"{gateway.url}/tgi/generate_stream",
            headers={"authorization": f"Bearer {analyst_token}"},
            json={"inputs": "hi"},
            timeout=30,
        )
    assert response.status_code == 200, response.text
    assert standin.seen, "the stand-in upstream was never called"
    assert "example.org" not in response.text, response.text
    assert "mple.org" not in response.text, response.text
    assert response.text.count("[EMAIL]") == 2, response.text
