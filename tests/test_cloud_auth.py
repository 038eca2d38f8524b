"""Upstream authentication for cloud endpoints, end to end through the real gateway process.

AWS SigV4 is verified by the cloud peer with a verifier of its own (tests/sigv4_verifier.py);
OAuth2 client credentials come from a real django-oauth-toolkit provider, whose introspection
endpoint the peer asks about every token; Google tokens come from a service-account key this
test generates, exchanged at the peer's token endpoint (the key file's token_uri).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cloud_peer
import httpx
import orjson
import peers
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dot_provider import fixture as dot

from gateway.demo import pii
from gateway.upstream_auth.tokens import refresh_margin

AWS_KEY, AWS_SECRET = "AKIDGATEWAYTEST00001", "gateway/test/secret+key/NOT-REAL-0001"
SESSION_TOKEN = "FwoGZXIvYXdzEBYaDGF0ZXN0c2Vzc2lvbnRva2VuCg=="
# No other source of AWS credentials may leak into a gateway under test.
AWS_ISOLATED = {
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": None,
    "AWS_SECRET_ACCESS_KEY": None,
    "AWS_SESSION_TOKEN": None,
    "AWS_PROFILE": None,
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None,
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": None,
    "AWS_WEB_IDENTITY_TOKEN_FILE": None,
    "AWS_ROLE_ARN": None,
}
AWS_ENV = {**AWS_ISOLATED, "AWS_ACCESS_KEY_ID": AWS_KEY, "AWS_SECRET_ACCESS_KEY": AWS_SECRET}
MODEL_PATH = "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke"
BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 20}
CLIENT_SECRET = "dot-client-secret-never-shown"
SA_EMAIL = "gateway@test-project.iam.gserviceaccount.com"
GOOGLE_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
ANALYSTS = ["analysts"]


def cloud_config(issuer_url: str, connections: str, rule: str = "") -> str:
    return f"""
[server]
listen = "127.0.0.1:0"
upstream_connect_timeout_s = 2
reload_poll_s = 0

[identity]
issuer = "{issuer_url}"
audience = "inference-gateway"
leeway_s = 0

{connections}

[[rules]]
id = "cloud"
groups = ["analysts"]
action = "allow"
{rule}
"""


def sigv4_connection(url: str, name: str = "bedrock") -> str:
    return f"""
[[connections]]
name = "{name}"
upstream = "{url}"
auth = "aws_sigv4"
aws_region = "us-east-1"
aws_service = "bedrock"
"""


def oauth2_connection(url: str, token_url: str, client_id: str, name: str = "azure") -> str:
    return f"""
