"""C2SP signed notes, checkpoints and key files."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.checkpoint import Checkpoint, CheckpointError
from gateway.audit.keys import KeyFileError, init_keys, read_secret_key, read_signing_key
from gateway.audit.note import NoteError, Signer, Verifier, key_id, open_note, sign

# C2SP signed-note v1.0.0 example (from the project's shared conformance README).
VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
TEXT = b"This is an example message.\n"
SIG = (
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFX"
    "mRKuwHjG1Yu72IneyaQM=\n"
)
NOTE = TEXT + b"\n" + SIG.encode()


def test_c2sp_vector_verifies() -> None:
    v = Verifier.parse(VKEY)
    assert v.key_id.hex() == "530d903a"
    assert v.encode() == VKEY
    assert open_note(NOTE, v) == TEXT


@pytest.mark.parametrize("pos", [0, 5, len(TEXT) - 2, len(NOTE) - 10])
def test_c2sp_vector_tampered_fails(pos: int) -> None:
    bad = bytearray(NOTE)
    bad[pos] ^= 0x01
    with pytest.raises(NoteError):
        open_note(bytes(bad), Verifier.parse(VKEY))


def test_verifier_with_wrong_key_id_is_refused() -> None:
    with pytest.raises(NoteError):
        Verifier.parse(VKEY.replace("530d903a", "530d903b"))


def test_other_signers_are_ignored_but_one_is_required() -> None:
    other = Signer("other.example/log", Ed25519PrivateKey.generate())
    v = Verifier.parse(VKEY)
    both = NOTE + other.signature_line(TEXT)
    assert open_note(both, v) == TEXT
    with pytest.raises(NoteError, match="no signature"):
        open_note(sign(TEXT, other), v)


def test_key_id_definition() -> None:
    import hashlib

    pub = base64.b64decode(VKEY.split("+", 2)[2])[1:]
    want = hashlib.sha256(b"example.com/foo\n\x01" + pub).digest()[:4]
    assert key_id("example.com/foo", pub) == want


def test_checkpoint_roundtrip_and_format() -> None:
    signer = Signer("log.example/audit", Ed25519PrivateKey.generate())
    cp = Checkpoint("log.example/audit", 42, bytes(range(32)))
    note = cp.sign(signer)
    origin, size, root, blank, sig, end = note.decode().split("\n")
    assert (origin, size, blank, end) == ("log.example/audit", "42", "", "")
    assert base64.b64decode(root) == bytes(range(32))
    assert sig.startswith("\u2014 log.example/audit ")
    assert Checkpoint.open(note, signer.verifier, "log.example/audit") == cp
    with pytest.raises(CheckpointError):
        Checkpoint.open(note, signer.verifier, "elsewhere")


@pytest.mark.parametrize("size", ["-1", "01", "1e3", "", "\u0661"])
def test_checkpoint_size_must_be_plain_decimal(size: str) -> None:
    body = f"o\n{size}\n{base64.b64encode(bytes(32)).decode()}\n".encode()
    with pytest.raises(CheckpointError):
        Checkpoint.parse_body(body)


def test_keys_init_writes_0600_and_refuses_overwrite(tmp_path: Path) -> None:
    signer = init_keys(tmp_path / "k", "gw.example/audit")
    for name in ("signing.key", "sealing.key", "masking.key"):
        assert stat.S_IMODE((tmp_path / "k" / name).stat().st_mode) == 0o600
    loaded = read_signing_key(tmp_path / "k" / "signing.key")
    assert loaded.verifier.encode() == signer.verifier.encode()
    assert (tmp_path / "k" / "signing.key").read_text().startswith("PRIVATE+KEY+gw.example/audit+")
    assert len(read_secret_key(tmp_path / "k" / "sealing.key")) == 32
    before = (tmp_path / "k" / "sealing.key").read_bytes()
    with pytest.raises(FileExistsError):
        init_keys(tmp_path / "k", "gw.example/audit")
    assert (tmp_path / "k" / "sealing.key").read_bytes() == before
    init_keys(tmp_path / "k", "gw.example/audit", force=True)
    assert (tmp_path / "k" / "sealing.key").read_bytes() != before


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    init_keys(tmp_path, "gw")
    (tmp_path / "sealing.key").chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_secret_key(tmp_path / "sealing.key")
    (tmp_path / "sealing.key").chmod(0o600)
    (tmp_path / "sealing.key").write_text("AAAA\n")
    with pytest.raises(KeyFileError) as err:
        read_secret_key(tmp_path / "sealing.key")
    assert "AAAA" not in str(err.value)
