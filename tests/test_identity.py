"""Token verification in a real gateway against the real demo issuer over HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import httpx
import peers
import pytest
from conftest import gateway_config

BODY = {"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def call(gateway: peers.Peer, token: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/llama/v1/chat/completions",
        json=BODY,
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )


def reason(response: httpx.Response) -> str:
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    return response.json()["error"]["message"]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, claims: dict, key: bytes | None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{b64(signature)}"


def claims_for(issuer: peers.Peer, **over: object) -> dict:
    now = int(time.time())
    return {
        "iss": issuer.url,
        "aud": "inference-gateway",
        "sub": "mallory",
        "groups": ["analysts"],
        "iat": now,
        "exp": now + 600,
        **over,
    }


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_each_configured_algorithm_accepted(gateway, issuer, alg) -> None:
    token = peers.mint(issuer.url, f"user-{alg}", ["analysts"], alg=alg)
    assert call(gateway, token).status_code == 200


def test_accepted_tokens_are_jwts_signed_by_the_issuer_as_the_readme_says(gateway, issuer):
    """README "Which tokens are accepted": an ID token, or a JWT access token for the audience
    (aud a list, scope and client_id claims); an opaque one is refused without introspection."""
    id_token = peers.mint(issuer.url, "ida", ["analysts"], nonce="n-1", azp="gateway")
    access = peers.mint(
        issuer.url, "svc", ["analysts"], audience=["account", "inference-gateway"],
        scope="openid models:call", client_id="pipeline",
    )  # fmt: skip
    assert call(gateway, id_token).status_code == 200
    assert call(gateway, access).status_code == 200
    opaque = "2YotnFZFEjr1zCsicMWpAA"  # RFC 6749's example access token: not a JWT
    assert "malformed token" in reason(call(gateway, opaque))


def test_alg_none_rejected(gateway, issuer) -> None:
    token = forge({"alg": "none", "typ": "JWT"}, claims_for(issuer), None)
    assert "algorithm none is not allowed" in reason(call(gateway, token))


def test_hs256_signed_with_public_key_rejected(gateway, issuer) -> None:
    """The RS/HS key-confusion attack: HMAC keyed with the issuer's public key PEM."""
    pem = httpx.get(f"{issuer.url}/_demo/public-key-pem?alg=RS256").text.encode()
    kid = httpx.get(f"{issuer.url}/jwks").json()["keys"][0]["kid"]
    token = forge({"alg": "HS256", "typ": "JWT", "kid": kid}, claims_for(issuer), pem)
    assert "algorithm HS256 is not allowed" in reason(call(gateway, token))


def test_expired_token_rejected(gateway, issuer) -> None:
    token = peers.mint(issuer.url, "bob", ["analysts"], exp_offset_s=-60)
    assert reason(call(gateway, token)) == "token expired"


def test_not_yet_valid_token_rejected(gateway, issuer) -> None:
    token = peers.mint(issuer.url, "bob", ["analysts"], nbf_offset_s=300)
    assert "not yet valid" in reason(call(gateway, token))


def test_wrong_issuer_rejected(gateway, issuer) -> None:
    token = peers.mint(issuer.url, "bob", ["analysts"], iss="https://evil.example")
    assert reason(call(gateway, token)) == "unknown issuer (not one this gateway trusts)"


def test_wrong_audience_rejected(gateway, issuer) -> None:
    token = peers.mint(issuer.url, "bob", ["analysts"], aud="another-service")
    assert reason(call(gateway, token)) == "wrong audience"


def test_unknown_kid_rejected(gateway, issuer) -> None:
    token = peers.mint(issuer.url, "bob", ["analysts"], kid="no-such-key")
    assert "unknown signing key" in reason(call(gateway, token))


def test_tampered_payload_rejected(gateway, issuer) -> None:
    token = peers.mint(issuer.url, "bob", ["interns"])
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["groups"] = ["analysts"]
    forged = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    assert reason(call(gateway, forged)) == "bad signature"


def test_error_never_echoes_the_token(gateway, issuer) -> None:
    token = peers.mint(issuer.url, "bob", ["analysts"], exp_offset_s=-60)
    response = call(gateway, token)
    assert token not in response.text
    assert token.split(".")[1] not in response.text


@pytest.fixture
def fresh_issuer():
    with peers.start_issuer() as peer:
        yield peer


@pytest.fixture
def own_gateway(start_gateway, fresh_issuer, upstream):
    return start_gateway(gateway_config(fresh_issuer.url, upstream.url))


