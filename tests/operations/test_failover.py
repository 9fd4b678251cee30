"""Two replicas with --peering on the real control plane: one works, one stands by.

While both run, only the senior one requests tokens (every refresh is one
request, never two); when it is killed with SIGKILL, the standby takes over
once the dead replica's keep-alive expires, and no token in any Secret ever
expires meanwhile. The test prints the measured failover time.
"""

from __future__ import annotations

import base64
import itertools
import re
import time
from datetime import UTC, datetime

from tokenkeeper.status import parse_rfc3339

from devenv.runner import OperatorProcess, free_port
from devenv.tokenserver import TokenServer
from tests.cluster import CLIENT_SECRET, Cluster, basic_spec, wait_for
from tests.operations.conftest import StartOperator, sample, scrape

OBJECTS = 3
TOKEN_LIFETIME = 16
"""Refreshed 8 s before expiry: longer than the failover, so none may lapse."""
PEERING_LIFETIME = 4


class Replica:
    def __init__(self, process: OperatorProcess, metrics_port: int) -> None:
        self.process = process
        self.metrics_port = metrics_port

    def active(self) -> bool:
        return sample(scrape(self.metrics_port), "tokenkeeper_active") == 1


def start_replica(solo: StartOperator, peering: str, name: str) -> Replica:
    port = free_port()
    process = solo(
        f"--peering={peering}",
        f"--peering-lifetime={PEERING_LIFETIME}",
        f"--metrics-port={port}",
        log_name=f"{name}.log",
    )
    return Replica(process, port)


def tokens_never_lapse(cluster: Cluster, namespace: str, seconds: float) -> None:
    """Watch every Secret for ``seconds``; fail on the first expired token."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = datetime.now(UTC)
        for i in range(OBJECTS):
            secret = cluster.secret(namespace, f"c{i}")
            assert secret is not None
            expires_at = parse_rfc3339(
                base64.b64decode(secret["data"]["expires_at"]).decode()
            )
            assert expires_at is not None
            assert expires_at > now, f"the token in Secret c{i} expired"
        time.sleep(0.25)


def request_times(server: TokenServer, client: str, since: float) -> list[float]:
    return [
        r.time
        for r in server.requests
        if r.field("client_id") == client and r.time >= since
    ]


def activation_time(process: OperatorProcess) -> float:
    """When the process logged that it became the active replica (Unix time)."""
    match = re.search(
        r"\[(\S+ \S+)\] tokenkeeper\s+\[INFO\s*\] This replica .* is now the active",
        process.logs(),
    )
    assert match, "the replica never said it became active"
    stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return stamp.astimezone().timestamp()


def test_the_standby_takes_over_from_a_killed_replica_without_a_lapse_or_duplicates(
    cluster: Cluster,
    namespace: str,
    token_server: TokenServer,
    solo: StartOperator,
    peering_name: str,
) -> None:
    cluster.create_client_secret(namespace)
    for i in range(OBJECTS):
        token_server.add_client(f"client-{i}", CLIENT_SECRET, lifetime=TOKEN_LIFETIME)
        cluster.create_credential(
            namespace, f"c{i}", basic_spec(token_server, clientID=f"client-{i}")
        )
    senior = start_replica(solo, peering_name, "senior")
    wait_for(lambda: all(cluster.token(namespace, f"c{i}") for i in range(OBJECTS)))
    junior = start_replica(solo, peering_name, "junior")
    both_since = time.time()

    tokens_never_lapse(cluster, namespace, 2 * TOKEN_LIFETIME / 2 + 2)

    assert senior.active()
    assert not junior.active()
    both_until = time.time()
    for i in range(OBJECTS):
        times = request_times(token_server, f"client-{i}", both_since)
        assert len(times) >= 2, f"c{i} was not refreshed while both ran"
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) > TOKEN_LIFETIME / 4, f"duplicate requests for c{i}: {gaps}"

    senior.process.kill()
    killed_at = time.time()
    wait_for(junior.active, timeout=4 * PEERING_LIFETIME, interval=0.1)
    noticed_at = time.time()
    tokens_never_lapse(cluster, namespace, TOKEN_LIFETIME + 2)

    failover = activation_time(junior.process) - killed_at
    print(
        f"failover after SIGKILL: {failover:.2f} s to activation "
        f"(seen by a metrics poll after {noticed_at - killed_at:.2f} s; "
        f"--peering-lifetime={PEERING_LIFETIME})"
    )
    assert 0 < failover <= PEERING_LIFETIME + 3
    for i in range(OBJECTS):
        after = request_times(token_server, f"client-{i}", killed_at)
        assert after, f"the standby never refreshed c{i}"
        gaps = [b - a for a, b in itertools.pairwise(after)]
        assert not gaps or min(gaps) > TOKEN_LIFETIME / 4, f"bursts for c{i}: {gaps}"
        overlap = request_times(token_server, f"client-{i}", both_until)
        assert len(overlap) - len(after) <= 1
    assert CLIENT_SECRET not in junior.process.logs()
