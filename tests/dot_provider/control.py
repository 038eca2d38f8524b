"""The provider's `/_test/` API: create accounts, count token requests, inject faults.

Tests reach the provider only over HTTP, as the gateway does; these endpoints stand in for an
administrator's console and for a provider that is down or slow.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from dot_provider import accounts

# The endpoints whose requests are counted and can be failed or slowed, by the name the
# /_test/ API uses for them ("token": {"down", "token_delay_ms"}, "introspect": likewise).
ENDPOINTS = {"/o/token/": "token", "/o/introspect/": "introspect"}


class _Endpoint:
    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()  # by client id ("" when none sent)
        self.down = False
        self.delay_s = 0.0


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.endpoints = {name: _Endpoint() for name in ENDPOINTS.values()}

    def reset(self) -> None:
        with self.lock:
            self.endpoints = {name: _Endpoint() for name in ENDPOINTS.values()}


state = _State()


def _client_id(request: HttpRequest) -> str:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Basic "):
        try:
            return base64.b64decode(auth[6:]).decode().partition(":")[0]
        except ValueError:
            return ""
    return request.POST.get("client_id", "")


class FaultMiddleware:
    """Counts every token and introspection request, then answers 503 when that endpoint is
    down or waits when told to."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        name = ENDPOINTS.get(request.path)
        if name is not None:
            with state.lock:
                endpoint = state.endpoints[name]
                endpoint.requests[_client_id(request)] += 1
                down, delay = endpoint.down, endpoint.delay_s
            if down:
                return JsonResponse({"error": "temporarily_unavailable"}, status=503)
            if delay:
                time.sleep(delay)
        return self.get_response(request)


def _body(request: HttpRequest) -> dict[str, Any]:
    return json.loads(request.body or b"{}")


@csrf_exempt
def clients(request: HttpRequest) -> JsonResponse:
    """POST {"client_id", "client_secret", "token_lifetime_s"?, "grant_type"?, ...}."""
    app = accounts.create_client(**_body(request))
    return JsonResponse({"client_id": app.client_id})


@csrf_exempt
def users(request: HttpRequest) -> JsonResponse:
    """POST {"username", "password", "groups"?}."""
    user = accounts.create_user(**_body(request))
    return JsonResponse({"username": user.username})


@csrf_exempt
def faults(request: HttpRequest) -> JsonResponse:
    """POST {"down"?: bool, "token_delay_ms"?: number, "introspect_down"?: bool,
    "introspect_delay_ms"?: number}: `down`/`token_*` for the token endpoint."""
    body = _body(request)
    answer: dict[str, Any] = {}
    with state.lock:
        for name, endpoint in state.endpoints.items():
            down_key = "down" if name == "token" else f"{name}_down"
            delay_key = f"{name}_delay_ms"
            endpoint.down = bool(body.get(down_key, endpoint.down))
            endpoint.delay_s = float(body.get(delay_key, endpoint.delay_s * 1000)) / 1000
            answer |= {down_key: endpoint.down, delay_key: endpoint.delay_s * 1000}
    return JsonResponse(answer)


def stats(_: HttpRequest) -> JsonResponse:
    """{"token_requests": {client_id: n}, "introspect_requests": {client_id: n}}: every
    request to those endpoints, failed or not."""
    with state.lock:
        return JsonResponse(
            {f"{name}_requests": dict(e.requests) for name, e in state.endpoints.items()}
        )


@csrf_exempt
def reset(_: HttpRequest) -> JsonResponse:
    state.reset()
    return JsonResponse({})
