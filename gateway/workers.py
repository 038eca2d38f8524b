"""`[server] workers = N`: a supervisor process running N gateway workers on one port.

Each worker is a `gateway serve` process of its own (its own event loop, its own audit log in
`{audit.dir}/{N}/`) listening with SO_REUSEPORT, so the kernel spreads new connections over
them. The supervisor serves nothing itself. It holds the port (bound, never listening, so port
0 means one number for all and a restarting worker gets it back), passes SIGHUP and SIGTERM on
to every worker, starts a worker again when it dies, and owns the prometheus-client
multiprocess directory through which `/_gateway/metrics` sums all workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass

from prometheus_client.multiprocess import mark_process_dead

from gateway.config import Config
from gateway.metrics import MULTIPROC_ENV

log = logging.getLogger("gateway.workers")

WORKER_ENV = "GATEWAY_WORKER"  # "N:PORT": this process is worker N on the supervisor's port
READY_TIMEOUT_S = 120.0  # a worker opening (and recovering) a large audit log takes a while
BACKOFF_S = (0.1, 10.0)  # a worker that keeps dying right away is restarted ever more slowly
STEADY_S = 5.0  # a worker that ran this long before dying is restarted at once
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """Which worker this process is, and the port all workers share."""

    index: int
    port: int

    @classmethod
    def from_env(cls) -> WorkerSlot | None:
        value = os.environ.get(WORKER_ENV)
        if not value:
            return None
        index, _, port = value.partition(":")
        return cls(int(index), int(port))


class WorkerFailed(Exception):
    """A worker exited before it was listening."""

    def __init__(self, index: int, code: int) -> None:
        super().__init__(f"worker {index} exited with {code} before listening")
        self.code = code


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind without listening, with SO_REUSEPORT as the workers will: the port is ours."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def _die_with_supervisor() -> None:
    """In the child before exec: SIGTERM when the supervisor goes, however it goes."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.stopping = asyncio.Event()
        self.env: dict[str, str] = {}
        self.port = 0
        self.metrics_dir = ""

    async def run(self) -> int:
        server = self.config.server
        loop = asyncio.get_running_loop()
        with (
            reserve_port(server.host, server.port) as sock,
            tempfile.TemporaryDirectory(prefix="gateway-metrics-") as metrics_dir,
        ):
            self.port, self.metrics_dir = sock.getsockname()[1], metrics_dir
            self.env = {**os.environ, MULTIPROC_ENV: metrics_dir}
            loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
            loop.add_signal_handler(signal.SIGINT, self.stopping.set)
            loop.add_signal_handler(signal.SIGHUP, self.signal_all, signal.SIGHUP)
            try:
                await asyncio.gather(*(self.start(i) for i in range(server.workers)))
            except WorkerFailed as exc:
                log.error("%s; stopping", exc)
                await self.stop_all()
                return exc.code
            scheme = "https" if server.tls else "http"
            print(f"listening on {scheme}://{server.host}:{self.port}", flush=True)
            keepers = [loop.create_task(self.keep(i)) for i in range(server.workers)]
            await self.stopping.wait()
            for keeper in keepers:
                keeper.cancel()
            await self.stop_all()
        log.info("stopped")
        return 0

    async def start(self, index: int) -> None:
        """Start worker `index` and wait until it listens (its one line on stdout)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; from gateway.cli import main; sys.exit(main())",
            "serve",
            "-c",
            self.config.path,
            env={**self.env, WORKER_ENV: f"{index}:{self.port}"},
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_supervisor,
            process_group=0,  # a terminal's Ctrl-C reaches the supervisor, which stops them
        )
        self.procs[index] = proc
        log.info("worker started", extra={"worker": index, "pid": proc.pid})
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            line = b""
        if not line:
            raise WorkerFailed(index, await proc.wait())

    async def keep(self, index: int) -> None:
        """Start worker `index` again whenever it dies, until the supervisor stops."""
        backoff = BACKOFF_S[0]
        while True:
            proc = self.procs[index]
            started = time.monotonic()
            code = await proc.wait()
            log.error(
                "worker died, restarting", extra={"worker": index, "pid": proc.pid, "code": code}
            )
            mark_process_dead(proc.pid, self.metrics_dir)
            if time.monotonic() - started < STEADY_S:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), backoff)
                backoff = min(backoff * 2, BACKOFF_S[1])
            else:
                backoff = BACKOFF_S[0]
            if self.stopping.is_set():
                return
            with contextlib.suppress(WorkerFailed):
                await self.start(index)

    def signal_all(self, signum: int) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signum)

    async def stop_all(self) -> None:
        """SIGTERM: each worker drains its connections (drain_timeout_s), then it is killed."""
        self.signal_all(signal.SIGTERM)
        waits = [p.wait() for p in self.procs.values()]
        grace = self.config.server.drain_timeout_s + 10
        if waits:
            _, late = await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=grace)
            for proc in self.procs.values():
                if proc.returncode is None:
                    proc.kill()
            if late:
                await asyncio.wait(late)


def supervise(config: Config) -> int:
    """`gateway serve` with workers > 1: run the supervisor until SIGTERM or SIGINT."""
    return asyncio.run(Supervisor(config).run())
