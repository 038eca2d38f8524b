"""`[server] workers = 2`: real supervisor and worker processes on one port.

Covers the Deployment contract: SO_REUSEPORT sharing, a killed worker restarted while requests
keep succeeding, SIGHUP reaching every worker, metrics summed over workers, one audit log per
worker (`{dir}/{N}/`, origin `{origin}/{N}`) beside a single-worker run's log, all verified.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
import orjson
import peers
from conftest import audited_config, entries, launch_gateway
from peers import wait_for
from test_operations import chat

from gateway.evidence.collect import open_logs

WORKERS = "[server]\nworkers = 2\n"


def two_workers(config_text: str) -> str:
    """The test config with `workers = 2` and file polling off (SIGHUP is the only reload)."""
    text = config_text.replace("[server]\n", WORKERS, 1)
    return text.replace("reload_poll_s = 0.2", "reload_poll_s = 0")


def worker_pids(gateway: peers.Peer) -> dict[int, int]:
    """worker index -> pid of its latest start, from the supervisor's log lines."""
    pids: dict[int, int] = {}
    for line in gateway.stderr().splitlines():
        if '"worker started"' in line:
            record = orjson.loads(line)
            pids[record["worker"]] = record["pid"]
    return pids


def requests_total(gateway: peers.Peer) -> float:
    text = httpx.get(f"{gateway.url}/_gateway/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_requests_total{")
    )


def inferences(audit_dir: Path) -> int:
    return sum(e["type"] == "inference" for e in entries(audit_dir))


def start(tmp_path: Path, config_text: str) -> peers.Peer:
    path = tmp_path / "gateway.toml"
    path.write_text(config_text)
    return launch_gateway(path)


def test_workers_share_a_port_sum_metrics_reload_together_and_verify(
    issuer, upstream, analyst_token, tmp_path
) -> None:
    config = audited_config(issuer.url, upstream.url, tmp_path)
    audit_dir = tmp_path / "audit"
    with start(tmp_path, config) as single:  # a log at {dir} from a one-worker run
        assert chat(single, analyst_token) == 200
    gateway = start(tmp_path, two_workers(config))
    try:
        assert sorted(worker_pids(gateway)) == [0, 1]
        calls = 40  # each on a new connection: the kernel spreads them over both workers
        assert [chat(gateway, analyst_token) for _ in range(calls)] == [200] * calls
        per_worker = [inferences(audit_dir / str(n)) for n in (0, 1)]
        assert sum(per_worker) == calls and min(per_worker) > 0
        assert requests_total(gateway) == calls  # either worker answers with the sum

        path = tmp_path / "gateway.toml"
        path.write_text(path.read_text() + "\n# v2\n")
        gateway.proc.send_signal(signal.SIGHUP)

        def reloaded(n: int) -> bool:
            loaded = [e for e in entries(audit_dir / str(n)) if e["type"] == "policy.loaded"]
            return len(loaded) == 2 and loaded[0]["config_sha256"] != loaded[1]["config_sha256"]

        wait_for(lambda: reloaded(0) and reloaded(1))
    finally:
        assert gateway.stop() == 0
    per_dirs = [audit_dir / "0", audit_dir / "1"]
    for d in per_dirs:
        log = entries(d)
        assert log[-1]["type"] == "gateway.stopped"
        assert {e["seq"] for e in log} == set(range(len(log)))
    assert entries(audit_dir)[-1]["type"] == "gateway.stopped"  # the old log is left as it was

    verify = subprocess.run(
        ["gateway", "audit", "verify", "--dir", str(audit_dir)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stderr
    ok = [line.split(":")[0] for line in verify.stdout.splitlines()]
    assert ok == [f"OK {audit_dir}", f"OK {audit_dir / '0'}", f"OK {audit_dir / '1'}"]
    origins = [(d / "checkpoint").read_text().split("\n")[0] for d in (audit_dir, *per_dirs)]
    assert origins == ["test.gateway/audit", "test.gateway/audit/0", "test.gateway/audit/1"]
    logs = open_logs([audit_dir])
    assert [log.origin for log in logs] == origins  # evidence covers them too


def test_a_killed_worker_is_restarted_and_requests_keep_succeeding(
    issuer, upstream, analyst_token, tmp_path
) -> None:
    config = audited_config(issuer.url, upstream.url, tmp_path, durability="batch")
    with start(tmp_path, two_workers(config)) as gateway:
        before = worker_pids(gateway)
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        # Once it is a zombie its listening socket is closed and out of the port's group.
        wait_for(lambda: _state(victim) in ("Z", None))
        assert [chat(gateway, analyst_token) for _ in range(20)] == [200] * 20
        restarted = wait_for(lambda: worker_pids(gateway)[0] != victim and worker_pids(gateway))
        assert restarted[1] == before[1]
        log0 = tmp_path / "audit" / "0"
        wait_for(lambda: [e["type"] for e in entries(log0)].count("gateway.started") == 2)
        assert [chat(gateway, analyst_token) for _ in range(20)] == [200] * 20
        assert '"worker died, restarting"' in gateway.stderr()
    assert gateway.proc.returncode == 0


def _state(pid: int) -> str | None:
    """The process state letter from /proc, None once it is reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None
