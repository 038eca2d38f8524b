"""`gateway audit shred --epoch E -c gateway.toml`: crypto-shred one epoch on demand.

Deletes the wrapped key of epoch E of every writer under `[audit] dir` (epoch_keys.py) and
records an `epoch.shredded` entry in each writer's current epoch: at once when no gateway is
running (this command opens the log), else by the running gateway on SIGHUP or at its next
daily check. With `[audit.central] keys_store` the store's copies of those keys are deleted too.
The epoch being written cannot be shredded.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from datetime import UTC, datetime
from pathlib import Path

from gateway import config as config_module
from gateway.audit import epoch_keys
from gateway.audit.central_keys import STORE_ERRORS, delete_copies, one_line
from gateway.audit.epochs import EpochLog
from gateway.audit.periods import Epoch
from gateway.audit.recovery import AuditOpenError
from gateway.config import AuditConfig, ConfigError, without_password


class ShredError(ValueError):
    """Nothing was shredded; the message says why."""


def shred_epoch(audit: AuditConfig, name: str, by: str) -> list[tuple[Path, str]]:
    """Shred epoch `name` of each writer; returns (writer directory, origin) of those shredded.

    Raises:
        ShredError: no epochs configured, a bad or current epoch, or no key left to shred.
    """
    if audit.epoch is None:
        raise ShredError("[audit] epoch is not set: every original is sealed under the one "
                         "sealing key, so there is no epoch key to shred")  # fmt: skip
    epoch = Epoch.parse(name)
    if epoch is None:
        raise ShredError(f"{name!r} is not an epoch name (YYYY-MM-DD, YYYY-Www or YYYY-MM)")
    if epoch.end > datetime.now(UTC):
        raise ShredError(f"epoch {name} has not ended: its key is still sealing new originals")
    base = Path(audit.dir)
    writers = [(base, audit.origin)] + [
        (d, f"{audit.origin}/{d.name}")
        for d in sorted(base.iterdir() if base.is_dir() else [])
        if d.name.isdigit() and d.is_dir()
    ]
    sealing = Path(audit.sealing_key)
    done = [(w, o) for w, o in writers if epoch_keys.shred(sealing, f"{o}/{name}", by)]
    if not done:
        raise ShredError(f"no key of epoch {name} to shred (already shredded, or no such epoch)")
    return done


async def _record(audit: AuditConfig, writers: list[tuple[Path, str]]) -> list[str]:
    """Record the shreds by opening each writer's log; the writers a running gateway holds."""
    busy = []
    for directory, origin in writers:
        try:
            log = await EpochLog.open(
                directory,
                origin=origin,
                kind=audit.epoch or "",
                signing_key=Path(audit.signing_key),
                sealing_key=Path(audit.sealing_key),
                durability="sync",
                retention_days=audit.retention_days,
            )
        except AuditOpenError:  # a running gateway holds it: it records the shred itself
            busy.append(str(directory))
            continue
        await log.close()
    return busy


def cmd_shred(args: argparse.Namespace) -> int:
    try:
        audit = config_module.load(args.config).audit
        if audit is None:
            raise ShredError(f"{args.config} has no [audit] section")
        who = f"gateway audit shred (user {getpass.getuser()})"
        writers = shred_epoch(audit, args.epoch, who)
    except (ConfigError, ShredError, OSError) as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return 2
    for _, origin in writers:
        print(f"shredded the sealing key of {origin}/{args.epoch}")
    failed = _delete_central_copies(audit, [f"{o}/{args.epoch}" for _, o in writers])
    busy = asyncio.run(_record(audit, writers))
    for directory in busy:
        print(
            f"note: {directory} is open by a running gateway; it records the shred on SIGHUP "
            "(reload) or at its next daily check",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _delete_central_copies(audit: AuditConfig, origins: list[str]) -> bool:
    """With `[audit.central] keys_store`, delete the store's copies now; True if that failed
    (a running gateway, or the next one started, deletes them: the tombstones say so)."""
    url = audit.central.keys_store if audit.central else None
    if url is None:
        return False
    try:
        asyncio.run(delete_copies(url, origins))
    except STORE_ERRORS as exc:
        print(
            f"gateway: error: the copies in the epoch keys store {without_password(url)} are not "
            f"deleted yet ({one_line(exc)}); a running gateway deletes them at its next shipment",
            file=sys.stderr,
        )
        return True
    print(f"deleted the copies in the epoch keys store {without_password(url)}")
    return False


def register_shred(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("shred", help="delete one epoch's sealing key (crypto-shredding)")
    p.add_argument("--epoch", required=True, help="epoch name: YYYY-MM-DD, YYYY-Www or YYYY-MM")
    p.add_argument("-c", "--config", required=True, help="gateway.toml (its [audit] section)")
    p.set_defaults(func=cmd_shred)
