"""A stand-in for cloud model endpoints, run as a process: it checks upstream credentials the
way the cloud would and answers in the clouds' own formats.

    python tests/cloud_peer.py --port 0 [--aws-access-key K --aws-secret-key S ...]

- AWS SigV4 requests are verified by tests/sigv4_verifier.py (written from AWS's spec, sharing
  no code with the gateway or botocore); a bad signature is 403, as AWS answers.
- Bearer tokens are accepted if this peer's Google-style token endpoint (`POST /token`, the
  JWT-bearer grant a service-account key uses) issued them, or if the OAuth2 provider's
  introspection endpoint (`--introspect-url`) says they are active; otherwise 401.
- Bedrock InvokeModel (JSON), InvokeModelWithResponseStream and ConverseStream (event streams,
  framed by this file's own encoder), Vertex AI generateContent (JSON) and
  streamGenerateContent (SSE with `alt=sse`, else a JSON array), all carrying gateway.demo.pii.
- `/_peer/requests`, `/_peer/stats`, `/_peer/reset`, `/_peer/faults` for the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import hashlib
import secrets
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import sigv4_verifier
from aiohttp import web

from gateway.demo import pii

PIECE = 5  # characters per streamed delta: every PII value straddles several messages
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# What google-auth puts in a service-account assertion, wherever token_uri points.
GOOGLE_AUDIENCE = "https://oauth2.googleapis.com/token"


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """An event stream message, encoded here from AWS's description (not the gateway's code)."""
    block = b""
    for name, value in headers.items():
        raw = value.encode()
        block += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(raw)) + raw
    total = 12 + len(block) + len(payload) + 4
    prelude = struct.pack(">II", total, len(block))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + block + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return frame(headers, orjson.dumps({**payload, "p": "abcdefghijklmnopqrstuvwxyzABCDEF"}))


def pieces(text: str) -> list[str]:
    return [text[i : i + PIECE] for i in range(0, len(text), PIECE)]


def invoke_stream(text: str) -> list[bytes]:
    """InvokeModelWithResponseStream of an Anthropic model: `bytes` is base64 of its JSON."""

    def chunk(body: dict[str, Any]) -> bytes:
        return event("chunk", {"bytes": base64.b64encode(orjson.dumps(body)).decode()})

    return [
        chunk({"type": "message_start", "message": {"role": "assistant", "content": []}}),
        chunk({"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}),
        *(
            chunk(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": p},
                }
            )
            for p in pieces(text)
        ),
        chunk({"type": "content_block_stop", "index": 0}),
        chunk({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
        chunk({"type": "message_stop"}),
    ]


def converse_stream(text: str) -> list[bytes]:
    return [
        event("messageStart", {"role": "assistant"}),
        *(
            event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}})
            for p in pieces(text)
        ),
        event("contentBlockStop", {"contentBlockIndex": 0}),
        event("messageStop", {"stopReason": "end_turn"}),
        event(
            "metadata",
            {"usage": {"inputTokens": 3, "outputTokens": 9}, "metrics": {"latencyMs": 1}},
        ),
    ]


def gemini(text: str) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}}]}


class Peer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.aws = None
        if args.aws_access_key:
            self.aws = sigv4_verifier.Secret(
                args.aws_access_key, args.aws_secret_key, args.aws_session_token
            )
        self.google_key = (
            Path(args.google_public_key).read_bytes() if args.google_public_key else None
        )
        self.issued: dict[str, float] = {}  # token -> expiry (monotonic)
        self.requests: list[dict[str, Any]] = []
        self.token_requests = 0
        self.token_fault: str | None = None
        self.token_delay_s = 0.0
        self.session: aiohttp.ClientSession | None = None

    async def check(self, request: web.Request, body: bytes) -> str | None:
        """None if the request carries a credential this cloud accepts; else why not."""
        authorization = request.headers.get("authorization", "")
        if authorization.startswith("AWS4-HMAC-SHA256 "):
            if self.aws is None:
                return "SigV4 not expected here"
            headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.raw_headers]
            try:
                sigv4_verifier.verify(
                    self.aws,
                    self.args.aws_region,
                    self.args.aws_service,
                    request.method,
                    request.raw_path,
                    headers,
                    body,
                    now=datetime.datetime.now(datetime.UTC),
                )
            except sigv4_verifier.SignatureError as exc:
                return str(exc)
            return None
        if not authorization.startswith("Bearer "):
            return "no credential"
        token = authorization.removeprefix("Bearer ")
        expiry = self.issued.get(token)
        if expiry is not None:
            return None if time.monotonic() < expiry else "token expired"
        if self.args.introspect_url:
            return await self._introspect(token)
        return "unknown token"

    async def _introspect(self, token: str) -> str | None:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        client_id, _, secret = self.args.introspect_client.partition(":")
        async with self.session.post(
            self.args.introspect_url,
            data={"token": token},
            auth=aiohttp.BasicAuth(client_id, secret),
        ) as response:
            answer = await response.json(content_type=None)
        return None if response.status == 200 and answer.get("active") else "token not active"

    async def model(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        problem = await self.check(request, body)
        self.requests.append(
            {
                "method": request.method,
                "target": request.raw_path,
                "authorization": request.headers.get("authorization", ""),
                "verified": problem is None,
                "problem": problem,
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "body": body.decode("utf-8", "replace"),
                "headers": {n.decode(): v.decode() for n, v in request.raw_headers},
            }
        )
        if problem is not None:
            status = (
                403
                if problem
                not in ("no credential", "unknown token", "token expired", "token not active")
                else 401
            )
            return web.json_response({"message": problem}, status=status)
        path, text = request.path, pii.TEXT
        corrupt = request.headers.get("x-peer-corrupt")
        if path.endswith("/invoke"):
            return web.json_response({"content": [{"type": "text", "text": text}]})
        if path.endswith("/invoke-with-response-stream") or path.endswith("/converse-stream"):
            frames = (
                invoke_stream(text)
                if path.endswith("/invoke-with-response-stream")
                else converse_stream(text)
            )
            if corrupt == "crc":
                bad = bytearray(frames[3])
                bad[-1] ^= 0xFF
                frames[3] = bytes(bad)
            return await self._stream(request, frames, "application/vnd.amazon.eventstream")
        if path.endswith(":generateContent"):
            return web.json_response(gemini(text))
        if path.endswith(":streamGenerateContent"):
            parts = [gemini(p) for p in pieces(text)]
            if request.query.get("alt") == "sse":
                events = [b"data: " + orjson.dumps(p) + b"\r\n\r\n" for p in parts]
                return await self._stream(request, events, "text/event-stream")
            array = (
                [b"[" + orjson.dumps(parts[0])]
                + [b",\r\n" + orjson.dumps(p) for p in parts[1:]]
                + [b"]"]
            )
            return await self._stream(request, array, "application/json")
        return web.json_response({"ok": True})

    async def _stream(
        self, request: web.Request, chunks: list[bytes], kind: str
    ) -> web.StreamResponse:
        if request.headers.get("x-peer-whole"):  # one body with a Content-Length
            return web.Response(body=b"".join(chunks), headers={"content-type": kind})
        response = web.StreamResponse(headers={"content-type": kind})
        await response.prepare(request)
        if request.headers.get("x-peer-one-write"):  # streamed, but as one piece
            chunks = [b"".join(chunks)]
        for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response

    async def token(self, request: web.Request) -> web.Response:
        """Google's token endpoint for service-account keys (RFC 7523 JWT-bearer grant)."""
        self.token_requests += 1
        form = await request.post()
        if self.token_delay_s:
            await asyncio.sleep(self.token_delay_s)
        if self.token_fault:
            return web.json_response(
                {"error": self.token_fault, "error_description": "peer fault"}, status=400
            )
        if form.get("grant_type") != JWT_BEARER or self.google_key is None:
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        try:
            claims = jwt.decode(
                str(form.get("assertion")),
                self.google_key,
                algorithms=["RS256"],
                audience=GOOGLE_AUDIENCE,
                issuer=self.args.google_client_email,
            )
        except jwt.InvalidTokenError as exc:
            return web.json_response(
                {"error": "invalid_grant", "error_description": str(exc)}, status=400
            )
        if self.args.google_scope not in str(claims.get("scope", "")).split():
            return web.json_response({"error": "invalid_scope"}, status=400)
        token = "ya29." + secrets.token_urlsafe(24)
        self.issued[token] = time.monotonic() + self.args.google_token_lifetime_s
        return web.json_response(
            {
                "access_token": token,
                "expires_in": self.args.google_token_lifetime_s,
                "token_type": "Bearer",
            }
        )

    async def seen(self, _: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"token_requests": self.token_requests, "requests": len(self.requests)}
        )

    async def reset(self, _: web.Request) -> web.Response:
        self.requests.clear()
        self.token_requests = 0
        self.token_fault, self.token_delay_s = None, 0.0
        return web.json_response({})

    async def faults(self, request: web.Request) -> web.Response:
        """{"token_error": "invalid_grant" | null, "token_delay_ms": n}."""
        body = await request.json()
        self.token_fault = body.get("token_error", self.token_fault)
        self.token_delay_s = body.get("token_delay_ms", self.token_delay_s * 1000) / 1000
        return web.json_response({})


