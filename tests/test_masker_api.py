"""gateway._masker: the API contract the gateway codes against."""

import json

import pytest

from gateway import _masker
from gateway._masker import Masker

SAMPLES = {
    "email": "bob.smith@example.com",
    "phone": "(415) 555-0132",
    "us_ssn": "123-45-6789",
    "credit_card": "4111 1111 1111 1111",
    "iban": "DE89 3704 0044 0532 0130 00",
    "ipv4": "192.168.10.254",
    "ipv6": "2001:db8:85a3::8a2e:370:7334",
    "mac": "00:1A:2B:3C:4D:5E",
    "aws_access_key": "AKIAIOSFODNN7EXAMPLE",
    "github_token": "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "openai_key": "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
    "anthropic_key": "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123",
    "slack_token": "xoxb-1234567890-abcdefghij",
    "gcp_api_key": "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "stripe_key": "sk_live_abcdefghij1234567890",
    "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
    "-----END PRIVATE KEY-----",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9P",
}
# Detectors that need what stands before the value: (text before, value).
IN_CONTEXT = {
    "url_credentials": ("clone https://", "bob:hunter2"),
    "aws_secret_key": ("aws_secret_access_key = ", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    "date_of_birth": ("DOB: ", "1990-03-15"),
    "us_passport": ("passport no. ", "123456789"),
    "us_driver_license": ("driver's license ", "D1234567"),
    "us_itin": ("ITIN ", "912-70-1234"),
    "us_bank_account": ("account number ", "12345678901"),
}

NEAR_MISSES = [
    "4111 1111 1111 1112",  # Luhn fails
    "000-12-3456",  # SSN area 000
    "666-12-3456",
    "123-00-4567",
    "999.1.1.1",
    "DE89 3704 0044 0532 0130 01",  # mod 97 fails
    "version 1.2.3",
    "std::vector",
]


def test_module_surface() -> None:
    assert _masker.__version__ == "0.1.0"
    assert sorted(_masker.DETECTORS) == sorted([*SAMPLES, *IN_CONTEXT])
    for p in [
        "$.choices[*].delta.tool_calls[*].function.arguments",
        "$.choices[*].message.tool_calls[*].function.arguments",
        "$.choices[*].message.content",
        "$.choices[*].delta.content",
        "$.choices[*].text",
    ]:
        assert p in _masker.DEFAULT_RESPONSE_PATHS
    assert "$.messages[*].content" in _masker.DEFAULT_REQUEST_PATHS
    assert _masker.HOLD_BACK <= 256


@pytest.mark.parametrize(("entity", "value"), sorted(SAMPLES.items()))
def test_every_detector_finds_its_sample(entity: str, value: str) -> None:
    m = Masker([entity])
    text = f"before {value} after"
    out, findings = m.mask_text(text)
    assert out == f"before [{entity.upper()}] after"
    start = len(b"before ")
    assert findings == [(entity, start, start + len(value.encode()))]


@pytest.mark.parametrize(("entity", "before", "value"), [(k, *v) for k, v in IN_CONTEXT.items()])
def test_context_detectors_find_their_sample(entity: str, before: str, value: str) -> None:
    after = "@git.example.com" if entity == "url_credentials" else " after"
    out, findings = Masker([entity]).mask_text(before + value + after)
    assert out == f"{before}[{entity.upper()}]{after}"
    start = len(before.encode())
    assert findings == [(entity, start, start + len(value.encode()))]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_stay(text: str) -> None:
    assert Masker(["all"]).mask_text(text) == (text, [])


def test_ssn_alias_and_all() -> None:
    assert Masker(["ssn"]).entities == ["us_ssn"]
    assert Masker(["all"]).entities == _masker.DETECTORS


def test_byte_offsets_with_non_ascii() -> None:
    text = "Grüße an bob@example.com"
    _, findings = Masker(["email"]).mask_text(text)
    (_, s, e) = findings[0]
    assert text.encode()[s:e] == b"bob@example.com"


def test_styles() -> None:
    card = "4111 1111 1111 1111"
    assert Masker(["credit_card"], style="partial").mask_text(card)[0] == "**** **** **** 1111"
    assert Masker(["email"], style="partial").mask_text("a@b.io")[0] == "[EMAIL]"
    assert Masker(["email"], style="redact").mask_text("x a@b.io y")[0] == "x  y"
    h1 = Masker(["email"], style="hash", hash_key=b"k1")
    h2 = Masker(["email"], style="hash", hash_key=b"k2")
    a = h1.mask_text("a@b.io")[0]
    assert a.startswith("[EMAIL:") and len(a) == len("[EMAIL:12345678]")
    assert a == h1.mask_text("a@b.io")[0]
    assert a != h1.mask_text("c@b.io")[0]
    assert a != h2.mask_text("a@b.io")[0]


def test_custom_detectors() -> None:
    m = Masker(
        ["employee_id", "acct"],
        custom=[("employee_id", r"EMP-[0-9]{6}", None), ("acct", r"[0-9]{16}", "luhn")],
    )
    out, f = m.mask_text("EMP-123456 4111111111111111 4111111111111112")
    assert out == "[EMPLOYEE_ID] [ACCT] 4111111111111112"
    assert [x[0] for x in f] == ["employee_id", "acct"]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"entities": ["emial"]}, "emial"),
        ({"entities": ["email"], "style": "blur"}, "blur"),
        ({"entities": ["email"], "style": "hash"}, "hash_key"),
        ({"entities": ["x"], "custom": [("x", "(", None)]}, '"x"'),
        ({"entities": ["x"], "custom": [("x", "a+", None)]}, "bound"),
        ({"entities": ["x"], "custom": [("x", "a{3}", "crc")]}, "crc"),
        ({"entities": ["email"], "paths": ["$.a["]}, "$.a["),
    ],
)
def test_bad_arguments_name_the_item(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=None) as ei:
        Masker(**kwargs)
    assert needle in str(ei.value)


