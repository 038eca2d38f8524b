"""`gateway audit central-schema`, `gateway audit witness` and `gateway audit verify --store`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from gateway import logs
from gateway.audit.central import CentralError, ExportedOrigin, export, writer_epoch
from gateway.audit.central_schema import schema_sql
from gateway.audit.chain import chain_problems
from gateway.audit.keys import KeyFileError, read_signing_key
from gateway.audit.note import NoteError, Verifier
from gateway.audit.store import writer_chain
from gateway.audit.verify import VerifyReport, verify_log
from gateway.audit.witness import Witness, cosigner_vkey

EXIT_FAIL = 1
EXIT_USAGE = 2


def pinned_verifiers(values: list[str] | None) -> tuple[str | None, dict[str, str]]:
    """`--verifier KEY` (every origin) and `--verifier ORIGIN=KEY` (one origin); KEY may be a
    file holding the key."""
    every: str | None = None
    per_origin: dict[str, str] = {}
    for value in values or []:
        head = value.split("+", 1)[0]  # a key's name part never holds "=": an origin does
        origin, sep, key = value.partition("=") if "=" in head else ("", "", value)
        if Path(key).is_file():
            key = Path(key).read_text().strip()
        if sep:
            per_origin[origin] = key
        else:
            every = key
    return every, per_origin


def cmd_central_schema(args: argparse.Namespace) -> int:
    try:
        print(schema_sql(args.role, args.witness_role, args.keys_role), end="")
    except ValueError as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def cmd_verify_store(args: argparse.Namespace) -> int:
    """Every origin of the central store, verified like a local log; exit 1 if any fails."""
    every, per_origin = pinned_verifiers(args.verifier)
    failed = False
    with tempfile.TemporaryDirectory(prefix="gateway-central-") as tmp:
        try:
            origins = export(args.store, Path(tmp), args.witness)
        except CentralError as exc:
            print(f"gateway: error: {exc}", file=sys.stderr)
            return EXIT_FAIL
        if not origins:
            print("gateway: error: the central store holds no origin", file=sys.stderr)
            return EXIT_FAIL
        reports = {}
        for origin in origins:
            report = verify_log(origin.directory, per_origin.get(origin.origin, every))
            reports[origin.directory] = report
            for warning in report.warnings:
                print(f"warning: {origin.origin}: {warning}", file=sys.stderr)
            summary = report.summary().replace(str(origin.directory), origin.origin, 1)
            witnessed = origin.witnessed()
            if witnessed is None:
                summary += "; not witnessed"
            else:
                how = {True: "verified", None: "not checked: pass --witness KEY"}[
                    witnessed.verified
                ]
                summary += f"; witnessed up to size {witnessed.size} by {witnessed.witness} ({how})"
            bad = [c for c in origin.cosigned if c.verified is False]
            if bad:
                summary += f"; {len(bad)} cosignatures do not verify"
            print(summary, file=sys.stdout if report.ok and not bad else sys.stderr)
            failed = failed or not report.ok or bool(bad)
        for writer in dict.fromkeys(o.writer for o in origins):
            failed = not _chain_ok(writer_chain(writer), reports, origins) or failed
    return EXIT_FAIL if failed else 0


def _chain_ok(
    chain: list[Path], reports: dict[Path, VerifyReport], origins: list[ExportedOrigin]
) -> bool:
    """One writer's logs in the store chain epoch to epoch; problems and the OK line printed
    with origins, not the temporary directories they were exported to."""
    names = sorted(((str(o.directory), o.origin) for o in origins), key=lambda n: -len(n[0]))
    problems = chain_problems(chain, reports, whole=True)
    for problem in problems:
        for directory, origin in names:
            problem = problem.replace(directory, origin)
        print(f"FAIL chain: {problem}", file=sys.stderr)
    if len(chain) > 1 and not problems:
        writer = writer_epoch(next(o.origin for o in origins if o.directory == chain[0]))[0]
        print(f"OK chain {writer}: {len(chain)} logs, each chained to the one before")
    return not problems


def cmd_witness(args: argparse.Namespace) -> int:
    logs.configure()
    try:
        signer = read_signing_key(Path(args.key))
        every, per_origin = pinned_verifiers(args.verifier)
        pins = {o: Verifier.parse(k) for o, k in per_origin.items()}
        default = Verifier.parse(every) if every else None
    except (KeyFileError, NoteError, OSError) as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"witness key: {cosigner_vkey(signer)}", file=sys.stderr, flush=True)
    witness = Witness(args.store, signer, pins, default)
    try:
        return asyncio.run(witness.run(args.interval, args.once))
    except KeyboardInterrupt:
        return 130


def register_central(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "central-schema", help="print the SQL of the central audit store (for an administrator)"
    )
    p.add_argument("--role", required=True, help="the gateways' database role (INSERT, SELECT)")
    p.add_argument("--witness-role", help="the witness's role (SELECT; INSERT cosignatures)")
    p.add_argument(
        "--keys-role",
        help="also a deletable table of wrapped epoch keys, for this role (SELECT, INSERT, DELETE)",
    )
    p.set_defaults(func=cmd_central_schema)

    p = sub.add_parser("witness", help="cosign consistent checkpoints in the central store")
    p.add_argument("--store", required=True, help="postgresql://WITNESS_ROLE@HOST/DATABASE")
    p.add_argument("--key", required=True, help="the witness's signing.key (gateway keys init)")
    p.add_argument(
        "--verifier",
        action="append",
        help="pin a log's verifier key: KEY for every origin or ORIGIN=KEY (default: the key "
        "each origin shipped first)",
    )
    p.add_argument("--interval", type=float, default=2.0, help="seconds between rounds")
    p.add_argument("--once", action="store_true", help="one round, then exit (1 if refused)")
    p.set_defaults(func=cmd_witness)
