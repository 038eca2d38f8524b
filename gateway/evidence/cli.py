"""`gateway evidence`: verify the logs, then write the evidence report. Exit 1 on refusal."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.evidence.collect import EvidenceError
from gateway.evidence.report import build_report

EXIT_REFUSED = 1


def register_evidence(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evidence = verbs.add_parser(
        "evidence",
        help="verify the audit logs and write NIST SP 800-53 evidence (JSON, HTML, OSCAL)",
    )
    evidence.add_argument("-c", "--config", type=Path, required=True, help="gateway.toml")
    evidence.add_argument(
        "--since",
        help="start of the period: RFC 3339 time or YYYY-MM-DD (UTC); default: the log's first "
        "signed entry",
    )
    evidence.add_argument(
        "--until",
        help="end of the period (excluded), like --since; default: just after the last signed "
        "entry, so without both the whole verified log is reported",
    )
    evidence.add_argument("--out", type=Path, required=True, help="directory for the report")
    evidence.add_argument(
        "--audit-dir",
        type=Path,
        action="append",
        default=[],
        help="an audit directory, once per replica (default: [audit] dir of the config)",
    )
    evidence.add_argument(
        "--verifier",
        action="append",
        help="verifier key or a file holding it: once for all logs, or once per --audit-dir "
        "in order (default: each log's own copy, reported as not pinned)",
    )
    evidence.set_defaults(func=_evidence)


def _evidence(args: argparse.Namespace) -> int:
    try:
        html = build_report(
            args.config, args.audit_dir, args.since, args.until, args.out, args.verifier
        )
    except EvidenceError as exc:
        print(f"gateway: evidence: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(html)
    return 0
