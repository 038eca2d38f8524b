"""Epochs: one log per period, each chained to the final checkpoint of the one before.

The writer is driven with an explicit clock (its public `clock` argument) so a boundary is
crossed without waiting for midnight; the gateway test starts the real process on a log whose
current epoch is already in the past.
"""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx
import peers
import pytest
from conftest import DAY1, Clock, audited_config, entries, launch_gateway
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from independent_verifier import check_epoch_link, open_sealed

from gateway import config as config_module
from gateway.audit import (
    AuditLog,
    Checkpoint,
    init_keys,
    read_secret_key,
    read_signing_key,
    verify_log,
)
from gateway.audit.epochs import EpochLog
from gateway.audit.periods import Epoch
from gateway.audit.seal import SPILL
from gateway.audit.store import log_chains
from gateway.config import ConfigError

ORIGIN = "gw.test/audit"


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    init_keys(tmp_path / "keys", ORIGIN)
    return tmp_path / "keys"


async def open_epochs(
    base: Path,
    keys: Path,
    clock: Clock,
    kind: str = "daily",
    origin: str = ORIGIN,
    retention: int | None = None,
) -> EpochLog:
    return await EpochLog.open(
        base,
        retention_days=retention,
        origin=origin,
        kind=kind,
        signing_key=keys / "signing.key",
        sealing_key=keys / "sealing.key",
        clock=clock,
    )


def gw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["gateway", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("kind", "moment", "name", "end"),
    [
        ("daily", datetime(2026, 12, 31, 23, 59, tzinfo=UTC), "2026-12-31", "2027-01-01"),
        ("weekly", datetime(2026, 12, 31, tzinfo=UTC), "2026-W53", "2027-01-04"),
        ("weekly", datetime(2021, 1, 3, tzinfo=UTC), "2020-W53", "2021-01-04"),
        ("monthly", datetime(2026, 12, 15, tzinfo=UTC), "2026-12", "2027-01-01"),
    ],
)
def test_epoch_names_are_utc_days_iso_weeks_and_months(kind, moment, name, end) -> None:
    epoch = Epoch.at(kind, moment)
    assert (epoch.name, epoch.end.date().isoformat()) == (name, end)
    assert Epoch.parse(name) == epoch
    for not_an_epoch in ("2026-13", "2026-02-30", "2025-W53", "0", "sealed", "2026-1-01"):
        assert Epoch.parse(not_an_epoch) is None


async def test_rollover_while_running_chains_to_the_final_checkpoint(tmp_path, keys) -> None:
    base, clock = tmp_path / "audit", Clock(DAY1)
    log = await open_epochs(base, keys, clock)
    await log.append({"type": "inference", "n": 1})
    stream = log.sealed_stream()  # a body that streams across midnight, past the spill size
    stream.add(b"x" * (SPILL + 10))
    stream.finish()
    clock.now += 5  # 2026-12-01T00:00:03Z
    seq = await log.append({"type": "inference", "n": 2}, {"response": stream})
    await log.close()

    day1, day2 = base / "2026-11-30", base / "2026-12-01"
    assert log_chains(base) == [[day1, day2]]
    old, new = entries(day1), entries(day2)
    assert [e["type"] for e in old] == ["epoch.started", "inference"]
    assert "previous" not in old[0]  # the writer's first log
    assert [e["type"] for e in new] == ["epoch.started", "inference"] and seq == 1
    started = new[0]
    final = (day1 / "checkpoint").read_bytes()
    assert started["previous"] == {
        "origin": f"{ORIGIN}/2026-11-30",
        "size": 2,
        "root": final.split(b"\n")[2].decode(),
        "note": final.decode(),
        "note_sha256": hashlib.sha256(final).hexdigest(),
    }
    assert (started["epoch"], started["epoch_end"]) == ("2026-12-01", "2026-12-02T00:00:00.000000Z")
    check_epoch_link(final, started, (day1 / "verifier").read_text().strip())
    assert new[1]["ts"] == "2026-12-01T00:00:03.000000Z"  # stamped by the writer's clock
    assert (day2 / new[1]["sealed"]["response"]["file"]).is_file()  # moved with its entry
    for d in (day1, day2):
        assert verify_log(d).ok, verify_log(d).problem
    out = gw("audit", "verify", "--dir", str(base))
    assert out.returncode == 0, out.stderr
    assert f"OK chain {base}: 2 logs" in out.stdout