[[connections]]
name = "{name}"
upstream = "{url}"
auth = "oauth2_client_credentials"
token_url = "{token_url}"
client_id = "{client_id}"
client_secret_env = "TEST_CLIENT_SECRET"
scope = "inference"
"""


@pytest.fixture(scope="module")
def token(issuer: peers.Peer) -> str:
    return peers.mint(issuer.url, "cloud@example.com", ANALYSTS)


@pytest.fixture(scope="module")
def aws_peer() -> Iterator[peers.Peer]:
    args = ["--aws-access-key", AWS_KEY, "--aws-secret-key", AWS_SECRET]
    with cloud_peer.start(*args) as peer:
        yield peer


@pytest.fixture(scope="module")
def session_peer() -> Iterator[peers.Peer]:
    """Expects temporary credentials: the session token must be sent and signed."""
    args = ["--aws-access-key", AWS_KEY, "--aws-secret-key", AWS_SECRET]
    with cloud_peer.start(*args, "--aws-session-token", SESSION_TOKEN) as peer:
        yield peer


def post(gateway: peers.Peer, token: str, path: str, body: object = BODY, **headers: str):
    return httpx.post(
        f"{gateway.url}{path}",
        content=orjson.dumps(body),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json", **headers},
        timeout=30,
    )


async def burst(gateway: peers.Peer, token: str, path: str, n: int) -> list[int]:
    """n requests at once; their statuses."""
    async with httpx.AsyncClient(timeout=30) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    f"{gateway.url}{path}",
                    content=orjson.dumps(BODY),
                    headers={"authorization": f"Bearer {token}"},
                )
                for _ in range(n)
            )
        )
    return [r.status_code for r in responses]


def health(gateway: peers.Peer) -> httpx.Response:
    return httpx.get(f"{gateway.url}/_gateway/health", timeout=10)


def during(fault: Callable[[bool], None], gateway: peers.Peer, token: str, path: str):
    """A request and a health report while `fault(True)` makes a credential source fail."""
    fault(True)
    try:
        return post(gateway, token, path), health(gateway)
    finally:
        fault(False)


def assert_credentials_failed(answer, report, connection: str, reason: str, secret: str) -> None:
    """A 502 naming the connection and the reason, never the secret; health 200 with a warning."""
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert error["code"] == "upstream_credentials"
    assert f"{connection!r}" in error["message"] and reason in error["message"]
    assert secret not in answer.text
    assert report.status_code == 200
    (warning,) = report.json()["warnings"]
    assert warning["connection"] == connection and reason in warning["problem"]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- AWS SigV4 ---------------------------------------------------------------------------


def test_sigv4_requests_verify_at_an_independent_upstream(start_gateway, issuer, aws_peer, token):
    gateway = start_gateway(cloud_config(issuer.url, sigv4_connection(aws_peer.url)), AWS_ENV)
    # The caller's own signing headers are the gateway's to set: dropped, never forwarded.
    forged = {"x-amz-date": "20000101T000000Z", "x-amz-security-token": "forged"}
    answer = post(gateway, token, f"/bedrock{MODEL_PATH}", **forged)
    listing = httpx.get(
        f"{gateway.url}/bedrock/foundation-models?byProvider=anthropic&byOutputModality=TEXT",
        headers={"authorization": f"Bearer {token}", "accept": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert listing.status_code == 200, listing.text
    first, second = cloud_peer.seen(aws_peer.url)[-2:]
    assert first["verified"] and second["verified"], (first["problem"], second["problem"])
    assert first["target"] == MODEL_PATH
    assert first["headers"]["x-amz-date"] != forged["x-amz-date"]
    assert "x-amz-security-token" not in first["headers"]
    assert "x-request-id" in first["headers"]["authorization"]  # every header is signed


def test_sigv4_signs_the_masked_body_that_is_sent(start_gateway, issuer, aws_peer, token):
    rule = 'mask = ["email"]\nmask_request = true'
    gateway = start_gateway(cloud_config(issuer.url, sigv4_connection(aws_peer.url), rule), AWS_ENV)
    body = {**BODY, "messages": [{"role": "user", "content": f"write to {pii.EMAIL}"}]}
    answer = post(gateway, token, f"/bedrock{MODEL_PATH}", body)
    assert answer.status_code == 200, answer.text
    seen = cloud_peer.seen(aws_peer.url)[-1]
    assert seen["verified"], seen["problem"]
    assert pii.EMAIL not in seen["body"] and "[EMAIL]" in seen["body"]
    assert pii.EMAIL not in answer.text  # the answer is masked as well (Anthropic's shape)


def test_sigv4_temporary_credentials_resolved_once_for_concurrent_requests(
    start_gateway, issuer, session_peer, token, tmp_path: Path
):
    """A shared-config profile with credential_process: temporary credentials with a session
    token, which the upstream insists on. Eight requests at once start one resolution."""
    calls = tmp_path / "calls"
    script = tmp_path / "credentials.py"
    expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    answer = json.dumps(
        {
            "Version": 1,
            "AccessKeyId": AWS_KEY,
            "SecretAccessKey": AWS_SECRET,
            "SessionToken": SESSION_TOKEN,
            "Expiration": expiry,
        }
    )
    script.write_text(
        f"import time\nopen({str(calls)!r}, 'a').write('x')\ntime.sleep(0.3)\nprint({answer!r})\n"
    )
    profile = tmp_path / "config"
    profile.write_text(f"[default]\ncredential_process = {sys.executable} {script}\n")
    env = {**AWS_ISOLATED, "AWS_CONFIG_FILE": str(profile)}
    gateway = start_gateway(cloud_config(issuer.url, sigv4_connection(session_peer.url)), env)
    statuses = asyncio.run(burst(gateway, token, f"/bedrock{MODEL_PATH}", 8))
    assert statuses == [200] * 8, cloud_peer.seen(session_peer.url)[-1]["problem"]
    assert calls.read_text() == "x"
    assert all(r["verified"] for r in cloud_peer.seen(session_peer.url)[-8:])


def test_sigv4_without_credentials_is_a_502_and_a_health_warning(
    start_gateway, issuer, aws_peer, token
):
    gateway = start_gateway(
        cloud_config(issuer.url, sigv4_connection(aws_peer.url, "nocreds")), AWS_ISOLATED
    )
    before = len(cloud_peer.seen(aws_peer.url))
    answer, report = during(lambda _: None, gateway, token, f"/nocreds{MODEL_PATH}")
    assert_credentials_failed(answer, report, "nocreds", "no AWS credentials", AWS_SECRET)
    assert len(cloud_peer.seen(aws_peer.url)) == before  # nothing unsigned went upstream


# --- OAuth2 client credentials (django-oauth-toolkit) -----------------------------------


@pytest.fixture(scope="module")
def bearer_peer(dot_provider: peers.Peer) -> Iterator[peers.Peer]:
    """Accepts a bearer token only if the provider's introspection says it is active."""
    dot.create_client(dot_provider.url, "resource-server", "rs-secret")
    args = ["--introspect-url", f"{dot_provider.url}/o/introspect/"]
    with cloud_peer.start(*args, "--introspect-client", "resource-server:rs-secret") as peer:
        yield peer


