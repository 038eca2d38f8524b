"""`gateway evidence` on logs of real gateways: figures equal the traffic sent, proofs verify
with only the files and the verifier key, the OSCAL validates, the HTML renders cleanly."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import orjson
import peers
import pytest
from approvals_helpers import Client, approvals_config
from conftest import UPSTREAM_KEY, entries
from independent_verifier import fold, open_note
from oscal_schema import SCHEMA_VERSION, oscal_errors

from gateway.audit import read_signing_key
from gateway.evidence.controls import CONTROLS

MASKED_RULE = """
[[rules]]
id = "masked-chat"
groups = ["maskees"]
connections = ["llama"]
action = "allow"
mask = ["all"]
"""
PII_PROMPT = [{"role": "user", "content": "show me the pii"}]
PLAIN = [{"role": "user", "content": "hello"}]
MODEL = "llama-3-8b"

# What the traffic below sends to each replica, as the report must count it.
EXPECTED = {
    "alpha.test/audit": {
        "requests": 11,
        "allowed": 6,
        "denied_401": 2,
        "denied_403": 2,
        "denied_default": 1,
        "denied_other": 1,
        "exchanges": 6,
        "masked": 2,
        "approvals_requested": 2,
        "approvals_approved": 1,
        "approvals_denied": 1,
        "approvals_used": 1,
    },
    "beta.test/audit": {
        "requests": 3,
        "allowed": 2,
        "denied_401": 1,
        "denied_403": 0,
        "denied_default": 0,
        "denied_other": 0,
        "exchanges": 2,
        "masked": 1,
        "approvals_requested": 0,
        "approvals_approved": 0,
        "approvals_denied": 0,
        "approvals_used": 0,
    },
}


def replica(start_gateway, issuer, upstream, tmp: Path, origin: str) -> tuple[peers.Peer, str]:
    """A gateway with its own audit dir, origin and keys; returns it and its verifier key."""
    config = approvals_config(issuer.url, upstream.url, tmp) + MASKED_RULE
    gateway = start_gateway(config.replace("test.gateway/audit", origin))
    return gateway, read_signing_key(tmp / "keys" / "signing.key").verifier.encode()


# Tokens each answer reported to its client, per (subject, model): the usage table must sum them.
TOKENS: dict[tuple[str, str], list[int]] = {}


def chat(gateway: peers.Peer, token: str, messages=PLAIN, model=MODEL, stream=False) -> None:
    sdk = openai.OpenAI(base_url=f"{gateway.url}/llama/v1", api_key=token, max_retries=0)
    extra = {"stream_options": {"include_usage": True}} if stream else {}
    answer = sdk.chat.completions.create(model=model, messages=messages, stream=stream, **extra)
    usage = [c.usage for c in answer if c.usage][-1] if stream else answer.usage
    subject = next(s for s, t in SUBJECTS.items() if t == token)
    seen = TOKENS.setdefault((subject, model), [0, 0])
    seen[0] += usage.prompt_tokens
    seen[1] += usage.completion_tokens


SUBJECTS: dict[str, str] = {}  # subject -> token, for TOKENS


def post(gateway: peers.Peer, path: str, token: str | None = None) -> int:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    body = {"model": MODEL, "messages": PLAIN}
    return httpx.post(f"{gateway.url}{path}", json=body, headers=headers).status_code


def run_evidence(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TEST_UPSTREAM_KEY": UPSTREAM_KEY}  # the config names it
    return subprocess.run(
        ["gateway", "evidence", *map(str, args)], capture_output=True, text=True, env=env
    )


@pytest.fixture(scope="module")
def logs(start_gateway, issuer, upstream, tmp_path_factory):
    """Two replicas driven with a known mix of traffic, then stopped: (dirs, verifiers, config)."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    tmp_a, tmp_b = tmp_path_factory.mktemp("alpha"), tmp_path_factory.mktemp("beta")
    alpha, key_a = replica(start_gateway, issuer, upstream, tmp_a, "alpha.test/audit")
    beta, key_b = replica(start_gateway, issuer, upstream, tmp_b, "beta.test/audit")
    alice = peers.mint(issuer.url, "alice@example.com", ["analysts"])
    ivan = peers.mint(issuer.url, "ivan@example.com", ["interns", "analysts"])
    mo = peers.mint(issuer.url, "mo@example.com", ["maskees"])
    SUBJECTS.update({"alice@example.com": alice, "ivan@example.com": ivan, "mo@example.com": mo})

    chat(alpha, alice)
    chat(alpha, alice, stream=True)
    models = httpx.get(f"{alpha.url}/llama/v1/models", headers={"authorization": f"Bearer {alice}"})
    assert models.status_code == 200
    with pytest.raises(openai.PermissionDeniedError):
        chat(alpha, alice, model="gpt-4o")  # no rule matches: default deny
    with pytest.raises(openai.PermissionDeniedError):
        chat(alpha, ivan)  # the interns-denied rule
    assert post(alpha, "/llama/v1/chat/completions") == 401
    assert post(alpha, "/llama/v1/chat/completions", "not-a-jwt") == 401
    assert post(alpha, "/nowhere/v1/chat/completions", alice) == 404
    chat(alpha, mo, PII_PROMPT)
    chat(alpha, mo, PII_PROMPT, stream=True)
    requester = Client(alpha.url, alice)
    officer = Client(alpha.url, peers.mint(issuer.url, "rita@example.com", ["risk-officers"]))
    granted, refused = requester.ticket(), requester.ticket()  # two approval.requested
    assert requester.decide(granted, "approve").status_code == 403  # approval.refused
    assert officer.decide(granted, "approve").status_code == 200
    assert officer.decide(refused, "deny").status_code == 200
    assert requester.infer(approval_id=granted).status_code == 200  # the one approved request

    chat(beta, alice)
    chat(beta, mo, PII_PROMPT)
    assert post(beta, "/llama/v1/chat/completions") == 401
    alpha.stop()
    beta.stop()
    until = datetime.now(UTC) + timedelta(seconds=1)
    return {
        "dirs": [tmp_a / "audit", tmp_b / "audit"],
        "verifiers": [key_a, key_b],
        "config": alpha.config_path,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "issuer": "default",  # the name entries record for the one [identity] issuer
    }


