"""evidence.html: one self-contained page for an auditor (inline CSS and SVG, no script).

Per control: what it asks, how the gateway meets it, the status computed for the period and
why, the measures with the entries behind them, and sample entries with inclusion proofs.
Every value from a log or config is HTML-escaped: entries hold client-supplied text.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from itertools import islice
from typing import TYPE_CHECKING, Any

import orjson

from gateway.evidence.facts import Measure, Scope
from gateway.evidence.render_json import runs, time
from gateway.evidence.svg import bar_chart

if TYPE_CHECKING:
    from gateway.evidence.report import Assessed, Report
    from gateway.evidence.usage import UsageRow

HTML_FILE = "evidence.html"
MAX_RANGES = 12  # seq runs shown per log in a table cell; evidence.json has them all
CHARTS = (
    ("requests", "Requests", "#3465a4"),
    ("denials", "Denials", "#cc0000"),
    ("approvals", "Approval decisions", "#75507b"),
    ("maskings", "Answers with PII masked", "#4e9a06"),
)
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0;width:100%}
td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4}.kv th{width:12em}code,pre{font:12px ui-monospace,monospace}
code{overflow-wrap:anywhere}
pre{background:#f7f7f7;padding:6px;white-space:pre-wrap;overflow-wrap:anywhere}
pre.entry{max-height:28em;overflow:auto;line-height:1.35}
table.usage{font-size:12px}table.usage td{overflow-wrap:anywhere}.wide{overflow-x:auto}
.satisfied{background:#dff0d8}.not-satisfied{background:#f2dede}.not-assessed{background:#eee}
.badge{padding:1px 6px;border-radius:3px;font-weight:600;white-space:nowrap}
.charts{display:flex;flex-wrap:wrap;gap:12px}.t{font:12px sans-serif}.a{font:10px sans-serif}
"""


def _sources(scope: Scope) -> str:
    logs = f"{len(scope.logs)} verified audit log(s)"
    config = scope.given_config
    if config is None:
        return (
            f"{logs} alone (no configuration given: the controls judged from it are not assessed)"
        )
    return (
        f"the configuration <code>{escape(config.path)}</code> (SHA-256 "
        f"<code>{escape(config.sha256)}</code>) and {logs}"
    )


