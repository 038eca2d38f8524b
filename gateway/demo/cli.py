"""The `gateway demo` verb; the walk-through itself is imported only when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register_demo(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = verbs.add_parser("demo", help="run a self-contained walk-through on loopback")
    demo.add_argument("--serve", action="store_true", help="keep running; print curl commands")
    demo.add_argument("--verbose", action="store_true", help="show the gateway's JSON logs")
    demo.add_argument(
        "--dir", type=Path, default=None, help="work dir for keys and the audit log (default: new)"
    )
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo.walkthrough import run_demo

    return run_demo(serve=args.serve, verbose=args.verbose, work=args.dir)
