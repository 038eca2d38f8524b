"""Load and validate the gateway's one TOML file.

Every check names the file, the key and what is wrong, so a bad config is refused at start (and
on reload) with a message an operator can act on. Unknown keys are errors: a misspelt security
setting must never be silently ignored.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.audit.periods import KINDS

# Asymmetric JWS algorithms pyjwt verifies with a public key. HS* and "none" are never accepted:
# HS with a public key as the secret is the classic key-confusion attack.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
CONNECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
RESERVED_PREFIX = "_gateway"
# A claim by name or dotted path (a string), or by a list of keys for names that contain dots.
ClaimPath = str | tuple[str, ...]
DEFAULT_ISSUER_NAME = "default"  # the name of the one issuer of an `[identity]` table


class ConfigError(ValueError):
    """A config file that cannot be used; the message names file, key and problem."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}")
        self.path, self.key, self.problem = str(path), key, problem


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_header_bytes: int = 16384
    max_body_bytes: int = 10 * 1024 * 1024
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    upstream_timeout_s: float = 300.0
    upstream_connect_timeout_s: float = 10.0
    drain_timeout_s: float = 30.0
    reload_poll_s: float = 2.0
    workers: int = 1
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    tls_client_auth: str = "required"  # with tls_client_ca: "optional" | "required"

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """One trusted issuer: `[identity]`, or one table of `[[identity.issuers]]`."""

    issuer: str
    audience: str
    name: str = DEFAULT_ISSUER_NAME
    groups_claim: ClaimPath = "groups"
    subject_claim: ClaimPath = "sub"
    subject_prefix: str = ""
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    leeway_s: float = 30.0
    jwks_cache_s: float = 300.0
    jwks_min_refresh_interval_s: float = 10.0
    ca_file: str | None = None
    introspection: bool = False  # opaque tokens checked at the RFC 7662 endpoint
    introspection_client_id: str | None = None
    introspection_client_secret_env: str | None = None
    introspection_cache_max_s: float = 60.0


@dataclass(frozen=True, slots=True)
class CentralAuditConfig:
    store: str  # postgresql://user@host/db: the central audit store this log is shipped to
    interval_s: float = 1.0
    keys_store: str | None = None  # the same store under the epoch keys' role: keys copied there


@dataclass(frozen=True, slots=True)
class AuditConfig:
    dir: str
    origin: str
    signing_key: str
    sealing_key: str
    durability: str = "sync"
    readers: tuple[str, ...] = ()
    central: CentralAuditConfig | None = None
    epoch: str | None = None  # "daily" | "weekly" | "monthly": a new log per period
    retention_days: int | None = None  # epoch keys older than this are shredded


@dataclass(frozen=True, slots=True)
class CustomDetector:
    name: str
    regex: str
    validator: str | None = None


@dataclass(frozen=True, slots=True)
class MaskingConfig:
    hash_key: str | None = None
    detectors: tuple[CustomDetector, ...] = ()


@dataclass(frozen=True, slots=True)
class ApprovalsConfig:
    store: str  # sqlite:///path or postgresql://user@host/db
    timeout_s: float = 900.0
    hold_max_s: float = 60.0
    webhook_url: str | None = None
    # The approvals page signs approvers in with this issuer (authorization code + PKCE).
    sign_in_issuer: str | None = None
    client_id: str | None = None
    client_secret_env: str | None = None  # None: a public client
    public_url: str | None = None  # redirect URI: {public_url}/_gateway/approvals/callback


GOOGLE_DEFAULT_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
# How a connection authenticates upstream, and the keys each mode takes (see gateway.upstream_auth).
AUTH_KEYS = {
    "static": ("credential_env", "credential_file", "credential_header", "credential_prefix"),
    "aws_sigv4": ("aws_region", "aws_service"),
    "google": ("google_credentials_file", "google_scopes"),
    "oauth2_client_credentials": (
        "token_url",
        "client_id",
        "client_secret_env",
        "client_secret_file",
        "scope",
    ),
}
AUTH_REQUIRED = {
    "aws_sigv4": ("aws_region", "aws_service"),
    "oauth2_client_credentials": ("token_url", "client_id"),
}


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    name: str
    upstream: str
    credential_env: str | None = None
    credential_file: str | None = None
    credential_header: str = "authorization"
    credential_prefix: str = "Bearer "
    model_version_header: str | None = None
    ca_file: str | None = None
    pool_size: int = 64
    upstream_timeout_s: float | None = None
    auth: str = "static"  # one of AUTH_MODES
    aws_region: str | None = None
    aws_service: str | None = None
    google_credentials_file: str | None = None
    google_scopes: tuple[str, ...] = GOOGLE_DEFAULT_SCOPES
    token_url: str | None = None
    client_id: str | None = None
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    scope: str | None = None

    @property
    def scheme(self) -> str:
        return urlsplit(self.upstream).scheme

    @property
    def host(self) -> str:
        return urlsplit(self.upstream).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.upstream)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def base_path(self) -> str:
        return urlsplit(self.upstream).path.rstrip("/")


