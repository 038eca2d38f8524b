"""The central audit store: a real PostgreSQL with the schema `gateway audit central-schema`
prints, applied by an administrator; real gateways shipping to it under their own role; the
witness as its own process with its own role and key; verification from the store alone."""

from __future__ import annotations

import shutil
import socket
import subprocess

import httpx
import orjson
import pytest
from central_helpers import CHAT, Central, central_config, keys_init, metric, run, witness
from conftest import entries, launch_gateway
from oscal_schema import oscal_errors
from peers import wait_for

from gateway.audit import Checkpoint, LogReader, read_signing_key
from gateway.audit.merkle import build_levels, leaf_hash, levels_getter
from gateway.audit.merkle import root as tree_root
from gateway.evidence.controls import NO_CONFIG

ADD_ENTRY = "INSERT INTO audit_entries (origin, seq, entry) VALUES"


@pytest.fixture
def central(postgres) -> Central:
    return Central(postgres)


def test_the_schema_keeps_history_append_only_whatever_the_gateway_role_sends(central) -> None:
    entries_ = [f'{{"seq":{i}}}'.encode() for i in range(5)]
    root = tree_root(levels_getter(build_levels([leaf_hash(e) for e in entries_])), 5)
    assert central.sql("INSERT INTO audit_origins VALUES ('o', 'key')").returncode == 0
    rows = ",".join(f"('o', {i}, '\\x{e.hex()}')" for i, e in enumerate(entries_))
    assert (
        central.sql(f"INSERT INTO audit_entries (origin, seq, entry) VALUES {rows}").returncode == 0
    )

    def checkpoint(size: int, digest: bytes) -> subprocess.CompletedProcess:
        return central.sql(
            "INSERT INTO audit_checkpoints (origin, size, root, note) "
            f"VALUES ('o', {size}, '\\x{digest.hex()}', '\\x00')"
        )

    assert checkpoint(5, b"\x01" * 32).stderr.count("not the root of the entries held") == 1
    assert checkpoint(5, root).returncode == 0  # the database computed the same RFC 9162 root
    assert "not larger than the last" in checkpoint(3, root).stderr
    refused = {
        "UPDATE audit_entries SET entry = '\\x00'": "permission denied",
        "DELETE FROM audit_checkpoints": "permission denied",
        "TRUNCATE audit_entries": "permission denied",
        "SELECT * FROM audit_frontier": "permission denied",
        f"{ADD_ENTRY} ('o', 9, '\\x00')": "holds 5 entries (no gaps)",
        f"{ADD_ENTRY} ('o', 2, '\\x00')": "holds 5 entries",
    }
    for statement, why in refused.items():
        assert why in central.sql(statement).stderr, statement
    # Not even the owner can rewrite history once the triggers are in place.
    owner = central.sql("UPDATE audit_entries SET entry = '\\x00'", role="admin")
    assert "append-only" in owner.stderr
    assert central.value("SELECT count(*) FROM audit_entries") == "5"


