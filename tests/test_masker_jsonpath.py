"""RFC 9535 conformance through the Python API: the vendored JSONPath Compliance Test Suite.

Every valid selector must compile and every invalid one must be refused with ValueError.
For valid selectors, the string nodes `mask_json` changes (with a detector matching any
non-empty string) must be exactly the selected string nodes the suite lists. The Rust test
`masker-rs/tests/jsonpath_cts.rs` checks full results (all node types, order, duplicates).
"""

import json
from pathlib import Path
from typing import Any

import pytest

from gateway._masker import Masker

CTS = json.loads((Path(__file__).parent / "vectors/jsonpath/cts.json").read_text())["tests"]
ANY = [("anything", r"(?s).{1,60}", None)]


def normalized(path: list[str | int]) -> str:
    out = "$"
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
            continue
        esc = {
            "'": "\\'",
            "\\": "\\\\",
            "\b": "\\b",
            "\f": "\\f",
            "\n": "\\n",
            "\r": "\\r",
            "\t": "\\t",
        }
        name = "".join(esc.get(c, f"\\u{ord(c):04x}" if ord(c) < 0x20 else c) for c in seg)
        out += f"['{name}']"
    return out


def changed(a: Any, b: Any, path: list[str | int], acc: set[str]) -> None:
    if isinstance(a, dict):
        for k in a:
            changed(a[k], b[k], [*path, k], acc)
    elif isinstance(a, list):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            changed(x, y, [*path, i], acc)
    elif isinstance(a, str) and a != b:
        acc.add(normalized(path))


def string_paths(doc: Any, path: list[str | int], acc: dict[str, Any]) -> None:
    acc[normalized(path)] = doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            string_paths(v, [*path, k], acc)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            string_paths(v, [*path, i], acc)


@pytest.mark.parametrize("case", CTS, ids=[c["name"] for c in CTS])
def test_cts(case: dict) -> None:
    if case.get("invalid_selector"):
        with pytest.raises(ValueError):
            Masker(["anything"], custom=ANY, paths=[case["selector"]])
        return
    m = Masker(["anything"], custom=ANY, paths=[case["selector"]])
    doc = case["document"]
    out, _ = m.mask_json(json.dumps(doc).encode())
    got: set[str] = set()
    changed(doc, json.loads(out), [], got)
    nodes: dict[str, Any] = {}
    string_paths(doc, [], nodes)
    alternatives = case.get("results_paths") or [case.get("result_paths")]
    if alternatives == [None]:
        pytest.skip("case lists no result paths")
    for alt in alternatives:
        want = {p for p in alt if isinstance(nodes.get(p), str) and nodes[p] != ""}
        if got == want:
            return
    pytest.fail(f"selected {sorted(got)}, want {sorted(want)}")