@dataclass(frozen=True, slots=True)
class RuleConfig:
    id: str
    action: str
    groups: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    connections: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    mask: tuple[str, ...] = ()
    mask_paths: tuple[str, ...] = ()
    mask_style: str = "tag"
    mask_request: bool = False
    approvers: tuple[str, ...] = ()
    min_approvals: int = 1
    timeout_s: float | None = None  # [approvals] timeout_s when unset
    reason_required: bool = False


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    sha256: str
    server: ServerConfig
    issuers: tuple[IdentityConfig, ...]
    connections: tuple[ConnectionConfig, ...]
    rules: tuple[RuleConfig, ...]
    audit: AuditConfig | None = None
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    approvals: ApprovalsConfig | None = None

    def connection(self, name: str) -> ConnectionConfig | None:
        return next((c for c in self.connections if c.name == name), None)


class _Section:
    """Typed reads from one TOML table that report the full key path on error."""

    def __init__(self, path: Path, prefix: str, table: Any) -> None:
        if not isinstance(table, dict):
            raise ConfigError(path, prefix, "must be a table")
        self.path, self.prefix, self.table = path, prefix, table
        self.read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.path, self.key(name), problem)

    def _get(self, name: str, default: Any, required: bool) -> Any:
        self.read.add(name)
        if name not in self.table:
            if required:
                raise self.fail(name, "is required")
            return default
        return self.table[name]

    def str(self, name: str, default: str | None = None, *, required: bool = False) -> Any:
        value = self._get(name, default, required)
        if value is not None and (not isinstance(value, str) or not value):
            raise self.fail(name, "must be a non-empty string")
        return value

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        value = self._get(name, default, False)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(name, "must be a number")
        if value < minimum:
            raise self.fail(name, f"must be at least {minimum:g}")
        return float(value)

    def integer(self, name: str, default: int, *, minimum: int = 1) -> int:
        value = self._get(name, default, False)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, "must be an integer")
        if value < minimum:
            raise self.fail(name, f"must be at least {minimum}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name, default, False)
        if not isinstance(value, bool):
            raise self.fail(name, "must be true or false")
        return value

    def strings(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self._get(name, default, False)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(name, "must be a list of non-empty strings")
        return tuple(value)

    def done(self) -> None:
        unknown = sorted(set(self.table) - self.read)
        if unknown:
            raise self.fail(unknown[0], unknown_key(unknown[0], self.read))


def unknown_key(name: str, valid: Iterable[str], what: str = "key") -> str:
    """The problem text for a key no section knows, naming the nearest valid one if any."""
    near = difflib.get_close_matches(name, sorted(valid), n=1, cutoff=0.6)
    return f"unknown {what} (did you mean {near[0]!r}?)" if near else f"unknown {what} (misspelt?)"


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file. Raises ConfigError naming file, key and problem."""
    file = Path(path)
    try:
        raw_bytes = file.read_bytes()
    except OSError as exc:
        raise ConfigError(file, "(file)", f"cannot read: {exc.strerror}") from None
    try:
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(file, "(syntax)", str(exc)) from None
    return parse(raw, file, hashlib.sha256(raw_bytes).hexdigest())


def parse(raw: dict[str, Any], file: Path, sha256: str = "") -> Config:
    """Validate an already-parsed TOML document."""
    known = {"server", "identity", "audit", "masking", "approvals", "connections", "rules"}
    for key in raw:
        if key not in known:
            raise ConfigError(file, key, unknown_key(key, known, "section"))
    server = _server(_Section(file, "server", raw.get("server", {})))
    if "identity" not in raw:
        raise ConfigError(file, "identity", "is required: the gateway authenticates every call")
    issuers = _issuers(file, raw["identity"])
    audit = _audit(_Section(file, "audit", raw["audit"])) if "audit" in raw else None
    masking = _masking(_Section(file, "masking", raw.get("masking", {})))
    approvals = (
        _approvals(_Section(file, "approvals", raw["approvals"])) if "approvals" in raw else None
    )
    sign_in = approvals.sign_in_issuer if approvals is not None else None
    if sign_in is not None and sign_in not in {i.name for i in issuers}:
        raise ConfigError(
            file,
            "approvals.sign_in_issuer",
            f"no issuer named {sign_in!r} (names: {', '.join(i.name for i in issuers)})",
        )
    connections = _connections(file, raw.get("connections", []))
    names = {c.name for c in connections}
    rules = _rules(file, raw.get("rules", []), names, approvals is not None)
    return Config(
        path=str(file),
        sha256=sha256,
        server=server,
        issuers=issuers,
        connections=connections,
        rules=rules,
        audit=audit,
        masking=masking,
        approvals=approvals,
    )


def _server(s: _Section) -> ServerConfig:
    listen = s.str("listen", "127.0.0.1:8080")
    host, port = _split_listen(s, listen)
    config = ServerConfig(
        host=host,
        port=port,
        max_header_bytes=s.integer("max_header_bytes", 16384, minimum=1024),
        max_body_bytes=s.integer("max_body_bytes", 10 * 1024 * 1024, minimum=1),
        header_timeout_s=s.number("header_timeout_s", 10.0, minimum=0.1),
        idle_timeout_s=s.number("idle_timeout_s", 60.0, minimum=0.1),
        upstream_timeout_s=s.number("upstream_timeout_s", 300.0, minimum=0.1),
        upstream_connect_timeout_s=s.number("upstream_connect_timeout_s", 10.0, minimum=0.1),
        drain_timeout_s=s.number("drain_timeout_s", 30.0),
        reload_poll_s=s.number("reload_poll_s", 2.0),
        workers=s.integer("workers", 1, minimum=1),
        tls_cert=s.str("tls_cert"),
        tls_key=s.str("tls_key"),
        tls_client_ca=s.str("tls_client_ca"),
        tls_client_auth=s.str("tls_client_auth", "required"),
    )
    _tls(s, config)
    s.done()
    return config


def _tls(s: _Section, config: ServerConfig) -> None:
    if (config.tls_cert is None) != (config.tls_key is None):
        missing = "tls_key" if config.tls_key is None else "tls_cert"
        raise s.fail(missing, "tls_cert and tls_key go together (the listener is HTTPS only)")
    if config.tls_client_ca is not None and not config.tls:
        raise s.fail("tls_client_ca", "needs tls_cert and tls_key: client certificates need TLS")
    if "tls_client_auth" in s.table and config.tls_client_ca is None:
        raise s.fail("tls_client_auth", "needs tls_client_ca (the CA client certificates chain to)")
    if config.tls_client_auth not in ("optional", "required"):
        raise s.fail("tls_client_auth", "must be optional or required")


def _split_listen(s: _Section, listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise s.fail("listen", f"must be HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _issuers(file: Path, table: Any) -> tuple[IdentityConfig, ...]:
    """`[identity]` (one issuer) or `[[identity.issuers]]` (several), never both."""
    if not isinstance(table, dict) or "issuers" not in table:
        return (_identity(_Section(file, "identity", table), DEFAULT_ISSUER_NAME),)
    beside = sorted(set(table) - {"issuers"})
    if beside:
        raise ConfigError(
            file,
            f"identity.{beside[0]}",
            "[identity] keys cannot stand beside [[identity.issuers]]; move them into an issuer",
        )
    raw = table["issuers"]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(file, "identity.issuers", "must be one or more [[identity.issuers]]")
    out: list[IdentityConfig] = []
    for i, entry in enumerate(raw):
        s = _Section(file, f"identity.issuers[{i}]", entry)
        issuer = _identity(s, s.str("name", required=True))
        if any(o.name == issuer.name for o in out):
            raise s.fail("name", f"duplicate issuer name {issuer.name!r}")
        if any(o.issuer == issuer.issuer for o in out):
            raise s.fail("issuer", f"{issuer.issuer!r} is listed twice: `iss` must pick one")
        out.append(issuer)
    return tuple(out)


def _identity(s: _Section, name: str) -> IdentityConfig:
    issuer = s.str("issuer", required=True)
    _check_url(s, "issuer", issuer)
    algorithms = s.strings("algorithms", ("RS256", "ES256", "EdDSA"))
    for alg in algorithms:
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise s.fail(
                "algorithms",
                f"{alg!r} is not allowed; use asymmetric algorithms only "
                f"({', '.join(sorted(ASYMMETRIC_ALGORITHMS))})",
            )
    if not algorithms:
        raise s.fail("algorithms", "must name at least one algorithm")
    config = IdentityConfig(
        issuer=issuer,
        audience=s.str("audience", required=True),
        name=name,
        groups_claim=_claim_path(s, "groups_claim", "groups"),
        subject_claim=_claim_path(s, "subject_claim", "sub"),
        subject_prefix=s.table.get("subject_prefix", ""),
        algorithms=algorithms,
        leeway_s=s.number("leeway_s", 30.0),
        jwks_cache_s=s.number("jwks_cache_s", 300.0, minimum=1.0),
        jwks_min_refresh_interval_s=s.number("jwks_min_refresh_interval_s", 10.0),
        ca_file=s.str("ca_file"),
        introspection=s.boolean("introspection", False),
        introspection_client_id=s.str("introspection_client_id"),
        introspection_client_secret_env=s.str("introspection_client_secret_env"),
        introspection_cache_max_s=s.number("introspection_cache_max_s", 60.0),
    )
    if config.introspection and not config.introspection_client_id:
        raise s.fail("introspection_client_id", "introspection needs the gateway's client id")
    if config.introspection and not config.introspection_client_secret_env:
        raise s.fail(
            "introspection_client_secret_env",
            "introspection needs the environment variable holding the gateway's client secret",
        )
    s.read.add("subject_prefix")
    if not isinstance(config.subject_prefix, str):
        raise s.fail("subject_prefix", "must be a string")
    s.done()
    return config


def _claim_path(s: _Section, name: str, default: str) -> ClaimPath:
    """A claim name or dotted path (a string), or a list of keys."""
    value = s._get(name, default, False)
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise s.fail(name, "must be a claim name, a dotted path, or a list of keys")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _audit(s: _Section) -> AuditConfig:
    config = AuditConfig(
        dir=s.str("dir", required=True),
        origin=s.str("origin", required=True),
        signing_key=s.str("signing_key", required=True),
        sealing_key=s.str("sealing_key", required=True),
        durability=s.str("durability", "sync"),
        readers=s.strings("readers"),
        central=_central(s),
        epoch=s.str("epoch"),
        retention_days=(
            s.integer("retention_days", 0, minimum=1) if "retention_days" in s.table else None
        ),
    )
    if config.durability not in ("sync", "batch"):
        raise s.fail("durability", "must be 'sync' or 'batch'")
    if config.epoch not in (None, *KINDS):
        raise s.fail("epoch", f"must be one of {', '.join(KINDS)} (or absent: one log)")
    if config.retention_days is not None and config.epoch is None:
        raise s.fail("retention_days", "needs epoch: only an epoch's own key can be shredded")
    s.done()
    return config


def _central(audit: _Section) -> CentralAuditConfig | None:
    table = audit._get("central", None, False)
    if table is None:
        return None
    s = _Section(audit.path, "audit.central", table)
    config = CentralAuditConfig(
        store=s.str("store", required=True),
        interval_s=s.number("interval_s", 1.0, minimum=0.05),
        keys_store=s.str("keys_store"),
    )
    for key in ("store", "keys_store"):
        url = getattr(config, key)
        if url is not None and not _is_postgres_url(url):
            raise s.fail(
                key,
                f"must be postgresql://USER@HOST[:PORT]/DATABASE; got {without_password(url)!r}",
            )
    if config.keys_store and audit.table.get("epoch") is None:
        raise s.fail("keys_store", "needs [audit] epoch: only epochs have keys of their own")
    s.done()
    return config


def _is_postgres_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("postgresql", "postgres") and bool(parts.hostname)


def _masking(s: _Section) -> MaskingConfig:
    raw = s._get("detectors", [], False)
    if not isinstance(raw, list):
        raise s.fail("detectors", "must be an array of tables ([[masking.detectors]])")
    detectors = []
    for i, table in enumerate(raw):
        d = _Section(s.path, f"masking.detectors[{i}]", table)
        detector = CustomDetector(d.str("name", required=True), d.str("regex", required=True))
        validator = d.str("validator")
        if validator not in (None, "luhn", "mod97"):
            raise d.fail("validator", "must be luhn or mod97")
        d.done()
        detectors.append(CustomDetector(detector.name, detector.regex, validator))
    config = MaskingConfig(hash_key=s.str("hash_key"), detectors=tuple(detectors))
    s.done()
    return config


def _approvals(s: _Section) -> ApprovalsConfig:
    config = ApprovalsConfig(
        store=s.str("store", required=True),
        timeout_s=s.number("timeout_s", 900.0, minimum=1.0),
        hold_max_s=s.number("hold_max_s", 60.0),
        webhook_url=s.str("webhook_url"),
        sign_in_issuer=s.str("sign_in_issuer"),
        client_id=s.str("client_id"),
        client_secret_env=s.str("client_secret_env"),
        public_url=_public_url(s),
    )
    _sign_in(s, config)
    store = urlsplit(config.store)
    sqlite = store.scheme == "sqlite" and not store.netloc and store.path not in ("", "/")
    if not (sqlite or _is_postgres_url(config.store)):
        raise s.fail(
            "store",
            "must be sqlite:///PATH or postgresql://USER@HOST[:PORT]/DATABASE, e.g. "
            f"sqlite:///var/lib/gateway/approvals.db; got {without_password(config.store)!r}",
        )
    if config.webhook_url is not None:
        hook = urlsplit(config.webhook_url)
        if hook.scheme not in ("http", "https") or not hook.hostname:
            raise s.fail("webhook_url", "must be an http(s) URL")
    s.done()
    return config


def _public_url(s: _Section) -> str | None:
    url = s.str("public_url")
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise s.fail("public_url", "must be the gateway's http(s) base URL, without a query")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise s.fail("public_url", "must use https (authorization codes travel in it)")
    return url.rstrip("/")


def _sign_in(s: _Section, config: ApprovalsConfig) -> None:
    """sign_in_issuer needs a client id and a public URL; the others need sign_in_issuer."""
    if config.sign_in_issuer is None:
        for key in ("client_id", "client_secret_env", "public_url"):
            if key in s.table:
                raise s.fail(key, "applies only with sign_in_issuer")
        return
    if config.client_id is None:
        raise s.fail("client_id", "sign_in_issuer needs the page's client id at the IdP")
    if config.public_url is None:
        raise s.fail("public_url", "sign_in_issuer needs the URL browsers reach the gateway at")


def without_password(url: str) -> str:
    """A URL as it may appear in an error: a password in it is replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(":" + parts.password + "@", ":***@", 1)


def _connections(file: Path, raw: Any) -> tuple[ConnectionConfig, ...]:
    if not isinstance(raw, list):
        raise ConfigError(file, "connections", "must be an array of tables ([[connections]])")
    seen: set[str] = set()
    out = []
    for i, table in enumerate(raw):
        s = _Section(file, f"connections[{i}]", table)
        name = s.str("name", required=True)
        if not CONNECTION_NAME.match(name) or name == RESERVED_PREFIX:
            raise s.fail("name", f"{name!r} must be a path segment of letters, digits, . _ -")
        if name in seen:
            raise s.fail("name", f"duplicate connection {name!r}")
        seen.add(name)
        upstream = s.str("upstream", required=True)
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise s.fail("upstream", f"must be an http(s) URL, got {upstream!r}")
        if parts.query or parts.fragment or parts.username:
            raise s.fail("upstream", "must not carry a query, fragment or user info")
        conn = ConnectionConfig(
            name=name,
            upstream=upstream,
            credential_env=s.str("credential_env"),
            credential_file=s.str("credential_file"),
            credential_header=s.str("credential_header", "authorization").lower(),
            credential_prefix=s.table.get("credential_prefix", "Bearer "),
            model_version_header=_lower(s.str("model_version_header")),
            ca_file=s.str("ca_file"),
            pool_size=s.integer("pool_size", 64),
            upstream_timeout_s=s.number("upstream_timeout_s", 0.0) or None,
            auth=s.str("auth", "static"),
            aws_region=s.str("aws_region"),
            aws_service=s.str("aws_service"),
            google_credentials_file=s.str("google_credentials_file"),
            google_scopes=s.strings("google_scopes", GOOGLE_DEFAULT_SCOPES),
            token_url=s.str("token_url"),
            client_id=s.str("client_id"),
            client_secret_env=s.str("client_secret_env"),
            client_secret_file=s.str("client_secret_file"),
            scope=s.str("scope"),
        )
        s.read.add("credential_prefix")
        if not isinstance(conn.credential_prefix, str):
            raise s.fail("credential_prefix", "must be a string")
        if conn.credential_env and conn.credential_file:
            raise s.fail("credential_env", "set credential_env or credential_file, not both")
        _auth_keys(s, conn)
        s.done()
        out.append(conn)
    return tuple(out)


def _auth_keys(s: _Section, conn: ConnectionConfig) -> None:
    """Each auth mode takes its own keys, and only those: a key of another mode is a mistake."""
    if conn.auth not in AUTH_KEYS:
        raise s.fail("auth", f"must be one of {', '.join(AUTH_KEYS)}, got {conn.auth!r}")
    for mode, keys in AUTH_KEYS.items():
        if mode == conn.auth:
            continue
        for key in keys:
            if key in s.table and key not in AUTH_KEYS[conn.auth]:
                raise s.fail(key, f"applies only to auth = {mode!r}")
    for key in AUTH_REQUIRED.get(conn.auth, ()):
        if key not in s.table:
            raise s.fail(key, f"is required with auth = {conn.auth!r}")
    if conn.auth == "oauth2_client_credentials":
        if bool(conn.client_secret_env) == bool(conn.client_secret_file):
            raise s.fail(
                "client_secret_env", "set exactly one of client_secret_env, client_secret_file"
            )
        _check_url(s, "token_url", conn.token_url or "")
    if conn.auth == "google" and not conn.google_scopes:
        raise s.fail("google_scopes", "must name at least one scope")


def _check_url(s: _Section, key: str, url: str) -> None:
    """An https URL, or http on loopback only: secrets never cross a network in the clear."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise s.fail(key, "must be an http(s) URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise s.fail(key, "must use https (plain http is allowed only on loopback)")


APPROVAL_KEYS = ("approvers", "min_approvals", "timeout_s", "reason_required")


def _approval_keys(s: _Section, rule: RuleConfig, approvals: bool) -> None:
    if rule.action != "approve":
        for key in APPROVAL_KEYS:
            if key in s.table:
                raise s.fail(key, "applies only to rules with action = 'approve'")
        return
    if not approvals:
        raise s.fail("action", "'approve' needs an [approvals] section (where approvals are kept)")
    if not rule.approvers:
        raise s.fail("approvers", "an 'approve' rule must name the groups that may approve")


def _lower(value: str | None) -> str | None:
    return value.lower() if value else None


def _rules(
    file: Path, raw: Any, connection_names: set[str], approvals: bool
) -> tuple[RuleConfig, ...]:
    if not isinstance(raw, list):
        raise ConfigError(file, "rules", "must be an array of tables ([[rules]])")
    seen: set[str] = set()
    out = []
    for i, table in enumerate(raw):
        s = _Section(file, f"rules[{i}]", table)
        rule = RuleConfig(
            id=s.str("id", required=True),
            action=s.str("action", required=True),
            groups=s.strings("groups"),
            subjects=s.strings("subjects"),
            connections=s.strings("connections"),
            models=s.strings("models"),
            paths=s.strings("paths"),
            methods=tuple(m.upper() for m in s.strings("methods")),
            mask=s.strings("mask"),
            mask_paths=s.strings("mask_paths"),
            mask_style=s.str("mask_style", "tag"),
            mask_request=s.boolean("mask_request", False),
            approvers=s.strings("approvers"),
            min_approvals=s.integer("min_approvals", 1),
            timeout_s=s.number("timeout_s", 1.0, minimum=1.0) if "timeout_s" in table else None,
            reason_required=s.boolean("reason_required", False),
        )
        s.done()
        if rule.id in seen:
            raise s.fail("id", f"duplicate rule id {rule.id!r}")
        seen.add(rule.id)
        if rule.action not in ("allow", "deny", "approve"):
            raise s.fail("action", f"must be allow, deny or approve, got {rule.action!r}")
        _approval_keys(s, rule, approvals)
        if not rule.groups and not rule.subjects:
            raise s.fail("groups", "a rule must name groups or subjects it applies to")
        for name in rule.connections:
            if name not in connection_names:
                raise s.fail("connections", f"no connection named {name!r}")
        if rule.mask_style not in ("tag", "partial", "hash", "redact"):
            raise s.fail("mask_style", "must be tag, partial, hash or redact")
        if (rule.mask_paths or rule.mask_request) and not rule.mask:
            raise s.fail("mask", "mask_paths and mask_request need a mask list")
        out.append(rule)
    return tuple(out)
