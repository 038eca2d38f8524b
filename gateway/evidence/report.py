"""Build the report: verify and read the logs, evaluate the controls, prove samples, render.

`build_report` is the one entry point (the CLI and `gateway demo` call it). It refuses, with
EvidenceError naming the log and the problem, before writing anything if a log fails to verify.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import config as config_module
from gateway.config import Config, ConfigError
from gateway.evidence import collect
from gateway.evidence.collect import EvidenceError, Period
from gateway.evidence.controls import Control, Outcome, declare
from gateway.evidence.facts import Measure, Scope, Series, headline, masked_by_entity, series
from gateway.evidence.proofs import Prover, pick
from gateway.evidence.render_html import HTML_FILE, render_html
from gateway.evidence.render_json import JSON_FILE, dump, render_json, write_json
from gateway.evidence.render_oscal import OSCAL_FILE, render_oscal
from gateway.evidence.usage import Usage, UsageRow


@dataclass(frozen=True)
class Assessed:
    """One control's outcome and the samples that illustrate it."""

    control: Control
    outcome: Outcome
    samples: list[tuple[str, int]]  # (log origin, seq)


@dataclass(frozen=True)
class Report:
    """Everything the three renderings show, computed once."""

    generated: datetime
    scope: Scope
    headline: list[Measure]
    masked_by_entity: dict[str, int]
    usage: list[UsageRow]
    series: Series
    controls: list[Assessed]
    samples: dict[tuple[str, int], dict[str, Any]]


def assess(
    config: Config | None,
    audit_dirs: list[Path],
    since: datetime | None,
    until: datetime | None,
    verifiers: list[str] | None = None,
    kept: dict[str, bytes] | None = None,
) -> Report:
    """Verify the logs, then compute every figure, status and proof in one pass per log.

    Raises:
        EvidenceError: a log fails verification, or two logs share an origin.
    """
    return report_on(config, collect.open_logs(audit_dirs, verifiers, kept), since, until)


def report_on(
    config: Config, logs: list[collect.Log], since: datetime | None, until: datetime | None
) -> Report:
    """Every figure, status and proof of verified logs (`collect.open_logs`), one pass each."""
    scope = Scope(config, collect.Period.resolve(since, until, logs), logs)
    pending = declare(scope)  # every figure is declared before the pass that fills it
    figures = headline(scope)
    masked = masked_by_entity(scope)
    charts = series(scope)
    only = config.issuers[0].name if config and len(config.issuers) == 1 else None
    table = Usage(only)  # entries from before `issuer` was recorded
    scope.watch(table.watch)
    for log in logs:
        collect.stream_log(log, scope.feed)
    controls = [Assessed(c, o, pick(o.measures)) for c, o in ((c, p()) for c, p in pending)]
    prover = Prover(logs)
    refs = dict.fromkeys(ref for a in controls for ref in a.samples)
    return Report(
        generated=datetime.now(UTC),
        scope=scope,
        headline=figures,
        masked_by_entity=dict(sorted(masked.items())),
        usage=table.rows(),
        series=charts,
        controls=controls,
        samples={ref: prover.prove(*ref) for ref in refs},
    )


def build_report(
    config: Config | str | os.PathLike[str] | None,
    audit_dirs: list[Path] | None,
    since: datetime | str | None,
    until: datetime | str | None,
    out_dir: str | os.PathLike[str],
    verifier: str | list[str] | None = None,
    kept: dict[str, bytes] | None = None,
) -> Path:
    """Write evidence.json, evidence.html and assessment-results.json into `out_dir`.

    Args:
        config: the gateway's Config, or the path of its TOML file; None: report from the
            logs alone, the controls judged from the configuration not assessed.
        audit_dirs: one audit directory per replica; None or empty: the config's [audit] dir.
        since, until: the period [since, until), datetimes or RFC 3339 strings; None: from
            the first signed entry, or to just after the last (the whole verified log).
        verifier: a verifier key (or a file holding one), or one per audit directory;
            default: each log's own copy, which the report marks as not pinned.
        kept: checkpoints kept from an earlier verification, by origin (`--from`).

    Returns:
        The path of evidence.html.

    Raises:
        EvidenceError: bad input, or a log that fails verification (nothing is written).
    """
    if config is not None and not isinstance(config, Config):
        try:
            config = config_module.load(config)
        except ConfigError as exc:
            raise EvidenceError(f"bad config: {exc}") from None
    dirs = [Path(d) for d in audit_dirs or []]
    if not dirs:
        if config is None:
            raise EvidenceError("no audit log to report on: give -c, --audit-dir or --store")
        if config.audit is None:
            raise EvidenceError(f"{config.path} has no [audit] section; pass --audit-dir")
        dirs = [Path(config.audit.dir)]
    if since is not None and until is not None:
        Period(_time(since), _time(until))  # refuse a bad period before reading any log
    keys = [verifier] if isinstance(verifier, str) else verifier
    report = assess(config, dirs, _time(since), _time(until), keys, kept)
    return write_report(report, Path(out_dir))


def write_report(report: Report, out: Path) -> Path:
    """The three files into `out`; returns the HTML's path."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / JSON_FILE, "wb") as f:
        write_json(render_json(report), f)
    (out / OSCAL_FILE).write_bytes(dump(render_oscal(report)) + b"\n")
    html = out / HTML_FILE
    html.write_text(render_html(report), encoding="utf-8")
    return html


def _time(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    return collect.parse_time(value) if isinstance(value, str) else value.astimezone(UTC)
