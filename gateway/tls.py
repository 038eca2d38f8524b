"""TLS on the listener: the server context, and certificate rotation without a restart.

The context is built once and handed to the listening socket; on SIGHUP the certificate and
key (and any added client CAs) are loaded into that same context, so new handshakes use the
new certificate while open connections carry on untouched. New files are first loaded into a
throwaway context: a half-written or mismatched pair is refused and the old one stays.
"""

from __future__ import annotations

import logging
import ssl

from gateway.config import ServerConfig

log = logging.getLogger("gateway.tls")

CLIENT_AUTH_MODES = {"optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


class ListenerTls:
    """The listener's SSLContext, reloadable in place."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.context = _context(config)

    def reload(self) -> bool:
        """Load the configured files again; a bad set leaves the current ones in force."""
        try:
            _context(self.config)  # all or nothing: check the files before touching the live one
            _load(self.context, self.config)
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS certificate reload refused, the previous one stays: %s", exc)
            return False
        log.info("TLS certificate reloaded", extra={"cert": self.config.tls_cert})
        return True


def _context(config: ServerConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    _load(context, config)
    if config.tls_client_ca is not None:
        context.verify_mode = CLIENT_AUTH_MODES[config.tls_client_auth]
    return context


def _load(context: ssl.SSLContext, config: ServerConfig) -> None:
    assert config.tls_cert is not None and config.tls_key is not None
    context.load_cert_chain(config.tls_cert, config.tls_key)
    if config.tls_client_ca is not None:
        context.load_verify_locations(cafile=config.tls_client_ca)