async def test_verify_refuses_an_epoch_extended_after_its_successor_started(tmp_path, keys) -> None:
    base, clock = tmp_path / "audit", Clock(DAY1)
    log = await open_epochs(base, keys, clock)
    clock.now += 86400
    await log.append({"type": "inference"})
    await log.close()
    out = gw("audit", "verify", "--dir", str(base))
    assert out.returncode == 0, out.stderr
    # The old epoch is reopened and one more entry signed into it: each log still verifies on
    # its own, the chain does not.
    old = await AuditLog.open(
        base / "2026-11-30",
        origin=f"{ORIGIN}/2026-11-30",
        signing_key=keys / "signing.key",
        sealing_key=keys / "sealing.key",
    )
    await old.append({"type": "inference", "backdated": True})
    await old.close()
    out = gw("audit", "verify", "--dir", str(base))
    assert out.returncode == 1
    assert "OK " in out.stdout  # each log alone
    assert f"FAIL chain: {base / '2026-12-01'}" in out.stderr
    assert "not the final checkpoint" in out.stderr


async def test_a_removed_epoch_breaks_the_chain(tmp_path, keys) -> None:
    base, clock = tmp_path / "audit", Clock(DAY1)
    log = await open_epochs(base, keys, clock)
    for _ in range(2):
        clock.now += 86400
        await log.append({"type": "inference"})
    await log.close()
    assert [len(c) for c in log_chains(base)] == [3]
    (base / "2026-12-01").rename(tmp_path / "elsewhere")
    out = gw("audit", "verify", "--dir", str(base))
    assert out.returncode == 1 and "FAIL chain" in out.stderr, out.stdout
    (tmp_path / "elsewhere").rename(base / "2026-12-01")
    (base / "2026-11-30").rename(tmp_path / "oldest")  # the oldest one, too
    out = gw("audit", "verify", "--dir", str(base))
    assert out.returncode == 1, out.stdout
    assert "chains to 'gw.test/audit/2026-11-30' (size 1), which is not here" in out.stderr
    out = gw("audit", "verify", "--dir", str(base / "2026-12-01"))  # one epoch on its own
    assert out.returncode == 0, out.stderr


async def test_a_log_from_before_epochs_is_the_first_link(tmp_path, keys) -> None:
    base = tmp_path / "audit"
    plain = await AuditLog.open(
        base, origin=ORIGIN, signing_key=keys / "signing.key", sealing_key=keys / "sealing.key"
    )
    await plain.append({"type": "inference"})
    await plain.close()
    log = await open_epochs(base, keys, Clock(DAY1), kind="monthly")
    await log.close()
    assert log_chains(base) == [[base, base / "2026-11"]]
    previous = entries(base / "2026-11")[0]["previous"]
    assert (previous["origin"], previous["size"]) == (ORIGIN, 1)
    out = gw("audit", "verify", "--dir", str(base))
    assert out.returncode == 0 and "OK chain" in out.stdout, out.stderr


