"""Whether a rule's paths select any text in a JSON answer decides if the masker falls back to
every string; the masker's own report of text it read (`mask_json_with_selection`) must never
say so where the probe finds none, or an answer could skip the fallback it needed.

Compared on generated documents shaped like model answers (OpenAI, Ollama, Anthropic, TGI,
Vertex AI), with empty strings, whitespace, strings that hold JSON, numbers and nulls where
text usually is.
"""

from __future__ import annotations

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway._masker import Masker
from gateway.masking import PROBE, RESPONSE_PATHS_BY_FORMAT, _all_paths

PATHS = tuple(_all_paths(RESPONSE_PATHS_BY_FORMAT))
PROBE_MASKER = Masker([PROBE[0]], style="tag", custom=[PROBE], paths=list(PATHS))
RULE_MASKER = Masker(["email"], paths=list(PATHS))

TEXT = st.sampled_from(["", " ", "\n", "hi", " {", '{"a": "b"}', "[1]", "{}", " x ", "\u00a0{"])
LEAF = st.one_of(TEXT, st.none(), st.integers(0, 3), st.booleans())
KEYS = st.sampled_from(
    [
        "choices",
        "message",
        "content",
        "delta",
        "text",
        "response",
        "candidates",
        "parts",
        "generated_text",
        "outputs",
        "predictions",
        "completion",
        "output",
        "results",
        "x",
    ]
)
DOCUMENT = st.recursive(
    LEAF,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=1500, deadline=None)
@given(DOCUMENT)
@example({"choices": [{"message": {"content": "hello"}}]})
@example({"choices": [{"message": {"content": ""}}]})
@example({"choices": [{"message": {"content": "{}"}}]})
@example({"choices": {"a": {"message": {"content": "x"}}}})  # [*] over an object's members
@example([{"generated_text": " "}])
@example({"predictions": ["a"]})
def test_text_selected_never_contradicts_the_probe(document: object) -> None:
    body = orjson.dumps(document)
    masked, counts, text_selected = RULE_MASKER.mask_json_with_selection(body)
    assert (masked, counts) == RULE_MASKER.mask_json(body)
    if text_selected:
        assert PROBE_MASKER.mask_json(body)[1], body


def test_text_selected_for_a_chat_answer() -> None:
    """The case it exists for: an OpenAI answer's content is found without the probe."""
    body = orjson.dumps({"choices": [{"message": {"role": "assistant", "content": "Hello"}}]})
    assert RULE_MASKER.mask_json_with_selection(body)[2]
