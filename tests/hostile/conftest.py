"""Helpers for the hostile suite: failure, bad input, crashes and secret hygiene.

The cluster, namespaces, token servers and the shared operator come from
``tests/cluster.py``. Every operator serves every namespace, so a test that
needs an operator with other flags (short timeouts, no plain http, JSON logs)
or that kills one asks for ``solo_operator``: it stops the shared operator,
starts what the test asks for, and starts the shared one again afterwards.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tokenkeeper.status import parse_rfc3339

from devenv.runner import LOOPBACK_HOSTS, OperatorProcess
from tests.cluster import Cluster

StartOperator = Callable[..., OperatorProcess]


@contextlib.contextmanager
def _shared_operator_paused(
    shared: OperatorProcess, kubeconfig: Path, logs: Path
) -> Iterator[StartOperator]:
    started: list[OperatorProcess] = []

    def start(
        *args: str,
        log_name: str = "operator.log",
        plain_http_hosts: str = LOOPBACK_HOSTS,
    ) -> OperatorProcess:
        process = OperatorProcess(
            kubeconfig, logs / log_name, *args, plain_http_hosts=plain_http_hosts
        )
        started.append(process.start())
        return process

    shared.stop()
    try:
        yield start
    finally:
        for process in started:
            process.stop()
        shared.start()


@pytest.fixture
def solo_operator(
    operator: OperatorProcess, operator_kubeconfig: Path, tmp_path: Path
) -> Iterator[StartOperator]:
    """Start operators of this test's own, with the shared one stopped meanwhile."""
    with _shared_operator_paused(operator, operator_kubeconfig, tmp_path) as start:
        yield start


@pytest.fixture(scope="module")
def module_solo_operator(
    operator: OperatorProcess,
    operator_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StartOperator]:
    """``solo_operator`` for a whole module."""
    logs = tmp_path_factory.mktemp("solo-operator")
    with _shared_operator_paused(operator, operator_kubeconfig, logs) as start:
        yield start


def wait_condition(
    cluster: Cluster,
    namespace: str,
    name: str,
    type_: str,
    *,
    status: str | None = None,
    reason: str | None = None,
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Wait until condition ``type_`` has this status and reason; fail with the last."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        last = cluster.condition(namespace, name, type_)
        if (
            last is not None
            and status in (None, last["status"])
            and reason in (None, last["reason"])
        ):
            return last
        time.sleep(0.1)
    pytest.fail(
        f"{type_} of {namespace}/{name} did not become status={status} "
        f"reason={reason} within {timeout} s; last seen: {last!r}"
    )


def wait_ready(
    cluster: Cluster, namespace: str, name: str, timeout: float = 20.0
) -> str:
    """Wait until ``name`` is Ready; return the token in its Secret."""
    wait_condition(cluster, namespace, name, "Ready", status="True", timeout=timeout)
    token = cluster.token(namespace, name)
    assert token, f"{namespace}/{name} is Ready but its Secret holds no token"
    return token


def request_refresh(cluster: Cluster, namespace: str, name: str, stamp: str) -> None:
    """Ask for a refresh now, as a person would with kubectl annotate."""
    annotation = {"tokenkeeper.dev/refresh-requested-at": stamp}
    cluster.patch_credential(namespace, name, {"metadata": {"annotations": annotation}})


def audit_events(cluster: Cluster, since: float = 0.0) -> list[dict[str, Any]]:
    """The API server's audit events for the operator's ServiceAccount, in order.

    Fails the test when the cluster keeps no audit log we can read (an
    existing cluster, see tests/conftest.py).
    """
    path = cluster.plane.audit_log
    if path is None:
        pytest.fail("this cluster keeps no audit log that the tests can read")
    events = []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        stamp = parse_rfc3339(event["requestReceivedTimestamp"])
        if stamp is not None and stamp.timestamp() >= since:
            events.append(event)
    return events
