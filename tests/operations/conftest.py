"""Helpers for running the operator as production does: metrics, probes, HA, shutdown.

These tests start operators with flags of their own, kill them, pause the API
server or run two replicas at once, so each gets ``solo``: the shared operator
(which serves every namespace) is stopped for the test and started again after.
"""

from __future__ import annotations

import re
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devenv.runner import LOOPBACK_HOSTS, OperatorProcess
from tests.cluster import Cluster

StartOperator = Callable[..., OperatorProcess]


@pytest.fixture
def solo(
    operator: OperatorProcess, operator_kubeconfig: Path, tmp_path: Path
) -> Iterator[StartOperator]:
    """Start operators of this test's own, with the shared one stopped meanwhile."""
    started: list[OperatorProcess] = []

    def start(*args: str, log_name: str = "operator.log") -> OperatorProcess:
        process = OperatorProcess(
            operator_kubeconfig,
            tmp_path / log_name,
            *args,
            plain_http_hosts=LOOPBACK_HOSTS,
        )
        started.append(process.start())
        return process

    operator.stop()
    try:
        yield start
    finally:
        for process in started:
            process.stop()
        operator.start()


@pytest.fixture
def peering_name(cluster: Cluster) -> Iterator[str]:
    """A peering object of this test's own, deleted after it."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    cluster.kubectl("delete", "clusterkopfpeering", name, "--ignore-not-found")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def sample(text: str, metric: str, **labels: str) -> float | None:
    """The value of one series in Prometheus text format, or None if absent."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != metric:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None
