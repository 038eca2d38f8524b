"""Sample entries with RFC 9162 inclusion proofs against the verified, signed checkpoint.

A sample carries the entry's exact bytes (canonical JSON, so UTF-8 text), its leaf hash, the
audit path and the tree size and root of the checkpoint, whose signed note is in the report.
With only that and the verifier key, anyone can recompute the root and check the signature.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.audit import LogReader, ProofError, verify_inclusion
from gateway.audit.merkle import leaf_hash
from gateway.audit.store import inclusion_proof
from gateway.evidence.collect import EvidenceError, Log
from gateway.evidence.facts import Measure

SAMPLES_PER_CONTROL = 3  # enough to spot-check each kind of evidence; the rest is in the log


def pick(measures: Iterable[Measure], limit: int = SAMPLES_PER_CONTROL) -> list[tuple[str, int]]:
    """The first entry of each entry-derived measure, in order, until `limit`."""
    picked: list[tuple[str, int]] = []
    for m in measures:
        for origin, seqs in (m.seqs or {}).items():
            if seqs and (origin, seqs[0]) not in picked:
                picked.append((origin, seqs[0]))
                break
        if len(picked) == limit:
            break
    return picked


class Prover:
    """Proofs for samples of several logs, each against the checkpoint that was verified."""

    def __init__(self, logs: list[Log]) -> None:
        self._logs = {log.origin: log for log in logs}
        self._readers: dict[str, LogReader] = {}

    def prove(self, origin: str, seq: int) -> dict[str, Any]:
        """The sample for entry `seq` of log `origin`, checked before it is handed out.

        Raises:
            EvidenceError: the proof does not verify (the log changed under us).
        """
        log = self._logs[origin]
        reader = self._readers.setdefault(origin, LogReader(log.directory))
        size = log.checkpoint.size
        raw = reader.read_raw(seq)
        proof = inclusion_proof(reader.node_getter(size), seq, size)
        try:
            if proof["leaf_hash"] != leaf_hash(raw).hex():
                raise ProofError("stored leaf hash differs from the entry")
            path = [bytes.fromhex(p) for p in proof["path"]]
            verify_inclusion(seq, size, leaf_hash(raw), path, log.checkpoint.root)
        except ProofError as exc:
            raise EvidenceError(f"{log.directory}: entry {seq}: {exc}") from None
        return {
            "log": origin,
            "seq": seq,
            "entry": raw.decode(),
            "leaf_hash": proof["leaf_hash"],
            "tree_size": size,
            "path": proof["path"],
            "root": proof["root"],
        }
