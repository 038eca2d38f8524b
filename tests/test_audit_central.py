"""The central audit store: a real PostgreSQL with the schema `gateway audit central-schema`
prints, applied by an administrator; real gateways shipping to it under their own role; the
witness as its own process with its own role and key; verification from the store alone."""

from __future__ import annotations

import re
import shutil
import subprocess
from itertools import count
from pathlib import Path

import httpx
import orjson
import pytest
from approvals_helpers import wait_for
from conftest import audited_config, entries, launch_gateway

from gateway.audit import Checkpoint, LogReader, read_signing_key
from gateway.audit.merkle import build_levels, leaf_hash, levels_getter
from gateway.audit.merkle import root as tree_root

ROLES = count()
ADD_ENTRY = "INSERT INTO audit_entries (origin, seq, entry) VALUES"
CHAT = {"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


class Central:
    """One central database, its gateway role and its witness role."""

    def __init__(self, postgres) -> None:
        n = next(ROLES)
        self.postgres = postgres
        self.admin_url = postgres.new_database("central")
        self.database = self.admin_url.rsplit("/", 1)[1]
        self.gateway_role, self.witness_role = f"gw_audit_{n}", f"gw_witness_{n}"
        postgres.psql(
            f"CREATE ROLE {self.gateway_role} LOGIN; CREATE ROLE {self.witness_role} LOGIN"
        )
        roles = ["--role", self.gateway_role, "--witness-role", self.witness_role]
        sql = subprocess.run(
            ["gateway", "audit", "central-schema", *roles],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.admin_url],
            input=sql,
            check=True,
            capture_output=True,
            text=True,
        )
        self.url = postgres.url(self.database, self.gateway_role)
        self.witness_url = postgres.url(self.database, self.witness_role)

    def sql(self, statement: str, *, role: str | None = None) -> subprocess.CompletedProcess:
        url = self.postgres.url(self.database, role or self.gateway_role)
        return subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", statement],
            capture_output=True,
            text=True,
        )

    def value(self, statement: str) -> str:
        done = self.sql(statement, role="admin")
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


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


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/_gateway/metrics", timeout=10).text
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def central_config(issuer, upstream, tmp: Path, store: str) -> str:
    return (
        audited_config(issuer.url, upstream.url, tmp)
        + f'\n[audit.central]\nstore = "{store}"\ninterval_s = 0.1\n'
    )


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["gateway", "audit", *args], capture_output=True, text=True, timeout=60)


def keys_init(directory: Path, name: str) -> None:
    command = ["gateway", "keys", "init", "--dir", str(directory), "--name", name]
    subprocess.run(command, check=True, capture_output=True)


def witness(central: Central, keys: Path) -> subprocess.CompletedProcess:
    """One round of `gateway audit witness` under the witness's own role."""
    key = str(keys / "signing.key")
    return run("witness", "--store", central.witness_url, "--key", key, "--once")


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