def render_html(report: Report) -> str:
    scope = report.scope
    period = f"{time(scope.period.since)} to {time(scope.period.until)}"
    body = [
        f"<h1>NIST SP 800-53 evidence: {escape(period)}</h1>",
        f"<p><b>Period:</b> {escape(period)} (end excluded), "
        f"{escape(scope.period.describe())}.</p>",
        f"<p>Generated {escape(time(report.generated))} by <code>gateway evidence</code> from "
        f"{_sources(scope)}. Every figure is counted from signed entries; the seqs behind each "
        "are in evidence.json.</p>",
        _logs(report),
        _summary(report),
        "<h2>Traffic</h2>",
        _measures(report.headline),
        _entities(report.masked_by_entity),
        _usage(report),
        _charts(report),
        *(_control(a, report) for a in report.controls),
        _checking(),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Evidence {escape(period)}</title><style>{CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def _badge(status: str) -> str:
    return f'<span class="badge {escape(status)}">{escape(status)}</span>'


def _logs(report: Report) -> str:
    tables = "".join(
        f'<h3><code>{escape(log.origin)}</code></h3><table class="kv">'
        f"<tr><th>Directory</th><td>{escape(str(log.directory))}</td></tr>"
        f"<tr><th>Verification</th><td>{escape(log.report.summary())}</td></tr>"
        f"<tr><th>Verifier key</th><td><code>{escape(log.verifier.encode())}</code> "
        f"({'pinned' if log.pinned else 'read from the log directory: not pinned'})</td></tr>"
        f"<tr><th>Signed checkpoint</th><td><pre>{escape(log.note)}</pre></td></tr></table>"
        for log in report.scope.logs
    )
    return f"<h2>Logs</h2>{tables}"


def _summary(report: Report) -> str:
    rows = "".join(
        f'<tr><td><a href="#{_anchor(a.control.id)}">{escape(a.control.id)}</a></td>'
        f"<td>{escape(a.control.title)}</td><td>{_badge(a.outcome.status)}</td>"
        f"<td>{escape(a.outcome.reason)}</td></tr>"
        for a in report.controls
    )
    return (
        "<h2>Controls</h2><table><tr><th>Control</th><th>Title</th><th>Status</th>"
        f"<th>Why</th></tr>{rows}</table>"
    )


def _anchor(control_id: str) -> str:
    return "c-" + "".join(ch if ch.isalnum() else "-" for ch in control_id.lower())


def _seqs(seqs: Iterable[int]) -> str:
    found = runs(seqs)
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in islice(found, MAX_RANGES))
    more = sum(1 for _ in found)
    return text + (f", ... ({more} more runs)" if more else "")


def _measures(measures: list[Measure]) -> str:
    rows = []
    for m in measures:
        if m.seqs is None:
            detail = "<br>".join(f"<code>{escape(i)}</code>" for i in m.items) or "(none)"
        else:
            detail = "<br>".join(
                f"<code>{escape(origin)}</code>: {len(s)}" + (f" (seq {_seqs(s)})" if s else "")
                for origin, s in m.seqs.items()
            )
        rows.append(
            f"<tr><td><code>{escape(m.name)}</code></td><td>{escape(m.description)}</td>"
            f"<td>{m.total}</td><td>{detail}</td></tr>"
        )
    return (
        "<table><tr><th>Measure</th><th>What</th><th>Total</th><th>Per log (entries)</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _entities(counts: dict[str, int]) -> str:
    if not counts:
        return "<p>No values were masked in the period.</p>"
    cells = ", ".join(f"{escape(k)}: {v}" for k, v in counts.items())
    return f"<p>Values masked by entity type: {cells}.</p>"


USAGE_COLUMNS = (
    "Issuer", "Subject", "Connection", "Model requested", "Model served", "Requests", "Allowed",
    "Denied", "Held", "Exchanges", "Tokens in", "Tokens out", "First seen", "Last seen",
)  # fmt: skip


def _usage(report: Report) -> str:
    rows = "".join(
        "<tr>" + "".join(_cell(v) for v in _usage_values(r)) + "</tr>" for r in report.usage
    )
    head = "".join(f"<th>{c}</th>" for c in USAGE_COLUMNS)
    empty = f'<tr><td colspan="{len(USAGE_COLUMNS)}">no requests in the period</td></tr>'
    return (
        "<h3>Usage: who ran which model, when, and what came back</h3>"
        f'<div class="wide"><table class="usage"><tr>{head}</tr>{rows or empty}</table></div>'
        "<p>Requests = allowed + denied; held requests waited for an approver (and count as "
        "allowed once forwarded). Tokens as the upstream reported them (- when it did not). "
        "The seqs behind each row are in evidence.json.</p>"
    )


def _usage_values(r: UsageRow) -> tuple[object, ...]:
    served = ", ".join(sorted(r.served_models))
    return (r.issuer, r.subject or "(unauthenticated)", r.connection, r.model, served,
            r.requests, r.allowed, r.denied, r.held, r.exchanges, r.tokens_in, r.tokens_out,
            r.first_seen, r.last_seen)  # fmt: skip


def _cell(value: object) -> str:
    return "<td>-</td>" if value in (None, "") else f"<td>{escape(str(value))}</td>"


def _charts(report: Report) -> str:
    s = report.series
    charts = "".join(
        bar_chart(title, s.starts, s.totals(line), colour) for line, title, colour in CHARTS
    )
    width = s.width.total_seconds() / 60
    return (
        f"<h3>Over time ({len(s.starts)} buckets of {width:g} min, all logs)</h3>"
        f'<div class="charts">{charts}</div>'
    )


def _control(a: Assessed, report: Report) -> str:
    c, o = a.control, a.outcome
    gaps = "".join(f"<li>{escape(g)}</li>" for g in o.gaps)
    samples = "".join(_sample(report.samples[ref]) for ref in a.samples)
    return (
        f'<section id="{_anchor(c.id)}"><h2>{escape(c.id)} {escape(c.title)} '
        f"{_badge(o.status)}</h2>"
        f"<p><b>Asks:</b> {escape(c.asks)}</p><p><b>How the gateway meets it:</b> "
        f"{escape(c.how)}</p><p><b>Finding:</b> {escape(o.reason)}</p>"
        + (f"<p><b>Gaps:</b></p><ul>{gaps}</ul>" if gaps else "")
        + _measures(o.measures)
        + (f"<h3>Sample entries with inclusion proofs</h3>{samples}" if samples else "")
        + "</section>"
    )


def readable(entry: str) -> str:
    """An entry's canonical JSON indented, one field a line (keys stay sorted, as logged)."""
    return orjson.dumps(orjson.loads(entry), option=orjson.OPT_INDENT_2).decode()


def _sample(sample: dict[str, Any]) -> str:
    path = "<br>".join(f"<code>{escape(p)}</code>" for p in sample["path"]) or "(empty)"
    return (
        f'<table class="kv"><tr><th>Entry</th><td><code>{escape(sample["log"])}</code> seq '
        f"{sample['seq']}, indented for reading (the leaf hash is over its canonical bytes, "
        f'<code>samples[].entry</code> in evidence.json)<pre class="entry">'
        f"{escape(readable(sample['entry']))}</pre></td></tr>"
        f"<tr><th>Leaf hash</th><td><code>{escape(sample['leaf_hash'])}</code></td></tr>"
        f"<tr><th>Audit path</th><td>{path}</td></tr>"
        f"<tr><th>Root (tree size {sample['tree_size']})</th><td><code>"
        f"{escape(sample['root'])}</code>, as signed in the log's checkpoint</td></tr></table>"
    )


def _checking() -> str:
    return (
        "<h2>Checking these numbers yourself</h2><ol>"
        "<li>Pin the verifier key you were given out of band; it must equal the key above.</li>"
        "<li>Check each checkpoint note's Ed25519 signature over its first three lines.</li>"
        "<li>For each sample: leaf hash = SHA-256(0x00 || entry bytes as UTF-8); fold the "
        "audit path (RFC 9162 section 2.1.3.2) and compare with the root in the note.</li>"
        "<li>Recount any figure from its seqs in evidence.json, or run <code>gateway audit "
        "verify</code> and <code>gateway evidence</code> on a copy of the logs.</li></ol>"
        "<p>docs/evidence.md explains every field.</p>"
    )
