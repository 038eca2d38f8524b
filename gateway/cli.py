"""Command line entry point: `gateway <verb> ...`.

Each area of the product registers its own verbs; this module only assembles them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from gateway import __version__

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _registrars() -> list[Registrar]:
    """Verb groups, imported lazily so `gateway --version` stays fast."""
    from gateway.approvals.cli import register_approvals
    from gateway.audit.cli import register_audit, register_keys
    from gateway.demo.cli import register_demo
    from gateway.evidence.cli import register_evidence
    from gateway.replay_cli import register_replay
    from gateway.verbs import register_policy, register_serve

    return [
        register_serve,
        register_demo,
        register_policy,
        register_keys,
        register_audit,
        register_replay,
        register_approvals,
        register_evidence,
    ]


DESCRIPTION = """\
An identity-aware gateway for ML inference endpoints: it verifies each caller's bearer token
(a JWT signed by your OIDC issuer), applies the policy, masks PII in answers, holds high-risk
calls for an approver, and records every decision and exchange in a signed, verifiable audit
log.

Start with `gateway demo` (everything on loopback, nothing to set up); with your own config:
`gateway policy check -c gateway.toml`, then `gateway serve -c gateway.toml`.
"""
EPILOG = "`gateway VERB --help` shows a verb's options. Docs: README.md and docs/."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB", title="verbs")
    for register in _registrars():
        register(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
