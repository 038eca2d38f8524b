"""`gateway keys` and `gateway audit` verbs, run as a user would (subprocess)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from gateway.audit import AuditLog, Verifier, verify_consistency, verify_inclusion


def gw(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["gateway", *args], capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    base = tmp_path_factory.mktemp("cli")
    verifier = gw("keys", "init", "--dir", str(base / "keys"), "--name", "cli.test/audit").stdout

    async def build() -> None:
        log = await AuditLog.open(
            base / "log",
            origin="cli.test/audit",
            signing_key=base / "keys/signing.key",
            sealing_key=base / "keys/sealing.key",
        )
        for i in range(20):
            await log.append(
                {"type": "inference", "i": i},
                {"request": b'{"prompt": "hi %d"}' % i, "response": b"answer"},
            )
        await log.close()

    asyncio.run(build())
    return base, base / "log", verifier.strip()


def test_keys_init_prints_verifier_and_refuses_overwrite(audit: tuple[Path, Path, str]) -> None:
    base, _, verifier = audit
    assert Verifier.parse(verifier).name == "cli.test/audit"  # stdout is the key alone
    labelled = gw("keys", "init", "--dir", str(base / "labelled"))
    label = labelled.stderr.splitlines()[-1]
    assert label.startswith("verifier key (public) below: keep a copy")
    assert "--verifier" in label and "AU-10" in label
    Verifier.parse(labelled.stdout.strip())
    again = gw("keys", "init", "--dir", str(base / "keys"), check=False)
    assert again.returncode != 0 and "--force" in again.stderr
    # The key material: a signing key's after PRIVATE+KEY+name+hash+, a sealing key whole
    # (base64 holds '+' too: the text after the last '+' was once a char or two, found by chance).
    signing = (base / "keys" / "signing.key").read_text().strip().split("+", 4)[-1]
    sealing = (base / "keys" / "sealing.key").read_text().strip()
    for secret in (signing, sealing):
        assert len(secret) >= 43 and secret not in again.stderr + again.stdout


def test_verify_ok_and_with_pinned_key(audit: tuple[Path, Path, str]) -> None:
    base, d, verifier = audit
    out = gw("audit", "verify", "--dir", str(d), "--verifier", verifier)
    assert out.stdout.startswith("OK") and "20 entries" in out.stdout
    (base / "pinned.vkey").write_text(verifier + "\n")
    assert gw("audit", "verify", "--dir", str(d), "--verifier", str(base / "pinned.vkey"))


def test_verify_names_the_first_bad_entry(audit: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, d, verifier = audit
    import shutil

    shutil.copytree(d, tmp_path / "log")
    data = bytearray((tmp_path / "log/entries").read_bytes())
    pos = data.index(b'"i":7')
    data[pos + 4] = ord("8")
    (tmp_path / "log/entries").write_bytes(bytes(data))
    out = gw("audit", "verify", "--dir", str(tmp_path / "log"), "--verifier", verifier, check=False)
    assert out.returncode == 1 and "entry 7" in out.stderr


def test_show_tail_proof_consistency(audit: tuple[Path, Path, str]) -> None:
    _, d, verifier = audit
    assert json.loads(gw("audit", "show", "5", "--dir", str(d)).stdout)["i"] == 5
    lines = gw("audit", "tail", "--dir", str(d), "-n", "3").stdout.splitlines()
    assert [json.loads(x)["seq"] for x in lines] == [17, 18, 19]
    cp = (d / "checkpoint").read_bytes()
    from gateway.audit import Checkpoint

    root = Checkpoint.open(cp, Verifier.parse(verifier)).root
    p = json.loads(gw("audit", "proof", "--dir", str(d), "--index", "6").stdout)
    assert p["size"] == 20 and bytes.fromhex(p["root"]) == root
    path = [bytes.fromhex(h) for h in p["path"]]
    verify_inclusion(6, 20, bytes.fromhex(p["leaf_hash"]), path, root)
    p = json.loads(gw("audit", "proof", "--dir", str(d), "--index", "2", "--size", "9").stdout)
    assert p["size"] == 9 and len(p["path"]) == 4
    c = json.loads(gw("audit", "consistency", "--dir", str(d), "--from", "7", "--to", "20").stdout)
    path = [bytes.fromhex(h) for h in c["path"]]
    verify_consistency(7, 20, path, bytes.fromhex(c["old_root"]), root)


def test_unseal_prints_originals(audit: tuple[Path, Path, str]) -> None:
    base, d, _ = audit
    out = gw("audit", "unseal", "4", "--dir", str(d), "--key", str(base / "keys/sealing.key"))
    assert '{"prompt": "hi 4"}' in out.stdout and "answer" in out.stdout
    assert out.stdout.index("request") < out.stdout.index("response")


def test_config_file_supplies_dir(audit: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, d, _ = audit
    (tmp_path / "gateway.toml").write_text(f'[audit]\ndir = "{d}"\n')
    assert json.loads(gw("audit", "show", "0", "-c", str(tmp_path / "gateway.toml")).stdout)


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "show", "99"],
        ["audit", "proof", "--index", "20"],
        ["audit", "consistency", "--from", "0", "--to", "3"],
        ["audit", "unseal", "1", "--key", "/nonexistent/key"],
    ],
)
def test_errors_are_one_line(audit: tuple[Path, Path, str], args: list[str]) -> None:
    _, d, _ = audit
    out = gw(*args, "--dir", str(d), check=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_unseal_with_wrong_key_fails(audit: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, d, _ = audit
    gw("keys", "init", "--dir", str(tmp_path / "k"))
    out = gw(
        "audit",
        "unseal",
        "1",
        "--dir",
        str(d),
        "--key",
        str(tmp_path / "k/sealing.key"),
        check=False,
    )
    assert out.returncode == 2 and "does not decrypt" in out.stderr
