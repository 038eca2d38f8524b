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

TOKEN_PATH = "/o/token/"


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.token_requests: Counter[str] = Counter()  # by client id ("" when none sent)
        self.down = False
        self.token_delay_s = 0.0

    def reset(self) -> None:
        with self.lock:
            self.token_requests.clear()
            self.down = False
            self.token_delay_s = 0.0


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
    """Counts every token request, then answers 503 when down or waits when told to."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == TOKEN_PATH:
            with state.lock:
                state.token_requests[_client_id(request)] += 1
                down, delay = state.down, state.token_delay_s
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
    """POST {"down"?: bool, "token_delay_ms"?: number}."""
    body = _body(request)
    with state.lock:
        state.down = bool(body.get("down", state.down))
        state.token_delay_s = float(body.get("token_delay_ms", state.token_delay_s * 1000)) / 1000
    return JsonResponse({"down": state.down, "token_delay_ms": state.token_delay_s * 1000})


def stats(_: HttpRequest) -> JsonResponse:
    """{"token_requests": {client_id: n}}: every request to the token endpoint, failed or not."""
    with state.lock:
        return JsonResponse({"token_requests": dict(state.token_requests)})


@csrf_exempt
def reset(_: HttpRequest) -> JsonResponse:
    state.reset()
    return JsonResponse({})
