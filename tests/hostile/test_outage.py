"""A token endpoint that fails: backoff within the token's life, the last good token
kept, TokenExpired at expiry, and recovery at the next retry once it works again.

Seven kinds of outage run side by side against one operator started with a
1 s read timeout (so a stalled endpoint costs a second per attempt, not ten).
Each ClientCredential gets a good 8 s token; its endpoint then fails in its
own way until Ready turns False, and is mended at that moment. One poller
samples every object ten times a second; each test reads what it saw for one
kind of outage, so the slow part (waiting out token lifetimes) is paid once.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import time
from collections.abc import Iterator

import pytest
from tokenkeeper.status import parse_rfc3339

from devenv.tokenserver import (
    RecordedRequest,
    TokenServer,
    delayed,
    disconnect,
    oauth_error,
    server_error,
)
from tests.cluster import (
    CLIENT_ID,
    CLIENT_SECRET,
    GROUP,
    PLURAL,
    VERSION,
    Cluster,
    basic_spec,
)
from tests.hostile.conftest import StartOperator, wait_condition, wait_ready

LIFETIME = 8
"""Seconds; the default lead refreshes at half-life, leaving 4 s of retries."""


@dataclasses.dataclass(frozen=True)
class Outage:
    kind: str
    reason: str
    says: str
    """A fragment of the condition message that tells a person what happened."""
    answers: bool = True
    """Whether each failed attempt reaches the HTTP server (and is recorded)."""


OUTAGES = [
    Outage("http-500", "ServerError", "HTTP 500"),
    Outage("http-503", "ServerError", "HTTP 503"),
    Outage("oauth-error-500", "ServerError", "HTTP 500"),
    Outage("timeout", "Timeout", "did not answer within"),
    Outage("disconnect", "ConnectionFailed", "could not reach"),
    Outage("refused", "ConnectionFailed", "could not reach", answers=False),
    Outage("tls", "TLSError", "caBundleRef", answers=False),
]


@dataclasses.dataclass(frozen=True)
class Sample:
    at: float
    token: str | None
    ready: tuple[str, str] | None
    refreshed: tuple[str, str, str] | None
    failed_attempts: int
    refresh_at: float | None


@dataclasses.dataclass
class Observed:
    """What the poller saw of one ClientCredential through its outage."""

    good_token: str | None = None
    expires_at: float = 0.0
    broken_at: float = 0.0
    mended_at: float | None = None
    recovered_at: float | None = None
    samples: list[Sample] = dataclasses.field(default_factory=list)
    requests: list[RecordedRequest] = dataclasses.field(default_factory=list)

    def during_outage(self) -> list[Sample]:
        end = self.recovered_at or float("inf")
        return [s for s in self.samples if self.broken_at <= s.at < end]


class Endpoint:
    """A token endpoint for one ClientCredential, broken and mended in one way."""

    def __init__(self, outage: Outage, cluster: Cluster, namespace: str) -> None:
        self.outage = outage
        self.cluster = cluster
        self.namespace = namespace
        self.name = outage.kind
        self.tls = outage.kind == "tls"
        self.servers = [self._serve(0)]

    @property
    def server(self) -> TokenServer:
        return self.servers[-1]

    @property
    def requests(self) -> list[RecordedRequest]:
        return [r for server in self.servers for r in server.requests]

    def create(self) -> None:
        spec = basic_spec(self.server)
        if self.tls:
            self.cluster.core.create_namespaced_config_map(
                self.namespace,
                {
                    "metadata": {"name": "ca"},
                    "data": {"ca.crt": self.server.ca_pem},
                },
            )
            spec["caBundleRef"] = {"name": "ca"}
        self.cluster.create_credential(self.namespace, self.name, spec)

    def break_(self) -> None:
        match self.outage.kind:
            case "http-500" | "http-503":
                self.server.set_default(server_error(int(self.outage.kind[-3:])))
            case "oauth-error-500":
                self.server.set_default(
                    oauth_error("server_error", "database unavailable", status=500)
                )
            case "timeout":
                self.server.set_default(delayed(5))
            case "disconnect":
                self.server.set_default(disconnect())
            case "refused":
                self.server.stop()
            case "tls":
                # The same port now presents a certificate from a CA nobody trusts.
                port = self._port()
                self.server.stop()
                self.servers.append(self._serve(port))

    def mend(self) -> None:
        match self.outage.kind:
            case "refused":
                self.servers.append(self._serve(self._port()))
            case "tls":
                self.cluster.core.patch_namespaced_config_map(
                    "ca", self.namespace, {"data": {"ca.crt": self.server.ca_pem}}
                )
            case _:
                self.server.set_default(None)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def _port(self) -> int:
        return int(self.server.url.rsplit(":", 1)[1])

    def _serve(self, port: int) -> TokenServer:
        server = TokenServer(tls=self.tls, port=port)
        server.add_client(CLIENT_ID, CLIENT_SECRET, lifetime=LIFETIME)
        return server


def _snapshot(cluster: Cluster, namespace: str, at: float) -> dict[str, Sample]:
    secrets = cluster.core.list_namespaced_secret(
        namespace, label_selector="tokenkeeper.dev/secret=access-token"
    ).items
    tokens = {
        s.metadata.name: base64.b64decode(s.data["access_token"]).decode()
        for s in secrets
        if s.data and "access_token" in s.data
    }
    credentials = cluster.custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )["items"]
    samples = {}
    for body in credentials:
        name = body["metadata"]["name"]
        status = body.get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or ()}
        ready = conditions.get("Ready")
        refreshed = conditions.get("Refreshed")
        refresh_at = parse_rfc3339(status.get("refreshAt"))
        samples[name] = Sample(
            at=at,
            token=tokens.get(name),
            ready=(ready["status"], ready["reason"]) if ready else None,
            refreshed=(
                (refreshed["status"], refreshed["reason"], refreshed["message"])
                if refreshed
                else None
            ),
            failed_attempts=int(status.get("failedAttempts") or 0),
            refresh_at=refresh_at.timestamp() if refresh_at else None,
        )
    return samples


def _run_outages(
    cluster: Cluster, namespace: str, endpoints: list[Endpoint], timeout: float
) -> dict[str, Observed]:
    """Drive every endpoint through good, broken, expired and mended; record all."""
    observed = {e.name: Observed() for e in endpoints}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.time()
        snapshot = _snapshot(cluster, namespace, now)
        for endpoint in endpoints:
            seen, sample = observed[endpoint.name], snapshot.get(endpoint.name)
            if sample is None or seen.recovered_at is not None:
                continue
            if seen.good_token is None:
                if sample.ready == ("True", "TokenValid") and sample.token:
                    secret = cluster.secret(namespace, endpoint.name) or {}
                    expires_at = base64.b64decode(secret["data"]["expires_at"])
                    instant = parse_rfc3339(expires_at.decode())
                    assert instant is not None
                    seen.good_token, seen.expires_at = sample.token, instant.timestamp()
                    endpoint.break_()
                    seen.broken_at = time.time()
                continue
            seen.samples.append(sample)
            if seen.mended_at is None and sample.ready == ("False", "TokenExpired"):
                endpoint.mend()
                seen.mended_at = time.time()
            elif (
                seen.mended_at is not None
                and sample.ready == ("True", "TokenValid")
                and sample.token not in (None, seen.good_token)
            ):
                seen.recovered_at = now
        if all(o.recovered_at is not None for o in observed.values()):
            break
        time.sleep(0.1)
    for endpoint in endpoints:
        observed[endpoint.name].requests = endpoint.requests
    return observed


@pytest.fixture(scope="module")
def outage_operator(module_solo_operator: StartOperator) -> None:
    module_solo_operator(
        "--verbose", "--read-timeout=1", "--connect-timeout=1", log_name="outage.log"
    )


@pytest.fixture(scope="module")
def observed(cluster: Cluster, outage_operator: None) -> Iterator[dict[str, Observed]]:
    namespace = f"outage-{time.monotonic_ns() % 10**9}"
    cluster.core.create_namespace({"metadata": {"name": namespace}})
    cluster.create_client_secret(namespace)
    endpoints = [Endpoint(outage, cluster, namespace) for outage in OUTAGES]
    try:
        for endpoint in endpoints:
            endpoint.create()
        yield _run_outages(cluster, namespace, endpoints, timeout=90)
    finally:
        for endpoint in endpoints:
            endpoint.stop()
        cluster.core.delete_namespace(namespace)


def _attempt_times(seen: Observed) -> list[float]:
    return [
        r.time
        for r in seen.requests
        if r.route == "/token" and seen.broken_at <= r.time < seen.expires_at
    ]


def _attempts_before_expiry(outage: Outage, seen: Observed) -> int:
    if outage.answers:
        return len(_attempt_times(seen))
    before = [s.failed_attempts for s in seen.samples if s.at < seen.expires_at]
    return max(before, default=0)


@pytest.mark.parametrize("outage", OUTAGES, ids=lambda o: o.kind)
def test_refresh_fails_with_a_specific_reason_and_the_good_token_stays(
    observed: dict[str, Observed], outage: Outage
) -> None:
    seen = observed[outage.kind]

    outage_samples = seen.during_outage()

    assert seen.good_token, f"{outage.kind} never got its first token"
    assert outage_samples
    assert all(s.token == seen.good_token for s in outage_samples)
    failures = [s.refreshed for s in outage_samples if s.refreshed[0] == "False"]
    assert failures, "Refreshed never turned False"
    assert {f[1] for f in failures} == {outage.reason}
    assert outage.says.lower() in failures[-1][2].lower()
    assert failures[-1][2].endswith(".")


@pytest.mark.parametrize("outage", OUTAGES, ids=lambda o: o.kind)
def test_several_attempts_happen_before_the_token_expires(
    observed: dict[str, Observed], outage: Outage
) -> None:
    seen = observed[outage.kind]

    attempts = _attempts_before_expiry(outage, seen)
    times = _attempt_times(seen)

    print(f"\n{outage.kind}: {attempts} attempts in the token's last 4 s")
    # A stalled endpoint holds each attempt for the 1 s read timeout as well.
    assert attempts >= (2 if outage.kind == "timeout" else 3), attempts
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= 0.9 for gap in gaps), f"retries came too fast: {gaps}"


@pytest.mark.parametrize("outage", OUTAGES, ids=lambda o: o.kind)
def test_ready_turns_false_with_token_expired_only_at_expiry(
    observed: dict[str, Observed], outage: Outage
) -> None:
    seen = observed[outage.kind]

    before = [s for s in seen.during_outage() if s.at < seen.expires_at - 0.5]
    expired = [s for s in seen.samples if s.ready == ("False", "TokenExpired")]

    assert before
    assert all(s.ready == ("True", "TokenValid") for s in before)
    assert expired, "Ready never turned False with TokenExpired"
    assert seen.expires_at - 0.5 <= expired[0].at <= seen.expires_at + 2.5


@pytest.mark.parametrize("outage", OUTAGES, ids=lambda o: o.kind)
def test_a_mended_endpoint_is_used_at_the_next_planned_retry(
    observed: dict[str, Observed], outage: Outage
) -> None:
    seen = observed[outage.kind]
    assert seen.mended_at is not None

    # An attempt a stalled endpoint was holding at the mend still times out
    # (1 s read timeout) and plans the retry that the mend is then used at.
    settle = 1.5 if outage.kind == "timeout" else 0.5
    around_mend = [
        s.refresh_at
        for s in seen.samples
        if seen.mended_at - 1 <= s.at <= seen.mended_at + settle
        and s.refreshed
        and s.refreshed[0] == "False"
        and s.refresh_at
    ]

    assert seen.recovered_at is not None, "never recovered"
    assert around_mend
    after = [
        r for r in seen.requests if r.route == "/token" and r.time > seen.mended_at
    ]
    assert after, "the recovery came without a token request"
    # The status keeps whole seconds, rounded down, so the retry may come 1 s
    # later; a pass reads two Secrets before it asks, slow on a busy machine.
    assert after[0].time <= max(around_mend) + 3.0


def test_tls_without_a_ca_bundle_fails_and_works_once_the_bundle_is_set(
    cluster: Cluster, namespace: str, outage_operator: None
) -> None:
    with TokenServer(tls=True) as server:
        server.add_client(CLIENT_ID, CLIENT_SECRET)
        cluster.create_client_secret(namespace)
        cluster.core.create_namespaced_config_map(
            namespace, {"metadata": {"name": "ca"}, "data": {"ca.crt": server.ca_pem}}
        )
        cluster.create_credential(namespace, "tls", basic_spec(server))

        refused = wait_condition(
            cluster, namespace, "tls", "Refreshed", status="False", reason="TLSError"
        )
        cluster.patch_credential(
            namespace, "tls", {"spec": {"caBundleRef": {"name": "ca"}}}
        )

        wait_ready(cluster, namespace, "tls", timeout=10)
        assert "caBundleRef" in refused["message"]
        assert server.count("/token") == 1
