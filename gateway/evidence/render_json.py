"""evidence.json: the machine-readable report, every figure traceable to entries per log.

Seq lists are written as inclusive ranges, [[first, last], ...] on one line, so a figure over a
long run of entries stays small while naming every entry it counted. The file is written piece
by piece (`write_json`), so a report on a big log never holds its whole text in memory.
docs/evidence.md explains each field.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from gateway.audit.central import witnessed
from gateway.evidence.facts import Measure

if TYPE_CHECKING:
    from gateway.evidence.report import Report

JSON_FILE = "evidence.json"
FORMAT = "inference-gateway/evidence/1"


class Ranges:
    """Seqs to be written as ranges when the document is dumped (never all built at once)."""

    __slots__ = ("seqs",)

    def __init__(self, seqs: Iterable[int]) -> None:
        self.seqs = seqs


def _fragment(value: Any) -> orjson.Fragment:
    if not isinstance(value, Ranges):
        raise TypeError(f"cannot write {type(value).__name__} to JSON")
    return orjson.Fragment(b"[" + b",".join(b"[%d,%d]" % r for r in runs(value.seqs)) + b"]")


def dump(document: Any) -> bytes:
    return orjson.dumps(document, default=_fragment, option=orjson.OPT_INDENT_2)


def write_json(document: dict[str, Any], out: BinaryIO) -> None:
    """`document` as indented JSON, each top-level value and each element of a top-level list
    dumped on its own, so only one figure's text is in memory at a time."""
    out.write(b"{")
    for i, (key, value) in enumerate(document.items()):
        out.write(b"," * bool(i) + b"\n  " + orjson.dumps(key) + b": ")
        if isinstance(value, list) and value:
            out.write(b"[")
            for j, item in enumerate(value):
                out.write(b"," * bool(j) + b"\n    " + dump(item).replace(b"\n", b"\n    "))
            out.write(b"\n  ]")
        else:
            out.write(dump(value).replace(b"\n", b"\n  "))
    out.write(b"\n}\n")


def time(value) -> str:
    """RFC 3339 UTC with microseconds, like the log's own `ts`."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def runs(seqs: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Ascending seqs (as a pass collects them) as inclusive (first, last) runs."""
    first = last = None
    for seq in seqs:
        if last is not None and seq == last + 1:
            last = seq
            continue
        if first is not None:
            yield first, last  # type: ignore[misc]
        first = last = seq
    if first is not None:
        yield first, last  # type: ignore[misc]


def measure(m: Measure) -> dict[str, Any]:
    body: dict[str, Any] = {"name": m.name, "description": m.description, "total": m.total}
    if m.seqs is None:
        body["items"] = list(m.items)
    else:
        body["by_log"] = {
            origin: {"count": len(seqs), "seqs": Ranges(seqs)} for origin, seqs in m.seqs.items()
        }
    return body


def render_json(report: Report) -> dict[str, Any]:
    scope = report.scope
    config = scope.given_config  # None: made from the logs alone
    return {
        "format": FORMAT,
        "generated": time(report.generated),
        "period": {
            "since": time(scope.period.since),
            "until": time(scope.period.until),
            "since_given": scope.period.since_given,
            "until_given": scope.period.until_given,
            "chosen": scope.period.describe(),
        },
        "config": {"path": config.path, "sha256": config.sha256} if config else None,
        "logs": [_log(log) for log in scope.logs],
        "figures": [measure(m) for m in report.headline],
        "masked_by_entity": report.masked_by_entity,
        "usage": [
            {
                "issuer": row.issuer,
                "subject": row.subject,
                "connection": row.connection,
                "model": row.model,
                "served_models": sorted(row.served_models),
                "requests": row.requests,
                "allowed": row.allowed,
                "denied": row.denied,
                "held": row.held,
                "exchanges": row.exchanges,
                "tokens_in": row.tokens_in,
                "tokens_out": row.tokens_out,
                "first_seen": row.first_seen,
                "last_seen": row.last_seen,
                "by_log": {o: Ranges(seqs) for o, seqs in row.seqs.items()},
            }
            for row in report.usage
        ],
        "series": {
            "bucket_seconds": report.series.width.total_seconds(),
            "starts": [time(t) for t in report.series.starts],
            "lines": {
                name: {"total": report.series.totals(name), "by_log": by_log}
                for name, by_log in report.series.lines.items()
            },
        },
        "controls": [
            {
                "id": a.control.id,
                "oscal_ids": list(a.control.oscal_ids),
                "title": a.control.title,
                "asks": a.control.asks,
                "how": a.control.how,
                "status": str(a.outcome.status),
                "reason": a.outcome.reason,
                "gaps": a.outcome.gaps,
                "measures": [measure(m) for m in a.outcome.measures],
                "samples": [{"log": origin, "seq": seq} for origin, seq in a.samples],
            }
            for a in report.controls
        ],
        "samples": list(report.samples.values()),
    }


def _log(log) -> dict[str, Any]:
    cp = log.checkpoint
    return {
        "origin": log.origin,
        "directory": str(log.directory),
        "verification": log.report.summary(),
        "warnings": log.report.warnings,
        "entries": log.report.size,
        "period_seqs": Ranges(log.period_seqs),
        "unsigned_period_seqs": Ranges(log.unsigned),
        "checkpoint": {
            "size": cp.size,
            "root": cp.root.hex(),
            "root_base64": base64.b64encode(cp.root).decode(),
            "note": log.note,
        },
        "latest_checkpoint": {"size": log.latest.size, "root": log.latest.root.hex()},
        "checkpoints_verified": log.report.checkpoints,
        "sealed_blobs_verified": log.report.sealed_blobs,
        "verifier": {"key": log.verifier.encode(), "pinned": log.pinned},
        "witnessed": witnessed(log.directory),  # None: not read from a central store
    }
