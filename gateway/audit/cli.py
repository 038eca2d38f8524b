"""`gateway keys ...` and `gateway audit ...` verbs. Handlers return an exit code.

Errors are one line on stderr; no handler ever prints key material except the public
verifier key.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import orjson

from gateway.audit.central_cli import cmd_verify_store, register_central
from gateway.audit.chain import chain_problems
from gateway.audit.checkpoint import Checkpoint, CheckpointError
from gateway.audit.epoch_keys import key_for
from gateway.audit.keys import KeyFileError, init_keys
from gateway.audit.merkle import ProofError
from gateway.audit.seal import SealError, plain_length, unseal_iter
from gateway.audit.shred import register_shred
from gateway.audit.store import (
    CHECKPOINT,
    ENTRIES,
    LEN,
    LogReader,
    consistency_proof,
    inclusion_proof,
    log_chains,
    log_dirs,
    read_file,
)
from gateway.audit.verify import kept_by_origin, verify_log

Subparsers = "argparse._SubParsersAction[argparse.ArgumentParser]"
EXIT_FAIL = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2 unless said otherwise."""


def _fail(msg: str, code: int = EXIT_USAGE) -> int:
    print(f"gateway: error: {msg}", file=sys.stderr)
    return code


def _handler(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn expected errors into one-line messages instead of tracebacks."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (CliError, KeyFileError, SealError, ProofError, ValueError, IndexError) as exc:
            return _fail(str(exc))
        except FileNotFoundError as exc:
            return _fail(f"{exc.filename or exc}: not found")
        except OSError as exc:
            return _fail(f"{exc.filename}: {exc.strerror}")
        except KeyboardInterrupt:
            return 130

    return run


def _audit_dir(args: argparse.Namespace) -> Path:
    """--dir, else [audit] dir from -c gateway.toml."""
    if args.dir:
        return Path(args.dir)
    if args.config:
        try:
            with open(args.config, "rb") as f:
                conf = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise CliError(f"{args.config}: {exc}") from None
        d = conf.get("audit", {}).get("dir")
        if not isinstance(d, str):
            raise CliError(f"{args.config}: [audit] dir is not set")
        return Path(d)
    raise CliError("give --dir DIR (or -c gateway.toml with [audit] dir)")


def _reader(args: argparse.Namespace) -> LogReader:
    d = _audit_dir(args)
    if not (d / ENTRIES).exists():
        logs = [str(p.relative_to(d)) for p in log_dirs(d)]
        if logs:  # entries are numbered per log: which one must be said
            raise CliError(f"{d} holds several logs ({', '.join(logs)}): give --dir {d}/LOG")
        raise CliError(f"{d} is not an audit directory (no {ENTRIES} file)")
    return LogReader(d)


def _dump(obj: object) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def _latest_size(reader: LogReader) -> int:
    """Size of the latest checkpoint (not verified here: the proof's user verifies it)."""
    note = reader.checkpoint()
    text = note[: note.rfind(b"\n\n") + 1] if b"\n\n" in note else b""
    try:
        return Checkpoint.parse_body(text).size
    except (CheckpointError, UnicodeDecodeError):
        return reader.size


@_handler
def cmd_keys_init(args: argparse.Namespace) -> int:
    try:
        signer = init_keys(Path(args.dir), args.name, force=args.force)
    except FileExistsError as exc:
        return _fail(str(exc))
    print(f"wrote {args.dir}/signing.key, sealing.key, masking.key (mode 0600)", file=sys.stderr)
    print(VERIFIER_LABEL, file=sys.stderr)
    print(signer.verifier.encode())  # alone on stdout, so VERIFIER=$(gateway keys init ...) works
    return 0


VERIFIER_LABEL = (
    "verifier key (public) below: keep a copy off this machine and give it to your auditors. "
    "It checks the log's signatures (gateway audit verify --verifier, gateway evidence "
    "--verifier); a copy read from the log directory proves nothing, and without it evidence "
    "reports AU-10 not assessed:"
)


@_handler
def cmd_verify(args: argparse.Namespace) -> int:
    """Every log the directory holds (its own, each worker's, each epoch's) and the chain of
    each writer's epochs; fails if any one fails. With --store: every origin of the central
    audit store."""
    if args.store:
        return cmd_verify_store(args)
    if args.witness or (args.verifier and len(args.verifier) > 1):
        raise CliError("--witness and several --verifier keys go with --store")
    verifier = args.verifier[0] if args.verifier else None
    directory = _audit_dir(args)
    kept = kept_by_origin(args.from_)
    failed = False
    for chain in log_chains(directory) or [[directory]]:
        reports = {}
        for log_dir in chain:
            since = kept.get(_origin_of(log_dir))
            if args.from_ and since is None:
                print(
                    f"note: {log_dir}: no --from checkpoint for its origin; all of it checked",
                    file=sys.stderr,
                )
            report = reports[log_dir] = verify_log(log_dir, verifier, since)
            for w in report.warnings:
                print(f"warning: {log_dir}: {w}", file=sys.stderr)
            print(report.summary(), file=sys.stdout if report.ok else sys.stderr)
            failed = failed or not report.ok
        problems = chain_problems(chain, reports, whole=chain[0] != directory)
        for problem in problems:
            print(f"FAIL chain: {problem}", file=sys.stderr)
        if len(chain) > 1 and not problems:
            writer = chain[-1].parent  # the last of several is always an epoch's log
            print(f"OK chain {writer}: {len(chain)} logs, each chained to the one before")
        failed = failed or bool(problems)
    return EXIT_FAIL if failed else 0


def _origin_of(log_dir: Path) -> str:
    return read_file(log_dir / CHECKPOINT).split(b"\n", 1)[0].decode(errors="replace")


@_handler
def cmd_show(args: argparse.Namespace) -> int:
    reader = _reader(args)
    if args.raw:
        sys.stdout.buffer.write(reader.read_raw(args.seq) + b"\n")
    else:
        _dump(reader.read_entry(args.seq))
    return 0


@_handler
def cmd_tail(args: argparse.Namespace) -> int:
    d = _audit_dir(args)
    reader = _reader(args)
    offsets = reader.offsets()
    start = max(0, len(offsets) - args.n)
    pos = offsets[start] if start < len(offsets) else _size_of(d / ENTRIES)
    with open(d / ENTRIES, "rb") as f:
        while True:
            f.seek(pos)
            pos += _print_whole_records(f.read())
            if not args.follow:
                return 0
            sys.stdout.flush()
            time.sleep(0.5)


def _size_of(path: Path) -> int:
    return path.stat().st_size


def _print_whole_records(buf: bytes) -> int:
    """Print each whole record of buf as a JSON line; returns bytes consumed."""
    pos = 0
    while pos + 4 <= len(buf):
        (n,) = LEN.unpack_from(buf, pos)
        if pos + 4 + n > len(buf):
            break
        sys.stdout.buffer.write(buf[pos + 4 : pos + 4 + n] + b"\n")
        pos += 4 + n
    return pos


@_handler
def cmd_proof(args: argparse.Namespace) -> int:
    reader = _reader(args)
    size = _latest_size(reader) if args.size is None else args.size
    _dump(inclusion_proof(reader.node_getter(size), args.index, size))
    return 0


@_handler
def cmd_consistency(args: argparse.Namespace) -> int:
    reader = _reader(args)
    _dump(consistency_proof(reader.node_getter(args.to), args.old, args.to))
    return 0


@_handler
def cmd_unseal(args: argparse.Namespace) -> int:
    d = _audit_dir(args)
    entry = _reader(args).read_entry(args.seq)
    sealed = entry.get("sealed") or {}
    names = [args.name] if args.name else sorted(sealed, key=lambda n: (n != "request", n))
    if not names:
        raise CliError(f"entry {args.seq} has no sealed originals")
    missing = [name for name in names if name not in sealed]
    if missing:
        raise CliError(f"entry {args.seq} has no sealed {missing[0]!r}")
    # The epoch's own key, if it has one; found (or refused as shredded) before any output.
    keys = {name: key_for(d, sealed[name], Path(args.key)) for name in names}
    for name in names:
        if not args.name:
            size = plain_length(sealed[name])
            sys.stdout.buffer.write(f"=== {name} ({size} bytes)\n".encode())
        for chunk in unseal_iter(d, entry, name, keys[name]):  # a large body is never held whole
            sys.stdout.buffer.write(chunk)
        if not args.name:
            sys.stdout.buffer.write(b"\n")
    return 0


def _dir_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", help="audit directory")
    p.add_argument("-c", "--config", help="gateway.toml; its [audit] dir is used without --dir")


def register_keys(verbs: Subparsers) -> None:
    """`gateway keys init`."""
    keys = verbs.add_parser("keys", help="create signing, sealing and masking keys")
    sub = keys.add_subparsers(dest="keys_verb", required=True, metavar="VERB")
    init = sub.add_parser("init", help="write signing.key, sealing.key, masking.key (0600)")
    init.add_argument("--dir", required=True, help="directory for the key files")
    init.add_argument(
        "--name",
        default=f"{socket.gethostname()}/audit",
        help="signer name in checkpoint signatures (default: <hostname>/audit)",
    )
    init.add_argument("--force", action="store_true", help="replace existing keys")
    init.set_defaults(func=cmd_keys_init)


def register_audit(verbs: Subparsers) -> None:
    """`gateway audit verify|show|tail|proof|consistency|unseal`."""
    audit = verbs.add_parser("audit", help="verify and inspect the audit log")
    sub = audit.add_subparsers(dest="audit_verb", required=True, metavar="VERB")

    p = sub.add_parser("verify", help="recompute the tree, check signatures and sealed blobs")
    _dir_args(p)
    p.add_argument(
        "--verifier",
        action="append",
        help="verifier key, or a file holding it (default: DIR/verifier); with --store: KEY for "
        "every origin or ORIGIN=KEY, repeatable (default: each origin's key as first shipped)",
    )
    p.add_argument(
        "--from",
        dest="from_",
        action="append",
        metavar="CHECKPOINT_FILE",
        help="a signed checkpoint you kept from an earlier verify (e.g. a copy of DIR/checkpoint):"
        " the log must extend it, and only the entries after it are read; repeat for each log",
    )
    p.add_argument("--store", help="verify every origin of a central store (postgresql://...)")
    p.add_argument(
        "--witness", action="append", default=[], help="with --store: a witness key to check"
    )
    p.set_defaults(func=cmd_verify)

    register_central(sub)
    register_shred(sub)

    p = sub.add_parser("show", help="print entry N")
    p.add_argument("seq", type=int, metavar="N", help="the entry's seq (0 is the first)")
    _dir_args(p)
    p.add_argument("--raw", action="store_true", help="the exact canonical bytes")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("tail", help="print the last entries as JSON lines")
    _dir_args(p)
    p.add_argument("-n", type=int, default=10, help="how many (default 10)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new entries")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("proof", help="inclusion proof of entry N (JSON)")
    _dir_args(p)
    p.add_argument("--index", type=int, required=True, help="seq of the entry to prove")
    p.add_argument("--size", type=int, help="tree size (default: latest checkpoint)")
    p.set_defaults(func=cmd_proof)

    p = sub.add_parser("consistency", help="consistency proof between two tree sizes (JSON)")
    _dir_args(p)
    p.add_argument(
        "--from", dest="old", type=int, required=True, help="the older tree size (a checkpoint's)"
    )
    p.add_argument("--to", type=int, required=True, help="the newer tree size")
    p.set_defaults(func=cmd_consistency)

    p = sub.add_parser("unseal", help="decrypt entry N's original request and response")
    p.add_argument("seq", type=int, metavar="N", help="the entry's seq")
    _dir_args(p)
    p.add_argument("--key", required=True, help="sealing key file")
    p.add_argument("--name", help="only this blob (e.g. request), written raw")
    p.set_defaults(func=cmd_unseal)
