"""The local control plane behaves like a real cluster where tokenkeeper relies on it.

These tests prove what the operator's integration tests take for granted: the API
server is ready and runs the pinned release, kube-controller-manager's garbage
collector and namespace controller run, and a ServiceAccount kubeconfig carries
exactly the RBAC bound to it. The last two prove devenv's own promises: a component
that dies is named with its log, and the CLI leaves no process behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from devenv.controlplane import REPO_ROOT, Binaries, ControlPlane, kube_version
from devenv.process import ComponentFailed

DEADLINE_SECONDS = 60.0


@pytest.fixture(scope="module")
def admin_client(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with config.new_client_from_config(str(control_plane.kubeconfig)) as api_client:
        yield api_client


@pytest.fixture
def core(admin_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(admin_client)


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    name = unique_name("cp-test")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def eventually(
    condition: Callable[[], bool], seconds: float = DEADLINE_SECONDS
) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def is_absent(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def config_map(name: str, **metadata: object) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, **metadata))


def test_api_server_answers_readyz(control_plane: ControlPlane) -> None:
    body = control_plane.kubectl("get", "--raw", "/readyz")

    assert body == "ok"


def test_kubectl_is_the_pinned_release(control_plane: ControlPlane) -> None:
    versions = json.loads(control_plane.kubectl("version", "--client", "-o", "json"))

    assert versions["clientVersion"]["gitVersion"] == kube_version()
    assert versions["clientVersion"]["gitTreeState"] == "clean"


def test_api_server_runs_the_pinned_release(control_plane: ControlPlane) -> None:
    if control_plane.external:
        pytest.skip("an existing cluster runs whatever release its owner chose")

    versions = json.loads(control_plane.kubectl("version", "-o", "json"))

    assert versions["serverVersion"]["gitVersion"] == kube_version()
    assert versions["serverVersion"]["gitTreeState"] == "clean"


def test_garbage_collector_deletes_config_map_whose_owner_was_deleted(
    core: client.CoreV1Api, namespace: str
) -> None:
    owner = core.create_namespaced_config_map(namespace, config_map("owner"))
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core.create_namespaced_config_map(
        namespace, config_map("dependent", owner_references=[reference])
    )

    core.delete_namespaced_config_map("owner", namespace)

    assert eventually(
        lambda: is_absent(
            lambda: core.read_namespaced_config_map("dependent", namespace)
        )
    )


def test_deleting_a_namespace_completes(core: client.CoreV1Api) -> None:
    name = unique_name("cp-delete")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_config_map(name, config_map("content"))

    core.delete_namespace(name)

    assert eventually(lambda: is_absent(lambda: core.read_namespace(name)))


def test_serviceaccount_may_list_secrets_only_once_a_role_binding_grants_it(
    control_plane: ControlPlane,
    admin_client: client.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    client.CoreV1Api(admin_client).create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    path = control_plane.serviceaccount_kubeconfig(
        namespace, "reader", tmp_path / "reader.kubeconfig"
    )

    with config.new_client_from_config(str(path)) as reader_client:
        reader = client.CoreV1Api(reader_client)
        with pytest.raises(ApiException) as denied:
            reader.list_namespaced_secret(namespace)
        assert denied.value.status == 403
        assert f"system:serviceaccount:{namespace}:reader" in denied.value.body

        grant_secret_listing(admin_client, namespace, "reader")

        assert eventually(lambda: can_list_secrets(reader, namespace))


def grant_secret_listing(
    admin_client: client.ApiClient, namespace: str, serviceaccount: str
) -> None:
    rbac = client.RbacAuthorizationV1Api(admin_client)
    rule = client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["list"])
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(metadata=client.V1ObjectMeta(name="list-secrets"), rules=[rule]),
    )
    subject = client.RbacV1Subject(
        kind="ServiceAccount", name=serviceaccount, namespace=namespace
    )
    role = client.V1RoleRef(
        api_group="rbac.authorization.k8s.io", kind="Role", name="list-secrets"
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="list-secrets"),
            role_ref=role,
            subjects=[subject],
        ),
    )


def can_list_secrets(api: client.CoreV1Api, namespace: str) -> bool:
    try:
        api.list_namespaced_secret(namespace)
    except ApiException as error:
        if error.status == 403:
            return False
        raise
    return True


def test_a_component_that_dies_on_start_is_named_with_its_log() -> None:
    binaries = dataclasses.replace(Binaries.find(), etcd=Path("/bin/false"))
    plane = ControlPlane(binaries=binaries)

    with pytest.raises(ComponentFailed) as failed:
        plane.start()

    assert plane.workdir is not None
    log_path = plane.workdir / "logs" / "etcd.log"
    message = str(failed.value)
    assert message.startswith("etcd exited with status 1")
    assert str(log_path) in message
    assert "\n" not in message
    assert log_path.exists()
    assert processes_mentioning(str(plane.workdir)) == []
    shutil.rmtree(plane.workdir)


def test_cli_up_serves_until_interrupted_and_leaves_nothing_behind() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "devenv.controlplane", "up"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as cli:
        try:
            output = read_until(cli, "export KUBECONFIG=", DEADLINE_SECONDS)
            workdir = Path(re.search(r"^logs: (.+)/logs$", output, re.M).group(1))
            running = processes_mentioning(str(workdir))

            cli.send_signal(signal.SIGINT)
            status = cli.wait(DEADLINE_SECONDS)
        finally:
            if cli.poll() is None:
                cli.kill()

    assert len(running) == 3
    assert status == 0
    assert processes_mentioning(str(workdir)) == []
    assert not workdir.exists()


def read_until(process: subprocess.Popen[bytes], marker: str, seconds: float) -> str:
    assert process.stdout is not None
    output = b""
    deadline = time.monotonic() + seconds
    while marker.encode() not in output:
        remaining = deadline - time.monotonic()
        readable, _, _ = select.select([process.stdout], [], [], max(0.0, remaining))
        chunk = os.read(process.stdout.fileno(), 4096) if readable else b""
        if not chunk:
            raise AssertionError(f"no {marker!r} in time; output so far: {output!r}")
        output += chunk
    return output.decode()


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command_line = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in command_line and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found
