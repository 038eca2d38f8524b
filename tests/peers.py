"""Start the demo upstream and issuer as real subprocesses, and talk to their `/_demo/` APIs.

The suite runs the gateway against these servers exactly as a user's would run: separate
processes on loopback, found through the `listening on <url>` line they print once bound.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

START_TIMEOUT_S = 15.0  # a cold interpreter plus 2048-bit RSA key generation on a busy CI box
STOP_TIMEOUT_S = 5.0
LISTENING_PREFIX = "listening on "


class PeerStartError(RuntimeError):
    """A demo server did not announce its address in time; carries its stderr."""


@dataclass
class Peer:
    """A running server: its base URL and process. Use as a context manager or call stop()."""

    url: str
    proc: subprocess.Popen[str]
    stderr_file: IO[bytes] = field(repr=False)
    _final_stderr: str | None = field(default=None, repr=False)

    def stderr(self) -> str:
        """What the server wrote to stderr (tracebacks land here); still readable after stop()."""
        if self._final_stderr is not None:
            return self._final_stderr
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode(errors="replace")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait, SIGKILL if it does not go; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._final_stderr is None:
            self._final_stderr = self.stderr()
            self.stderr_file.close()
        return self.proc.returncode

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line, or "" if none came in time (a thread, since pipes cannot time out)."""
    line: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0] if line else ""


def launch(
    command: list[str], *, env: dict[str, str] | None = None, timeout: float = START_TIMEOUT_S
) -> Peer:
    """Run a server command and wait for the `listening on <url>` line it prints once bound."""
    # stderr goes to a file, not a pipe: nobody reads it while the server runs, and a full
    # pipe would block the server mid-traceback.
    stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 (the Peer owns it; stop() closes it)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr_file, text=True, env=env)
    peer = Peer(url="", proc=proc, stderr_file=stderr_file)
    line = _read_line(proc, timeout)
    if not line.startswith(LISTENING_PREFIX):
        peer_stderr = peer.stderr()
        peer.stop()
        raise PeerStartError(
            f"{' '.join(command)} did not print '{LISTENING_PREFIX}<url>' within {timeout} s "
            f"(exit code {proc.returncode}); stdout: {line!r}; stderr:\n{peer_stderr}"
        )
    peer.url = line.removeprefix(LISTENING_PREFIX).strip()
    return peer


def spawn_demo(module: str, *args: str) -> Peer:
    """`python -m gateway.demo.<module> --port 0 <args>` with this interpreter."""
    command = [sys.executable, "-m", f"gateway.demo.{module}", "--host", "127.0.0.1"]
    return launch([*command, "--port", "0", *args])


def start_upstream(*, api_key: str | None = None, token_delay_ms: float | None = None) -> Peer:
    """The demo OpenAI-compatible model server."""
    args: list[str] = []
    if api_key is not None:
        args += ["--api-key", api_key]
    if token_delay_ms is not None:
        args += ["--token-delay-ms", str(token_delay_ms)]
    return spawn_demo("upstream", *args)


def start_issuer() -> Peer:
    """The demo OIDC issuer."""
    return spawn_demo("issuer")


def _call(method: str, url: str, json: dict[str, Any] | None = None) -> Any:
    response = httpx.request(method, url, json=json, timeout=10.0)
    response.raise_for_status()
    return response.json()


def mint(issuer_url: str, sub: str, groups: list[str], **opts: Any) -> str:
    """A token from the demo issuer; opts are /_demo/token's (aud, ttl_s, alg, kid, claims...)."""
    return _call("POST", f"{issuer_url}/_demo/token", {"sub": sub, "groups": groups, **opts})[
        "token"
    ]


def rotate(issuer_url: str, alg: str = "RS256", *, keep_old: bool = False) -> dict[str, Any]:
    """Rotate the issuer's key for `alg`: {"kid": new, "removed_kid": old or None}."""
    return _call("POST", f"{issuer_url}/_demo/rotate", {"alg": alg, "keep_old": keep_old})


def outage(issuer_url: str, down: bool) -> None:
    """Make the issuer's discovery and JWKS answer 503 (down=True) or serve again."""
    _call("POST", f"{issuer_url}/_demo/outage", {"down": down})


def issuer_stats(issuer_url: str) -> dict[str, int]:
    """{"jwks_fetches": n, "discovery_fetches": n}, outages included."""
    return _call("GET", f"{issuer_url}/_demo/stats")


def upstream_requests(url: str) -> list[dict[str, Any]]:
    """The last 100 requests the upstream saw, oldest first."""
    return _call("GET", f"{url}/_demo/requests")


def upstream_stats(url: str) -> dict[str, int]:
    """Requests, streams started/completed/cancelled, and other connections open right now."""
    return _call("GET", f"{url}/_demo/stats")


def upstream_reset(url: str) -> None:
    """Forget seen requests and zero the counters (open connections are live, not counted)."""
    _call("POST", f"{url}/_demo/reset")


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, poll_s: float = 0.05) -> Any:
    """Poll until `condition()` is truthy and return it; AssertionError after `timeout` s.

    For what a server does just after it answers (a log line, a reload): waits on the state
    itself, with a deadline, instead of a fixed sleep.
    """
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"not true within {timeout} s: {condition}"
        time.sleep(poll_s)
    return result


def start_scripted_upstream() -> Peer:
    """tests/scripted_upstream.py: a stand-in whose every response byte the test scripts."""
    script = Path(__file__).with_name("scripted_upstream.py")
    return launch([sys.executable, str(script), "--port", "0"])


def script(url: str, name: str, chunks: list[str], headers: list[list[str]], **spec: Any) -> None:
    """What the scripted upstream answers on `/{name}...` (see tests/scripted_upstream.py)."""
    _call("POST", f"{url}/_script/{name}", {"chunks": chunks, "headers": headers, **spec})


def scripted_requests(url: str) -> list[dict[str, Any]]:
    """Path and headers of each request the scripted upstream answered, oldest first."""
    return _call("GET", f"{url}/_requests")