@pytest.fixture(scope="module")
def report(logs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evidence")
    args = ["-c", logs["config"], "--since", logs["since"], "--until", logs["until"]]
    for d, key in zip(logs["dirs"], logs["verifiers"], strict=True):
        args += ["--audit-dir", d, "--verifier", key]
    done = run_evidence(*args, "--out", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out / "evidence.html")
    return out


@pytest.fixture(scope="module")
def evidence(report) -> dict:
    return orjson.loads((report / "evidence.json").read_bytes())


def test_figures_equal_the_traffic_sent(evidence) -> None:
    figures = {f["name"]: f for f in evidence["figures"]}
    for origin, expected in EXPECTED.items():
        got = {name: figures[name]["by_log"][origin]["count"] for name in expected}
        assert got == expected, origin
    assert figures["requests"]["total"] == 14


# The usage table the traffic above must produce, summed over both replicas:
# (subject, connection, requested model) -> requests, allowed, denied, held, exchanges.
USAGE = {
    ("alice@example.com", "llama", MODEL): (3, 3, 0, 0, 3),  # 2 on alpha, 1 on beta
    ("alice@example.com", "llama", None): (1, 1, 0, 0, 1),  # GET /v1/models
    ("alice@example.com", "llama", "gpt-4o"): (1, 0, 1, 0, 0),  # default deny
    ("alice@example.com", "llama", "credit-risk-v1"): (1, 1, 0, 2, 1),  # 2 held, 1 approved
    ("alice@example.com", "nowhere", None): (1, 0, 1, 0, 0),  # unknown connection: not parsed
    ("ivan@example.com", "llama", MODEL): (1, 0, 1, 0, 0),  # interns denied
    ("mo@example.com", "llama", MODEL): (3, 3, 0, 0, 3),  # 2 on alpha, 1 on beta
    (None, None, None): (3, 0, 3, 0, 0),  # 401: refused before routing, nobody identified
}


def test_usage_table_equals_the_traffic_sent(logs, evidence, report) -> None:
    rows = evidence["usage"]
    got = {
        (r["subject"], r["connection"], r["model"]): (
            r["requests"], r["allowed"], r["denied"], r["held"], r["exchanges"],
        )
        for r in rows
    }  # fmt: skip
    assert got == USAGE
    assert sum(r["requests"] for r in rows) == 14  # the headline figure
    by_key = {(r["subject"], r["model"]): r for r in rows if r["connection"] == "llama"}
    for (subject, model), (tokens_in, tokens_out) in TOKENS.items():
        row = by_key[(subject, model)]
        assert (row["tokens_in"], row["tokens_out"]) == (tokens_in, tokens_out), subject
        assert row["served_models"] == [model]  # the demo model answers with the model asked
    assert by_key[("alice@example.com", "gpt-4o")]["tokens_in"] is None  # nothing came back
    issuer = {r["issuer"] for r in rows if r["subject"]}
    assert issuer == {logs["issuer"]}
    assert {r["issuer"] for r in rows if not r["subject"]} == {None}
    for r in rows:  # first and last seen inside the period; every row traceable to entries
        assert logs["since"] <= r["first_seen"] <= r["last_seen"] < logs["until"]
        assert sum(b - a + 1 for runs in r["by_log"].values() for a, b in runs) == (
            r["requests"] + r["held"] + r["exchanges"]
        )
    html = (report / "evidence.html").read_text()
    assert "<h3>Usage: who ran which model" in html and "(unauthenticated)" in html


def test_every_figure_names_the_entries_it_counted(logs, evidence) -> None:
    by_origin = dict(zip(["alpha.test/audit", "beta.test/audit"], logs["dirs"], strict=True))
    kinds = {
        "allowed": {"decision"},
        "denied_401": {"denied"},
        "exchanges": {"inference"},
        "masked": {"inference"},
        "policy_loads": {"policy.loaded"},
    }
    for figure in evidence["figures"]:
        for origin, counted in figure["by_log"].items():
            log = entries(by_origin[origin])
            seqs = [s for a, b in counted["seqs"] for s in range(a, b + 1)]
            assert len(seqs) == counted["count"]
            if figure["name"] in kinds:
                assert {log[s]["type"] for s in seqs} <= kinds[figure["name"]]
            if figure["name"] == "denied_401":
                assert all(log[s]["status"] == 401 for s in seqs)
            if figure["name"] == "masked":
                assert all(sum(log[s]["masked"].values()) > 0 for s in seqs)
    assert evidence["masked_by_entity"]["email"] == 3


def test_control_statuses_are_computed(evidence) -> None:
    status = {c["id"]: c["status"] for c in evidence["controls"]}
    assert status["SC-8"] == "not-satisfied"  # the test upstreams are plain HTTP
    sc8 = next(c for c in evidence["controls"] if c["id"] == "SC-8")
    assert any("llama" in g and "plain HTTP" in g for g in sc8["gaps"])
    satisfied = {"AC-3", "AC-5", "AC-6", "AC-17", "AU-2/AU-3", "AU-6", "AU-8", "AU-9(3)", "AU-10"}
    satisfied |= {"AU-12", "CA-7", "CM-3/CM-5", "IA-2", "IR-4", "SC-28"}
    assert {k for k, v in status.items() if v == "satisfied"} == satisfied
    ac5 = next(c for c in evidence["controls"] if c["id"] == "AC-5")
    assert {m["name"]: m["total"] for m in ac5["measures"]}["decisions_refused"] == 1
    series = evidence["series"]["lines"]
    assert sum(series["requests"]["total"]) == 14
    assert sum(series["approvals"]["total"]) == 2
    assert sum(series["maskings"]["total"]) == 3


def test_proofs_verify_with_only_the_files_and_the_verifier_key(logs, evidence) -> None:
    keys = dict(zip(["alpha.test/audit", "beta.test/audit"], logs["verifiers"], strict=True))
    checkpoints = {}
    for log in evidence["logs"]:
        origin, size, root = open_note(log["checkpoint"]["note"], keys[log["origin"]])
        assert origin == log["origin"] and log["verifier"]["pinned"]
        checkpoints[origin] = (size, root)
    assert evidence["samples"]
    for sample in evidence["samples"]:
        size, root = checkpoints[sample["log"]]
        leaf = hashlib.sha256(b"\x00" + sample["entry"].encode()).digest()
        assert leaf.hex() == sample["leaf_hash"] and sample["tree_size"] == size
        path = [bytes.fromhex(p) for p in sample["path"]]
        assert fold(sample["seq"], size, leaf, path) == root
        assert orjson.loads(sample["entry"])["seq"] == sample["seq"]
    referenced = {(s["log"], s["seq"]) for c in evidence["controls"] for s in c["samples"]}
    assert referenced == {(s["log"], s["seq"]) for s in evidence["samples"]}


def test_oscal_assessment_results_validate_against_nist_schema(report, tmp_path) -> None:
    assert oscal_errors(report / "assessment-results.json") == []
    results = orjson.loads((report / "assessment-results.json").read_bytes())
    results = results["assessment-results"]
    assert results["metadata"]["oscal-version"] == SCHEMA_VERSION
    states = {
        f["target"]["target-id"]: f["target"]["status"]["state"]
        for f in results["results"][0]["findings"]
    }
    assert states["sc-8_smt"] == "not-satisfied"
    assert states["ac-3_smt"] == "satisfied"
    assert states["ac-5_smt"] == "satisfied"
    assert {"au-2_smt", "au-3_smt", "cm-3_smt", "cm-5_smt", "au-9.3_smt"} <= set(states)
    # The validator is not vacuous: a finding without a state (what 1.1.3-era output wrote for
    # not-assessed controls) fails it.
    del results["results"][0]["findings"][0]["target"]["status"]
    broken = tmp_path / "broken.json"
    broken.write_bytes(orjson.dumps({"assessment-results": results}))
    assert oscal_errors(broken) == [
        "$['assessment-results'].results[0].findings[0].target: 'status' is a required property"
    ]


def test_html_renders_without_console_errors(report, evidence, tmp_path) -> None:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: errors.append(r.url) if not r.url.startswith("file:") else 0)
        page.goto((report / "evidence.html").as_uri())
        assert page.locator("svg").count() == 4
        assert page.locator("section").count() == len(CONTROLS)  # one per control
        # Sample entries read as one field a line, wrapped inside the page, never a long line.
        entries_shown = page.locator("pre.entry")
        shown = [(s["log"], s["seq"]) for c in evidence["controls"] for s in c["samples"]]
        assert entries_shown.count() == len(shown) > 0
        first = entries_shown.first
        text = first.inner_text()
        proven = {(s["log"], s["seq"]): s["entry"] for s in evidence["samples"]}
        assert orjson.loads(text) == orjson.loads(proven[shown[0]])
        assert len(text.splitlines()) > 10 and '\n  "seq": ' in text
        fits = first.evaluate("e => e.scrollWidth <= e.clientWidth")
        assert fits, "a sample entry overflows its box"
        page.set_viewport_size({"width": 1200, "height": 900})
        wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 0, f"the page is {wide}px wider than the window"
        page.screenshot(path=str(tmp_path / "evidence.png"), full_page=True)
        browser.close()
    assert errors == []
    assert (tmp_path / "evidence.png").stat().st_size > 10_000


