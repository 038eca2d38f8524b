"""Open, verify and stream each audit log, keeping only what a signed checkpoint covers.

Evidence is computed from entries a third party can check. Each log is verified first
(`gateway audit verify`; a log that fails is refused and nothing is reported) and its verified
checkpoint and first and last time stamps read; then one pass over its entries, read in chunks,
feeds the report's figures (nothing keeps the log in memory) and re-hashes them against that
checkpoint. Figures use only entries the checkpoint covers, so every figure has an inclusion
proof.

A source of verified entries is anything that calls `feed(log, seq, entry)` in seq order for
one log and raises EvidenceError if the log does not verify: `stream_log` is the local one.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from gateway.audit import Checkpoint, CheckpointError, LogReader, Verifier, VerifyReport, verify_log
from gateway.audit.chain import chain_problems
from gateway.audit.merkle import CompactRange, leaf_hash
from gateway.audit.store import (
    CHECKPOINT,
    CHECKPOINTS,
    ENTRIES,
    iter_records,
    log_chains,
    read_file,
)
from gateway.audit.store import scan_frames as scan
from gateway.audit.verify import load_verifier


class EvidenceError(Exception):
    """Evidence cannot be produced: the message names the log (or input) and why."""


@dataclass(frozen=True)
class Period:
    """The half-open interval [since, until) the report covers, in UTC.

    A bound not given defaults to the verified log itself: its first signed entry, or just
    after its last one, so that without --since and --until the whole log is reported on.
    """

    since: datetime
    until: datetime
    since_given: bool = True
    until_given: bool = True

    def __post_init__(self) -> None:
        if self.until <= self.since:
            raise EvidenceError(f"--until {self.until} is not after --since {self.since}")

    def contains(self, ts: datetime) -> bool:
        return self.since <= ts < self.until

    def describe(self) -> str:
        """How the period was chosen, for the report."""
        given = {(True, True): "as given with --since and --until",
                 (False, False): "the whole verified log (no --since or --until given): from "
                 "its first signed entry to just after its last",
                 (True, False): "from --since to just after the last signed entry",
                 (False, True): "from the first signed entry to --until"}  # fmt: skip
        return given[(self.since_given, self.until_given)]

    @classmethod
    def resolve(cls, since: datetime | None, until: datetime | None, logs: list[Log]) -> Period:
        """The period, with a missing bound taken from the logs' signed entries."""
        stamps = [t for log in logs for t in log.bounds]
        first = min(stamps, default=datetime.now(UTC))
        last = max(stamps, default=first) + TICK
        return cls(since or first, until or last, since is not None, until is not None)


TICK = timedelta(microseconds=1)  # entry times have microseconds: just after the last one
BOUND_PROBES = 64  # entries looked at from each end for a valid time stamp


def parse_time(text: str) -> datetime:
    """An RFC 3339 time or a date (midnight); naive times are taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise EvidenceError(f"{text!r} is not an RFC 3339 time or YYYY-MM-DD date") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def entry_time(entry: dict[str, Any]) -> datetime | None:
    """The entry's `ts`, or None when it is missing or not a time (AU-8 reports those)."""
    try:
        return parse_time(entry["ts"])
    except (KeyError, TypeError, EvidenceError):
        return None


@dataclass
class Log:
    """One audit log: what `open_log` read, then what its verified pass found."""

    directory: Path
    verifier: Verifier
    pinned: bool  # False: the key came from the log's own directory
    latest: Checkpoint  # the latest signed checkpoint at open; figures use entries below it
    latest_note: str
    bounds: list[datetime] = field(default_factory=list)  # first and last signed entry's ts
    report: VerifyReport | None = None  # set once verified
    checkpoint: Checkpoint | None = None  # the checkpoint at the period's end (see choose)
    note: str = ""  # its signed note, verbatim
    period_seqs: array = field(default_factory=lambda: array("q"))  # signed, ts in period
    unsigned: array = field(default_factory=lambda: array("q"))  # in-period, past `latest`
    written: int = 0  # entries written before the period ended

    @property
    def origin(self) -> str:
        return self.latest.origin


def seq_array(log: Log) -> array:
    """An empty seq list for `log`: 4 bytes a seq while seqs fit (a 1M-entry log's measures
    are most of a report's memory), else 8."""
    return array("I" if log.latest.size < 2**32 else "q")


def open_logs(
    directories: list[Path],
    verifiers: list[str] | None = None,
    kept: dict[str, bytes] | None = None,
) -> list[Log]:
    """Open every log; refuse on the first that fails, on a broken chain of epochs, or on a
    repeated origin.

    Args:
        verifiers: none (each log's own `verifier` file), one key for every log, or one per
            directory in the same order (replicas may sign with keys of their own).
        kept: checkpoints the auditor kept, by origin (`--from`): those logs are verified
            only from there on (verify_log's `since`).

    Raises:
        EvidenceError: a log fails verification or its chain of epochs breaks, or two logs
            share an origin so their figures could not be told apart.
    """
    keys: list[str | None] = list(verifiers or [None])
    if len(keys) == 1:
        keys *= len(directories)
    if len(keys) != len(directories):
        raise EvidenceError(
            f"{len(keys)} verifier keys for {len(directories)} audit directories: give one "
            "for all, or one per --audit-dir in the same order"
        )
    logs: list[Log] = []
    for directory, key in zip(directories, keys, strict=True):
        for chain in log_chains(Path(directory)) or [[Path(directory)]]:
            reports = {}
            for log_dir in chain:
                since = (kept or {}).get(_origin_of(log_dir))
                _add(logs, open_log(log_dir, key, since))
                reports[log_dir] = logs[-1].report
            for problem in chain_problems(chain, reports, whole=chain[0] != Path(directory)):
                raise EvidenceError(f"refusing to report: the chain of epochs breaks: {problem}")
    return logs