async def test_gateway_started_after_its_epoch_ended_starts_a_new_chained_epoch(
    start_gateway, issuer, upstream, tmp_path, analyst_token
) -> None:
    keys = tmp_path / "keys"
    config = audited_config(issuer.url, upstream.url, tmp_path).replace(
        'durability = "sync"', 'durability = "sync"\nepoch = "daily"'
    )
    base = tmp_path / "audit"
    # An earlier epoch, written with the real writer at an explicit time, as a gateway
    # stopped on that day leaves it.
    past = await open_epochs(base, keys, Clock(DAY1), origin="test.gateway/audit")
    await past.append({"type": "inference", "written": "in the past epoch"})
    await past.close()

    gateway = start_gateway(config)
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            f"{gateway.url}/llama/v1/chat/completions",
            headers={"authorization": f"Bearer {analyst_token}"},
            json={"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert reply.status_code == 200
    gateway.stop()

    today = Epoch.at("daily", datetime.now(UTC)).name
    assert [d.name for d in log_chains(base)[0]] == ["2026-11-30", today]
    current = entries(base / today)
    assert [e["type"] for e in current[:3]] == ["epoch.started", "gateway.started", "policy.loaded"]
    assert current[0]["previous"]["origin"] == "test.gateway/audit/2026-11-30"
    assert current[0]["previous"]["size"] == 2
    assert (
        (base / today / "checkpoint")
        .read_bytes()
        .startswith(f"test.gateway/audit/{today}\n".encode())
    )
    out = gw("audit", "verify", "--dir", str(base))
    assert out.returncode == 0, out.stderr
    assert "OK chain" in out.stdout


def epoch_key_file(keys: Path, origin: str) -> Path:
    return keys / "epochs" / (quote(origin, safe="") + ".key")


def unwrap(keys: Path, origin: str) -> bytes:
    """The epoch key as an auditor with the sealing key unwraps it (RFC 3394), by hand."""
    kek = read_secret_key(keys / "sealing.key")
    return aes_key_unwrap(kek, base64.b64decode(epoch_key_file(keys, origin).read_bytes()))


async def test_each_epoch_seals_under_its_own_wrapped_key(tmp_path, keys) -> None:
    base, clock = tmp_path / "audit", Clock(DAY1)
    log = await open_epochs(base, keys, clock)
    await log.append({"type": "decision"}, {"request": b"sealed on day one"})
    clock.now += 86400
    await log.append({"type": "decision"}, {"request": b"sealed on day two"})
    await log.close()

    origins = [f"{ORIGIN}/2026-11-30", f"{ORIGIN}/2026-12-01"]
    day_keys = [unwrap(keys, o) for o in origins]
    sealing = read_secret_key(keys / "sealing.key")
    assert len({*day_keys, sealing}) == 3
    texts = [b"sealed on day one", b"sealed on day two"]
    for origin, key, text in zip(origins, day_keys, texts, strict=True):
        directory = base / origin.rsplit("/", 1)[1]
        first, decision = entries(directory)[:2]
        assert first["epoch_key"] == epoch_key_file(keys, origin).name
        assert open_sealed(str(directory), decision["sealed"]["request"], key) == text
        with pytest.raises(InvalidTag):  # not under the sealing key itself
            open_sealed(str(directory), decision["sealed"]["request"], sealing)
        out = gw(
            "audit", "unseal", "1", "--dir", str(directory), "--key", str(keys / "sealing.key")
        )
        assert out.returncode == 0 and text.decode() in out.stdout, out.stderr
    for path in base.rglob("*"):  # neither key, wrapped or not, is in the audit directory
        if path.is_file():
            data = path.read_bytes()
            assert not any(k in data for k in day_keys)
            assert epoch_key_file(keys, origins[0]).read_bytes().strip() not in data


async def test_retention_shreds_old_epoch_keys_and_the_log_still_verifies(tmp_path, keys) -> None:
    base, clock = tmp_path / "audit", Clock(DAY1)
    log = await open_epochs(base, keys, clock, retention=1)
    await log.append({"type": "decision"}, {"request": b"old original"})
    clock.now += 86400  # 2026-12-01: the first epoch ended less than a day ago
    await log.append({"type": "decision"}, {"request": b"newer original"})
    assert epoch_key_file(keys, f"{ORIGIN}/2026-11-30").exists()
    clock.now += 86400  # 2026-12-02T00:00:03Z: 2026-11-30 ended more than a day ago
    await log.append({"type": "inference"})
    await log.close()

    assert not epoch_key_file(keys, f"{ORIGIN}/2026-11-30").exists()
    assert epoch_key_file(keys, f"{ORIGIN}/2026-12-01").exists()
    shredded = [e for e in entries(base / "2026-12-02") if e["type"] == "epoch.shredded"]
    assert len(shredded) == 1
    assert shredded[0]["epoch_origin"] == f"{ORIGIN}/2026-11-30"
    assert shredded[0]["by"] == "[audit] retention_days = 1"
    out = gw("audit", "verify", "--dir", str(base))
    assert out.returncode == 0 and "OK chain" in out.stdout, out.stderr
    sealing = str(keys / "sealing.key")
    out = gw("audit", "unseal", "1", "--dir", str(base / "2026-11-30"), "--key", sealing)
    assert out.returncode == 2
    assert "sealing key of epoch gw.test/audit/2026-11-30 was shredded" in out.stderr
    assert "still verify" in out.stderr and out.stdout == ""
    out = gw("audit", "unseal", "1", "--dir", str(base / "2026-12-01"), "--key", sealing)
    assert out.returncode == 0 and "newer original" in out.stdout


async def test_shred_on_demand_is_recorded_by_the_running_gateway(
    start_gateway, issuer, upstream, tmp_path
) -> None:
    keys = tmp_path / "keys"
    config = audited_config(issuer.url, upstream.url, tmp_path).replace(
        'durability = "sync"', 'durability = "sync"\nepoch = "daily"\nretention_days = 3650'
    )
    base = tmp_path / "audit"
    past = await open_epochs(base, keys, Clock(DAY1), origin="test.gateway/audit")
    await past.append({"type": "decision"}, {"request": b"to be shredded"})
    await past.close()
    gateway = start_gateway(config)
    config_path = str(gateway.config_path)
    today = Epoch.at("daily", datetime.now(UTC)).name

    refused = gw("audit", "shred", "--epoch", today, "-c", config_path)
    assert refused.returncode == 2 and "has not ended" in refused.stderr
    out = gw("audit", "shred", "--epoch", "2026-11-30", "-c", config_path)
    assert out.returncode == 0, out.stderr
    assert "shredded the sealing key of test.gateway/audit/2026-11-30" in out.stdout
    assert "open by a running gateway" in out.stderr
    again = gw("audit", "shred", "--epoch", "2026-11-30", "-c", config_path)
    assert again.returncode == 2 and "already shredded" in again.stderr

    gateway.proc.send_signal(signal.SIGHUP)

    def recorded() -> list[dict]:
        return [e for e in entries(base / today) if e["type"] == "epoch.shredded"]

    shred = peers.wait_for(recorded)[0]
    assert shred["epoch"] == "2026-11-30" and shred["by"].startswith("gateway audit shred (user ")
    gateway.stop()
    assert len(recorded()) == 1
    out = gw("audit", "verify", "--dir", str(base))
    assert out.returncode == 0, out.stderr
    out = gw("audit", "unseal", "1", "--dir", str(base / "2026-11-30"), "-c", config_path,
             "--key", str(keys / "sealing.key"))  # fmt: skip
    assert out.returncode == 2 and "was shredded" in out.stderr

    # AU-11 evidence reports the epochs, the retention setting and the shredded epoch.
    out = gw("evidence", "-c", config_path, "--out", str(tmp_path / "report"))
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "report" / "evidence.json").read_bytes())
    au11 = next(c for c in report["controls"] if c["id"] == "AU-11")
    measures = {m["name"]: m for m in au11["measures"]}
    assert measures["epochs_shredded"]["total"] == 1
    assert measures["logs_verified"]["total"] == 2
    assert au11["status"] == "satisfied", au11  # retention_days is set

    # From a kept checkpoint: a log that does not extend it is refused, one that does is used.
    kept = tmp_path / "kept-checkpoint"
    kept.write_bytes((base / "2026-11-30" / "checkpoint").read_bytes())
    out = gw("evidence", "-c", config_path, "--out", str(tmp_path / "r2"), "--from", str(kept))
    assert out.returncode == 0, out.stderr
    forged = Checkpoint("test.gateway/audit/2026-11-30", 2, bytes(32))
    kept.write_bytes(forged.sign(read_signing_key(keys / "signing.key")))
    out = gw("evidence", "-c", config_path, "--out", str(tmp_path / "r3"), "--from", str(kept))
    assert out.returncode != 0 and "rewritten or forked" in out.stderr, out.stderr


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ('epoch = "hourly"', "audit.epoch: must be one of daily, weekly, monthly"),
        ("retention_days = 30", "audit.retention_days: needs epoch"),
        ('epoch = "daily"\nretention_days = 0', "audit.retention_days: must be at least 1"),
    ],
)
def test_bad_epoch_settings_are_refused_with_the_key(tmp_path, extra, problem) -> None:
    text = audited_config("http://127.0.0.1:1", "http://127.0.0.1:2", tmp_path)
    path = tmp_path / "gateway.toml"
    path.write_text(text.replace('durability = "sync"', f'durability = "sync"\n{extra}'))
    with pytest.raises(ConfigError) as refused:
        config_module.load(path)
    assert problem in str(refused.value)