def oauth2_gateway(start_gateway, issuer, bearer_peer, dot_provider, client_id: str, **kw):
    connection = oauth2_connection(bearer_peer.url, dot.token_url(dot_provider.url), client_id)
    secret = kw.get("secret", CLIENT_SECRET)
    return start_gateway(cloud_config(issuer.url, connection), {"TEST_CLIENT_SECRET": secret})


def test_oauth2_token_fetched_once_for_concurrent_requests_then_cached(
    start_gateway, issuer, bearer_peer, dot_provider, token
):
    dot.create_client(dot_provider.url, "gw-cached", CLIENT_SECRET)
    gateway = oauth2_gateway(start_gateway, issuer, bearer_peer, dot_provider, "gw-cached")
    dot.faults(dot_provider.url, token_delay_ms=300)  # every request arrives during the fetch
    try:
        statuses = asyncio.run(burst(gateway, token, "/azure/openai/deployments/d/chat", 10))
    finally:
        dot.faults(dot_provider.url, token_delay_ms=0)
    later = asyncio.run(burst(gateway, token, "/azure/openai/deployments/d/chat", 5))
    assert statuses + later == [200] * 15
    assert dot.token_requests(dot_provider.url, "gw-cached") == 1
    assert all(r["verified"] for r in cloud_peer.seen(bearer_peer.url)[-15:])


