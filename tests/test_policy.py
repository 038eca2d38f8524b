"""The policy engine (pure) and its CLI verbs; config validation messages."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ConfigError, RuleConfig, load
from gateway.policy import DEFAULT_DENY_REASON, Policy, Request

GROUPS = ["analysts", "interns", "risk", "admins"]
MODELS = ["llama-3-8b", "llama-3-70b", "credit-risk-v2", "gpt-4o", None]


def req(**over: object) -> Request:
    base = {
        "subject": "alice",
        "groups": frozenset({"analysts"}),
        "connection": "llama",
        "model": "llama-3-8b",
        "path": "/v1/chat/completions",
        "method": "POST",
    }
    return Request(**{**base, **over})


def rule(id: str = "r", action: str = "allow", **over: object) -> RuleConfig:
    return RuleConfig(id=id, action=action, **over)


def test_no_rules_is_default_deny() -> None:
    decision = Policy(()).decide(req())
    assert (decision.action, decision.rule, decision.reason) == ("deny", None, DEFAULT_DENY_REASON)


def test_first_match_wins() -> None:
    policy = Policy(
        (
            rule("deny-70b", "deny", groups=("analysts",), models=("*-70b",)),
            rule("allow-llama", groups=("analysts",), models=("llama-3*",)),
        )
    )
    assert policy.decide(req(model="llama-3-70b")).rule_id == "deny-70b"
    assert policy.decide(req(model="llama-3-8b")).rule_id == "allow-llama"


def test_request_without_model_matches_only_rules_without_models() -> None:
    policy = Policy(
        (
            rule("models", groups=("analysts",), models=("*",)),
            rule("any", "deny", groups=("analysts",)),
        )
    )
    assert policy.decide(req(model=None)).rule_id == "any"


def test_groups_any_of_subjects_paths_methods() -> None:
    policy = Policy(
        (
            rule(
                "narrow",
                groups=("risk", "admins"),
                subjects=("alice",),
                paths=("/v1/chat/*",),
                methods=("POST",),
            ),
        )
    )
    assert policy.decide(req(groups=frozenset({"admins"}))).allowed
    assert not policy.decide(req(groups=frozenset({"analysts"}))).allowed
    assert not policy.decide(req(groups=frozenset({"admins"}), subject="bob")).allowed
    assert not policy.decide(req(groups=frozenset({"admins"}), method="GET")).allowed
    assert not policy.decide(req(groups=frozenset({"admins"}), path="/v1/embeddings")).allowed


def test_star_group_means_any_authenticated_caller() -> None:
    policy = Policy((rule("all", "deny", groups=("*",), models=("gpt-*",)),))
    assert policy.decide(req(groups=frozenset(), model="gpt-4o")).rule_id == "all"


rules_strategy = st.lists(
    st.builds(
        rule,
        id=st.uuids().map(str),
        action=st.sampled_from(["allow", "deny"]),
        groups=st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2).map(tuple),
        models=st.lists(st.sampled_from(["llama-3*", "*-70b", "credit-*", "*"]), max_size=2).map(
            tuple
        ),
        connections=st.lists(st.sampled_from(["llama", "risk"]), max_size=1).map(tuple),
    ),
    max_size=6,
)
requests_strategy = st.builds(
    req,
    groups=st.frozensets(st.sampled_from(GROUPS), max_size=3),
    model=st.sampled_from(MODELS),
    connection=st.sampled_from(["llama", "risk"]),
)


@given(rules_strategy, rules_strategy, requests_strategy)
def test_appending_rules_never_changes_an_earlier_match(first, more, request) -> None:
    before = Policy(tuple(first)).decide(request)
    after = Policy(tuple(first) + tuple(more)).decide(request)
    if before.rule is not None:
        assert after == before


@given(rules_strategy, requests_strategy)
def test_a_leading_catch_all_deny_denies_everything(rules, request) -> None:
    catch_all = rule("stop", "deny", groups=("*",))
    assert Policy((catch_all, *rules)).decide(request).rule_id == "stop"


@given(rules_strategy, requests_strategy)
def test_allow_requires_a_matching_allow_rule_and_group(rules, request) -> None:
    decision = Policy(tuple(rules)).decide(request)
    if decision.allowed:
        assert decision.rule.action == "allow"
        assert set(decision.rule.groups) & request.groups
        if decision.rule.models:
            assert request.model is not None


CONFIG = """
[identity]
issuer = "https://idp.example.com/realms/ml"
audience = "inference-gateway"

