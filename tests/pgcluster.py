"""A throwaway PostgreSQL cluster for tests: Debian's postgresql, initdb in a temp dir, run as
the unprivileged `postgres` user when the tests run as root (the server refuses to run as root).

The cluster listens on a free loopback port with trust authentication for loopback only; each
user of it takes its own database, so tests never see each other's rows. `restart()` stops it
(fast shutdown: clients are disconnected, as in a real database restart) and starts it again
on the same port and data directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from itertools import count
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "admin"
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres() -> list[str]:
    """The command prefix that runs a server binary as a non-root user."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


class Cluster:
    def __init__(self) -> None:
        if not (BIN / "initdb").exists():
            raise RuntimeError(f"no PostgreSQL 15 in {BIN}: apt-get install postgresql")
        self.root = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.names = count()
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        subprocess.run(
            [
                *_as_postgres(),
                str(BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )
        self.start()

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (kept by the process)
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.root),
            "fsync": "off",
            "max_connections": "200",
        }
        options = [arg for k, v in settings.items() for arg in ("-c", f"{k}={v}")]
        self.proc = subprocess.Popen(
            [
                *_as_postgres(),
                str(BIN / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                *options,
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.psql("SELECT 1", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start: {self.server_log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): sessions are ended, as when an administrator restarts it."""
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(
                [*_as_postgres(), str(BIN / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast"],
                check=True,
                capture_output=True,
            )
            self.proc.wait(30)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def psql(
        self, sql: str, database: str = "postgres", *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = [str(BIN / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        command += ["-d", self.url(database), "-c", sql]
        return subprocess.run(command, check=check, capture_output=True, text=True)

    def new_database(self, prefix: str = "db") -> str:
        """A fresh empty database; returns its URL (for the superuser)."""
        name = f"{prefix}_{next(self.names)}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def server_log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