def test_a_tampered_log_is_refused(logs, tmp_path) -> None:
    audit = tmp_path / "audit"
    shutil.copytree(logs["dirs"][1], audit)
    data = bytearray((audit / "entries").read_bytes())
    at = data.index(b"alice@example.com")
    data[at] ^= 0x01  # "alice" -> "`lice": still canonical JSON, but not what was signed
    (audit / "entries").write_bytes(bytes(data))
    out = tmp_path / "out"
    done = run_evidence(
        "-c", logs["config"], "--since", logs["since"], "--until", logs["until"],
        "--audit-dir", audit, "--verifier", logs["verifiers"][1], "--out", out,
    )  # fmt: skip
    assert done.returncode == 1
    assert str(audit) in done.stderr and "failed verification" in done.stderr
    assert "entry" in done.stderr and "differs" in done.stderr
    assert not out.exists()


def test_build_report_for_the_demo_defaults_to_the_config_audit_dir(logs, tmp_path, monkeypatch):
    """The function `gateway demo` calls: one log from [audit] dir, its own verifier copy."""
    from gateway.evidence import build_report

    monkeypatch.setenv("TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    html = build_report(logs["config"], None, logs["since"], logs["until"], tmp_path)
    assert html == tmp_path / "evidence.html"
    evidence = orjson.loads((tmp_path / "evidence.json").read_bytes())
    assert [log["origin"] for log in evidence["logs"]] == ["alpha.test/audit"]
    assert evidence["logs"][0]["verifier"]["pinned"] is False
    au10 = next(c for c in evidence["controls"] if c["id"] == "AU-10")
    assert au10["status"] == "not-assessed" and "--verifier" in au10["reason"]
    # NIST's schema wants a state in every finding: a not-assessed control has none, only
    # its observation saying so.
    assert oscal_errors(tmp_path / "assessment-results.json") == []
    result = orjson.loads((tmp_path / "assessment-results.json").read_bytes())
    result = result["assessment-results"]["results"][0]
    assert "au-10_smt" not in {f["target"]["target-id"] for f in result["findings"]}
    (observation,) = [o for o in result["observations"] if o["title"].startswith("AU-10 ")]
    assert {"name": "assessment-status", "value": "not-assessed"}.items() <= (
        observation["props"][0].items()
    )
    assert "AU-10" in result["remarks"]


def test_without_since_and_until_the_whole_verified_log_is_reported(logs, evidence, tmp_path):
    args = []
    for d, key in zip(logs["dirs"], logs["verifiers"], strict=True):
        args += ["--audit-dir", d, "--verifier", key]
    done = run_evidence("-c", logs["config"], *args, "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    whole = orjson.loads((tmp_path / "evidence.json").read_bytes())
    stamps = sorted(e["ts"] for d in logs["dirs"] for e in entries(d))
    last = datetime.fromisoformat(stamps[-1]) + timedelta(microseconds=1)
    assert whole["period"]["since"] == stamps[0]
    assert whole["period"]["until"] == last.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert (whole["period"]["since_given"], whole["period"]["until_given"]) == (False, False)
    assert "whole verified log" in whole["period"]["chosen"]
    assert whole["figures"] == evidence["figures"]  # the fixture's period held every entry
    assert [log["period_seqs"] for log in whole["logs"]] == [
        [[0, len(entries(d)) - 1]] for d in logs["dirs"]
    ]
    assert "whole verified log" in (tmp_path / "evidence.html").read_text()
    assert "whole verified log" in (tmp_path / "assessment-results.json").read_text()
    assert oscal_errors(tmp_path / "assessment-results.json") == []


def test_proofs_are_against_the_checkpoint_at_the_period_end(logs, tmp_path) -> None:
    """A report on the first half of a log names the checkpoint of that time, not the latest."""
    audit, key = logs["dirs"][0], logs["verifiers"][0]
    log = entries(audit)
    until = log[len(log) // 2]["ts"]  # excluded: entries before it were written by then
    written = sum(1 for e in log if e["ts"] < until)
    done = run_evidence(
        "-c", logs["config"], "--audit-dir", audit, "--verifier", key, "--until", until,
        "--out", tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    evidence = orjson.loads((tmp_path / "evidence.json").read_bytes())
    (reported,) = evidence["logs"]
    notes = [open_note(n, key) for n in checkpoint_notes(audit)]
    first_covering = next(size for _, size, _ in notes if size >= written)
    assert reported["checkpoint"]["size"] == first_covering < reported["latest_checkpoint"]["size"]
    assert reported["latest_checkpoint"]["size"] == len(log)
    _, size, root = open_note(reported["checkpoint"]["note"], key)
    assert size == first_covering
    assert evidence["samples"]
    for sample in evidence["samples"]:
        leaf = hashlib.sha256(b"\x00" + sample["entry"].encode()).digest()
        path = [bytes.fromhex(p) for p in sample["path"]]
        assert sample["tree_size"] == size and fold(sample["seq"], size, leaf, path) == root
    assert reported["period_seqs"] == [[0, written - 1]]
    assert oscal_errors(tmp_path / "assessment-results.json") == []


def checkpoint_notes(audit: Path) -> list[str]:
    """Every note in `checkpoints` (4-byte big-endian length, then the note), in order."""
    data, notes, at = (audit / "checkpoints").read_bytes(), [], 0
    while at < len(data):
        n = int.from_bytes(data[at : at + 4], "big")
        notes.append(data[at + 4 : at + 4 + n].decode())
        at += 4 + n
    return notes
