"""NIST SP 800-53 evidence computed from verified audit logs and the gateway configuration.

`build_report(config, audit_dirs, since, until, out_dir, verifier=None)` writes evidence.json,
evidence.html and assessment-results.json (OSCAL) and returns the HTML's path. See
docs/evidence.md for every field and how to check the figures.
"""

from gateway.evidence.collect import EvidenceError
from gateway.evidence.report import build_report

__all__ = ["EvidenceError", "build_report"]
