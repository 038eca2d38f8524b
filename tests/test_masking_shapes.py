"""Under a masking rule no response passes unmasked, whatever its media type or JSON shape.

A scripted stand-in upstream answers with exact bytes: no Content-Type, octet-stream, NDJSON
(Ollama's stream, a value split across lines), Ollama/Anthropic/TGI JSON, an unknown JSON shape,
XML, binary types, and a JSON body with a duplicate key.
"""

from __future__ import annotations

import httpx
import orjson
import peers
import pytest
from conftest import gateway_config

EMAIL = "bob.smith@example.com"
PHONE = "+1 415 555 0132"
SCRIPTED_RULES = """
[[connections]]
name = "scripted"
upstream = "{url}"
credential_env = "TEST_UPSTREAM_KEY"

[[rules]]
id = "masked-shapes"
groups = ["shapes"]
connections = ["scripted"]
action = "allow"
mask = ["all"]
"""


@pytest.fixture(scope="module")
def shapes_gateway(start_gateway, issuer, upstream, scripted) -> peers.Peer:
    extra = SCRIPTED_RULES.format(url=scripted.url)
    return start_gateway(gateway_config(issuer.url, upstream.url) + extra)


@pytest.fixture(scope="module")
def shapes_token(issuer) -> str:
    return peers.mint(issuer.url, "sam@example.com", ["shapes"])


def ask(gateway, token, scripted, name, chunks, content_type=None, **spec) -> httpx.Response:
    headers = [["content-type", content_type]] if content_type else []
    peers.script(scripted.url, name, chunks, headers, **spec)
    return httpx.post(
        f"{gateway.url}/scripted/{name}",
        json={"model": "m", "prompt": "hi"},
        headers={"authorization": f"Bearer {token}"},
    )


