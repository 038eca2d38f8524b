"""`gateway evidence`: verify the logs, then write the evidence report. Exit 1 on refusal."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from gateway.audit.central import CentralError, export
from gateway.audit.verify import kept_by_origin
from gateway.evidence.collect import EvidenceError
from gateway.evidence.report import build_report

EXIT_REFUSED = 1


def register_evidence(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evidence = verbs.add_parser(
        "evidence",
        help="verify the audit logs and write NIST SP 800-53 evidence (JSON, HTML, OSCAL)",
    )
    evidence.add_argument(
        "-c",
        "--config",
        type=Path,
        help="gateway.toml; without it (with --store or --audit-dir) the report is made from "
        "the logs alone and the controls judged from the configuration are not assessed",
    )
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
    evidence.add_argument(
        "--from",
        dest="from_",
        action="append",
        metavar="CHECKPOINT_FILE",
        help="a signed checkpoint kept from an earlier verification: that log is verified "
        "only from there on (as `audit verify --from`); repeat for each log",
    )
    evidence.add_argument(
        "--store",
        help="a central audit store (postgresql://...): report on every origin it holds",
    )
    evidence.add_argument(
        "--witness",
        action="append",
        default=[],
        help="with --store: a witness key; cosignatures by it are checked and reported",
    )
    evidence.set_defaults(func=_evidence)


def _evidence(args: argparse.Namespace) -> int:
    try:
        if args.store is None:
            html = _report(args, args.audit_dir)
        else:
            if args.audit_dir:
                raise EvidenceError("--store and --audit-dir do not go together")
            with tempfile.TemporaryDirectory(prefix="gateway-central-") as tmp:
                origins = export(args.store, Path(tmp), args.witness)
                if not origins:
                    raise EvidenceError("the central store holds no origin")
                html = _report(args, list(dict.fromkeys(o.writer for o in origins)))
    except (EvidenceError, CentralError) as exc:
        print(f"gateway: evidence: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(html)
    return 0


def _report(args: argparse.Namespace, audit_dirs: list[Path]) -> Path:
    try:
        kept = kept_by_origin(args.from_)
    except OSError as exc:
        raise EvidenceError(f"--from {exc.filename}: {exc.strerror}") from None
    return build_report(
        args.config, audit_dirs, args.since, args.until, args.out, args.verifier, kept
    )
