"""What the provider adds to DOT for OpenID Connect: users' groups in the ID token and in
introspection answers (as Keycloak's or Okta's group mappers do)."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.views import IntrospectTokenView


def _groups(user: Any) -> list[str]:
    return sorted(user.groups.values_list("name", flat=True))


class GroupsValidator(OAuth2Validator):
    """ID tokens carry `groups` and `preferred_username`."""

    oidc_claim_scope = None  # every claim below goes into every ID token

    def get_additional_claims(self, request: Any) -> dict[str, Any]:
        return {"groups": _groups(request.user), "preferred_username": request.user.username}


@method_decorator(csrf_exempt, name="dispatch")
class GroupsIntrospectView(IntrospectTokenView):
    """RFC 7662 introspection, answering also the user's `groups`."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().post(request, *args, **kwargs)
        answer = json.loads(response.content)
        if answer.get("active") and answer.get("username"):
            from django.contrib.auth.models import User

            user = User.objects.get(username=answer["username"])
            answer["groups"] = _groups(user)
            response.content = json.dumps(answer).encode()
            response["Content-Length"] = str(len(response.content))
        return response