def test_replica_ships_witness_cosigns_and_a_replaced_log_is_refused(
    central, issuer, upstream, tmp_path, analyst_token
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(central_config(issuer, upstream, tmp_path, central.url))
    auth = {"authorization": f"Bearer {analyst_token}"}
    origin = "test.gateway/audit"

    def held() -> int:
        return int(central.value(f"SELECT count(*) FROM audit_entries WHERE origin = '{origin}'"))

    with launch_gateway(config) as gateway:
        for _ in range(3):
            chat = httpx.post(f"{gateway.url}/llama/v1/chat/completions", json=CHAT, headers=auth)
            assert chat.status_code == 200
        local = len(entries(tmp_path / "audit"))
        wait_for(lambda: held() >= local)
        assert metric(gateway.url, "gateway_audit_ship_lag_entries") == 0
        assert metric(gateway.url, "gateway_audit_ship_refused_total") == 0
        # A witness's refusal of this origin (recorded as `gateway audit witness` does, under
        # the witness role) is raised by the replica that shipped it.
        noted = central.sql(
            "INSERT INTO audit_refusals (origin, size, refused_by, reason) "
            f"VALUES ('{origin}', 1, 'witness.test/w0', 'consistency proof does not verify')",
            role=central.witness_role,
        )
        assert noted.returncode == 0, noted.stderr
        wait_for(lambda: metric(gateway.url, "gateway_audit_ship_refused_total") == 1)
        health = httpx.get(f"{gateway.url}/_gateway/health", timeout=10).json()
        assert health["warnings"] == [
            {
                "connection": "down",
                "check": "upstream_reachable",
                "problem": "not accepting connections",
            },
            {
                "check": "audit_shipping",
                "problem": "a witness refused a checkpoint of this log: witness.test/w0 refused "
                "size 1: consistency proof does not verify",
            },
        ]
    first_run = entries(tmp_path / "audit")
    wait_for(lambda: held() == len(first_run))  # gateway.stopped was shipped at the stop
    shipped = [
        bytes.fromhex(line[2:])
        for line in central.value(
            f"SELECT entry FROM audit_entries WHERE origin = '{origin}' ORDER BY seq"
        ).splitlines()
    ]
    reader = LogReader(tmp_path / "audit")
    assert shipped == [reader.read_raw(i) for i in range(len(first_run))]  # the same bytes
    assert int(central.value("SELECT count(*) FROM audit_sealed")) > 0  # sealed originals too

    # The witness: its own key and role; it cosigns what is consistent.
    witness_keys = tmp_path / "witness"
    keys_init(witness_keys, "witness.test/w1")
    cosigned = witness(central, witness_keys)
    assert cosigned.returncode == 0, cosigned.stderr
    witness_vkey = cosigned.stderr.split("witness key: ")[1].split()[0]
    assert cosigned.stdout.startswith("cosigned ") and "refused 0" in cosigned.stdout
    verified = run("verify", "--store", central.url, "--witness", witness_vkey)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith(f"OK {origin}: {len(first_run)} entries")
    assert f"witnessed up to size {len(first_run)} by witness.test/w1 (verified)" in verified.stdout
    out = ["--witness", witness_vkey, "--out", str(tmp_path / "evidence")]
    report = subprocess.run(
        ["gateway", "evidence", "-c", str(config), "--store", central.url, *out],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    (log,) = orjson.loads((tmp_path / "evidence" / "evidence.json").read_bytes())["logs"]
    assert log["origin"] == origin and log["entries"] == len(first_run)
    assert log["witnessed"] == {
        "cosignatures": int(central.value("SELECT count(*) FROM audit_cosignatures")),
        "failed": 0,
        "witnesses": ["witness.test/w1"],
        "latest_size": len(first_run),
        "verified": True,
    }

    # The replica loses its local log and comes back under the same origin: refused, not merged.
    shutil.rmtree(tmp_path / "audit")
    with launch_gateway(config) as gateway:
        chat = httpx.post(f"{gateway.url}/llama/v1/chat/completions", json=CHAT, headers=auth)
        assert chat.status_code == 200
        wait_for(lambda: metric(gateway.url, "gateway_audit_ship_refused_total") >= 1)
        health = httpx.get(f"{gateway.url}/_gateway/health", timeout=10)
        assert health.status_code == 200  # shipping is not this replica's own fault
        (warning,) = [
            w["problem"] for w in health.json()["warnings"] if w["check"] == "audit_shipping"
        ]
        assert warning.startswith("the central store refused this log's shipment: ")
        assert "never issued" in warning
    assert held() == len(first_run)  # nothing of the new log went in
    again = run("verify", "--store", central.url, "--witness", witness_vkey)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"OK {origin}: {len(first_run)} entries")


def test_witness_refuses_a_checkpoint_the_log_key_did_not_sign(central, tmp_path) -> None:
    """A compromised gateway role can add entries and a checkpoint whose root matches them
    (the database accepts that), but not sign it with the log's key: no cosignature, and the
    refusal is recorded where the replica reads it."""
    keys, other = tmp_path / "log", tmp_path / "other"
    keys_init(keys, "log.test")
    keys_init(other, "log.test")  # the same name, another key
    genuine = read_signing_key(keys / "signing.key").verifier.encode()
    forger = read_signing_key(other / "signing.key")
    assert forger.verifier.encode() != genuine
    body = b'{"seq":0}'
    root = tree_root(levels_getter(build_levels([leaf_hash(body)])), 1)
    note = Checkpoint("forged.test", 1, root).sign(forger)
    statements = [
        f"INSERT INTO audit_origins VALUES ('forged.test', '{genuine}')",
        "INSERT INTO audit_entries (origin, seq, entry) VALUES "
        f"('forged.test', 0, '\\x{body.hex()}')",
        "INSERT INTO audit_checkpoints (origin, size, root, note) VALUES "
        f"('forged.test', 1, '\\x{root.hex()}', '\\x{note.hex()}')",
    ]
    for statement in statements:
        done = central.sql(statement)
        assert done.returncode == 0, done.stderr
    witness_keys = tmp_path / "witness"
    keys_init(witness_keys, "witness.test/w2")
    refused = witness(central, witness_keys)
    assert refused.returncode == 1 and "refused 1" in refused.stdout
    assert central.value("SELECT count(*) FROM audit_cosignatures") == "0"
    reason = central.value("SELECT refused_by || ': ' || reason FROM audit_refusals")
    assert reason.startswith("witness.test/w2: no signature by log.test")
    verified = run("verify", "--store", central.url)
    assert verified.returncode == 1 and "FAIL" in verified.stderr


def test_evidence_from_the_store_alone_needs_no_config(
    central, issuer, upstream, tmp_path, analyst_token, intern_token
) -> None:
    """An auditor with only the store's URL: the report is made, its usage table counts the
    traffic the replica served, the controls judged from the configuration say why they are not
    assessed, and the OSCAL document still validates against NIST's schema."""
    config = tmp_path / "gateway.toml"
    config.write_text(central_config(issuer, upstream, tmp_path, central.url))
    url = "/llama/v1/chat/completions"
    with launch_gateway(config) as gateway:
        for token, status in [(analyst_token, 200), (analyst_token, 200), (intern_token, 403)]:
            headers = {"authorization": f"Bearer {token}"}
            assert (
                httpx.post(f"{gateway.url}{url}", json=CHAT, headers=headers).status_code == status
            )
        assert httpx.post(f"{gateway.url}{url}", json=CHAT).status_code == 401
    local = len(entries(tmp_path / "audit"))
    held = "SELECT count(*) FROM audit_entries"
    wait_for(lambda: int(central.value(held)) == local)  # gateway.stopped shipped at the stop
    (tmp_path / "gateway.toml").unlink()  # nothing of the replica's is left to the auditor

    out = tmp_path / "report"
    done = subprocess.run(
        ["gateway", "evidence", "--store", central.url, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads((out / "evidence.json").read_bytes())
    assert report["config"] is None
    (log,) = report["logs"]
    assert (log["origin"], log["entries"]) == ("test.gateway/audit", local)
    usage = {
        (r["subject"], r["connection"], r["model"]): (r["requests"], r["allowed"], r["denied"])
        for r in report["usage"]
    }
    assert usage == {
        ("alice@example.com", "llama", "llama-3-8b"): (2, 2, 0),
        ("ivan@example.com", "llama", "llama-3-8b"): (1, 0, 1),
        (None, None, None): (1, 0, 1),
    }
    status = {c["id"]: (c["status"], c["reason"]) for c in report["controls"]}
    for judged_from_config in ("AC-6", "IA-2", "SC-8", "AU-11"):
        assert status[judged_from_config] == ("not-assessed", NO_CONFIG), judged_from_config
    assert status["AU-9(3)"][0] == "satisfied"  # the signed log alone says so
    assert oscal_errors(out / "assessment-results.json") == []
    assert "no configuration given" in (out / "evidence.html").read_text()


def test_a_last_shipment_that_fails_at_stop_is_logged(
    issuer, upstream, tmp_path, analyst_token
) -> None:
    """The store is down when the gateway stops: the final shipment's failure is in the log
    with what becomes of the entries (it was silent), and the local log keeps them."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        store = f"postgresql://gateway_audit@127.0.0.1:{unused.getsockname()[1]}/audit"
        config = tmp_path / "gateway.toml"
        config.write_text(central_config(issuer, upstream, tmp_path, store))
        with launch_gateway(config) as gateway:
            auth = {"authorization": f"Bearer {analyst_token}"}
            chat = httpx.post(f"{gateway.url}/llama/v1/chat/completions", json=CHAT, headers=auth)
            assert chat.status_code == 200
        assert gateway.proc.returncode == 0
    stderr = gateway.stderr()
    assert "audit: the last shipment to postgresql://gateway_audit@127.0.0.1:" in stderr
    assert "failed at stop" in stderr and "the rest ships at the next start" in stderr
    assert [e["type"] for e in entries(tmp_path / "audit")][-1] == "gateway.stopped"
