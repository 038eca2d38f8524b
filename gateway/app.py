"""The gateway process: assembles the parts, serves, reloads and stops gracefully."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import sys
from pathlib import Path

from gateway import __version__, logs
from gateway import config as config_module
from gateway import headers as hdr
from gateway.approvals import Approvals
from gateway.approvals.api import ApprovalsApi
from gateway.approvals.signin import sign_in_for
from gateway.approvals.store import StoreUnavailable
from gateway.audit import AuditOpenError, KeyFileError
from gateway.audit.central_keys import KeyCopies
from gateway.audit.epochs import EpochLog
from gateway.audit.shipper import Shipper
from gateway.auditing import Auditor
from gateway.config import Config, ConfigError, is_loopback
from gateway.errors import GatewayError
from gateway.headers import Headers
from gateway.identity import TokenVerifier, bearer_token
from gateway.metrics import Metrics
from gateway.ops import PREFIX, AuditReaders, Ops
from gateway.proxy import Proxy
from gateway.runtime import Runtime
from gateway.server import IncomingRequest, ResponseWriter, ServerState, drain, serve
from gateway.tls import ListenerTls
from gateway.workers import WorkerSlot, supervise

log = logging.getLogger("gateway")
# Config attributes a reload cannot swap in, with the section an operator knows them by.
RESTART_ONLY = {
    "server": "server",
    "issuers": "identity",
    "audit": "audit",
    "masking": "masking",
    "approvals": "approvals",
}


class Gateway:
    def __init__(self, config: Config, slot: WorkerSlot | None = None) -> None:
        _check_client_secrets(config)
        self.config = config
        self.slot = slot  # None: the only process; else one of `[server] workers`
        self.metrics = Metrics()
        self.verifier = TokenVerifier(config.issuers, self.metrics.jwks_refreshes_inc)
        self.auditor = Auditor(None)  # opened in start()
        self.approvals = Approvals(  # opened in start()
            config.approvals, self.auditor, on_wake=self.metrics.holds_woken_inc
        )
        self.proxy = Proxy(
            Runtime(config), self.verifier, self.metrics, self.auditor, self.approvals
        )
        self.ops = Ops(
            lambda: self.proxy.runtime,
            lambda: self.verifier.ready,
            self.metrics.render,
            AuditReaders(self.verifier, self.auditor, config.audit),
            ApprovalsApi(self.verifier, self.approvals, sign_in_for(config, self.verifier)),
        )
        self.tls = _listener_tls(config)
        self.state = ServerState(self.handle, config.server)
        self.state.on_open = self.metrics.open_connections.set
        self.state.check_head = self.check_head
        self.server: asyncio.Server | None = None
        self.shipper: Shipper | None = None
        self.stopping = asyncio.Event()
        self.file_stamp = _stamp(config.path)

    async def handle(self, request: IncomingRequest, writer: ResponseWriter) -> None:
        if request.path.startswith(PREFIX):
            try:
                await self.ops.handle(request, writer)
            except GatewayError as exc:
                await writer.send_error(exc)
        else:
            await self.proxy.handle(request, writer)

    async def check_head(self, target: str, headers: Headers) -> None:
        """Before a held-back body (`Expect: 100-continue`): a proxied call needs a valid token.

        The `/_gateway/` endpoints check their callers themselves, some need no token at all.
        """
        if not target.startswith(PREFIX):
            await self.verifier.verify(bearer_token(hdr.get(headers, b"authorization")))

    async def start(self) -> tuple[str, int]:
        """Open the audit log first: nothing is served that could not be recorded."""
        worker = self.slot.index if self.slot else None
        self.auditor.log = (await Auditor.open(self.config.audit, worker)).log
        if not self.auditor.enabled:
            log.warning("no [audit] section: exchanges are NOT recorded in an audit log")
        self.state.on_refused = self.auditor.refused_later
        self._start_shipping()
        await self.auditor.lifecycle("gateway.started", self.config, version=__version__)
        await self._policy_loaded(self.config)
        await self.approvals.open()
        await self.verifier.start()
        if not self.verifier.ready:
            log.warning("no signing keys yet: every call gets 401 until the IdP answers")
        server_config = self.config.server
        port = self.slot.port if self.slot else server_config.port
        tls = self.tls.context if self.tls is not None else None
        self.server = await serve(
            self.state, server_config.host, port, reuse_port=self.slot is not None, tls=tls
        )
        host, port = self.server.sockets[0].getsockname()[:2]
        if tls is None and not is_loopback(server_config.host):
            log.warning(
                "listening on %s without TLS: bearer tokens and prompts cross the network in "
                "cleartext; set [server] tls_cert and tls_key, or front it with a TLS terminator",
                server_config.host,
            )
        log.info("listening", extra={"host": host, "port": port, "config": self.config.path})
        return host, port

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{shown}:{port}"

    def _start_shipping(self) -> None:
        """[audit.central]: ship the log beside serving; its problems are health warnings."""
        audit = self.config.audit
        central = audit.central if audit else None
        writer = self.auditor.writer_directory
        if audit is None or central is None or writer is None:
            return
        keys = None
        if central.keys_store and isinstance(self.auditor.log, EpochLog):
            keys = KeyCopies(central.keys_store, Path(audit.sealing_key), self.auditor.log.origin)
        self.shipper = Shipper(
            writer,
            central.store,
            on_refused=self.metrics.ship_refused.inc,
            on_lag=self.metrics.ship_lag.set,
            interval_s=central.interval_s,
            keys=keys,
        )
        self.shipper.start()
        self.ops.warnings.append(self.shipper.warnings)

    def reload(self) -> bool:
        """Swap in a new policy and connections; a bad file leaves the old ones in force.

        The listener's certificate is loaded again too (SIGHUP after a rotation).
        """
        self.file_stamp = _stamp(self.config.path)
        if self.tls is not None:
            self.tls.reload()
        try:
            new = config_module.load(self.config.path)
            runtime = Runtime(new, previous=self.proxy.runtime)
        except ConfigError as exc:
            log.error("reload refused, previous policy stays in force: %s", exc)
            return False
        changed = [
            section
            for attribute, section in RESTART_ONLY.items()
            if getattr(new, attribute) != getattr(self.config, attribute)
        ]
        if changed:
            log.warning("changes to [%s] take effect only after a restart", "], [".join(changed))
        old, self.proxy.runtime = self.proxy.runtime, runtime
        for pool in runtime.retired_pools(old):
            pool.close()
        log.info("policy loaded", extra={"sha256": new.sha256, "rules": len(new.rules)})
        task = asyncio.get_running_loop().create_task(self._policy_loaded(new))
        self.auditor.background.add(task)
        task.add_done_callback(self.auditor.background.discard)
        self.auditor.maintain_later()
        return True

    async def _policy_loaded(self, config: Config) -> None:
        """CM-3: every policy in force is on the record with its file's SHA-256."""
        try:
            await self.auditor.lifecycle(
                "policy.loaded",
                config,
                rules=[r.id for r in config.rules],
                connections=[c.name for c in config.connections],
            )
        except GatewayError as exc:
            log.error("audit: policy.loaded not recorded: %s", exc.message)

    async def watch_file(self) -> None:
        """Reload when the config file changes on disk (polled: works on every filesystem)."""
        interval = self.config.server.reload_poll_s
        if interval <= 0:
            return
        while not self.stopping.is_set():
            await asyncio.sleep(interval)
            if _stamp(self.config.path) != self.file_stamp:
                self.reload()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await self.start()
        print(f"listening on {self.url}", flush=True)
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        watcher = loop.create_task(self.watch_file())
        await self.stopping.wait()
        watcher.cancel()
        await self.stop()

    async def stop(self) -> None:
        log.info("draining", extra={"grace_s": self.config.server.drain_timeout_s})
        if self.server is not None:
            await drain(self.server, self.state, self.config.server.drain_timeout_s)
        for pool in self.proxy.runtime.pools():
            pool.close()
        await self.verifier.close()
        await self.approvals.close()
        self.proxy.access_log.flush()  # the drained exchanges' lines
        try:
            await self.auditor.lifecycle("gateway.stopped", self.config)
        except GatewayError as exc:
            log.error("audit: gateway.stopped not recorded: %s", exc.message)
        await self.auditor.close()
        if self.shipper is not None:
            await self.shipper.close()  # after gateway.stopped, so that is shipped too
        log.info("stopped")


