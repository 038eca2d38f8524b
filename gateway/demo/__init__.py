"""Demo peers of the gateway: an OpenAI-compatible model server and an OIDC issuer.

Both are part of the product (`gateway demo`) and the real servers the test suite runs
against. Neither is production software: the issuer mints tokens for anyone who asks.
"""
