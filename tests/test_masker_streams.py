"""Streams: for any cut of the input bytes, the output equals masking it whole."""

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import _masker
from gateway._masker import Masker

PIECES = [
    "bob.smith+tag@mail.example.co.uk",
    "4111 1111 1111 1111",
    "378282246310005",
    "123-45-6789",
    "(415) 555-0132",
    "+44 20 7946 0958",
    "DE89 3704 0044 0532 0130 00",
    "192.168.10.254",
    "2001:db8:85a3::8a2e:370:7334",
    "00:1A:2B:3C:4D:5E",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
    "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123",
    "xoxb-1234567890-abcdefghij",
    "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "sk_live_abcdefghij1234567890",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
    "The quick brown fox ",
    "Grüße 日本語 🚀 ",
    " 1.2.3 ",
    "\n",
    "\r\n",
    ", ",
]

MASKER = Masker(["all"], paths=_masker.DEFAULT_RESPONSE_PATHS)
texts = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)
cut_points = st.lists(st.integers(min_value=0, max_value=10_000), max_size=30)


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    pts = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(pts)]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(texts, cut_points)
def test_text_stream_chunk_invariance(text: str, cuts: list[int]) -> None:
    whole, findings = MASKER.mask_text(text)
    s = MASKER.text_stream()
    out = b"".join(s.push(c) for c in chunks(text.encode(), cuts)) + s.finish()
    assert out.decode() == whole
    assert sum(s.counts.values()) == len(findings)


def test_text_stream_cut_inside_every_entity() -> None:
    for piece in PIECES:
        text = f"x {piece} y"
        whole = MASKER.mask_text(text)[0]
        data = text.encode()
        for i in range(len(data) + 1):
            s = MASKER.text_stream()
            assert (s.push(data[:i]) + s.push(data[i:]) + s.finish()).decode() == whole