async def test_each_worker_keeps_its_own_chain_of_epochs(
    issuer, upstream, analyst_token, tmp_path
) -> None:
    config = audited_config(issuer.url, upstream.url, tmp_path).replace(
        'durability = "sync"', 'durability = "sync"\nepoch = "daily"'
    )
    keys, base = tmp_path / "keys", tmp_path / "audit"
    for n in (0, 1):  # yesterday's epoch of each worker, as a stopped gateway leaves it
        past = await open_epochs(base / str(n), keys, Clock(DAY1), origin=f"test.gateway/audit/{n}")
        await past.close()
    path = tmp_path / "gateway.toml"
    path.write_text(config.replace("[server]\n", "[server]\nworkers = 2\n", 1))
    with launch_gateway(path) as gateway:
        async with httpx.AsyncClient() as client:
            reply = await client.get(
                f"{gateway.url}/llama/v1/models",
                headers={"authorization": f"Bearer {analyst_token}"},
            )
        assert reply.status_code == 200
    today = Epoch.at("daily", datetime.now(UTC)).name
    chains = log_chains(base)
    assert chains == [[base / str(n) / "2026-11-30", base / str(n) / today] for n in (0, 1)]
    for n in (0, 1):
        first = entries(base / str(n) / today)[0]
        assert first["previous"]["origin"] == f"test.gateway/audit/{n}/2026-11-30"
        assert epoch_key_file(keys, f"test.gateway/audit/{n}/{today}").is_file()
    out = gw("audit", "verify", "--dir", str(base))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("OK chain") == 2
