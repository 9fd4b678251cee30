"""Prometheus metrics: whether tokens stay fresh, seen from outside the cluster API.

This module owns every metric object and the registry they live in, and serves
them over HTTP (``tokenkeeper run --metrics-port``). The core reports through
the ``observer.Observer`` interface, which ``Metrics`` implements, so reconcile
and keeper carry one call per fact and no Prometheus import.

Per-object series (labels ``namespace``, ``name``) mirror the status each pass
leaves behind, and are removed when the object is deleted or when this replica
stands by, so a standby never exports stale expiries that alerts would fire on.
Label values are Kubernetes names, reasons from ``reasons`` and endpoint host
names; never a token, a client secret, a URL path or a query.
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from tokenkeeper import reasons
from tokenkeeper.endpoint import TokenError
from tokenkeeper.observer import Observer
from tokenkeeper.spec import Spec
from tokenkeeper.status import condition_of, parse_rfc3339

SUCCESS, FAILURE, ERROR = "success", "failure", "error"
"""``result`` label values: a token issued, a TokenError, an unexpected exception."""
"""``reason`` for an unexpected exception: a bug, also logged with a traceback."""

_OBJECT = ("namespace", "name")


class Metrics(Observer):
    """Every metric tokenkeeper exports, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        prometheus_client.ProcessCollector(registry=self.registry)
        prometheus_client.PlatformCollector(registry=self.registry)
        prometheus_client.GCCollector(registry=self.registry)
        r = self.registry

        self.expiry = Gauge(
            "tokenkeeper_token_expiry_timestamp_seconds",
            "When the token in the managed Secret expires (Unix time).",
            _OBJECT,
            registry=r,
        )
        self.next_refresh = Gauge(
            "tokenkeeper_token_next_refresh_timestamp_seconds",
            "When the next token request is planned, or the next retry (Unix time).",
            _OBJECT,
            registry=r,
        )
        self.ready = Gauge(
            "tokenkeeper_ready",
            "1 when the Ready condition is True (the Secret holds a valid token).",
            _OBJECT,
            registry=r,
        )
        self.failures = Gauge(
            "tokenkeeper_refresh_failures",
            "Failed token requests in a row since the last success.",
            _OBJECT,
            registry=r,
        )
        self.requests = Counter(
            "tokenkeeper_token_requests",
            "Token requests by result (success, failure, error) and reason.",
            ("result", "reason"),
            registry=r,
        )
        self.duration = Histogram(
            "tokenkeeper_token_request_duration_seconds",
            "Time to obtain a token (OIDC discovery included), by endpoint host.",
            ("host",),
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.lag = Histogram(
            "tokenkeeper_refresh_lag_seconds",
            "How late a routine refresh started after its planned instant.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.objects = Gauge(
            "tokenkeeper_managed_objects",
            "ClientCredentials this replica serves (0 on a standby).",
            registry=r,
        )
        self.active = Gauge(
            "tokenkeeper_active",
            "1 on the replica that refreshes tokens; 0 on a standby.",
            registry=r,
        )

    def watch(
        self, *, objects: Callable[[], float], active: Callable[[], float]
    ) -> None:
        """Read the object count and the active flag from the keeper at scrape time."""
        self.objects.set_function(objects)
        self.active.set_function(active)

    def serve(self, port: int, address: str = "0.0.0.0") -> None:  # noqa: S104
        """Serve ``/metrics`` from a daemon thread of this process."""
        prometheus_client.start_http_server(port, address, registry=self.registry)

    # Observer.

    @contextlib.contextmanager
    def token_request(
        self, spec: Spec, scheduled_at: datetime | None, now: datetime
    ) -> Iterator[None]:
        if scheduled_at is not None:
            self.lag.observe(max((now - scheduled_at).total_seconds(), 0.0))
        host = endpoint_host(spec.token_url or spec.issuer_url or "")
        started = time.monotonic()
        try:
            yield
        except TokenError as e:
            self.requests.labels(FAILURE, e.reason).inc()
            raise
        except Exception:
            self.requests.labels(ERROR, reasons.INTERNAL_ERROR).inc()
            raise
        else:
            self.requests.labels(SUCCESS, reasons.TOKEN_ISSUED).inc()
        finally:
            self.duration.labels(host).observe(time.monotonic() - started)

    def reported(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        expires_at = parse_rfc3339(status.get("expiresAt"))
        refresh_at = parse_rfc3339(status.get("refreshAt"))
        ready = condition_of(status, reasons.READY)

        if expires_at is not None:
            self.expiry.labels(namespace, name).set(expires_at.timestamp())
        else:
            _remove(self.expiry, namespace, name)
        if refresh_at is not None:
            self.next_refresh.labels(namespace, name).set(refresh_at.timestamp())
        self.ready.labels(namespace, name).set(
            1 if ready and ready.get("status") == "True" else 0
        )
        self.failures.labels(namespace, name).set(
            int(status.get("failedAttempts") or 0)
        )

    def forget(self, namespace: str, name: str) -> None:
        for gauge in (self.expiry, self.next_refresh, self.ready, self.failures):
            _remove(gauge, namespace, name)


def endpoint_host(url: str) -> str:
    """``host`` or ``host:port`` of a URL: never its user info, path or query."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "unknown"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def _remove(gauge: Gauge, namespace: str, name: str) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(namespace, name)
