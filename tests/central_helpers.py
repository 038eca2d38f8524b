"""The central audit store in tests: a database made with the SQL `gateway audit central-schema`
prints, applied as its administrator, with a gateway role and a witness role of its own."""

from __future__ import annotations

import asyncio
import re
import subprocess
from itertools import count
from pathlib import Path

import asyncpg
import httpx
from conftest import audited_config

ROLES = count()
CHAT = {"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


class Central:
    """One central database, its gateway role, its witness role and its epoch keys' role."""

    def __init__(self, postgres) -> None:
        n = next(ROLES)
        self.postgres = postgres
        self.admin_url = postgres.new_database("central")
        self.database = self.admin_url.rsplit("/", 1)[1]
        self.gateway_role, self.witness_role = f"gw_audit_{n}", f"gw_witness_{n}"
        self.keys_role = f"gw_keys_{n}"
        postgres.psql(
            f"CREATE ROLE {self.gateway_role} LOGIN; CREATE ROLE {self.witness_role} LOGIN; "
            f"CREATE ROLE {self.keys_role} LOGIN"
        )
        self._apply_schema()
        self.url = postgres.url(self.database, self.gateway_role)
        self.witness_url = postgres.url(self.database, self.witness_role)
        self.keys_url = postgres.url(self.database, self.keys_role)

    def _apply_schema(self) -> None:
        roles = ["--role", self.gateway_role, "--witness-role", self.witness_role]
        roles += ["--keys-role", self.keys_role]
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

    def restore_empty(self) -> None:
        """As if restored from a backup older than anything shipped: the database is dropped
        (its sessions ended) and made again from the schema."""
        self.postgres.psql(f"DROP DATABASE {self.database} WITH (FORCE)")
        self.postgres.psql(f"CREATE DATABASE {self.database}")
        self._apply_schema()

    def sql(self, statement: str, *, role: str | None = None) -> subprocess.CompletedProcess:
        url = self.postgres.url(self.database, role or self.gateway_role)
        return subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", statement],
            capture_output=True,
            text=True,
        )

    def fetch(self, query: str, *args: object, role: str = "admin") -> list[asyncpg.Record]:
        """Rows of one query over asyncpg (no psql process per call, for conditions polled)."""

        async def rows() -> list[asyncpg.Record]:
            db = await asyncpg.connect(self.postgres.url(self.database, role), timeout=10)
            try:
                return await db.fetch(query, *args)
            finally:
                await db.close()

        return asyncio.run(rows())

    def value(self, statement: str) -> str:
        done = self.sql(statement, role="admin")
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


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
