"""Labeled corpus for scoring the masker: Faker values in sentences, 10 locales, seeded.

    python benches/masker_corpus.py --per-type 150 --out /tmp/corpus.jsonl [--seed 10]

Each line is one document: ``{"text", "locale", "spans": [[type, start, end], ...]}`` with
UTF-8 byte offsets. Documents with no spans are look-alike negatives (package names like
``sk-learn-…``, ``logo@2x.png``, ISBN-13s, epoch milliseconds, order numbers, versions,
dates and numbers without context words, Luhn-failing card numbers): nothing in them may be
masked. Some documents wrap their sentence in JSON (a tool-call argument string, escaped
with ``ensure_ascii``) so escaped text is scored too.

Unicode evasions: for one in four values of the types in ``EVADED``, an extra document carries
the value rewritten so that it reads the same (``"variant"``: ``zero_width`` chars inside it,
``nbsp``-style spaces, ``full_width`` forms, Unicode ``dashes``); the scorer reports their
recall by variant, apart from the plain documents.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import string
from collections.abc import Callable

from faker import Faker

SEED = 10
LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR", "en_IN", "ja_JP"]

TEMPLATES = [
    "Please contact {} about the renewal.",
    "The value on file is {} according to the form.",
    "Customer record: {}.",
    "I found {} in the log, is that expected?",
    "Send it to {} before Friday.",
]
# Types whose values only count with their context word; the template supplies it.
CONTEXT_TEMPLATES = {
    "phone_bare": "Call me on {}, thanks.",
    "date_of_birth": "Date of birth: {}.",
    "us_passport": "Passport number {} was scanned.",
    "us_driver_license": "Driver's license {} expires soon.",
    "us_bank_account": "Account number {} at the bank.",
    "aws_secret_key": "aws_secret_access_key = {}",
    "url_credentials": "Clone it from https://{}@git.example.com/repo.git",
    "private_key": "Here is the deploy key:\n{}\nKeep it out of the repository.",
}


KEY_ID = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# The secret types the masker claims: each must be masked whole (the scorer checks coverage of
# the whole value, not overlap), in plain text and inside escaped JSON alike.
SECRETS = {
    "aws_access_key", "aws_secret_key", "url_credentials", "github_token", "openai_key",
    "anthropic_key", "slack_token", "gcp_api_key", "stripe_key", "private_key", "jwt",
}  # fmt: skip
SECRET_WRAP = 0.5  # share of secret documents sent as tool-call JSON (escaped)
ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "-_"
PEM_KINDS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY")

EVADED = {"email", "phone", "us_ssn", "credit_card", "iban", "ip", "mac", "aws_access_key"}
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\u00ad\ufeff"
SPACES = "\u00a0\u202f\u2007\u2009\u3000"
DASHES = "\u2010\u2011\u2012\u2013\u2014\u2212"


def evade(value: str, rng: random.Random) -> tuple[str, str]:
    """The value as it could be written to slip past a pattern, and the variant's name."""
    variants = ["zero_width", "full_width"]
    variants += ["nbsp"] * (" " in value) + ["dashes"] * ("-" in value)
    variant = rng.choice(variants)
    if variant == "zero_width":
        cuts = sorted(rng.sample(range(1, len(value)), min(3, len(value) - 1)))
        parts = [value[a:b] for a, b in zip([0, *cuts], [*cuts, len(value)], strict=True)]
        return "".join(p + rng.choice(ZERO_WIDTH) for p in parts[:-1]) + parts[-1], variant
    if variant == "full_width":
        wide = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in value)
        return wide, variant
    plain, fancy = (" ", SPACES) if variant == "nbsp" else ("-", DASHES)
    return "".join(rng.choice(fancy) if c == plain else c for c in value), variant


def _digits(rng: random.Random, n: int) -> str:
    return str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))