def test_hash_key_never_in_errors() -> None:
    with pytest.raises(ValueError) as ei:
        Masker(["nope"], style="hash", hash_key=b"supersecretkey")
    assert "supersecret" not in str(ei.value)


def test_mask_json_paths_and_counts() -> None:
    m = Masker(["email", "phone"], paths=_masker.DEFAULT_RESPONSE_PATHS)
    doc = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "message": {
                    "content": "mail a@b.io",
                    "tool_calls": [
                        {"function": {"name": "f", "arguments": json.dumps({"to": "c@d.io"})}}
                    ],
                },
            },
        ],
        "usage": {"note": "e@f.io"},
    }
    out, counts = m.mask_json(json.dumps(doc).encode())
    got = json.loads(out)
    assert got["choices"][0]["message"]["content"] == "mail [EMAIL]"
    assert "c@d.io" not in got["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert got["usage"]["note"] == "e@f.io"  # not selected
    assert list(got) == list(doc)  # key order kept
    assert counts == {"email": 2}


def test_mask_json_unchanged_is_byte_identical() -> None:
    body = b'{"choices": [ {"text": "nothing here"} ], "n": 1.50}'
    assert Masker(["all"], paths=["$.choices[*].text"]).mask_json(body) == (body, {})


@pytest.mark.parametrize("body", [b'{"a": secret-value}', b'{"a": "\xff"}', b"", b"[1,"])
def test_mask_json_malformed(body: bytes) -> None:
    with pytest.raises(ValueError) as ei:
        Masker(["all"], paths=["$.a"]).mask_json(body)
    assert "secret" not in str(ei.value)


@pytest.mark.parametrize(
    "phone",
    [
        "030 12345678",
        "+49 (0) 7574 399715",
        "+44(0)20 7946 0958",
        "0049 30 12345678",
        "98765 43210",
    ],
)
def test_national_phone_formats_are_masked_whole(phone: str) -> None:
    assert Masker(["phone"]).mask_text(f"ring {phone} now")[0] == "ring [PHONE] now"


def test_phone_regions_are_configurable() -> None:
    assert Masker(["phone"], phone_regions=["US"]).mask_text("ring 030 12345678")[1] == []
    assert "DE" in _masker.DEFAULT_PHONE_REGIONS
    with pytest.raises(ValueError, match="XX"):
        Masker(["phone"], phone_regions=["XX"])