def assert_masked(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert EMAIL not in response.text and "415 555" not in response.text
    assert "[EMAIL]" in response.text


def ollama_lines(pieces: list[str]) -> list[str]:
    lines = [
        orjson.dumps(
            {"model": "llama3", "message": {"role": "assistant", "content": p}, "done": False}
        )
        for p in pieces
    ]
    last = {"model": "llama3", "message": {"role": "assistant", "content": ""}, "done": True}
    return [line.decode() + "\n" for line in [*lines, orjson.dumps(last)]]


UNDECLARED = {
    "text-no-type": ([f"mail {EMAIL} ", f"or call {PHONE}"], None),
    "json-no-type": ([orjson.dumps({"response": f"mail {EMAIL}"}).decode()], None),
    "text-octet": ([f"mail {EMAIL}"], "application/octet-stream"),
    "xml": ([f"<a>mail {EMAIL}</a>"], "application/xml"),
    "ollama-json": (
        [orjson.dumps({"message": {"content": f"mail {EMAIL}"}}).decode()],
        "application/json",
    ),
    "ollama-generate": (
        [orjson.dumps({"response": f"mail {EMAIL}", "done": True}).decode()],
        "application/json",
    ),
    "anthropic": (
        [orjson.dumps({"content": [{"type": "text", "text": f"mail {EMAIL}"}]}).decode()],
        "application/json",
    ),
    "tgi": ([orjson.dumps([{"generated_text": f"mail {EMAIL}"}]).decode()], "application/json"),
    "unknown-shape": (
        [orjson.dumps({"result": {"answers": [f"mail {EMAIL}"]}}).decode()],
        "application/json",
    ),
    "ndjson-no-type": (ollama_lines(["mail bob.sm", "ith@examp", "le.com ok"]), None),
}


@pytest.mark.parametrize("framing", ["chunked", "length"])
@pytest.mark.parametrize("case", sorted(UNDECLARED))
def test_shape_is_masked(shapes_gateway, shapes_token, scripted, case, framing) -> None:
    chunks, content_type = UNDECLARED[case]
    response = ask(
        shapes_gateway, shapes_token, scripted, case, chunks, content_type, framing=framing
    )
    assert_masked(response)


def test_ndjson_stream_masked_line_by_line(shapes_gateway, shapes_token, scripted) -> None:
    lines = ollama_lines(["mail bob.sm", "ith@examp", "le.com now"])
    # Cut the stream mid-line and mid-value, as a network would.
    joined = "".join(lines)
    chunks = [joined[i : i + 37] for i in range(0, len(joined), 37)]
    response = ask(shapes_gateway, shapes_token, scripted, "ndjson", chunks, "application/x-ndjson")
    assert_masked(response)
    documents = [orjson.loads(line) for line in response.text.splitlines()]
    assert "".join(d["message"]["content"] for d in documents) == "mail [EMAIL] now"
    assert documents[-1]["done"] is True  # the held text was flushed before the last line


@pytest.mark.parametrize(
    ("name", "chunks", "content_type", "named"),
    [
        ("png", ["\x89PNG\r\n\x1a\n" + "x" * 100], "image/png", "of type image/png"),
        (
            "binary-octet",
            ["\xff\xfe\x00 mail " + EMAIL],
            "application/octet-stream",
            "of type application/octet-stream",
        ),
        ("binary-untyped", ["\xff\xd8\xff mail " + EMAIL], None, "with no Content-Type"),
    ],
)
def test_unmaskable_type_is_refused(
    shapes_gateway, shapes_token, scripted, name, chunks, content_type, named
):
    response = ask(shapes_gateway, shapes_token, scripted, name, chunks, content_type)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "unmaskable_response" and named in error["message"]
    assert EMAIL not in response.text


def test_json_with_duplicate_key_is_refused(shapes_gateway, shapes_token, scripted) -> None:
    body = '{"choices": [{"message": {"content": "mail EMAIL", "content": "hi"}}]}'
    body = body.replace("EMAIL", EMAIL)
    response = ask(shapes_gateway, shapes_token, scripted, "dup", [body], "application/json")
    assert response.status_code == 502 and EMAIL not in response.text
    assert response.json()["error"]["code"] == "masking_failed"


DUPLICATE_KEY_STREAMS = {
    # The first copy of "content" holds the e-mail, the last (the one a last-wins parser
    # keeps) does not: the event must not go out as it came.
    "sse": (["data: " + '{"choices": [{"index": 0, "delta": {"content": "mail EMAIL", '
             '"content": "hi"}}]}' + "\n\n", "data: [DONE]\n\n"], "text/event-stream"),
    "ndjson": (['{"message": {"role": "assistant", "content": "mail EMAIL", "content": "hi"}, '
                '"done": false}\n', '{"message": {"content": ""}, "done": true}\n'],
               "application/x-ndjson"),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(DUPLICATE_KEY_STREAMS))
def test_streamed_json_with_duplicate_key_fails_closed(
    shapes_gateway, shapes_token, scripted, kind
) -> None:
    chunks, content_type = DUPLICATE_KEY_STREAMS[kind]
    chunks = [c.replace("EMAIL", EMAIL) for c in chunks]
    response = ask(shapes_gateway, shapes_token, scripted, f"dup-{kind}", chunks, content_type)
    assert EMAIL not in response.text
    if response.status_code == 200:  # failed mid-stream: ended with an in-band error
        assert '"code":"masking_failed"' in response.text.replace(" ", "")
    else:
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "masking_failed"


def sse_chat(pieces: list[str]) -> list[str]:
    return [
        "data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": p}}]}).decode()
        + "\n\n"
        for p in pieces
    ]  # fmt: skip


BROKEN_STREAMS = {
    # Two good events (one holding an e-mail), then data that is not JSON.
    "sse": ([*sse_chat(["Hello, ", f"write to {EMAIL} today. "]), "data: {oops\n\n"],
            "text/event-stream"),
    "ndjson": ([*ollama_lines(["Hello, ", f"write to {EMAIL} today. "])[:2], "{oops\n"],
               "application/x-ndjson"),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(BROKEN_STREAMS))
def test_a_stream_broken_midway_sends_the_same_however_the_upstream_cut_it(
    shapes_gateway, shapes_token, scripted, kind
) -> None:
    """What was masked before the fault goes out, then the in-band error: as one piece, event
    by event, or byte by byte, the client gets the same bytes (one piece was a 502 without
    the events before the fault)."""
    chunks, content_type = BROKEN_STREAMS[kind]
    answers = {
        how: ask(
            shapes_gateway, shapes_token, scripted, f"broken-{kind}-{how}",
            pieces, content_type, **spec,
        )
        for how, pieces, spec in (
            ("one-piece", ["".join(chunks)], {}),
            ("by-event", chunks, {}),
            ("by-byte", chunks, {"cut": 1}),
        )
    }  # fmt: skip
    bodies = {how: (r.status_code, r.content) for how, r in answers.items()}
    assert bodies["one-piece"] == bodies["by-event"] == bodies["by-byte"], bodies
    status, body = bodies["one-piece"]
    assert status == 200
    assert b"Hello, " in body and b"could not be masked" in body
    assert EMAIL.encode() not in body and b"oops" not in body