def test_oauth2_token_refreshed_before_and_after_expiry_one_fetch_at_a_time(
    start_gateway, issuer, bearer_peer, dot_provider, token
):
    """4 s tokens (refresh margin 0.4 s), bursts of 8: every request is served with a valid
    token, and no burst costs more than one fetch, whether the token is near or past expiry."""
    lifetime = 4
    assert refresh_margin(lifetime) == pytest.approx(0.4)
    assert refresh_margin(3600) == 60
    dot.create_client(dot_provider.url, "gw-refresh", CLIENT_SECRET, token_lifetime_s=lifetime)
    gateway = oauth2_gateway(start_gateway, issuer, bearer_peer, dot_provider, "gw-refresh")
    path = "/azure/openai/deployments/d/chat"
    dot.faults(dot_provider.url, token_delay_ms=100)
    try:
        fetches = [dot.token_requests(dot_provider.url, "gw-refresh")]
        deadline = time.monotonic() + 20
        while fetches[-1] < 3:  # until the token was renewed at least twice
            assert time.monotonic() < deadline, fetches
            assert asyncio.run(burst(gateway, token, path, 8)) == [200] * 8
            fetches.append(dot.token_requests(dot_provider.url, "gw-refresh"))
        assert all(b - a <= 1 for a, b in itertools.pairwise(fetches)), fetches
        # Now let the token lapse entirely, then send a burst: one fetch serves them all.
        bearer = cloud_peer.seen(bearer_peer.url)[-1]["authorization"].removeprefix("Bearer ")
        wait_for(lambda: not _active(dot_provider, bearer), "the token to expire")
        before = dot.token_requests(dot_provider.url, "gw-refresh")
        assert asyncio.run(burst(gateway, token, path, 8)) == [200] * 8
        assert dot.token_requests(dot_provider.url, "gw-refresh") == before + 1
    finally:
        dot.faults(dot_provider.url, token_delay_ms=0)
    assert all(r["verified"] for r in cloud_peer.seen(bearer_peer.url)[-8:])


def _active(dot_provider: peers.Peer, bearer: str) -> bool:
    answer = httpx.post(
        f"{dot_provider.url}/o/introspect/",
        data={"token": bearer},
        auth=("resource-server", "rs-secret"),
    )
    return answer.json()["active"]


def test_oauth2_token_endpoint_down_is_a_502_then_recovers(
    start_gateway, issuer, bearer_peer, dot_provider, token
):
    dot.create_client(dot_provider.url, "gw-down", CLIENT_SECRET)
    gateway = oauth2_gateway(start_gateway, issuer, bearer_peer, dot_provider, "gw-down")
    path = "/azure/openai/deployments/d/chat"
    answer, report = during(
        lambda down: dot.faults(dot_provider.url, down=down), gateway, token, path
    )
    assert_credentials_failed(answer, report, "azure", "token endpoint answered 503", CLIENT_SECRET)
    wait_for(lambda: post(gateway, token, path).status_code == 200, "recovery")
    assert health(gateway).json()["warnings"] == []


def test_oauth2_wrong_client_secret_is_a_502_that_names_the_reason(
    start_gateway, issuer, bearer_peer, dot_provider, token
):
    dot.create_client(dot_provider.url, "gw-wrong", CLIENT_SECRET)
    gateway = oauth2_gateway(
        start_gateway, issuer, bearer_peer, dot_provider, "gw-wrong", secret="not-the-secret"
    )
    answer = post(gateway, token, "/azure/openai/deployments/d/chat")
    assert answer.status_code == 502
    assert "token endpoint answered 401 (invalid_client)" in answer.json()["error"]["message"]
    assert "not-the-secret" not in answer.text


# --- Google (service-account key, token endpoint run here) ------------------------------


VERTEX_PATH = (
    "/vertex/v1/projects/p/locations/us-central1/publishers/google/models/gemini:generateContent"
)


@pytest.fixture(scope="module")
def google_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a service-account key pair made for this run (private.pem, public.pem)."""
    directory = tmp_path_factory.mktemp("google")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (directory / "public.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (directory / "private.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return directory


@pytest.fixture(scope="module")
def google_peer(google_keys: Path) -> Iterator[peers.Peer]:
    """Google's token endpoint (for that key's public half) and a Vertex-like upstream."""
    args = ["--google-public-key", str(google_keys / "public.pem")]
    with cloud_peer.start(*args, "--google-client-email", SA_EMAIL) as peer:
        yield peer


def google_gateway(
    start_gateway, issuer, peer: peers.Peer, keys: Path, name: str, *, adc: bool = False
):
    """A gateway whose `vertex` connection uses a key file whose token_uri is the peer's: named
    in the config, or (adc) found as application default credentials."""
    path = keys / f"{name}.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "test-project",
                "private_key_id": "test-key-1",
                "private_key": (keys / "private.pem").read_text(),
                "client_email": SA_EMAIL,
                "client_id": "1234567890",
                "token_uri": f"{peer.url}/token",
            }
        )
    )
    connection = f"""
