"""The liveness endpoint fails when the operator is alive but stuck, and recovers.

The API server is frozen with SIGSTOP: every worker thread then hangs in an
API call that never returns (the wedged pool a restart would clear), while
the process and kopf's probe server run on. The unit tests in
tests/unit/test_health.py cover each failure mode's logic; this one proves the
verdict reaches the real endpoint.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from devenv.tokenserver import TokenServer
from tests.cluster import CLIENT_ID, CLIENT_SECRET, Cluster, basic_spec, wait_for
from tests.operations.conftest import StartOperator


def test_a_frozen_api_server_wedges_the_passes_and_fails_the_liveness_probe(
    cluster: Cluster, namespace: str, token_server: TokenServer, solo: StartOperator
) -> None:
    if cluster.plane.external:
        pytest.skip("freezes the API server, which only the local plane allows")
    token_server.add_client(CLIENT_ID, CLIENT_SECRET, lifetime=3)
    process = solo("--stall-timeout=3")
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "short", basic_spec(token_server))
    wait_for(lambda: cluster.token(namespace, "short"))
    assert process.healthy()
    apiserver = cluster.plane.pids["kube-apiserver"]

    os.kill(apiserver, signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        wait_for(lambda: not process.healthy(), timeout=40, interval=0.5)
        failed_after = time.monotonic() - frozen_at
    finally:
        os.kill(apiserver, signal.SIGCONT)

    wait_for(process.healthy, timeout=60, interval=0.5)
    # Three seconds of stall limit, plus kopf's 10 s cache of a healthy answer.
    assert failed_after < 20
    assert "worker pool is wedged" in process.logs()
