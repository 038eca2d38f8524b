"""JSON-aware masking: strings decoded before detection, re-encoded after, valid JSON out."""

import itertools
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway._masker import DEFAULT_RESPONSE_PATHS, Masker
from tests.test_masker_streams import PIECES

M = Masker(["all"], paths=DEFAULT_RESPONSE_PATHS)
EXTRA = ['say "hi"', "back\\slash", "tab\there", "josé.núñez@example.com", "\x01"]
TEXT = st.lists(st.sampled_from(PIECES + EXTRA), max_size=4).map("".join)
DOCS = st.recursive(
    TEXT | st.integers() | st.none() | st.booleans(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(lambda v: {f"k{i}": x for i, x in enumerate(v)})
    ),
    max_leaves=16,
)


def masked_strings(doc):
    if isinstance(doc, str):
        return M.mask_text(doc)[0]
    if isinstance(doc, list):
        return [masked_strings(x) for x in doc]
    if isinstance(doc, dict):
        return {M.mask_text(k)[0]: masked_strings(v) for k, v in doc.items()}
    return doc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=DOCS, ascii_only=st.booleans(), cuts=st.lists(st.integers(0, 10_000), max_size=10))
def test_every_string_is_decoded_masked_and_reencoded(doc, ascii_only, cuts):
    body = json.dumps(doc, ensure_ascii=ascii_only).encode()
    out, counts = M.mask_json_strings(body)
    assert json.loads(out) == masked_strings(doc)
    stream = M.json_stream()
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    streamed = b"".join(stream.push(body[a:b]) for a, b in itertools.pairwise(points))
    assert streamed + stream.finish() == out
    assert stream.counts == counts


def test_escaped_email_in_tool_call_arguments_stays_valid_json():
    """The issue's case: an ASCII-escaped email used to become `...\\u00fa\\[EMAIL]`."""
    args = json.dumps({"to": "josé.núñez@example.com"})  # ensure_ascii: \u00e9 escapes
    assert "\\u00e9" in args
    body = {"choices": [{"message": {"tool_calls": [{"function": {"arguments": args}}]}}]}
    out, counts = M.mask_json(json.dumps(body).encode())
    got = json.loads(out)["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(got) == {"to": "[EMAIL]"}
    assert counts == {"email": 1}


def test_pem_key_with_escaped_newlines_in_arguments_is_masked_whole():
    key = (
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
        "BKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n"
    )
    args = json.dumps({"key": key})
    body = {"choices": [{"message": {"tool_calls": [{"function": {"arguments": args}}]}}]}
    out, _ = M.mask_json(json.dumps(body).encode())
    got = json.loads(out)["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(got) == {"key": "[PRIVATE_KEY]\n"}
    assert b"MIIE" not in out


def test_streamed_tool_call_arguments_are_masked_as_json():
    """Arguments arriving in deltas, cut inside an escape: each event's JSON stays valid and
    the joined arguments are the masked JSON."""
    args = json.dumps({"to": "josé.núñez@example.com", "n": 1})
    events = []
    for i in range(0, len(args), 5):
        delta = {"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + 5]}}]}
        ev = {"id": "c", "model": "m", "choices": [{"index": 0, "delta": delta}]}
        events.append(f"data: {json.dumps(ev)}\n\n".encode())
    events.append(b"data: [DONE]\n\n")
    s = M.sse_stream()
    out = b"".join(s.push(e) for e in events) + s.finish()
    joined = ""
    for line in out.decode().splitlines():
        if line.startswith("data: {"):
            for tc in json.loads(line[6:])["choices"][0]["delta"].get("tool_calls", []):
                joined += tc["function"]["arguments"]
    assert json.loads(joined) == {"to": "[EMAIL]", "n": 1}
    assert s.counts == {"email": 1}
