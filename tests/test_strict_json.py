"""The strict request parser against Python's json: never a different model, at most a 400."""

from __future__ import annotations

import json
import math

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.strict_json import has_duplicate_key, looks_like_json, parse_request, request_model

MODELS = st.sampled_from(["big-1", "risk-model", "llama-3-8b", "\ud800x", "", "Big-1"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    MODELS,
)


def _member(key: str, value: str) -> str:
    return f"{json.dumps(key)}: {value}"


def _render(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return {math.inf: "Infinity", -math.inf: "-Infinity"}.get(value, "NaN")
    return json.dumps(value)


@st.composite
def documents(draw) -> str:
    """JSON text with a model (maybe twice), extra members, special numbers, nested objects."""
    members = [_member("model", _render(draw(st.one_of(MODELS, SCALARS))))]
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(["model", "messages", "x", "content"]))
        members.append(_member(key, _render(draw(SCALARS))))
    if draw(st.booleans()):
        inner = [_member(k, _render(draw(SCALARS))) for k in draw(st.lists(st.sampled_from("ab")))]
        members.append(_member("messages", "[{" + ", ".join(inner) + "}]"))
    draw(st.randoms()).shuffle(members)
    text = "{" + ", ".join(members) + "}"
    return "[" + text + "]" if draw(st.booleans()) else text


ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"]


@settings(max_examples=600, deadline=None)
@given(
    text=documents(),
    encoding=st.sampled_from(ENCODINGS),
    space=st.sampled_from(["", " ", "\n\t", "\ufeff", " \ufeff"]),
    kind=st.sampled_from(["application/json", "", "text/plain", "application/octet-stream"]),
)
def test_decided_model_equals_json_model_or_400(text, encoding, space, kind) -> None:
    try:
        body = (space + text).encode(encoding)
    except UnicodeEncodeError:  # a lone surrogate cannot be encoded raw; its escape stays
        return
    try:
        read = json.loads(body)
    except ValueError:
        return  # json does not accept it: no lenient reading to disagree with
    expected = read.get("model") if isinstance(read, dict) else None
    try:
        decided = request_model(parse_request(body, kind))
    except GatewayError as refusal:
        assert refusal.status == 400
        return
    assert decided == expected


@given(st.binary(max_size=64), st.sampled_from(["", "audio/mp4", "application/octet-stream"]))
def test_any_body_json_reads_as_an_object_is_parsed_strictly(body: bytes, kind: str) -> None:
    """Random bytes: if json reads an object from them, the gateway looked at them as JSON."""
    try:
        read = json.loads(body)
    except (ValueError, RecursionError):
        return
    if isinstance(read, dict | list):
        assert looks_like_json(body, kind)


def test_binary_upload_starting_with_nul_is_not_json() -> None:
    mp4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
    assert not looks_like_json(mp4, "audio/mp4")
    assert parse_request(mp4, "audio/mp4") is None


def test_duplicate_keys_found_at_any_depth() -> None:
    assert has_duplicate_key(b'{"a": [{"b": {"c": 1, "c": 2}}]}')
    assert not has_duplicate_key(b'{"a": {"a": {"a": 1}}, "b": [{"a": 1}, {"a": 2}]}')


def test_deep_nesting_past_python_is_refused_not_crashed() -> None:
    body = b'{"a":' * 900 + b"1" + b"}" * 900
    orjson.loads(body)  # orjson reads it (limit 1024) ...
    try:
        parse_request(body, "application/json")
    except GatewayError as refusal:  # ... and so must we, or refuse with a 400
        assert refusal.status == 400