def test_key_rotation(own_gateway, fresh_issuer) -> None:
    old_token = peers.mint(fresh_issuer.url, "carol", ["analysts"])
    assert call(own_gateway, old_token).status_code == 200
    rotated = peers.rotate(fresh_issuer.url, "RS256", keep_old=False)
    assert rotated["removed_kid"]
    new_token = peers.mint(fresh_issuer.url, "dave", ["analysts"])
    time.sleep(1.1)  # past jwks_min_refresh_interval_s since the gateway's start-up fetch
    # The new kid is unknown to the gateway until it refreshes the JWKS: it must, then accept.
    assert call(own_gateway, new_token).status_code == 200
    # The refresh dropped the withdrawn key, and with it the verified token it had cached.
    assert "unknown signing key" in reason(call(own_gateway, old_token))


def test_idp_outage_keeps_last_good_keys(own_gateway, fresh_issuer) -> None:
    token = peers.mint(fresh_issuer.url, "erin", ["analysts"], alg="ES256")
    peers.outage(fresh_issuer.url, True)
    try:
        bogus = peers.mint(fresh_issuer.url, "x", ["analysts"], kid="forces-a-refresh")
        assert "unknown signing key" in reason(call(own_gateway, bogus))
        assert call(own_gateway, token).status_code == 200  # verified with the cached key
    finally:
        peers.outage(fresh_issuer.url, False)


def test_flood_of_unknown_kids_is_rate_limited(start_gateway, fresh_issuer, upstream) -> None:
    """Within one refresh interval a flood of unknown kids costs the IdP nothing more.

    The interval (an hour) is far longer than any test run, so the count is exact on any
    machine, however loaded; the first unknown kid past an interval does refresh
    (test_key_rotation), and concurrent refreshes share one fetch.
    """
    text = gateway_config(fresh_issuer.url, upstream.url).replace(
        "jwks_min_refresh_interval_s = 1", "jwks_min_refresh_interval_s = 3600"
    )
    gateway = start_gateway(text)
    good = peers.mint(fresh_issuer.url, "gina", ["analysts"])
    assert call(gateway, good).status_code == 200
    before = peers.issuer_stats(fresh_issuer.url)["jwks_fetches"]
    assert before >= 1  # the start-up fetch
    for i in range(50):
        token = peers.mint(fresh_issuer.url, "x", ["analysts"], kid=f"bogus-{i}")
        assert "unknown signing key" in reason(call(gateway, token))
        # Without a kid, a signature no cached key verifies is rate-limited the same way.
        header, payload, _ = peers.mint(fresh_issuer.url, "x", [], omit_kid=True).split(".")
        assert reason(call(gateway, f"{header}.{payload}.{b64(b'x' * 256)}")) == "bad signature"
    assert peers.issuer_stats(fresh_issuer.url)["jwks_fetches"] == before
    assert call(gateway, good).status_code == 200  # the keys in force stayed in force


def test_groups_from_dotted_claim_and_space_separated_string(start_gateway, issuer, upstream):
    text = gateway_config(issuer.url, upstream.url).replace(
        "leeway_s = 0", 'leeway_s = 0\ngroups_claim = "realm_access.roles"'
    )
    gateway = start_gateway(text)
    nested = peers.mint(issuer.url, "f", [], claims={"realm_access": {"roles": ["analysts"]}})
    assert call(gateway, nested).status_code == 200
    spaced = peers.mint(issuer.url, "g", [], claims={"realm_access": {"roles": "staff analysts"}})
    assert call(gateway, spaced).status_code == 200
    flat_only = peers.mint(issuer.url, "h", ["analysts"])
    assert call(gateway, flat_only).status_code == 403


def test_kidless_tokens_are_checked_against_every_key_and_follow_rotation(
    start_gateway, fresh_issuer, upstream
) -> None:
    """Issue 9 item 7: tokens without `kid` (oidc-provider-mock's) across a key rotation."""
    text = gateway_config(fresh_issuer.url, upstream.url).replace(
        "jwks_min_refresh_interval_s = 1", "jwks_min_refresh_interval_s = 0"
    )
    gateway = start_gateway(text)
    # The issuer publishes three keys (RS256, ES256, EdDSA): no single key to fall back on.
    old = peers.mint(fresh_issuer.url, "kim", ["analysts"], omit_kid=True)
    assert call(gateway, old).status_code == 200
    assert call(gateway, old).status_code == 200  # now from the verified-token cache
    peers.rotate(fresh_issuer.url, "RS256", keep_old=False)
    fetches = peers.issuer_stats(fresh_issuer.url)["jwks_fetches"]
    new = peers.mint(fresh_issuer.url, "lee", ["analysts"], omit_kid=True)
    # No cached key verifies it: the failure refreshes the JWKS once, and the new key does.
    assert call(gateway, new).status_code == 200
    assert peers.issuer_stats(fresh_issuer.url)["jwks_fetches"] == fetches + 1
    # That refresh withdrew the old key, and with it every cached token the key had signed.
    assert reason(call(gateway, old)) == "bad signature"
