"""RFC 9162 tree hashing and proofs: the transparency-dev/merkle probes and property tests."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ProofError,
    build_levels,
    consistency_path,
    inclusion_path,
    leaf_hash,
    levels_getter,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).parent / "vectors" / "merkle"
LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOT8 = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


def _b64(v: str | None) -> bytes:
    return base64.b64decode(v or "")


def _probes(kind: str) -> list[Path]:
    return sorted((VECTORS / kind).rglob("*.json"))


def _mth(leaves: list[bytes]) -> bytes:
    """MTH straight from RFC 9162 §2.1.1, recursively, for cross-checking."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def test_vectors_are_present() -> None:
    assert len(_probes("inclusion")) > 80 and len(_probes("consistency")) > 80
    assert (VECTORS / "LICENSE").is_file()


def test_root_of_eight_leaves_matches_published_value() -> None:
    rows = build_levels(leaf_hash(x) for x in LEAVES)
    assert root(levels_getter(rows), 8).hex() == ROOT8
    assert _mth(LEAVES).hex() == ROOT8


@pytest.mark.parametrize("path", _probes("inclusion"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_inclusion_probe(path: Path) -> None:
    probe = json.loads(path.read_text())
    args = (
        probe["leafIdx"],
        probe["treeSize"],
        _b64(probe["leafHash"]),
        [_b64(p) for p in probe["proof"] or []],
        _b64(probe["root"]),
    )
    if probe["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", _probes("consistency"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_consistency_probe(path: Path) -> None:
    probe = json.loads(path.read_text())
    args = (
        probe["size1"],
        probe["size2"],
        [_b64(p) for p in probe["proof"] or []],
        _b64(probe["root1"]),
        _b64(probe["root2"]),
    )
    if probe["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_generated_proofs_match_probes() -> None:
    """Our proof generation yields exactly the happy-path proofs of the probe set."""
    node = levels_getter(build_levels(leaf_hash(x) for x in LEAVES))
    for path in _probes("inclusion"):
        probe = json.loads(path.read_text())
        if not probe["wantErr"] and probe["treeSize"] <= 8 and path.parent.name != "single-entry":
            want = [_b64(p) for p in probe["proof"] or []]
            assert inclusion_path(node, probe["leafIdx"], probe["treeSize"]) == want
    for path in _probes("consistency"):
        probe = json.loads(path.read_text())
        if not probe["wantErr"] and 0 < probe["size1"] < probe["size2"] <= 8:
            want = [_b64(p) for p in probe["proof"]]
            assert consistency_path(node, probe["size1"], probe["size2"]) == want


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=70), st.data())
def test_random_trees_prove_and_verify(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    hashes = [leaf_hash(x) for x in leaves]
    node = levels_getter(build_levels(hashes))
    size = data.draw(st.integers(1, n))
    index = data.draw(st.integers(0, size - 1))
    old = data.draw(st.integers(1, size))
    r = root(node, size)
    assert r == _mth(leaves[:size])
    verify_inclusion(index, size, hashes[index], inclusion_path(node, index, size), r)
    proof = consistency_path(node, old, size)
    verify_consistency(old, size, proof, root(node, old), r)
    if proof:
        bad = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
        with pytest.raises(ProofError):
            verify_consistency(old, size, bad, root(node, old), r)
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaf_hash(b"other"), inclusion_path(node, index, size), r)


@given(st.lists(st.binary(max_size=4), max_size=40))
def test_compact_range_matches_full_tree(leaves: list[bytes]) -> None:
    seen: dict[tuple[int, int], bytes] = {}
    rng = CompactRange(on_node=lambda lvl, i, h: seen.__setitem__((lvl, i), h))
    for x in leaves:
        rng.append(leaf_hash(x))
    assert rng.root() == (_mth(leaves) if leaves else EMPTY_ROOT)
    node = levels_getter(build_levels(leaf_hash(x) for x in leaves))
    assert all(node(lvl, i) == h for (lvl, i), h in seen.items())
    assert CompactRange.from_nodes(node, len(leaves)).root() == rng.root()


def test_impossible_requests_are_refused() -> None:
    node = levels_getter(build_levels(leaf_hash(x) for x in LEAVES))
    with pytest.raises(ProofError):
        inclusion_path(node, 8, 8)
    with pytest.raises(ProofError):
        consistency_path(node, 0, 8)
    with pytest.raises(ProofError):
        consistency_path(node, 5, 4)
