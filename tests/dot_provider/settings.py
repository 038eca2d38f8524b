"""Django settings for the test OAuth2 provider; the database path comes from DOT_PROVIDER_DB."""

from __future__ import annotations

import os
import secrets

from dot_provider import accounts

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
    "django.contrib.auth.middleware.AuthenticationMiddleware",
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
    "SCOPES": {"read": "read", "write": "write", "inference": "call model endpoints"},
    "DEFAULT_SCOPES": ["read"],
}
LOGGING = {"version": 1, "disable_existing_loggers": False}