[[connections]]
name = "vertex"
upstream = "{peer.url}"
auth = "google"
google_scopes = ["{GOOGLE_SCOPE}"]
"""
    if adc:
        return start_gateway(
            cloud_config(issuer.url, connection), {"GOOGLE_APPLICATION_CREDENTIALS": str(path)}
        )
    connection += f'google_credentials_file = "{path}"\n'
    return start_gateway(cloud_config(issuer.url, connection))


def test_google_service_account_token_fetched_once_for_concurrent_requests(
    start_gateway, issuer, google_peer, google_keys, token
):
    gateway = google_gateway(start_gateway, issuer, google_peer, google_keys, "once")
    before = cloud_peer.stats(google_peer.url)["token_requests"]
    cloud_peer.faults(google_peer.url, token_delay_ms=300)
    try:
        statuses = asyncio.run(burst(gateway, token, VERTEX_PATH, 10))
    finally:
        cloud_peer.faults(google_peer.url, token_delay_ms=0)
    assert statuses == [200] * 10, post(gateway, token, VERTEX_PATH).text
    assert cloud_peer.stats(google_peer.url)["token_requests"] == before + 1
    assert all(r["verified"] for r in cloud_peer.seen(google_peer.url)[-10:])


def test_google_token_refused_is_a_502_and_a_health_warning(
    start_gateway, issuer, google_peer, google_keys, token
):
    gateway = google_gateway(start_gateway, issuer, google_peer, google_keys, "refused")

    def refuse(on: bool) -> None:
        cloud_peer.faults(google_peer.url, token_error="invalid_grant" if on else None)

    answer, report = during(refuse, gateway, token, VERTEX_PATH)
    assert_credentials_failed(answer, report, "vertex", "invalid_grant", "PRIVATE KEY")
    wait_for(lambda: post(gateway, token, VERTEX_PATH).status_code == 200, "recovery")


def test_a_reload_keeps_the_token_unless_the_connection_changed(
    start_gateway, issuer, bearer_peer, dot_provider, token
):
    dot.create_client(dot_provider.url, "gw-reload", CLIENT_SECRET)
    gateway = oauth2_gateway(start_gateway, issuer, bearer_peer, dot_provider, "gw-reload")
    path = "/azure/openai/deployments/d/chat"
    config = gateway.config_path.read_text()

    def reload(text: str, count: int) -> None:
        gateway.config_path.write_text(text)
        gateway.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: gateway.stderr().count('"policy loaded"') == count, "the reload")

    assert post(gateway, token, path).status_code == 200
    reload(config + '\n[[rules]]\nid = "more"\ngroups = ["others"]\naction = "deny"\n', 1)
    assert post(gateway, token, path).status_code == 200
    assert dot.token_requests(dot_provider.url, "gw-reload") == 1  # same connection: kept
    reload(config.replace('scope = "inference"', 'scope = "read"'), 2)
    assert post(gateway, token, path).status_code == 200
    assert dot.token_requests(dot_provider.url, "gw-reload") == 2  # new scope: a new token


def test_google_application_default_credentials_are_found_on_first_use(
    start_gateway, issuer, google_peer, google_keys, token
):
    gateway = google_gateway(start_gateway, issuer, google_peer, google_keys, "adc", adc=True)
    answer = post(gateway, token, VERTEX_PATH)
    assert answer.status_code == 200, answer.text
    assert cloud_peer.seen(google_peer.url)[-1]["verified"]