def _add(logs: list[Log], log: Log) -> None:
    """Append one more log; refuse an origin seen before."""
    twin = next((other for other in logs if other.origin == log.origin), None)
    if twin is not None:
        raise EvidenceError(
            f"{twin.directory} and {log.directory} both have origin {log.origin!r}; "
            "each replica needs its own [audit] origin"
        )
    logs.append(log)


def open_log(directory: Path, verifier: str | None = None, since: bytes | None = None) -> Log:
    """Verify the log (`gateway audit verify`, from a kept checkpoint `since` if given), then
    read its verified checkpoint and the times of its first and last signed entry.

    Raises:
        EvidenceError: the log failed verification, naming it and the problem.
    """
    report = verify_log(directory, verifier, since)
    if not report.ok:
        raise EvidenceError(
            f"refusing to report: audit log {directory} failed verification: {report.problem}"
        )
    key = load_verifier(directory, verifier, VerifyReport(directory))  # it loaded just now
    note, latest = _verified_note(directory, key, report)
    reader = LogReader(directory)
    ends = [range(min(BOUND_PROBES, latest.size)),
            range(latest.size - 1, max(latest.size - 1 - BOUND_PROBES, -1), -1)]  # fmt: skip
    bounds = [
        t
        for seqs in ends
        if (t := next((t for seq in seqs if (t := entry_time(reader.read_entry(seq)))), None))
    ]
    log = Log(directory, key, verifier is not None, latest, note, bounds, report)
    log.period_seqs = seq_array(log)
    return log


def stream_log(log: Log, feed: Callable[[Log, int, dict[str, Any]], None]) -> None:
    """One pass over the verified log's entries, read in chunks and fed to `feed` in order.

    The leaf hashes of the entries read are folded into a Merkle root as they go: if the
    entries the checkpoint covers no longer hash to its root (the file changed since it was
    verified), nothing may be reported. Entries appended since verification are left for the
    next report.

    Raises:
        EvidenceError: the entries read are not the ones verified.
    """
    tree, signed_root, verified = CompactRange(), None, log.report.size
    with open(log.directory / ENTRIES, "rb") as f:
        for seq, record in enumerate(read_frames(f)):
            if seq == log.latest.size:
                signed_root = tree.root()
            if seq == verified:
                break
            tree.append(leaf_hash(record))
            feed(log, seq, _entry(log, record))
    if signed_root is None and tree.size == log.latest.size:
        signed_root = tree.root()
    if signed_root != log.latest.root:
        raise _changed(log)
    log.note, log.checkpoint = _note_at(log, log.written)


def _entry(log: Log, record: bytes) -> dict[str, Any]:
    try:
        entry = orjson.loads(record)
    except orjson.JSONDecodeError:
        entry = None
    if not isinstance(entry, dict):  # every verified entry is a JSON object: it changed since
        raise _changed(log)
    return entry


def _changed(log: Log) -> EvidenceError:
    return EvidenceError(
        f"refusing to report: audit log {log.directory} changed while it was read: its "
        "entries are no longer the ones verified"
    )


CHUNK = 1024 * 1024  # bytes of `entries` read at a time


def read_frames(f: BinaryIO) -> Iterator[bytes]:
    """The records of a framed file (4-byte big-endian length, then the bytes), read in
    chunks so memory stays bounded; a torn tail is left out (verification reported it)."""
    buf, pos = b"", 0
    while True:
        while pos + 4 <= len(buf):
            n = int.from_bytes(buf[pos : pos + 4], "big")
            if pos + 4 + n > len(buf):
                break
            yield buf[pos + 4 : pos + 4 + n]
            pos += 4 + n
        need = int.from_bytes(buf[pos : pos + 4], "big") + 4 if pos + 4 <= len(buf) else 4
        more = f.read(max(CHUNK, need))
        if not more:
            return
        buf, pos = buf[pos:] + more, 0


def _verified_note(directory: Path, key: Verifier, report: VerifyReport) -> tuple[str, Checkpoint]:
    """The note verify_log accepted (size and root), even if the writer has moved on since."""
    data = read_file(directory / CHECKPOINTS)
    notes = [bytes(r) for r in iter_records(data, scan(data))]
    for note in [read_file(directory / CHECKPOINT), *reversed(notes)]:
        try:
            cp = Checkpoint.open(note, key)
        except CheckpointError:
            continue
        if (cp.size, cp.root) == (report.checkpoint_size, report.root):
            return note.decode(), cp
    raise EvidenceError(f"{directory}: the verified checkpoint is no longer on disk")


def _note_at(log: Log, size: int) -> tuple[str, Checkpoint]:
    """The first checkpoint covering the first `size` entries (those written before the period
    ended), so a report on a past period proves against the same checkpoint however much the
    log grew since; the latest when none covers them yet."""
    data = read_file(log.directory / CHECKPOINTS)
    for note in iter_records(data, scan(data)):
        try:
            cp = Checkpoint.open(bytes(note), log.verifier)  # verify_log checked these
        except CheckpointError:  # appended since, by a writer that moved on
            continue
        if size <= cp.size <= log.latest.size:
            return bytes(note).decode(), cp
    return log.latest_note, log.latest


def _origin_of(log_dir: Path) -> str:
    return read_file(log_dir / CHECKPOINT).split(b"\n", 1)[0].decode(errors="replace")