def _luhn_fix(prefix: str) -> str:
    for c in "0123456789":
        s = prefix + c
        total = 0
        for i, ch in enumerate(reversed(s)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        if total % 10 == 0:
            return s
    raise AssertionError


def _pick(rng: random.Random, alphabet: str, n: int) -> str:
    """`n` characters of `alphabet` with at least one letter and one digit, as real keys."""
    while True:
        value = "".join(rng.choice(alphabet) for _ in range(n))
        if any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
            return value


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(fake: Faker, rng: random.Random) -> str:
    header = {"alg": rng.choice(["RS256", "ES256", "HS256"]), "typ": "JWT"}
    payload = {"sub": fake.user_name(), "iat": rng.randint(1_600_000_000, 1_800_000_000)}
    if rng.random() < 0.5:
        payload["email"] = fake.email()
    signature = rng.randbytes(rng.choice([32, 64, 256]))
    parts = [json.dumps(header).encode(), json.dumps(payload).encode(), signature]
    return ".".join(_b64url(p) for p in parts)


def _pem(rng: random.Random) -> str:
    kind = rng.choice(PEM_KINDS)
    body = base64.b64encode(rng.randbytes(rng.randint(120, 1200))).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {kind}-----", *lines, f"-----END {kind}-----"])


def _national(fake: Faker) -> str:
    """A phone number the locale writes without a country code (its digits are a valid
    bare national number)."""
    for _ in range(50):
        p = fake.phone_number()
        if not p.lstrip().startswith(("+", "00")) and "(0)" not in p and "x" not in p:
            return p
    return p


def generators(fake: Faker, rng: random.Random) -> dict[str, Callable[[], str]]:
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return {
        "email": fake.email,
        "phone": fake.phone_number,
        "phone_bare": lambda: "".join(c for c in _national(fake) if c.isdigit()),
        "us_ssn": Faker("en_US").ssn,
        "credit_card": fake.credit_card_number,
        "iban": fake.iban,
        "ip": lambda: fake.ipv4() if rng.random() < 0.6 else fake.ipv6(),
        "mac": fake.mac_address,
        "aws_access_key": lambda: "AKIA" + "".join(rng.choice(KEY_ID) for _ in range(16)),
        "aws_secret_key": lambda: "".join(rng.choice(b64) for _ in range(40)),
        "url_credentials": lambda: f"{fake.user_name()}:{fake.password(special_chars=False)}",
        "github_token": lambda: rng.choice(["ghp_", "gho_", "ghs_"]) + _pick(rng, ALNUM, 36),
        "openai_key": lambda: (
            rng.choice(["sk-", "sk-proj-", "sk-svcacct-"])
            + _pick(rng, URLSAFE if rng.random() < 0.5 else ALNUM, rng.choice([48, 64, 120]))
        ),
        "anthropic_key": lambda: "sk-ant-api03-" + _pick(rng, URLSAFE, 93) + "AA",
        "slack_token": lambda: (
            f"xox{rng.choice('bpa')}-{_digits(rng, 12)}-{_digits(rng, 13)}-{_pick(rng, ALNUM, 24)}"
        ),
        "gcp_api_key": lambda: "AIza" + _pick(rng, URLSAFE, 35),
        "stripe_key": lambda: (
            rng.choice(["sk_live_", "rk_live_", "sk_test_"])
            + _pick(rng, ALNUM, rng.choice([24, 99]))
        ),
        "private_key": lambda: _pem(rng),
        "jwt": lambda: _jwt(fake, rng),
        "date_of_birth": lambda: fake.date_of_birth().strftime(
            rng.choice(["%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y"])
        ),
        "us_passport": lambda: _digits(rng, 9),
        "us_driver_license": lambda: rng.choice("ABCDFGHJ") + _digits(rng, 7),
        "us_bank_account": lambda: _digits(rng, rng.randint(8, 12)),
        "us_itin": lambda: (
            f"9{_digits(rng, 2)[:2]}-{rng.choice(['70', '78', '88', '90'])}-{_digits(rng, 4)}"
        ),
    }


def negatives(fake: Faker, rng: random.Random) -> list[str]:
    card = _luhn_fix("4" + _digits(rng, 14))
    bad_card = card[:-1] + str((int(card[-1]) + 1) % 10)
    return [
        f"pip install sk-learn-{fake.word()}-{fake.word()}-helpers",
        f"Use the asset logo@{rng.choice([2, 3])}x.png on retina screens.",
        f"ISBN {fake.isbn13(separator='')} is on the back cover.",
        f"Event at {rng.randint(1_600_000_000_000, 1_800_000_000_000)} ms since the epoch.",
        f"Order {_digits(rng, 10)} has shipped.",
        f"Upgrade to version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}.",
        f"The meeting is on {fake.date()}.",
        f"Card {bad_card[:4]} {bad_card[4:8]} {bad_card[8:12]} {bad_card[12:]} was declined.",
        f"Ticket #{_digits(rng, 6)} was closed.",
        f"Invoice {_digits(rng, 12)} is overdue.",
        f"The total was {rng.randint(1000, 99999)}.{rng.randint(10, 99)} EUR.",
    ]


def document(text: str, value: str, kind: str, rng: random.Random, wrap: bool = True) -> dict:
    """One labeled document; sometimes (`wrap`) as tool-call JSON with ASCII escapes."""
    escaped = wrap and rng.random() < (SECRET_WRAP if kind in SECRETS else 0.15)
    if escaped:
        text = json.dumps({"note": text})  # ensure_ascii: \\uXXXX escapes, \\n
        enc = json.dumps(value)[1:-1]
    else:
        enc = value
    start = text.encode().index(enc.encode())
    doc = {"text": text, "spans": [[kind, start, start + len(enc.encode())]]}
    if escaped:
        doc["escaped"] = True
    return doc


def build(per_type: int, seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    Faker.seed(seed)
    fakers = {loc: Faker(loc) for loc in LOCALES}
    docs = []
    for i in range(per_type):
        loc = LOCALES[i % len(LOCALES)]
        fake = fakers[loc]
        for kind, gen in generators(fake, rng).items():
            if kind == "us_ssn" and loc != "en_US":
                continue
            value = gen()
            if kind == "phone" and value.isdigit():
                kind = "phone_bare"  # a bare run is a phone only next to a context word
            tpl = CONTEXT_TEMPLATES.get(kind) or rng.choice(TEMPLATES)
            label = "phone" if kind == "phone_bare" else kind
            doc = document(tpl.format(value), value, label, rng)
            doc["locale"] = loc
            docs.append(doc)
            evaded = evade(value, rng) if kind in EVADED and rng.random() < 0.25 else None
            if evaded:
                doc = document(tpl.format(evaded[0]), evaded[0], label, rng, wrap=False)
                doc.update(locale=loc, variant=evaded[1])
                docs.append(doc)
        for text in negatives(fake, rng):
            docs.append({"text": text, "spans": [], "locale": loc})
    return docs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-type", type=int, default=150)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    with open(args.out, "w", encoding="utf-8") as f:
        for d in build(args.per_type, args.seed):
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
