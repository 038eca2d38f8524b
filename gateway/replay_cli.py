"""`gateway replay N -c gateway.toml`: ask the running gateway to replay entry N, show the diff.

The gateway does the replay (it is the log's one writer) and answers with both bodies masked.
With `--unmasked --key FILE` the CLI unseals both bodies itself from the audit directory
(read-only) instead, for an investigator who holds the sealing key.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from gateway.audit import KeyFileError, LogReader, SealError, unseal
from gateway.errors import error_message

EXIT_FAIL = 1
EXIT_USAGE = 2
TIMEOUT_S = 330.0  # a little over the default upstream_timeout_s: the gateway answers first
DURABLE_WAIT_S = 2.0  # batch durability writes an entry within 1 s


class ReplayError(Exception):
    """One line for stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


def register_replay(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("replay", help="send a recorded request again and diff the answers")
    p.add_argument("seq", type=int, metavar="N", help="an inference or decision entry")
    p.add_argument("-c", "--config", type=Path, required=True, help="gateway.toml")
    p.add_argument("--connection", help="send it to this connection instead of the original")
    p.add_argument("--token", help="bearer token of an [audit] reader (default: $GATEWAY_TOKEN)")
    p.add_argument("--url", help="gateway base URL (default: http://[server] listen)")
    p.add_argument("--unmasked", action="store_true", help="diff the unmasked originals")
    p.add_argument("--key", type=Path, help="sealing key file (with --unmasked)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.unmasked != (args.key is not None):
            raise ReplayError("--unmasked and --key FILE go together", EXIT_USAGE)
        token = args.token or os.environ.get("GATEWAY_TOKEN")
        if not token:
            raise ReplayError("give --token or set GATEWAY_TOKEN (an [audit] reader's)", EXIT_USAGE)
        config = _read_config(args.config)
        url = args.url or f"http://{config.get('server', {}).get('listen', '127.0.0.1:8080')}"
        if not url.startswith(("http://", "https://")):
            raise ReplayError(f"--url must be http:// or https://, not {url!r}", EXIT_USAGE)
        result = _post(url.rstrip("/"), args.seq, token, args.connection)
        new, old = result["response"], result["recorded"]
        if args.unmasked:
            new, old = _unsealed(_audit_dir(args.config, config), result, args.key)
    except ReplayError as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return exc.code
    print(_header(result), file=sys.stderr)
    sys.stdout.write(new if new.endswith("\n") else new + "\n")
    if old is None:
        print("(no recorded response to compare: the original exchange did not complete)")
        return 0
    recorded = f"recorded (entry {result['recorded_seq']})"
    replayed = f"replay (entry {result['replay_seq']})"
    sys.stdout.writelines(difflib.unified_diff(_lines(old), _lines(new), recorded, replayed))
    return 0


def _header(result: dict[str, Any]) -> str:
    return (
        f"replayed entry {result['replayed_seq']} on {result['connection']!r}: "
        f"status {result['status']}, "
        f"recorded as entries {result['replay_seq']} and {result['result_seq']}"
    )


def _lines(body: str) -> list[str]:
    """JSON pretty-printed with sorted keys, so a diff shows fields; other text as it is."""
    try:
        body = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        body = body.decode()
    except orjson.JSONDecodeError:
        pass
    return [line + "\n" for line in body.splitlines()]


def _read_config(path: Path) -> dict[str, Any]:
    """The raw TOML: replay needs only [server] listen and [audit] dir, not the credentials."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ReplayError(f"{path}: {exc.strerror}", EXIT_USAGE) from None
    except tomllib.TOMLDecodeError as exc:
        raise ReplayError(f"{path}: {exc}", EXIT_USAGE) from None


def _audit_dir(path: Path, config: dict[str, Any]) -> Path:
    directory = config.get("audit", {}).get("dir")
    if not isinstance(directory, str):
        raise ReplayError(f"{path}: [audit] dir is not set", EXIT_USAGE)
    return Path(directory)


def _post(url: str, seq: int, token: str, connection: str | None) -> dict[str, Any]:
    """POST /_gateway/audit/replay/{seq}; the gateway's error message on failure."""
    request = urllib.request.Request(  # noqa: S310 (run() admits only http and https)
        f"{url}/_gateway/audit/replay/{seq}",
        data=orjson.dumps({"connection": connection} if connection else {}),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise ReplayError(f"gateway answered {exc.code}: {error_message(exc.read())}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ReplayError(f"gateway at {url} is unreachable: {reason}") from None


def _unsealed(directory: Path, result: dict[str, Any], key: Path) -> tuple[str, str | None]:
    """Both responses from the sealed originals: the replay's and the recorded exchange's."""
    try:
        new = _sealed_response(directory, result["result_seq"], key)
        recorded_seq = result["recorded_seq"]
        old = None if recorded_seq is None else _sealed_response(directory, recorded_seq, key)
    except (KeyFileError, SealError, OSError) as exc:
        raise ReplayError(f"cannot unseal from {directory}: {exc}") from None
    return new, old


def _sealed_response(directory: Path, seq: int, key: Path) -> str:
    deadline = time.monotonic() + DURABLE_WAIT_S
    while (reader := LogReader(directory)).size <= seq:
        if time.monotonic() > deadline:
            raise ReplayError(f"entry {seq} is not in {directory} (is it the gateway's dir?)")
        time.sleep(0.05)
    entry = reader.read_entry(seq)
    if "response" not in entry.get("sealed", {}):
        return ""
    return unseal(directory, entry, "response", key).decode("utf-8", "replace")
