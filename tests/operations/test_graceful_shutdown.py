"""SIGTERM, as kubelet sends it: running passes finish their writes, within the bound.

The Deployment gives the pod 30 s (terminationGracePeriodSeconds) before
SIGKILL. Token requests in flight when SIGTERM arrives must still end up in
their Secrets and status, and the process must be gone well within 30 s,
even when a request hangs.
"""

from __future__ import annotations

import time

from devenv.tokenserver import RecordedRequest, Reply, TokenServer, delayed
from tests.cluster import Cluster, basic_spec
from tests.operations.conftest import StartOperator

GRACE_PERIOD = 30
OBJECTS = 4


def issuing(seconds: float, issued: list[str]) -> object:
    """A responder that answers each request after ``seconds``, noting the token."""

    def respond(_: RecordedRequest) -> Reply:
        reply = delayed(seconds)
        issued.append(reply.json["access_token"])
        return reply

    return respond


def test_sigterm_during_token_requests_writes_every_token_and_exits_cleanly(
    cluster: Cluster, namespace: str, token_server: TokenServer, solo: StartOperator
) -> None:
    issued: list[str] = []
    token_server.set_default(issuing(3, issued))
    process = solo()
    cluster.create_client_secret(namespace)
    for i in range(OBJECTS):
        cluster.create_credential(namespace, f"c{i}", basic_spec(token_server))
    token_server.wait_for_requests(OBJECTS, timeout=20, path="/token")
    assert not any(cluster.token(namespace, f"c{i}") for i in range(OBJECTS))

    began = time.monotonic()
    code = process.stop(timeout=GRACE_PERIOD)
    took = time.monotonic() - began

    assert code == 0
    assert took < GRACE_PERIOD / 2, f"took {took:.1f} s"
    assert len(issued) == OBJECTS
    stored = {cluster.token(namespace, f"c{i}") for i in range(OBJECTS)}
    assert stored == set(issued)
    for i in range(OBJECTS):
        secret = cluster.secret(namespace, f"c{i}")
        status = cluster.credential(namespace, f"c{i}").get("status") or {}
        assert secret is not None
        annotations = secret["metadata"]["annotations"]
        assert status["expiresAt"] == annotations["tokenkeeper.dev/expires-at"]
        ready = {c["type"]: c["status"] for c in status["conditions"]}
        assert ready == {"Ready": "True", "Refreshed": "True"}
    print(f"graceful shutdown with {OBJECTS} requests in flight: {took:.2f} s")


def test_a_hung_request_does_not_hold_the_exit_past_the_shutdown_timeout(
    cluster: Cluster, namespace: str, token_server: TokenServer, solo: StartOperator
) -> None:
    token_server.set_default(delayed(120))
    process = solo("--read-timeout=300", "--shutdown-timeout=2")
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "hung", basic_spec(token_server))
    token_server.wait_for_requests(1, timeout=20, path="/token")

    began = time.monotonic()
    code = process.stop(timeout=GRACE_PERIOD)
    took = time.monotonic() - began

    assert code == 1
    assert took < 10, f"took {took:.1f} s"
    assert "exiting without them" in process.logs()
    print(f"shutdown with a hung request: {took:.2f} s")
