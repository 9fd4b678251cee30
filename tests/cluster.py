"""Fixtures for tests that run the operator on the real control plane.

The CRD and the operator's ServiceAccount and RBAC come from ``crds/`` and
``manifests/`` as shipped, and the operator runs as that ServiceAccount, so a
permission missing from the manifests fails these tests. Each test gets its
own namespace and its own token server on loopback; one operator process
serves the whole session, and tests that restart or kill it start their own.

``tests/conftest.py`` registers this module once, as a plugin, for every
folder: a session fixture copied into two conftests would start two shared
operators, both serving every namespace.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from devenv.controlplane import ControlPlane
from devenv.runner import OperatorProcess
from devenv.tokenserver import TokenServer

ROOT = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "tokenkeeper.dev", "v1alpha1", "clientcredentials"
CLIENT_ID = "billing-app"
CLIENT_SECRET = "canary-client-secret-7Hq2"
"""Planted in every test; the hygiene tests search all output for it."""

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.1
) -> T:
    """Poll until ``probe`` returns something truthy; fail with what it last saw."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout} s; last seen: {last!r}")


class Cluster:
    """The admin's view of the cluster, for arranging and checking tests."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.api = kubernetes.config.new_client_from_config(str(plane.kubeconfig))
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)

    def kubectl(self, *args: str) -> str:
        return self.plane.kubectl(*args)

    def create_client_secret(
        self,
        namespace: str,
        name: str = "client",
        value: str = CLIENT_SECRET,
        *,
        key: str = "client-secret",
        labelled: bool = True,
    ) -> None:
        labels = {"tokenkeeper.dev/secret": "client-secret"} if labelled else {}
        self.core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": name, "labels": labels},
                "stringData": {key: value},
            },
        )

    def set_client_secret(self, namespace: str, name: str, value: str) -> None:
        self.core.patch_namespaced_secret(
            name, namespace, {"stringData": {"client-secret": value}}
        )

    def create_credential(
        self, namespace: str, name: str, spec: Mapping[str, Any]
    ) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClientCredential",
            "metadata": {"name": name},
            "spec": dict(spec),
        }
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body
        )
        return created

    def credential(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
        return found

    def patch_credential(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, dict(patch)
        )

    def delete_credential(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )

    def condition(self, namespace: str, name: str, type_: str) -> dict[str, Any] | None:
        status = self.credential(namespace, name).get("status") or {}
        for condition in status.get("conditions") or ():
            if condition["type"] == type_:
                found: dict[str, Any] = condition
                return found
        return None

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        found: dict[str, Any] = self.api.sanitize_for_serialization(secret)
        return found

    def token(self, namespace: str, name: str) -> str | None:
        """The access token in a managed Secret, decoded."""
        secret = self.secret(namespace, name)
        value = ((secret or {}).get("data") or {}).get("access_token")
        return base64.b64decode(value).decode() if value else None

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        events = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        )
        found: list[dict[str, Any]] = self.api.sanitize_for_serialization(events.items)
        return found


@pytest.fixture(scope="session")
def cluster(control_plane: ControlPlane) -> Cluster:
    cluster = Cluster(control_plane)
    cluster.kubectl("apply", "-k", str(ROOT / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/clientcredentials.tokenkeeper.dev",
    )
    return cluster


@pytest.fixture(scope="session")
def operator_kubeconfig(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A kubeconfig acting as the operator's ServiceAccount, with the shipped RBAC."""
    manifests = ROOT / "manifests"
    for name in ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml"):
        cluster.kubectl("apply", "-f", str(manifests / name))
    path = tmp_path_factory.mktemp("operator") / "kubeconfig"
    return cluster.plane.serviceaccount_kubeconfig(
        "tokenkeeper-system", "tokenkeeper", path
    )


@pytest.fixture
def start_operator(
    operator_kubeconfig: Path, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start extra operator processes for this test; all are stopped after it."""
    started: list[OperatorProcess] = []

    def start(*args: str, log_name: str = "operator.log") -> OperatorProcess:
        process = OperatorProcess(operator_kubeconfig, tmp_path / log_name, *args)
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def operator(
    operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator shared by most tests, at DEBUG level, as its ServiceAccount."""
    log = tmp_path_factory.mktemp("shared-operator") / "operator.log"
    with OperatorProcess(operator_kubeconfig, log, "--verbose") as process:
        yield process
    text = process.logs()
    assert CLIENT_SECRET not in text
    assert "is forbidden: User" not in text, (
        f"the operator hit an RBAC denial; read {log}"
    )


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.core.create_namespace({"metadata": {"name": name}})
    yield name
    cluster.core.delete_namespace(name)


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    with TokenServer() as server:
        server.add_client(CLIENT_ID, CLIENT_SECRET, lifetime=300)
        yield server


def basic_spec(server: TokenServer, **extra: Any) -> dict[str, Any]:
    return {
        "tokenURL": server.token_url,
        "clientID": CLIENT_ID,
        "clientSecretRef": {"name": "client"},
        **extra,
    }
