"""TLS on the listener: real clients over HTTPS with a CA made in the test, mTLS, rotation."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
from urllib.parse import urlsplit

import httpx
import openai
import peers
import pytest
from conftest import gateway_config, launch_gateway
from cryptography import x509
from tlsfiles import TestCa

from gateway.config import ConfigError, load

BODY = {"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> TestCa:
    return TestCa(tmp_path_factory.mktemp("ca"))


def tls_config(issuer, upstream, ca: TestCa, **extra: str) -> str:
    server = ca.issue("gateway")
    lines = {"tls_cert": str(server.cert), "tls_key": str(server.key), **extra}
    return gateway_config(issuer.url, upstream.url, **lines)


@pytest.fixture(scope="module")
def https_gateway(start_gateway, issuer, upstream, ca):
    return start_gateway(tls_config(issuer, upstream, ca))


def served_serial(url: str, context: ssl.SSLContext) -> int:
    """The serial number of the certificate a new TLS connection is shown."""
    parts = urlsplit(url)
    with (
        socket.create_connection((parts.hostname, parts.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=parts.hostname) as tls,
    ):
        return serial_of(tls.getpeercert(binary_form=True))


def serial_of(der: bytes) -> int:
    return x509.load_der_x509_certificate(der).serial_number


def test_https_with_httpx_openai_and_curl(https_gateway, analyst_token, ca) -> None:
    assert https_gateway.url.startswith("https://127.0.0.1:")
    auth = {"authorization": f"Bearer {analyst_token}"}
    url = f"{https_gateway.url}/llama/v1/chat/completions"
    trust = ssl.create_default_context(cafile=ca.pem)
    response = httpx.post(url, json=BODY, headers=auth, verify=trust, timeout=10)
    assert response.status_code == 200, response.text
    client = openai.OpenAI(
        base_url=f"{https_gateway.url}/llama/v1",
        api_key=analyst_token,
        http_client=httpx.Client(verify=trust),
    )
    completion = client.chat.completions.create(**BODY)
    assert completion.choices[0].message.content
    curl = subprocess.run(
        ["curl", "-sS", "--cacert", str(ca.pem), "-H", f"authorization: Bearer {analyst_token}",
         "-H", "content-type: application/json", "-d", '{"model": "llama-3-8b", "messages": []}',
         "-o", "/dev/null", "-w", "%{http_code} %{ssl_verify_result}", url],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert curl.stdout == "200 0", curl.stderr


def test_no_plain_http_and_nothing_below_tls_1_2(https_gateway, ca) -> None:
    plain = https_gateway.url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{plain}/_gateway/health", timeout=5)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(ca.pem)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.warns(DeprecationWarning):  # TLS 1.1 is deprecated: that is the point
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        served_serial(https_gateway.url, old)
    modern = ssl.create_default_context(cafile=ca.pem)
    modern.minimum_version = modern.maximum_version = ssl.TLSVersion.TLSv1_2
    assert served_serial(https_gateway.url, modern)


def test_sighup_rotates_the_certificate_without_dropping_open_connections(
    start_gateway, issuer, upstream, ca, analyst_token
) -> None:
    first = ca.issue("rotating")
    text = gateway_config(
        issuer.url, upstream.url, tls_cert=str(first.cert), tls_key=str(first.key)
    )
    gateway = start_gateway(text)
    context = ssl.create_default_context(cafile=ca.pem)
    assert served_serial(gateway.url, context) == first.serial
    auth = {"authorization": f"Bearer {analyst_token}"}
    with httpx.Client(verify=context, headers=auth, timeout=10) as open_client:
        url = f"{gateway.url}/llama/v1/chat/completions"
        before = open_client.post(url, json=BODY)
        assert before.status_code == 200
        local_address = before.extensions["network_stream"].get_extra_info("client_addr")

        broken = ca.issue("broken")
        shutil.copy(broken.cert, first.cert)  # a new certificate with the old key: refused
        gateway.proc.send_signal(signal.SIGHUP)
        peers.wait_for(lambda: "TLS certificate reload refused" in gateway.stderr())
        assert served_serial(gateway.url, context) == first.serial

        second = ca.issue("rotated")
        shutil.copy(second.key, first.key)
        shutil.copy(second.cert, first.cert)
        gateway.proc.send_signal(signal.SIGHUP)
        peers.wait_for(lambda: served_serial(gateway.url, context) == second.serial)
        # The connection opened before the rotation is still open, on the old certificate.
        after = open_client.post(url, json=BODY)
        assert after.status_code == 200
        stream = after.extensions["network_stream"]
        assert stream.get_extra_info("client_addr") == local_address
        assert serial_of(stream.get_extra_info("ssl_object").getpeercert(True)) == first.serial


@pytest.mark.parametrize("mode", ["required", "optional"])
def test_client_certificates(start_gateway, issuer, upstream, ca, analyst_token, mode) -> None:
    clients = TestCa(ca.dir, "clients-ca")
    gateway = start_gateway(
        tls_config(issuer, upstream, ca, tls_client_ca=str(clients.pem), tls_client_auth=mode)
    )
    url = f"{gateway.url}/llama/v1/chat/completions"
    auth = {"authorization": f"Bearer {analyst_token}"}
    pipeline = clients.issue("pipeline", client=True)
    with_cert = ssl.create_default_context(cafile=ca.pem)
    with_cert.load_cert_chain(pipeline.cert, pipeline.key)
    assert httpx.post(url, json=BODY, headers=auth, verify=with_cert).status_code == 200
    stranger = ca.issue("stranger", client=True)  # signed by a CA the gateway does not trust
    foreign = ssl.create_default_context(cafile=ca.pem)
    foreign.load_cert_chain(stranger.cert, stranger.key)
    with pytest.raises(httpx.HTTPError):
        httpx.post(url, json=BODY, headers=auth, verify=foreign)
    without = ssl.create_default_context(cafile=ca.pem)
    if mode == "required":
        with pytest.raises(httpx.HTTPError):
            httpx.post(url, json=BODY, headers=auth, verify=without)
    else:
        assert httpx.post(url, json=BODY, headers=auth, verify=without).status_code == 200


def test_non_loopback_listener_without_tls_warns(start_gateway, issuer, upstream, gateway):
    text = gateway_config(issuer.url, upstream.url).replace(
        'listen = "127.0.0.1:0"', 'listen = "0.0.0.0:0"'
    )
    exposed = start_gateway(text)
    peers.wait_for(lambda: "without TLS" in exposed.stderr())
    assert "without TLS" not in gateway.stderr()  # the shared one listens on loopback only


@pytest.mark.parametrize(
    ("server", "key", "problem"),
    [
        ({"tls_cert": "/x.crt"}, "server.tls_key", "together"),
        ({"tls_key": "/x.key"}, "server.tls_cert", "together"),
        ({"tls_client_ca": "/ca.pem"}, "server.tls_client_ca", "needs tls_cert"),
        (
            {"tls_cert": "/x", "tls_key": "/y", "tls_client_auth": "required"},
            "server.tls_client_auth",
            "needs tls_client_ca",
        ),
        (
            {"tls_cert": "/x", "tls_key": "/y", "tls_client_ca": "/z", "tls_client_auth": "yes"},
            "server.tls_client_auth",
            "optional or required",
        ),
    ],
)
def test_bad_tls_config_names_the_key(tmp_path, issuer, upstream, server, key, problem) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(gateway_config(issuer.url, upstream.url, **server))
    with pytest.raises(ConfigError) as err:
        load(path)
    assert (err.value.key, problem in err.value.problem) == (key, True), err.value


def test_unreadable_certificate_refuses_to_start(tmp_path, issuer, upstream) -> None:
    path = tmp_path / "gateway.toml"
    text = gateway_config(issuer.url, upstream.url, tls_cert="/nonexistent.crt", tls_key="/k")
    path.write_text(text)
    with pytest.raises(peers.PeerStartError, match=r"server\.tls_cert"):
        launch_gateway(path)


def test_sign_in_cookies_are_secure_under_tls(start_gateway, issuer, upstream, ca, tmp_path):
    """public_url is plain http here: the listener's TLS alone makes the cookies Secure."""
    text = (
        tls_config(issuer, upstream, ca)
        + f"""
[approvals]
store = "sqlite://{tmp_path}/approvals.db"
sign_in_issuer = "default"
client_id = "gateway-approvals"
public_url = "http://127.0.0.1:8443"
"""
    )
    gateway = start_gateway(text)
    trust = ssl.create_default_context(cafile=ca.pem)
    login = httpx.get(f"{gateway.url}/_gateway/approvals/login", verify=trust)
    assert login.status_code == 302
    assert login.headers["location"].startswith(f"{issuer.url}/authorize?")
    cookie = login.headers["set-cookie"]
    assert cookie.startswith("gateway_approvals_signin=")
    assert all(flag in cookie for flag in ("; HttpOnly", "; SameSite=Lax", "; Secure"))


def test_every_worker_serves_https_and_rotates_on_sighup(
    start_gateway, issuer, upstream, ca, analyst_token
) -> None:
    """`workers = 2`: the supervisor passes SIGHUP on, so no worker keeps the old certificate."""
    first = ca.issue("workers")
    text = gateway_config(
        issuer.url, upstream.url, workers=2, tls_cert=str(first.cert), tls_key=str(first.key)
    )
    gateway = start_gateway(text)
    assert gateway.url.startswith("https://")
    context = ssl.create_default_context(cafile=ca.pem)
    auth = {"authorization": f"Bearer {analyst_token}"}
    url = f"{gateway.url}/llama/v1/chat/completions"
    assert httpx.post(url, json=BODY, headers=auth, verify=context).status_code == 200
    second = ca.issue("workers-rotated")
    shutil.copy(second.key, first.key)
    shutil.copy(second.cert, first.cert)
    gateway.proc.send_signal(signal.SIGHUP)
    peers.wait_for(lambda: gateway.stderr().count("TLS certificate reloaded") == 2)
    # New connections land on either worker (SO_REUSEPORT): every one sees the new certificate.
    assert {served_serial(gateway.url, context) for _ in range(16)} == {second.serial}
