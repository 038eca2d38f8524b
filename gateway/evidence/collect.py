"""Read and verify each audit log, keeping only what a signed checkpoint covers.

Evidence is computed from entries a third party can check: each log is verified first (a log
that fails is refused, never reported on), and the figures use only entries below the size of
the checkpoint that verification accepted, so every figure has an inclusion proof.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from gateway.audit import Checkpoint, CheckpointError, Verifier, VerifyReport, verify_log
from gateway.audit.chain import chain_problems
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
        stamps = [t for log in logs for t in _first_last(log.entries)]
        first = min(stamps, default=datetime.now(UTC))
        last = max(stamps, default=first) + TICK
        return cls(since or first, until or last, since is not None, until is not None)


TICK = timedelta(microseconds=1)  # entry times have microseconds: just after the last one


def _first_last(entries: list[dict[str, Any]]) -> list[datetime]:
    """The time of the first and of the last entry that has a valid one."""
    first = next((t for e in entries if (t := entry_time(e))), None)
    last = next((t for e in reversed(entries) if (t := entry_time(e))), None)
    return [t for t in (first, last) if t is not None]


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
    """One verified audit log and its entries; `origin` names it in every figure."""

    directory: Path
    report: VerifyReport
    checkpoint: Checkpoint
    note: str  # the signed note of `checkpoint`, verbatim
    verifier: Verifier
    pinned: bool  # False: the key came from the log's own directory
    latest: Checkpoint  # the latest checkpoint verified; `checkpoint` is the one at period end
    entries: list[dict[str, Any]]  # entries[i] is seq i; only those the checkpoint covers
    later: list[dict[str, Any]] = field(default_factory=list)  # past the checkpoint: unsigned
    period: list[dict[str, Any]] = field(default_factory=list)  # signed, ts in the period
    unsigned: list[int] = field(default_factory=list)  # in-period seqs past the checkpoint

    @property
    def origin(self) -> str:
        return self.checkpoint.origin


def read_logs(
    directories: list[Path],
    since: datetime | None,
    until: datetime | None,
    verifiers: list[str] | None = None,
    kept: dict[str, bytes] | None = None,
) -> tuple[list[Log], Period]:
    """Verify and read every log; refuse on the first that fails, on a broken chain of epochs,
    or on a repeated origin.

    Args:
        since, until: the period's bounds; None: from the logs (see Period).
        verifiers: none (each log's own `verifier` file), one key for every log, or one per
            directory in the same order (replicas may sign with keys of their own).
        kept: checkpoints the auditor kept, by origin (`--from`): those logs are verified
            only from there on (verify_log's `since`).

    Raises:
        EvidenceError: a log failed verification (naming it and the problem), or two logs
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
                _add(logs, read_log(log_dir, key, since))
                reports[log_dir] = logs[-1].report
            for problem in chain_problems(chain, reports, whole=chain[0] != Path(directory)):
                raise EvidenceError(f"refusing to report: the chain of epochs breaks: {problem}")
    period = Period.resolve(since, until, logs)
    for log in logs:
        everything = [*log.entries, *log.later]
        written = 1 + max((e["seq"] for e in everything if _before(period, e)), default=-1)
        log.note, log.checkpoint = _note_at(log, written)
        log.period = [e for e in everything if _in(period, e) and e["seq"] < log.checkpoint.size]
        log.unsigned = [e["seq"] for e in everything[log.checkpoint.size :] if _in(period, e)]
    return logs, period


def _add(logs: list[Log], log: Log) -> None:
    """Append one more log; refuse an origin seen before."""
    twin = next((other for other in logs if other.origin == log.origin), None)
    if twin is not None:
        raise EvidenceError(
            f"{twin.directory} and {log.directory} both have origin {log.origin!r}; "
            "each replica needs its own [audit] origin"
        )
    logs.append(log)


def _before(period: Period, entry: dict[str, Any]) -> bool:
    ts = entry_time(entry)
    return ts is not None and ts < period.until


def _note_at(log: Log, size: int) -> tuple[str, Checkpoint]:
    """The first checkpoint covering the first `size` entries (those written before the period
    ended), so a report on a past period proves against the same checkpoint however much the
    log grew since; the latest verified one when none covers them yet."""
    data = read_file(log.directory / CHECKPOINTS)
    for note in iter_records(data, scan(data)):
        try:
            cp = Checkpoint.open(bytes(note), log.verifier)  # verify_log checked these
        except CheckpointError:  # appended since, by a writer that moved on
            continue
        if size <= cp.size <= log.latest.size:
            return bytes(note).decode(), cp
    return log.note, log.latest


def read_log(directory: Path, verifier: str | None = None, since: bytes | None = None) -> Log:
    """Verify one log (from a kept checkpoint `since`, if given) and read the entries its
    verified checkpoint covers (all of them: the kept checkpoint vouches for the earlier)."""
    report = verify_log(directory, verifier, since)
    if not report.ok:
        raise EvidenceError(
            f"refusing to report: audit log {directory} failed verification: {report.problem}"
        )
    key = load_verifier(directory, verifier, VerifyReport(directory))
    note, checkpoint = _verified_note(directory, key, report)
    data = read_file(directory / ENTRIES)
    records = iter_records(data, scan(data))
    entries = [orjson.loads(r) for r in records][: report.size]
    signed, unsigned = entries[: checkpoint.size], entries[checkpoint.size :]
    return Log(
        directory=directory,
        report=report,
        checkpoint=checkpoint,
        note=note,
        verifier=key,
        pinned=verifier is not None,
        latest=checkpoint,
        entries=signed,
        later=unsigned,
    )


def _in(period: Period, entry: dict[str, Any]) -> bool:
    ts = entry_time(entry)
    return ts is not None and period.contains(ts)


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


def _origin_of(log_dir: Path) -> str:
    return read_file(log_dir / CHECKPOINT).split(b"\n", 1)[0].decode(errors="replace")
