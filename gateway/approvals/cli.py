"""`gateway approvals list|approve|deny`: the approvers' HTTP API from a terminal.

    gateway approvals list [--status pending] [--url URL] [--token T]
    gateway approvals approve ID [--reason TEXT]
    gateway approvals deny ID [--reason TEXT]

The token (`--token` or $GATEWAY_TOKEN) is the approver's own OIDC token: the gateway decides
who may see and decide what, so this CLI holds no rules of its own.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import orjson

from gateway.errors import error_message

EXIT_FAIL = 1
EXIT_USAGE = 2
DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT_S = 30.0


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


def register_approvals(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    approvals = verbs.add_parser("approvals", help="list, approve or deny held requests")
    sub = approvals.add_subparsers(dest="approvals_verb", required=True, metavar="VERB")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"gateway base URL (default: $GATEWAY_URL or {DEFAULT_URL})")
    common.add_argument("--token", help="your bearer token (default: $GATEWAY_TOKEN)")
    listing = sub.add_parser("list", parents=[common], help="approvals you may see")
    listing.add_argument("--status", default="pending", help="pending (default), approved, ...")
    listing.add_argument("--all", action="store_true", help="every status")
    listing.set_defaults(func=_list)
    for verb in ("approve", "deny"):
        decide = sub.add_parser(verb, parents=[common], help=f"{verb} a held request")
        decide.add_argument("id", help="the approval id (apr_...)")
        decide.add_argument("--reason", help="recorded in the audit log (masked)")
        decide.set_defaults(func=_decide, verb=verb)


def _list(args: argparse.Namespace) -> int:
    query = "" if args.all else f"?status={args.status}"
    return _run(args, "GET", "/_gateway/approvals" + query, None, _print_list)


def _decide(args: argparse.Namespace) -> int:
    path = f"/_gateway/approvals/{args.id}/{args.verb}"
    return _run(args, "POST", path, {"reason": args.reason}, _print_one)


def _run(args: argparse.Namespace, method: str, path: str, body: Any, show: Any) -> int:
    try:
        token = args.token or os.environ.get("GATEWAY_TOKEN")
        if not token:
            raise CliError("give --token or set GATEWAY_TOKEN (your own token)", EXIT_USAGE)
        url = (args.url or os.environ.get("GATEWAY_URL") or DEFAULT_URL).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise CliError(f"--url must be http:// or https://, not {url!r}", EXIT_USAGE)
        show(_call(method, url + path, token, body))
    except CliError as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return exc.code
    return 0


def _call(method: str, url: str, token: str, body: Any) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 (_run admits only http and https)
        url,
        data=None if body is None else orjson.dumps(body),
        headers={
            "authorization": f"Bearer {token}",
            "accept": "application/json",
            "content-type": "application/json",
        },
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise CliError(f"gateway answered {exc.code}: {error_message(exc.read())}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CliError(f"gateway unreachable: {getattr(exc, 'reason', exc)}") from None


def _print_list(result: dict[str, Any]) -> None:
    approvals = result["approvals"]
    if not approvals:
        print("no approvals")
    for a in approvals:
        votes = ", ".join(f"{d['approver']} {d['decision']}" for d in a["decisions"])
        print(
            f"{a['id']}  {a['status']:<8}  {a['requester']}  {a['connection']}  "
            f"{a['model'] or '-'}  {_age(a['age_s'])}  reason: {a['reason'] or '-'}"
            + (f"  [{votes}]" if votes else "")
        )


def _print_one(result: dict[str, Any]) -> None:
    a = result["approval"]
    print(f"{a['id']}: {a['status']} (requested by {a['requester']})")


def _age(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) + " ago"