def start(*args: str) -> Any:
    """Run this file as a process with `args`; a peers.Peer (import here: the script needs no
    test helpers)."""
    import peers

    return peers.launch([sys.executable, __file__, "--port", "0", *args])


def seen(url: str) -> list[dict[str, Any]]:
    """Every request the peer answered, oldest first."""
    import peers

    return peers._call("GET", f"{url}/_peer/requests")


def stats(url: str) -> dict[str, int]:
    import peers

    return peers._call("GET", f"{url}/_peer/stats")


def faults(url: str, **body: Any) -> None:
    """token_error="invalid_grant" (or None), token_delay_ms=N."""
    import peers

    peers._call("POST", f"{url}/_peer/faults", body)


async def main(args: argparse.Namespace) -> None:
    peer = Peer(args)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_get("/_peer/requests", peer.seen)
    app.router.add_get("/_peer/stats", peer.stats)
    app.router.add_post("/_peer/reset", peer.reset)
    app.router.add_post("/_peer/faults", peer.faults)
    app.router.add_post("/token", peer.token)
    app.router.add_route("*", "/{tail:.*}", peer.model)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = runner.addresses[0][1]
    print(f"listening on http://{args.host}:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--aws-access-key")
    parser.add_argument("--aws-secret-key")
    parser.add_argument("--aws-session-token")
    parser.add_argument("--aws-region", default="us-east-1")
    parser.add_argument("--aws-service", default="bedrock")
    parser.add_argument("--introspect-url")
    parser.add_argument("--introspect-client", default="")
    parser.add_argument("--google-public-key")
    parser.add_argument("--google-client-email")
    parser.add_argument("--google-scope", default="https://www.googleapis.com/auth/cloud-platform")
    parser.add_argument("--google-token-lifetime-s", type=int, default=3600)
    try:
        asyncio.run(main(parser.parse_args()))
    except KeyboardInterrupt:
        sys.exit(0)
