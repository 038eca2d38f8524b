"""RFC 9162 Merkle tree hashing, proofs and proof verification. Pure functions, no I/O.

Proof generation takes a `node(level, index)` callable that returns the hash of the full
subtree covering leaves [index * 2**level, (index + 1) * 2**level); hashes of the ragged
right edge are derived from those, so a store of full-subtree hashes is enough.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = SHA-256() per RFC 9162 §2.1.1

NodeGetter = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof does not verify, or was asked for with impossible sizes."""


def leaf_hash(entry: bytes) -> bytes:
    """SHA-256(0x00 || entry)."""
    return hashlib.sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def next_level(level: bytes | bytearray) -> bytes:
    """Hashes of the full parents of a concatenated row of full-subtree hashes."""
    sha, out, pair = hashlib.sha256, bytearray(), 2 * HASH_SIZE
    view = memoryview(level)
    for i in range(0, len(level) - pair + 1, pair):
        h = sha(NODE_PREFIX)
        h.update(view[i : i + pair])
        out += h.digest()  # appended, not listed: a big log's row is one buffer, not objects
    view.release()
    return bytes(out)


def build_levels(leaves: Iterable[bytes]) -> list[bytes]:
    """Every full-subtree hash, one concatenated row per level (row 0 = leaf hashes)."""
    rows = [b"".join(leaves)]
    while len(rows[-1]) >= 2 * HASH_SIZE:
        rows.append(next_level(rows[-1]))
    return rows


def levels_getter(rows: Sequence[bytes]) -> NodeGetter:
    """A node getter over rows built by build_levels."""

    def node(level: int, index: int) -> bytes:
        return bytes(rows[level][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    return node


def subtree_hash(node: NodeGetter, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range reached by the RFC 9162 recursion (start aligned)."""
    n = end - start
    if n == 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0 and start % n == 0:
        level = n.bit_length() - 1
        return node(level, start >> level)
    k = _split(n)
    return node_hash(subtree_hash(node, start, start + k), subtree_hash(node, start + k, end))


def root(node: NodeGetter, size: int) -> bytes:
    """MTH of the first `size` leaves."""
    return subtree_hash(node, 0, size)


def inclusion_path(node: NodeGetter, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) per RFC 9162 §2.1.3.1, leaf-side first."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not in a tree of size {size}")
    path: list[bytes] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            path.append(subtree_hash(node, start + k, end))
            end = start + k
        else:
            path.append(subtree_hash(node, start, start + k))
            start, m = start + k, m - k
    path.reverse()
    return path


def consistency_path(node: NodeGetter, old: int, new: int) -> list[bytes]:
    """PROOF(old, D[0:new]) per RFC 9162 §2.1.4.1."""
    if not 0 < old <= new:
        raise ProofError(f"no consistency proof from size {old} to size {new}")
    proof: list[bytes] = []
    start, end, m, whole = 0, new, old, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            proof.append(subtree_hash(node, start + k, end))
            end = start + k
        else:
            proof.append(subtree_hash(node, start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        proof.append(subtree_hash(node, start, end))
    proof.reverse()
    return proof


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """Root implied by an inclusion proof, RFC 9162 §2.1.3.2 steps 1-6.

    Raises:
        ProofError: the index is outside the tree or the path has the wrong length.
    """
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not in a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], expected_root: bytes
) -> None:
    """Check an inclusion proof against a trusted root.

    Raises:
        ProofError: the proof does not lead to `expected_root`.
    """
    if len(leaf) != HASH_SIZE or len(expected_root) != HASH_SIZE:
        raise ProofError("leaf and root must be SHA-256 hashes")
    if root_from_inclusion(index, size, leaf, path) != expected_root:
        raise ProofError(f"inclusion proof for leaf {index} in size {size} does not match root")


def verify_consistency(
    old: int, new: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Check that the tree of size `new` extends the tree of size `old` (RFC 9162 §2.1.4.2).

    A size-0 tree is refused: every tree extends it, so the check proves nothing.

    Raises:
        ProofError: the proof is malformed or does not match both roots.
    """
    if old < 1 or new < old:
        raise ProofError(f"no consistency proof from size {old} to size {new}")
    if old == new:
        if proof:
            raise ProofError("equal sizes need an empty proof")
        if old_root != new_root:
            raise ProofError("equal sizes but different roots")
        return
    if not proof:
        raise ProofError("empty consistency proof")
    path = list(proof)
    if old & (old - 1) == 0:  # old is a power of two: its root is the first subtree
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root or sr != new_root:
        raise ProofError(f"consistency proof from size {old} to {new} does not match the roots")


class CompactRange:
    """The right edge of a growing tree: O(log n) memory, O(1) amortized per leaf.

    `on_node(level, index, hash)` sees every full subtree hash as it is completed, which
    is how the writer fills its node store without reading it back.
    """

    def __init__(
        self,
        size: int = 0,
        edge: Sequence[bytes] = (),
        on_node: Callable[[int, int, bytes], None] | None = None,
    ) -> None:
        if len(edge) != size.bit_count():
            raise ValueError("edge must hold one hash per set bit of size")
        self.size = size
        self.edge = list(edge)  # full subtrees left to right, largest first
        self._on_node = on_node

    @classmethod
    def from_nodes(cls, node: NodeGetter, size: int) -> CompactRange:
        """Rebuild the edge of a tree of `size` leaves from stored full-subtree hashes."""
        edge, start = [], 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                edge.append(node(level, start >> level))
                start += 1 << level
        return cls(size, edge)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash, merging completed subtrees."""
        index, h, level = self.size, leaf, 0
        if self._on_node:
            self._on_node(0, index, h)
        while index >> level & 1:
            h = node_hash(self.edge.pop(), h)
            level += 1
            if self._on_node:
                self._on_node(level, index >> level, h)
        self.edge.append(h)
        self.size += 1

    def root(self) -> bytes:
        """MTH of all leaves so far."""
        if not self.edge:
            return EMPTY_ROOT
        h = self.edge[-1]
        for left in reversed(self.edge[:-1]):
            h = node_hash(left, h)
        return h
