"""Fake but realistic PII the demo upstream puts in its answers when a prompt says "pii".

Every value passes the checks a real detector applies (Luhn, mod-97, SSN area/group/serial
rules, NANP numbering, key prefixes and lengths), so the masker has to catch them, and the
tests import these constants to assert that none of them ever reaches a client unmasked.
None of them belongs to a real person or opens a real account.
"""

from __future__ import annotations

EMAIL = "maria.gonzalez@example.com"
# NANP: area code and exchange start with 2-9; 555-0100..0199 is reserved for fiction.
PHONE = "(415) 555-0132"
CREDIT_CARD = "4539 1488 0343 6467"  # Visa, Luhn-valid, grouped with spaces
CREDIT_CARD_DASHED = "5529-0412-7836-4596"  # Mastercard, Luhn-valid, grouped with dashes
# Area not 000/666/9xx, group not 00, serial not 0000, not an advertised sample number.
SSN = "512-43-7789"
IBAN = "DE44500105175407324931"  # check digits satisfy ISO 13616 mod-97
AWS_ACCESS_KEY_ID = "AKIANIMOLC3YRS7ZJ9HH"  # AKIA + 16 upper-case alphanumerics
OPENAI_API_KEY = "sk-proj-MQo3uvR9jwFAPP7AfOpGQvjxKvuBBTpaee7G4uBuMWqlUutV"
GITHUB_TOKEN = "ghp_d1jhEH7UqaeICmTTEgGwcYAbDftrH0XfW6Cj"  # noqa: S105 (fake)
IPV4 = "203.0.113.42"  # TEST-NET-3

# Entity type -> value; the names follow the masker's entity types where they overlap.
VALUES: dict[str, str] = {
    "email": EMAIL,
    "phone": PHONE,
    "credit_card": CREDIT_CARD,
    "credit_card_dashed": CREDIT_CARD_DASHED,
    "ssn": SSN,
    "iban": IBAN,
    "aws_access_key": AWS_ACCESS_KEY_ID,
    "openai_api_key": OPENAI_API_KEY,
    "github_token": GITHUB_TOKEN,
    "ipv4": IPV4,
}

# The answer text that carries them, one value per clause so each is surrounded by prose.
TEXT = (
    f"Here is the customer record you asked for. Email {EMAIL}, phone {PHONE}. "
    f"Card on file {CREDIT_CARD}, backup card {CREDIT_CARD_DASHED}. SSN {SSN}. "
    f"Payout IBAN {IBAN}. Their deploy script leaks AWS key {AWS_ACCESS_KEY_ID}, "
    f"OpenAI key {OPENAI_API_KEY} and GitHub token {GITHUB_TOKEN}; "
    f"it last ran from {IPV4}."
)
