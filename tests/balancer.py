"""A real HAProxy (Debian's) in front of gateway replicas, for the replica tests.

Round robin over the replicas, each checked on `/_gateway/health` every 100 ms; a connection
refused by a dead replica is retried on another (`retry-on conn-failure` + `redispatch`), and
nothing else is retried (a POST a replica may have started on is never sent twice).
Every response names the replica that served it in `x-served-by`, and a request may pin its
replica with `x-replica: NAME` (so a test can hold on one and decide on another while both
requests still pass through the balancer).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from pgcluster import free_port

START_TIMEOUT_S = 15.0


def _config(port: int, replicas: dict[str, str]) -> str:
    servers = []
    pins = []
    for name, url in replicas.items():
        parts = urlsplit(url)
        servers.append(
            f"    server {name} {parts.hostname}:{parts.port} check inter 100ms fall 2 rise 1"
        )
        pins.append(f"    use-server {name} if {{ req.hdr(x-replica) -m str {name} }}")
    return "\n".join(
        [
            "global",
            "    maxconn 512",
            "defaults",
            "    mode http",
            "    timeout connect 2s",
            # A health answer slower than the check interval on a loaded machine is not a
            # down replica (the check timeout defaults to the interval); a dead one refuses
            # the connection at once, and a sick one answers 503.
            "    timeout check 3s",
            "    timeout client 60s",
            "    timeout server 60s",
            "    retries 3",
            "    retry-on conn-failure",  # never a request a replica may have started on
            "    option redispatch 1",
            "frontend gateways",
            f"    bind 127.0.0.1:{port}",
            "    default_backend replicas",
            "backend replicas",
            "    balance roundrobin",
            "    option httpchk GET /_gateway/health",
            "    http-check expect status 200",
            "    http-response set-header x-served-by %s",
            *pins,
            *servers,
            "",
        ]
    )


class Balancer:
    def __init__(self, replicas: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="gateway-haproxy-"))
        config = self.dir / "haproxy.cfg"
        config.write_text(_config(self.port, replicas))
        check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its config: {check.stdout}{check.stderr}")
        self.log = open(self.dir / "haproxy.log", "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(config)], stdout=self.log, stderr=self.log
        )
        try:
            self.wait_until_serving(set(replicas))
        except BaseException:
            self.stop()
            raise

    def wait_until_serving(self, names: set[str]) -> None:
        """Until a health-checked request through the balancer reaches each of `names`."""
        deadline = time.monotonic() + START_TIMEOUT_S
        seen: set[str] = set()
        while seen != names:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"haproxy did not reach {names - seen}: {self.output()}")
            try:
                response = httpx.get(f"{self.url}/_gateway/health?live", timeout=2)
                seen.add(response.headers.get("x-served-by", ""))
            except (OSError, httpx.HTTPError):
                time.sleep(0.05)
            seen &= names

    def output(self) -> str:
        self.log.flush()
        return (self.dir / "haproxy.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
