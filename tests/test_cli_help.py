"""`gateway --help` speaks to a user, and every verb and option says what it is for."""

from __future__ import annotations

import argparse
import subprocess

from gateway.cli import build_parser


def test_top_level_help_describes_the_product_not_the_module() -> None:
    out = subprocess.run(["gateway", "--help"], capture_output=True, text=True, check=True)
    assert "identity-aware gateway for ML inference endpoints" in out.stdout
    assert "gateway demo" in out.stdout and "gateway VERB --help" in out.stdout
    assert "module" not in out.stdout and "registers its own verbs" not in out.stdout


def undocumented(parser: argparse.ArgumentParser, path: str) -> list[str]:
    """Every verb and option under `parser` that has no help text."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if not helps.get(name):
                    missing.append(f"{path} {name}")
                missing += undocumented(sub, f"{path} {name}")
        elif not action.help:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_verb_and_option_has_help() -> None:
    assert undocumented(build_parser(), "gateway") == []


def test_help_text_check_finds_an_option_without_help() -> None:
    parser = build_parser()
    parser.add_argument("--bare")
    assert undocumented(parser, "gateway") == ["gateway --bare"]
