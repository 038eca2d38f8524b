"""Prometheus metrics, kept in one registry object that is passed in, never a module global.

With `[server] workers = N` the supervisor sets PROMETHEUS_MULTIPROC_DIR before the workers
start: prometheus-client then keeps every value in a per-process file there, and `render` sums
the files of all workers, so whichever worker answers `/_gateway/metrics` reports the whole.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Sub-millisecond buckets matter: the gateway's own overhead is meant to be well under 1 ms.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 1.0)
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self) -> None:
        self._counts: dict[tuple[str, int, str], Counter] = {}
        self._timers: dict[str, tuple[Histogram, Histogram, Histogram]] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests",
            "Requests by connection, status and policy decision",
            ["connection", "status", "decision"],
            registry=r,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Total time from request received to last byte sent",
            ["connection"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_ttfb = Histogram(
            "gateway_upstream_ttfb_seconds",
            "Time from request sent upstream to response head received",
            ["connection"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "Time the gateway itself added (total minus time waiting on the upstream)",
            ["connection"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.open_connections = Gauge(
            "gateway_open_connections",
            "Client connections open now",
            registry=r,
            multiprocess_mode="livesum",  # workers alive now, summed
        )
        self.jwks_refreshes = Counter(
            "gateway_jwks_refreshes", "JWKS fetches by result", ["result"], registry=r
        )
        self.masked = Counter(
            "gateway_masked_entities", "Values masked, by entity type", ["entity"], registry=r
        )
        self.holds_woken = Counter(
            "gateway_approval_holds_woken",
            "Held requests whose approval changed, by what told them: this_process, store, poll",
            ["by"],
            registry=r,
        )
        self.ship_refused = Counter(
            "gateway_audit_ship_refused",
            "Shipments of this log the central audit store (or a witness) refused",
            registry=r,
        )
        self.ship_lag = Gauge(
            "gateway_audit_ship_lag_entries",
            "Entries durable in the local audit log and not yet in the central store",
            registry=r,
            multiprocess_mode="livesum",  # each worker ships its own log: the lags add up
        )
        self.credential_redacted = Counter(
            "gateway_credential_redacted",
            "Echoes of a connection's own credential the upstream sent back, redacted",
            ["connection"],
            registry=r,
        )

    def exchange(
        self,
        connection: str,
        status: int,
        decision: str,
        total: float,
        upstream: tuple[float, float] | None,
    ) -> None:
        """One exchange: its count, duration and, if it reached the upstream, (ttfb, overhead).

        Labelled children are kept per label values: `labels()` validates and locks on every
        call, which the request path would pay four times per exchange.
        """
        key = (connection, status, decision)
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = self.requests.labels(connection, str(status), decision)
        count.inc()
        timers = self._timers.get(connection)
        if timers is None:
            timers = self._timers[connection] = tuple(
                h.labels(connection) for h in (self.duration, self.upstream_ttfb, self.overhead)
            )
        timers[0].observe(total)
        if upstream is not None:
            timers[1].observe(upstream[0])
            timers[2].observe(upstream[1])

    def jwks_refreshes_inc(self, result: str) -> None:
        self.jwks_refreshes.labels(result).inc()

    def holds_woken_inc(self, by: str) -> None:
        self.holds_woken.labels(by).inc()

    def render(self) -> bytes:
        directory = os.environ.get(MULTIPROC_ENV)
        if not directory:
            return generate_latest(self.registry)
        summed = CollectorRegistry()
        MultiProcessCollector(summed, path=directory)
        return generate_latest(summed)