def sse_body(text: str, sizes: list[int], nl: str, tool: bool) -> bytes:
    parts, i, k = [], 0, 0
    while i < len(text):
        n = sizes[k % len(sizes)] if sizes else 3
        parts.append(text[i : i + n])
        i, k = i + n, k + 1
    out = []
    for p in parts:
        delta = (
            {"tool_calls": [{"index": 0, "function": {"arguments": p}}]} if tool else {"content": p}
        )
        ev = {
            "id": "c",
            "model": "m1",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        out.append(f"data: {json.dumps(ev)}{nl}{nl}")
    out.append(f": ping{nl}{nl}")
    fin = {
        "id": "c",
        "model": "m1",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    out.append(f"data: {json.dumps(fin)}{nl}{nl}data: [DONE]{nl}{nl}")
    return "".join(out).encode()


def reassemble(out: bytes, tool: bool) -> str:
    text = []
    for line in out.decode().splitlines():
        if not line.startswith("data: {"):
            continue
        for ch in json.loads(line[6:])["choices"]:
            d = ch.get("delta", {})
            if tool:
                for tc in d.get("tool_calls", []):
                    text.append(tc["function"]["arguments"])
            else:
                text.append(d.get("content") or "")
    return "".join(text)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts,
    st.lists(st.integers(1, 9), min_size=1, max_size=20),
    cut_points,
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.booleans(),
)
def test_sse_stream_chunk_invariance(
    text: str, sizes: list[int], cuts: list[int], nl: str, tool: bool
) -> None:
    body = sse_body(text, sizes, nl, tool)
    whole = MASKER.sse_stream()
    expected = whole.push(body) + whole.finish()
    s = MASKER.sse_stream()
    out = b"".join(s.push(c) for c in chunks(body, cuts)) + s.finish()
    assert out == expected
    assert reassemble(out, tool) == MASKER.mask_text(text)[0]
    assert s.model == "m1"


def test_sse_entity_split_across_events_is_masked_and_early_tokens_flow() -> None:
    text = "Hello there, write to alice@example.org or pay with 4111 1111 1111 1111 today."
    body = sse_body(text, [2], "\n", False)
    events = body.split(b"\n\n")
    s = MASKER.sse_stream()
    outs = [s.push(e + b"\n\n") for e in events[:-1]]
    outs.append(s.finish())
    # Tokens before the first entity are released before the stream ends.
    assert "Hello" in reassemble(b"".join(outs[:6]), False)
    full = reassemble(b"".join(outs), False)
    assert "alice" not in full and "4111" not in full
    assert full == "Hello there, write to [EMAIL] or pay with [CREDIT_CARD] today."
    assert s.counts == {"email": 1, "credit_card": 1}


@pytest.mark.parametrize(
    "body",
    [
        b"data: {not json}\n\n",
        b'data: {"a": 1\n\n',
        b"data: \xff\n\n",
    ],
)
def test_sse_malformed_fails_closed(body: bytes) -> None:
    s = MASKER.sse_stream()
    with pytest.raises(ValueError):
        s.push(body)
    with pytest.raises(ValueError):
        s.push(b"data: {}\n\n")  # a failed stream stays failed


def test_sse_incomplete_trailing_event() -> None:
    s = MASKER.sse_stream()
    s.push(b'data: {"choices": []}\n')
    with pytest.raises(ValueError):
        s.finish()


def test_sse_passthrough_and_comments() -> None:
    body = b': comment\n\nevent: ping\nid: 7\n\ndata: {"other": "a@b.io"}\n\n'
    s = MASKER.sse_stream()
    assert s.push(body) + s.finish() == body


def test_text_stream_invalid_utf8() -> None:
    s = MASKER.text_stream()
    with pytest.raises(ValueError):
        s.push(b"ok \xff")
    s = MASKER.text_stream()
    s.push(b"ok \xc3")
    with pytest.raises(ValueError):
        s.finish()


def test_text_stream_hold_back_is_bounded() -> None:
    s = MASKER.text_stream()
    out, total = b"", 0
    for _ in range(200):
        out += s.push(b"lorem ipsum dolor sit amet ")
        total += 27
        assert total - len(out) <= _masker.HOLD_BACK
    assert len(out) + len(s.finish()) == total


def test_long_private_key_is_swallowed_not_held() -> None:
    key = (
        "-----BEGIN RSA PRIVATE KEY-----\n"
        + ("QUJD" * 16 + "\n") * 60
        + ("-----END RSA PRIVATE KEY-----")
    )
    s = MASKER.text_stream()
    out = b""
    for i in range(0, len(key), 7):
        out += s.push(key[i : i + 7].encode())
    out += s.push(b" done") + s.finish()
    assert out == b"[PRIVATE_KEY] done"


# Entities whose validators look past the match (a glued digit, letter or dotted number
# rejects them) and their look-alikes: one byte, or one character per event, cuts each at
# every position with nothing after the cut yet.
LOOK_AHEAD = [
    "pay 4111 1111 1111 1111 now",
    "id 4111 1111 1111 1111-5 x",
    "ssn 123-45-6789.",
    "ssn 123-45-6789.1 x",
    "ip 192.168.10.254 up",
    "ip 192.168.10.254.7 x",
    "key AKIAIOSFODNN7EXAMPLE now",
    "key AKIAIOSFODNN7EXAMPLEX x",
    "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY ok",
    "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY/ x",
    "mail bob@example.com.",
    "logo logo@2x.png x",
    "call (415) 555-0132 now",
    "call 4155550132x9 x",
    "The quick brown fox, then a word. ",
]


@pytest.mark.parametrize("text", LOOK_AHEAD)
def test_released_text_is_never_less_than_settled_one_byte_at_a_time(text: str) -> None:
    """Never less: fed one byte per push, the released text is masking of the whole; since
    output only grows, no part of an entity was ever released before it was known."""
    whole = MASKER.mask_text(text)[0]
    s = MASKER.text_stream()
    released = b""
    for i in range(len(text.encode())):
        released += s.push(text.encode()[i : i + 1])
        assert whole.encode().startswith(released), (text, released)
    assert (released + s.finish()).decode() == whole


@pytest.mark.parametrize("text", LOOK_AHEAD)
def test_sse_one_character_per_event_releases_only_settled_text(text: str) -> None:
    body = sse_body(text, [1], "\n", False)
    s = MASKER.sse_stream()
    events = body.split(b"\n\n")[:-1]
    released = ""
    for event in events:
        released += reassemble(s.push(event + b"\n\n"), False)
        assert MASKER.mask_text(text)[0].startswith(released), (text, released)
    assert released + reassemble(s.finish(), False) == MASKER.mask_text(text)[0]


# Unicode evasions: values rewritten so they read the same (zero-width and format chars
# inside, Unicode spaces and dashes for ASCII ones, full-width forms), in text with combining
# marks and NFKC expansions around them.
EVADABLE = [
    ("bob.smith@mail.example.com", "email"),
    ("4111 1111 1111 1111", "credit_card"),
    ("123-45-6789", "us_ssn"),
    ("+44 20 7946 0958", "phone"),
    ("DE89 3704 0044 0532 0130 00", "iban"),
    ("192.168.10.254", "ipv4"),
]
FORMAT_CHARS = "\u200b\u200c\u200d\u2060\u00ad\ufeff"
UNICODE_SPACES = "\u00a0\u202f\u2007\u2009\u3000"
UNICODE_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2212"
AROUND = [
    " ",
    " mail ",
    "caf\u00e9 ",
    "cafe\u0301 ",
    "\ufb01 \u338e \u00bd ",
    "\uff76\uff9e ",
    "\u2014 ",
]


@st.composite
def evaded(draw) -> tuple[str, str]:
    value, kind = draw(st.sampled_from(EVADABLE))
    out = []
    for i, c in enumerate(value):
        op = draw(st.sampled_from(["keep", "wide", "format", "unicode"]))
        if op == "wide" and "!" <= c <= "~":
            c = chr(ord(c) + 0xFEE0)
        elif op == "unicode" and c in " -":
            c = draw(st.sampled_from(UNICODE_SPACES if c == " " else UNICODE_DASHES))
        out.append(c)
        if op == "format" and i + 1 < len(value):
            out.append(draw(st.sampled_from(FORMAT_CHARS)))
    return "".join(out), kind


documents = st.lists(st.tuples(st.sampled_from(AROUND), evaded()), min_size=1, max_size=4)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(documents, cut_points)
def test_evaded_values_are_masked_whole_and_streams_agree(parts, cuts: list[int]) -> None:
    text = "".join(around + value + " ; " for around, (value, _) in parts)
    whole, findings = MASKER.mask_text(text)
    assert [f[0] for f in findings] == [kind for _, (_, kind) in parts], (text, whole)
    # Spans are in the original bytes: the text around each value is unchanged.
    raw, rebuilt, at = text.encode(), b"", 0
    for kind, start, end in findings:
        rebuilt += raw[at:start] + f"[{kind.upper()}]".encode()
        at = end
    assert (rebuilt + raw[at:]).decode() == whole
    s = MASKER.text_stream()
    out = b"".join(s.push(c) for c in chunks(raw, cuts)) + s.finish()
    assert out.decode() == whole