[[connections]]
name = "llama"
upstream = "http://127.0.0.1:8000"

[[rules]]
id = "analysts-chat"
groups = ["analysts"]
connections = ["llama"]
models = ["llama-3*"]
action = "allow"
"""


# An [approvals] table written after a rule's keys (TOML: a new table ends the rule).
APPROVALS = '\n[approvals]\nstore = "sqlite:///tmp/approvals-never-opened.db"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (('action = "allow"', 'action = "maybe"'), "rules[0].action", "allow, deny or approve"),
        (('action = "allow"', 'action = "approve"'), "rules[0].action", "[approvals] section"),
        (('action = "allow"', 'action = "approve"\n' + APPROVALS), "rules[0].approvers", "name"),
        (
            ('action = "allow"', 'action = "allow"\nmin_approvals = 2'),
            "rules[0].min_approvals",
            "only",
        ),
        (
            (
                'action = "allow"',
                'action = "approve"\napprovers = ["r"]\nmin_approvals = 0\n' + APPROVALS,
            ),
            "rules[0].min_approvals",
            "at least 1",
        ),
        (
            ("[identity]", '[approvals]\nstore = "mysql://db/x"\n[identity]'),
            "approvals.store",
            "sqlite:///PATH",
        ),
        (
            ("[identity]", '[approvals]\nstore = "sqlite:///x"\nhold_max = 1\n[identity]'),
            "approvals.hold_max",
            "unknown key (did you mean 'hold_max_s'?)",
        ),
        (("models =", "modles ="), "rules[0].modles", "unknown key (did you mean 'models'?)"),
        (
            ("[identity]", "[servr]\n[identity]"),
            "servr",
            "unknown section (did you mean 'server'?)",
        ),
        (("models =", "zzz ="), "rules[0].zzz", "unknown key (misspelt?)"),
        (('connections = ["llama"]', 'connections = ["x"]'), "rules[0].connections", "'x'"),
        (('audience = "inference-gateway"', ""), "identity.audience", "is required"),
        (('"https://idp', '"http://idp'), "identity.issuer", "must use https"),
        (("[identity]", '[identity]\nalgorithms = ["HS256"]'), "identity.algorithms", "HS256"),
        (("[identity]", '[identity]\nalgorithms = ["none"]'), "identity.algorithms", "'none'"),
        (('upstream = "http', 'upstream = "ftp'), "connections[0].upstream", "http(s) URL"),
        (("[identity]", '[server]\nlisten = "nope"\n[identity]'), "server.listen", "HOST:PORT"),
    ],
)
def test_bad_config_names_file_key_and_problem(tmp_path, change, key, problem) -> None:
    path = write(tmp_path, CONFIG.replace(*change))
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.key == key
    assert problem in err.value.problem
    assert str(path) in str(err.value)


def test_policy_check_and_explain_cli(tmp_path) -> None:
    path = write(tmp_path, CONFIG)
    out = subprocess.run(["gateway", "policy", "check", "-c", path], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "analysts-chat: allow group analysts -> llama, llama-3*" in out.stdout
    explain = ["gateway", "policy", "explain", "-c", str(path), "--subject", "a", "--connection"]
    allowed = subprocess.run(
        [*explain, "llama", "--groups", "analysts", "--model", "llama-3-8b"],
        capture_output=True,
        text=True,
    )
    assert allowed.returncode == 0
    assert "decision: allow" in allowed.stdout and "rule: analysts-chat" in allowed.stdout
    denied = subprocess.run(
        [*explain, "llama", "--groups", "interns", "--model", "llama-3-8b"],
        capture_output=True,
        text=True,
    )
    assert denied.returncode == 1
    assert "default deny" in denied.stdout


def test_serve_with_bad_config_exits_nonzero_naming_the_problem(tmp_path) -> None:
    path = write(tmp_path, CONFIG.replace("modles", "x").replace("models =", "modles ="))
    out = subprocess.run(["gateway", "serve", "-c", path], capture_output=True, text=True)
    assert out.returncode == 2
    assert f"{path}: rules[0].modles: unknown key" in out.stderr
