"""The strict request parser against Python's json: never a different model, at most a 400."""

from __future__ import annotations

import json
import math

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway._masker import repeats_a_name
from gateway.errors import GatewayError
from gateway.strict_json import (
    has_duplicate_key,
    looks_like_json,
    pairs_repeat_a_key,
    parse_request,
    request_model,
)

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


def _json_text(value: object) -> str:
    """A JSON text whose objects are lists of pairs, so a name may come twice; each name is
    written escaped (`\\u00e9`) or as it is, at random, so equal names may differ in bytes."""
    if isinstance(value, list) and value and value[0] == "object":
        members = ", ".join(
            f"{json.dumps(name, ensure_ascii=escaped)}: {_json_text(item)}"
            for (name, escaped), item in value[1:]
        )
        return "{" + members + "}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_json_text(item) for item in value) + "]"
    return json.dumps(value)


def _nesting(value: object) -> int:
    if isinstance(value, tuple):
        return 1 + max(map(_nesting, value), default=0)
    if isinstance(value, list) and value and value[0] == "object":
        return 1 + max((_nesting(item) for _, item in value[1:]), default=0)
    return 0


NAMES = st.tuples(st.sampled_from(["a", "b", "é", "😀", "a\u0000"]), st.booleans())
LEAVES = st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.text(max_size=4)
DOCUMENTS = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4).map(tuple)
        | st.lists(st.tuples(NAMES, inner), max_size=4).map(lambda pairs: ["object", *pairs])
    ),
    max_leaves=12,
)


@given(DOCUMENTS, st.integers(0, 140))
def test_the_fast_duplicate_check_answers_as_python_json_does(document: object, depth: int) -> None:
    """The masker's check answers exactly as `json` with a pairs hook whenever it answers,
    names compared decoded (`"\\u00e9"` is `"é"`), at any depth it reads; past that it leaves
    the body to `json` (has_duplicate_key still answers)."""
    body = ("[" * depth + _json_text(document) + "]" * depth).encode()
    expected = pairs_repeat_a_key(body)
    assert has_duplicate_key(body) == expected
    try:
        assert repeats_a_name(body) == expected
    except ValueError:
        assert depth + _nesting(document) >= 128  # only a body as deep as serde_json stops at
