"""The chain of a writer's logs: each epoch's first entry names the final checkpoint of the
log before it (epochs.py), so no epoch can be dropped, swapped, or extended after its
successor started without this check failing."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

from gateway.audit.epochs import STARTED
from gateway.audit.merkle import leaf_hash
from gateway.audit.store import CHECKPOINT, LogReader, TreeFiles, read_file
from gateway.audit.verify import VerifyReport


def chain_problems(
    chain: list[Path], reports: dict[Path, VerifyReport], *, whole: bool = True
) -> list[str]:
    """Why the logs of one writer (in order, each verified on its own) do not chain; [] if
    they do. A log that failed its own verification is not checked again here.

    `whole`: the chain is all the writer's logs (found under a directory given, not a single
    epoch's log given by itself), so its first log must not chain to one that is missing.
    """
    problems = []
    first = chain[0]
    if whole and reports[first].ok and (entry := _first_entry(first, reports[first])) is not None:
        link = entry.get("previous") if entry.get("type") == STARTED else None
        if isinstance(link, dict):
            problems.append(
                f"{first}: its {STARTED} entry chains to {link.get('origin')!r} (size "
                f"{link.get('size')}), which is not here: an earlier epoch was removed"
            )
    for previous, log in itertools.pairwise(chain):
        if not (reports[previous].ok and reports[log].ok):
            continue
        problem = _link_problem(previous, reports[previous], log, reports[log])
        if problem:
            problems.append(f"{log}: {problem}")
    return problems


def _link_problem(previous: Path, report: VerifyReport, log: Path, own: VerifyReport) -> str | None:
    first = _first_entry(log, own)
    if first is None:
        return "its first entry does not hash to the leaf its checkpoints sign"
    link = first.get("previous") if first.get("type") == STARTED else None
    if not isinstance(link, dict):
        return f"does not start with an {STARTED} entry naming the final checkpoint of {previous}"
    note = read_file(previous / CHECKPOINT)
    if link.get("note_sha256") != hashlib.sha256(note).hexdigest() or link.get(
        "note"
    ) != note.decode(errors="replace"):
        return (
            f"its {STARTED} entry names checkpoint {link.get('origin')!r} size {link.get('size')}, "
            f"not the final checkpoint of {previous} (size {report.checkpoint_size}): an epoch "
            "was replaced, removed or rewritten"
        )
    if report.size != report.checkpoint_size or link.get("size") != report.size:
        return (
            f"{previous} holds {report.size} entries but its successor chains to size "
            f"{link.get('size')}: entries were added after the next epoch started"
        )
    return None


def _first_entry(log: Path, report: VerifyReport) -> dict | None:
    """Entry 0, when its bytes hash to a leaf verification authenticated: verify_log hashed
    them itself (a check from the first entry), or the stored tree it resumed from
    (`--from`) holds their leaf. A log exported from the central store has no stored tree."""
    reader = LogReader(log)
    if report.from_size == 0:
        return reader.read_entry(0)
    raw = reader.read_raw(0)
    tree = TreeFiles(log)
    try:
        if tree.node(0, 0) != leaf_hash(raw):
            return None
    except (LookupError, OSError):
        return None
    finally:
        tree.close()
    return reader.read_entry(0)
