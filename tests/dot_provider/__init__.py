"""A real third-party OAuth2 provider for tests: Django + django-oauth-toolkit, run as a process.

`tests/dot_provider/fixture.py` starts it; `accounts.py` holds the one place that creates
clients, users and groups, so new grant types (authorization code, OIDC) only add to it.
"""
