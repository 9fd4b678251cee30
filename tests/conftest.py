"""Fixtures shared by every test folder.

`control_plane` is one real Kubernetes control plane for the whole session (see
devenv.controlplane). Set TOKENKEEPER_TEST_KUBECONFIG to the path of a kubeconfig
to run the same tests against that existing cluster instead of starting one.
The plane keeps an audit log of the operator's ServiceAccount's requests, which
tests/hostile reads to prove which Secrets the operator touches.

`tests/cluster.py` (the shared operator, namespaces, token servers) is loaded
here as a plugin, so its session fixtures exist once however many folders run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devenv.controlplane import ControlPlane

pytest_plugins = ("tests.cluster",)

OPERATOR_USER = "system:serviceaccount:tokenkeeper-system:tokenkeeper"


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """A running control plane; fails (never skips) if its binaries are missing."""
    existing = os.environ.get("TOKENKEEPER_TEST_KUBECONFIG")
    if existing:
        yield ControlPlane.existing(existing)
        return
    with ControlPlane(audit_users=(OPERATOR_USER,)) as plane:
        yield plane


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a hidden failure: the servers it needs must be there."""
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped:
        reporter.write_line(f"CI: {skipped} test(s) skipped; failing the run")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