def _listener_tls(config: Config) -> ListenerTls | None:
    """The listener's TLS context; unreadable or mismatched files refuse the config."""
    if not config.server.tls:
        return None
    try:
        return ListenerTls(config.server)
    except (OSError, ssl.SSLError) as exc:
        problem = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(config.path, "server.tls_cert", f"cannot load: {problem}") from None


def _check_client_secrets(config: Config) -> None:
    """Client secrets (introspection, the approvals page) are read at start: a missing one
    stops it here, not at a caller's first token."""
    wanted = [
        (f"identity.issuers[{i.name}].introspection_client_secret_env", env)
        for i in config.issuers
        if i.introspection and (env := i.introspection_client_secret_env)
    ]
    if config.approvals is not None and config.approvals.client_secret_env:
        wanted.append(("approvals.client_secret_env", config.approvals.client_secret_env))
    for key, env in wanted:
        if not os.environ.get(env):
            raise ConfigError(config.path, key, f"environment variable {env} is unset")


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def run(config_path: Path) -> int:
    """`gateway serve`: exit 2 with file, key and problem if the config is bad."""
    import uvloop

    logs.configure()
    # A file size limit must surface as a write error (and a 503), not kill the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        config = config_module.load(config_path)
        slot = WorkerSlot.from_env()
        if slot is None and config.server.workers > 1:
            return supervise(config)
        gateway = Gateway(config, slot)
    except ConfigError as exc:
        print(f"gateway: bad config: {exc}", file=sys.stderr)
        return 2
    try:
        uvloop.run(gateway.run())
    except (AuditOpenError, KeyFileError, GatewayError) as exc:
        print(f"gateway: cannot open the audit log: {exc}", file=sys.stderr)
        return 3
    except StoreUnavailable as exc:
        print(f"gateway: cannot open the approval store: {exc}", file=sys.stderr)
        return 3
    return 0
