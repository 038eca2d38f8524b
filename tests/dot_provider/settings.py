"""Django settings for the test OAuth2 provider; the database path comes from DOT_PROVIDER_DB."""

from __future__ import annotations

import os
import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dot_provider import accounts


def _rsa_private_key_pem() -> str:
    """A fresh RS256 key per provider process: it lives and dies with the test run."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


SECRET_KEY = secrets.token_urlsafe(32)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "dot_provider.urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oauth2_provider",
]
MIDDLEWARE = [
    "dot_provider.control.FaultMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
# The login page DOT's authorize endpoint sends a browser to (authorization code + PKCE).
LOGIN_URL = "/accounts/login/"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [os.path.join(os.path.dirname(__file__), "templates")],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["DOT_PROVIDER_DB"],
        # WAL: readers never wait for a writer; IMMEDIATE: a writing transaction takes the lock
        # up front (waiting for it), never failing halfway on a lock upgrade.
        "OPTIONS": {
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL;",
            "transaction_mode": "IMMEDIATE",
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# Client secrets are stored hashed, as in production; Django's test hasher keeps each token
# request cheap on a shared CI box (PBKDF2 at 10^6 rounds costs ~0.5 s per request).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
OAUTH2_PROVIDER = {
    "ACCESS_TOKEN_EXPIRE_SECONDS": accounts.token_lifetime,
    "SCOPES": {
        "read": "read",
        "write": "write",
        "inference": "call model endpoints",
        "openid": "OpenID Connect",
        "profile": "your name",
        "email": "your email address",
        "introspection": "introspect tokens",
    },
    "DEFAULT_SCOPES": ["read"],
    # OpenID Connect: discovery at /o/.well-known/openid-configuration, RS256 ID tokens.
    "OIDC_ENABLED": True,
    "OIDC_RSA_PRIVATE_KEY": _rsa_private_key_pem(),
    "OAUTH2_VALIDATOR_CLASS": "dot_provider.oidc.GroupsValidator",
    "PKCE_REQUIRED": True,
}
LOGGING = {"version": 1, "disable_existing_loggers": False}
