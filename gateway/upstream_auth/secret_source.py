"""Read a connection's secret from the environment or a file, refusing the config if it is bad."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.config import Config, ConfigError, ConnectionConfig


def read_secret(config: Config, conn: ConnectionConfig, env_key: str, file_key: str) -> str | None:
    """The value named by the connection's `env_key` or `file_key` setting; None when neither."""
    prefix = f"connections[{conn.name}]"
    env_name, file_name = getattr(conn, env_key), getattr(conn, file_key)
    if env_name:
        secret = os.environ.get(env_name)
        if secret is None:
            raise ConfigError(
                config.path, f"{prefix}.{env_key}", f"environment variable {env_name} is unset"
            )
    elif file_name:
        try:
            secret = Path(file_name).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                config.path, f"{prefix}.{file_key}", exc.strerror or str(exc)
            ) from None
    else:
        return None
    if not secret or any(c in secret for c in "\r\n\0"):
        raise ConfigError(config.path, prefix, "credential is empty or has control chars")
    return secret
