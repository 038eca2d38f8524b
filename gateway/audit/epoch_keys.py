"""Each epoch's own sealing key, wrapped by the sealing key, kept where it can be deleted.

An epoch's sealed originals are encrypted under a random 32-byte key of its own. That key is
stored only wrapped (AES key wrap, RFC 3394, under the configured sealing key) in the keys
directory, next to `sealing_key`: `{keys}/epochs/{origin, percent-encoded}.key`, never in the
audit directory or anything shipped from it. Deleting that one file (crypto-shredding) makes
the epoch's originals unreadable for good while its entries, tree and proofs stay checkable.
A shred leaves `{...}.shredded` in its place (when, by whom or what, and where the
`epoch.shredded` entry recording it went), so unseal can say the key was shredded, not lost.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, unquote

import orjson
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from gateway.audit.keys import SECRET_SIZE, KeyFileError, read_secret_key, write_private
from gateway.audit.seal import SealError, unseal_iter
from gateway.audit.store import CHECKPOINT, LogReader, read_file

EPOCHS = "epochs"
KEY_SUFFIX = ".key"
SHREDDED_SUFFIX = ".shredded"


class KeyShredded(SealError):
    """The epoch's key was deleted on purpose: its originals cannot be read any more."""


def _path(sealing_key: Path, origin: str, suffix: str) -> Path:
    return Path(sealing_key).parent / EPOCHS / (quote(origin, safe="") + suffix)


def key_file(sealing_key: Path, origin: str) -> Path:
    return _path(sealing_key, origin, KEY_SUFFIX)


def epoch_key(sealing_key: Path, origin: str, *, create: bool = False) -> bytes:
    """The epoch key of the log `origin`, unwrapped; made (random) and stored when `create`.

    Raises:
        KeyShredded: the key was shredded.
        KeyFileError: missing, unreadable, or not wrapped by this sealing key.
    """
    path = key_file(sealing_key, origin)
    kek = read_secret_key(Path(sealing_key))
    tombstone = _path(sealing_key, origin, SHREDDED_SUFFIX)
    if tombstone.exists():
        raise KeyShredded(_shredded_message(origin, tombstone))
    if create and not path.exists():
        path.parent.mkdir(mode=0o700, exist_ok=True)
        key = os.urandom(SECRET_SIZE)
        write_private(path, base64.b64encode(aes_key_wrap(kek, key)) + b"\n")
        return key
    try:
        wrapped = base64.b64decode(path.read_bytes().strip(), validate=True)
        return aes_key_unwrap(kek, wrapped)
    except FileNotFoundError:
        raise KeyFileError(f"epoch key {path} is missing (and was not shredded)") from None
    except (binascii.Error, InvalidUnwrap):
        raise KeyFileError(f"{path} is not an epoch key wrapped by {sealing_key}") from None


def shred(sealing_key: Path, origin: str, by: str) -> bool:
    """Delete the epoch key of `origin`, leaving a tombstone; False if there was none."""
    path = key_file(sealing_key, origin)
    if not path.exists():
        return False
    record = {"origin": origin, "shredded_at": _now(), "by": by}
    write_private(_path(sealing_key, origin, SHREDDED_SUFFIX), orjson.dumps(record) + b"\n")
    path.unlink()
    _fsync_dir(path.parent)
    return True


def unrecorded(sealing_key: Path, writer_origin: str) -> list[tuple[Path, dict]]:
    """Tombstones of this writer's epochs whose `epoch.shredded` entry is not written yet."""
    directory = Path(sealing_key).parent / EPOCHS
    found = []
    for path in sorted(directory.glob(f"*{SHREDDED_SUFFIX}")) if directory.is_dir() else []:
        origin = unquote(path.name.removesuffix(SHREDDED_SUFFIX))
        if origin.rsplit("/", 1)[0] != writer_origin:
            continue
        record = orjson.loads(path.read_bytes())
        if "recorded_in" not in record:
            found.append((path, record))
    return found


def mark_recorded(path: Path, record: dict, origin: str, seq: int) -> None:
    write_private(path, orjson.dumps({**record, "recorded_in": {"origin": origin, "seq": seq}}))


def key_for(directory: Path, ref: dict, sealing_key: Path) -> bytes:
    """The key that sealed blob `ref` of the log in `directory`: its epoch's key when the log
    began with an `epoch.started` naming one (that of the epoch named by `sealed_in` for a
    body that began streaming in the epoch before), else the sealing key itself."""
    first = LogReader(directory).read_entry(0)
    if "epoch_key" not in first or first.get("type") != "epoch.started":
        return read_secret_key(Path(sealing_key))
    origin = read_file(Path(directory) / CHECKPOINT).split(b"\n", 1)[0].decode()
    if "sealed_in" in ref:
        origin = f"{origin.rsplit('/', 1)[0]}/{ref['sealed_in']}"
    return epoch_key(sealing_key, origin)


def unseal(directory: Path, entry: dict, name: str, sealing_key: Path) -> bytes:
    """The whole original body `name` of an entry, under whichever key sealed it (see
    `seal.unseal_iter` for large ones).

    Raises:
        KeyError: no sealed body of that name. KeyShredded: its epoch's key was shredded.
    """
    key = key_for(directory, entry["sealed"][name], sealing_key)
    return b"".join(unseal_iter(directory, entry, name, key))


def _shredded_message(origin: str, tombstone: Path) -> str:
    record: dict = {}
    with contextlib.suppress(OSError, orjson.JSONDecodeError):
        record = orjson.loads(tombstone.read_bytes())
    return (
        f"the sealing key of epoch {origin} was shredded at {record.get('shredded_at', '?')} "
        f"(by {record.get('by', '?')}): its sealed originals can no longer be read; its "
        "entries, tree and proofs still verify"
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
