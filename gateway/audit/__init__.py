"""Verifiable audit store: an append-only RFC 9162 Merkle log with signed checkpoints.

See docs/audit-format.md for the on-disk format a third party verifies.
"""

from gateway.audit.canonical import CanonicalError, canonical
from gateway.audit.checkpoint import Checkpoint, CheckpointError
from gateway.audit.epoch_keys import KeyShredded, unseal
from gateway.audit.keys import KeyFileError, init_keys, read_secret_key, read_signing_key
from gateway.audit.log import AuditLog, AuditUnavailable
from gateway.audit.merkle import ProofError, verify_consistency, verify_inclusion
from gateway.audit.note import NoteError, Signer, Verifier
from gateway.audit.recovery import AuditOpenError
from gateway.audit.seal import SealError
from gateway.audit.store import LogReader
from gateway.audit.verify import VerifyReport, verify_log

__all__ = [
    "AuditLog",
    "AuditOpenError",
    "AuditUnavailable",
    "CanonicalError",
    "Checkpoint",
    "CheckpointError",
    "KeyFileError",
    "KeyShredded",
    "LogReader",
    "NoteError",
    "ProofError",
    "SealError",
    "Signer",
    "Verifier",
    "VerifyReport",
    "canonical",
    "init_keys",
    "read_secret_key",
    "read_signing_key",
    "unseal",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
]
