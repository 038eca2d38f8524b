"""Core CLI verbs: `serve`, `policy check`, `policy explain`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway import config as config_module
from gateway.config import Config, ConfigError
from gateway.policy import Policy, Request


def register_serve(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = verbs.add_parser("serve", help="run the gateway")
    serve.add_argument("-c", "--config", type=Path, required=True, help="gateway.toml")
    serve.set_defaults(func=_serve)


def register_policy(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = verbs.add_parser("policy", help="validate or explain a policy")
    sub = policy.add_subparsers(dest="policy_verb", required=True, metavar="VERB")
    check = sub.add_parser("check", help="validate a config file and summarise its rules")
    check.add_argument("-c", "--config", type=Path, required=True, help="gateway.toml")
    check.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 2) on what `gateway serve` would refuse here, such as an unset "
        "credential_env variable; without it these are warnings",
    )
    check.set_defaults(func=_check)
    explain = sub.add_parser("explain", help="show the decision for one call")
    explain.add_argument("-c", "--config", type=Path, required=True, help="gateway.toml")
    explain.add_argument("--subject", required=True, help="the caller's subject (token `sub`)")
    explain.add_argument("--groups", default="", help="the caller's groups, comma-separated")
    explain.add_argument(
        "--connection", required=True, help="connection name (the path's first segment)"
    )
    explain.add_argument(
        "--model", default=None, help="the request body's `model` (default: none sent)"
    )
    explain.add_argument(
        "--path",
        default="/v1/chat/completions",
        help="path after the connection (default /v1/chat/completions)",
    )
    explain.add_argument("--method", default="POST", help="HTTP method (default POST)")
    explain.set_defaults(func=_explain)


def _serve(args: argparse.Namespace) -> int:
    from gateway.app import run

    return run(args.config)


def _load(path: Path) -> Config | None:
    try:
        return config_module.load(path)
    except ConfigError as exc:
        print(f"gateway: bad config: {exc}", file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    from gateway.runtime import credential_problems

    config = _load(args.config)
    if config is None:
        return 2
    problems = credential_problems(config)
    for problem in problems:
        kind = "error" if args.strict else "warning"
        print(f"gateway: {kind}: {problem} (gateway serve refuses to start)", file=sys.stderr)
    if problems and args.strict:
        return 2
    print(f"{config.path}: OK (sha256 {config.sha256})")
    print(f"connections: {', '.join(c.name for c in config.connections) or '(none)'}")
    print(f"rules ({len(config.rules)}, first match wins, no match denies):")
    for i, rule in enumerate(config.rules, 1):
        who = ", ".join([*(f"group {g}" for g in rule.groups), *rule.subjects])
        where = ", ".join(rule.connections) or "any connection"
        models = ", ".join(rule.models) or "any model"
        masking = f"; mask {', '.join(rule.mask)} ({rule.mask_style})" if rule.mask else ""
        print(f"  {i}. {rule.id}: {rule.action} {who} -> {where}, {models}{masking}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    request = Request(
        subject=args.subject,
        groups=frozenset(g.strip() for g in args.groups.split(",") if g.strip()),
        connection=args.connection,
        model=args.model,
        path=args.path,
        method=args.method.upper(),
    )
    if config.connection(args.connection) is None:
        print(f"decision: deny (404: no connection named {args.connection!r})")
        return 1
    decision = Policy(config.rules).decide(request)
    print(f"decision: {decision.action}")
    print(f"rule: {decision.rule_id or '(none: default deny)'}")
    print(f"reason: {decision.reason}")
    return 0 if decision.allowed else 1
