"""A real Kubernetes control plane on loopback, for tests, the demo and benchmarks.

Owns starting and stopping etcd, kube-apiserver and kube-controller-manager from
locally built binaries (see hack/build-controlplane.sh), envtest style: free random
ports on 127.0.0.1, a private temporary directory for PKI, etcd data and logs, and
an admin kubeconfig. Unlike envtest it runs the controller manager too, with the
garbage-collector and namespace controllers, because tokenkeeper's Secrets are
cleaned up through ownerReferences and its tests delete namespaces.

The API server authorizes with RBAC only, so tests can run the operator as a
ServiceAccount (`serviceaccount_kubeconfig`) and prove that manifests/ grant
exactly enough. With `audit_users` the API server also writes an audit log of
those users' requests (metadata only, never a body), so tests can prove which
Secrets the operator touched. `ControlPlane.existing()` wraps a cluster someone
else runs behind the same attributes, for running the same tests against it.

    with ControlPlane() as plane:
        plane.kubectl("get", "namespaces")  # or KUBECONFIG=plane.kubeconfig

Command line: `python -m devenv.controlplane up [--kubeconfig-out PATH]` runs a
plane until Ctrl-C or SIGTERM; `python -m devenv.controlplane build` builds the
binaries.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from devenv import kubeconfig, pki
from devenv.kubeconfig import Cluster
from devenv.process import (
    Component,
    ComponentFailed,
    PortClash,
    interruptible,
    stop_all,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-controlplane.sh"
KUBE_BIN_ENV = "TOKENKEEPER_KUBE_BIN"
ETCD_BIN_ENV = "TOKENKEEPER_ETCD_BIN"
CACHE_ENV = "TOKENKEEPER_CACHE"

LOOPBACK = "127.0.0.1"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
)
PORT_ATTEMPTS = 3
POLL_SECONDS = 0.1
PROBE_TIMEOUT_SECONDS = 2.0

_T = TypeVar("_T")


class ControlPlaneError(RuntimeError):
    """The plane cannot be built, found or started; the message says what to do."""


class BinariesMissing(ControlPlaneError):
    """The control plane binaries are not where devenv looks for them."""


class KubectlFailed(subprocess.CalledProcessError):
    """kubectl exited non-zero; unlike its base class, the message shows stderr."""

    def __str__(self) -> str:
        command = " ".join(str(arg) for arg in self.cmd[1:])
        return f"kubectl {command} exited {self.returncode}: {self.stderr.strip()}"


def kube_version() -> str:
    """The Kubernetes release the plane runs, as pinned in hack/kube/go.mod."""
    return _required_version("kube", "k8s.io/kubernetes")


def etcd_version() -> str:
    """The etcd release the plane runs, as pinned in hack/etcd/go.mod."""
    return _required_version("etcd", "go.etcd.io/etcd/server/v3")


def cache_bin_dir() -> Path:
    return _cache_dir() / "bin"


@dataclass(frozen=True)
class Binaries:
    """Paths of the four executables a plane runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path

    @classmethod
    def find(cls) -> Binaries:
        """Look in $TOKENKEEPER_KUBE_BIN and $TOKENKEEPER_ETCD_BIN, else the cache."""
        kube_dir = _bin_dir(KUBE_BIN_ENV, f"kube-{kube_version()}")
        etcd_dir = _bin_dir(ETCD_BIN_ENV, f"etcd-{etcd_version()}")
        return cls(
            etcd=_executable(etcd_dir / "etcd", ETCD_BIN_ENV),
            kube_apiserver=_executable(kube_dir / "kube-apiserver", KUBE_BIN_ENV),
            kube_controller_manager=_executable(
                kube_dir / "kube-controller-manager", KUBE_BIN_ENV
            ),
            kubectl=_executable(kube_dir / "kubectl", KUBE_BIN_ENV),
        )


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int

    @classmethod
    def free(cls) -> Ports:
        """Four distinct ports the kernel just called free on loopback.

        A port can be taken between this call and the component's bind; start()
        detects that (PortClash) and retries with new ports.
        """
        sockets = [socket.socket() for _ in range(4)]
        try:
            for sock in sockets:
                sock.bind((LOOPBACK, 0))
            return cls(*(sock.getsockname()[1] for sock in sockets))
        finally:
            for sock in sockets:
                sock.close()


class ControlPlane:
    """etcd, kube-apiserver and kube-controller-manager running on loopback.

    Use as a context manager, or call start() and stop(). After start():
    `kubeconfig` is an admin (system:masters) kubeconfig, `server` the API URL,
    `ca_file` the CA bundle that verifies the server, `workdir` the temporary
    directory holding PKI, etcd data and the components' logs (logs/<name>.log).
    """

    def __init__(
        self,
        *,
        binaries: Binaries | None = None,
        workdir_parent: Path | None = None,
        keep_workdir: bool = False,
        ready_timeout: float = 90.0,
        stop_grace: float = 10.0,
        audit_users: Sequence[str] = (),
    ) -> None:
        self._binaries = binaries
        self.audit_users = tuple(audit_users)
        self._workdir_parent = workdir_parent
        self.keep_workdir = keep_workdir
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self.external = False
        self.workdir: Path | None = None
        self._kubeconfig: Path | None = None
        self._server: str | None = None
        self._ca_file: Path | None = None
        self._components: list[Component] = []
        self._kubectl: Path | None = None
        self._probe_context: ssl.SSLContext | None = None

    @classmethod
    def existing(cls, kubeconfig_path: Path | str) -> ControlPlane:
        """A cluster someone else runs, behind the same attributes.

        start() and stop() leave the cluster alone.

        kubectl comes from the usual binary locations, else from PATH.
        """
        plane = cls()
        plane.external = True
        plane._kubeconfig = Path(kubeconfig_path).resolve()
        cluster = kubeconfig.current_cluster(plane._kubeconfig)
        plane._server = cluster["server"]
        plane._ca_file = plane._materialize_ca(cluster)
        return plane

    @property
    def kubeconfig(self) -> Path:
        return self._started(self._kubeconfig)

    @property
    def server(self) -> str:
        return self._started(self._server)

    @property
    def ca_file(self) -> Path | None:
        """The CA bundle for `server`; None only for an existing cluster without one."""
        if not self.external:
            return self._started(self._ca_file)
        return self._ca_file

    @property
    def audit_log(self) -> Path | None:
        """JSON lines, one per request by `audit_users` (metadata only); else None."""
        if self.external or not self.audit_users:
            return None
        return self._path("logs", "audit.log")

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the running components, by name."""
        return {c.name: c.pid for c in self._components if c.pid is not None}

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start every component and return once the API server is ready.

        Raises ComponentFailed naming the component and its log file if one exits
        or is not ready within `ready_timeout`; the workdir is then kept so that the
        log can be read.
        """
        if self.external or self._components:
            return self
        binaries = self._binaries or Binaries.find()
        self._kubectl = binaries.kubectl
        self.workdir = Path(
            tempfile.mkdtemp(prefix="tokenkeeper-plane-", dir=self._workdir_parent)
        )
        atexit.register(self.stop)
        try:
            self._write_pki()
            self._launch_until_ready(binaries)
        except ComponentFailed:
            self.keep_workdir = True
            self.stop()
            raise
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every component, then remove the workdir unless asked to keep it."""
        if self.external:
            return
        atexit.unregister(self.stop)
        stop_all(reversed(self._components), self.stop_grace)
        self._components = []
        if self.workdir is not None and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kubectl(self, *args: str, kubeconfig_path: Path | None = None) -> str:
        """Run kubectl against this plane and return its stdout; raise on failure."""
        result = subprocess.run(
            [str(self._kubectl_path()), *args],
            env={**os.environ, "KUBECONFIG": str(kubeconfig_path or self.kubeconfig)},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise KubectlFailed(
                result.returncode, result.args, result.stdout, result.stderr
            )
        return result.stdout

    def serviceaccount_kubeconfig(
        self,
        namespace: str,
        name: str,
        path: Path,
        *,
        expiration_seconds: int = 3600,
    ) -> Path:
        """Write a kubeconfig that acts as ServiceAccount `namespace/name`.

        The token comes from the TokenRequest API, so it carries exactly the RBAC
        bound to that ServiceAccount; the ServiceAccount must exist.
        """
        from kubernetes import client, config

        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[], expiration_seconds=expiration_seconds
            )
        )
        with config.new_client_from_config(str(self.kubeconfig)) as api_client:
            response = client.CoreV1Api(
                api_client
            ).create_namespaced_service_account_token(name, namespace, request)
        if response.status is None or not response.status.token:
            raise ControlPlaneError(
                f"TokenRequest for ServiceAccount {namespace}/{name} gave no token"
            )
        cluster = kubeconfig.current_cluster(self.kubeconfig)
        user = kubeconfig.token_user(response.status.token)
        return kubeconfig.write(
            Path(path), name=f"{namespace}-{name}", cluster=cluster, user=user
        )

    def _launch_until_ready(self, binaries: Binaries) -> None:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._launch(binaries, Ports.free())
                return
            except PortClash:
                if attempt == PORT_ATTEMPTS:
                    raise
                stop_all(reversed(self._components), self.stop_grace)
                self._components = []
                self._reset_run_state()

    def _launch(self, binaries: Binaries, ports: Ports) -> None:
        deadline = time.monotonic() + self.ready_timeout
        self._server = f"https://{LOOPBACK}:{ports.apiserver}"
        self._write_kubeconfigs()
        self._component("etcd", self._etcd_argv(binaries.etcd, ports))
        apiserver = self._component(
            "kube-apiserver", self._apiserver_argv(binaries.kube_apiserver, ports)
        )
        # The controller manager gives up if the API server is not healthy soon after
        # it starts, so it waits for /healthz; /readyz comes a little later.
        self._wait(
            apiserver, lambda: self._probe(ports.apiserver, "/healthz"), deadline
        )
        manager = self._component(
            "kube-controller-manager",
            self._controller_manager_argv(binaries.kube_controller_manager, ports),
        )
        self._wait(apiserver, lambda: self._probe(ports.apiserver, "/readyz"), deadline)
        self._wait(
            manager, lambda: self._probe(ports.controller_manager, "/healthz"), deadline
        )

    def _component(self, name: str, argv: list[str]) -> Component:
        component = Component(name, self._path("logs", f"{name}.log"))
        self._components.append(component)
        component.launch(argv)
        return component

    def _wait(
        self, component: Component, probe: Callable[[], bool], deadline: float
    ) -> None:
        while True:
            for running in self._components:
                running.check_running()
            if probe():
                return
            if time.monotonic() > deadline:
                raise ComponentFailed(
                    component, f"was not ready within {self.ready_timeout:.0f}s"
                )
            time.sleep(POLL_SECONDS)

    def _probe(self, port: int, path: str) -> bool:
        assert self._probe_context is not None
        connection = http.client.HTTPSConnection(
            LOOPBACK, port, context=self._probe_context, timeout=PROBE_TIMEOUT_SECONDS
        )
        try:
            connection.request("GET", path)
            return connection.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self._path("pki", "ca.crt")))
        context.load_cert_chain(
            self._path("pki", "admin.crt"), self._path("pki", "admin.key")
        )
        return context

    def _write_pki(self) -> None:
        directory = self._path("pki")
        directory.mkdir(mode=0o700)
        self._path("logs").mkdir()
        authority = pki.Authority("tokenkeeper-devenv-ca")
        (directory / "ca.crt").write_bytes(authority.cert_pem)
        authority.issue_serving("loopback").write(directory, "serving")
        authority.issue_client("kube-apiserver-etcd-client").write(
            directory, "etcd-client"
        )
        authority.issue_client("tokenkeeper-admin", ("system:masters",)).write(
            directory, "admin"
        )
        # The controller manager runs every controller under its own identity
        # (--use-service-account-credentials=false), which then needs every verb.
        authority.issue_client(
            "system:kube-controller-manager", ("system:masters",)
        ).write(directory, "controller-manager")
        signing = pki.new_signing_key_pair()
        pki.write_private(directory / "sa.key", signing.private_pem)
        (directory / "sa.pub").write_bytes(signing.public_pem)
        self._ca_file = directory / "ca.crt"
        self._probe_context = self._tls_context()

    def _write_kubeconfigs(self) -> None:
        cluster = kubeconfig.cluster_entry(self.server, self._read("ca.crt"))
        for stem, name in (
            ("admin", "tokenkeeper-devenv"),
            ("controller-manager", "controller-manager"),
        ):
            user = kubeconfig.client_certificate_user(
                self._read(f"{stem}.crt"), self._read(f"{stem}.key")
            )
            kubeconfig.write(
                self._path(f"{stem}.kubeconfig"), name=name, cluster=cluster, user=user
            )
        self._kubeconfig = self._path("admin.kubeconfig")

    def _reset_run_state(self) -> None:
        shutil.rmtree(self._path("etcd"), ignore_errors=True)
        for log in self._path("logs").iterdir():
            log.unlink()

    def _etcd_argv(self, etcd: Path, ports: Ports) -> list[str]:
        client_url = f"https://{LOOPBACK}:{ports.etcd_client}"
        peer_url = f"https://{LOOPBACK}:{ports.etcd_peer}"
        tls = self._tls_flags("--cert-file", "--key-file", "serving")
        peer_tls = self._tls_flags("--peer-cert-file", "--peer-key-file", "serving")
        return [
            str(etcd),
            "--name=devenv",
            f"--data-dir={self._path('etcd')}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=devenv={peer_url}",
            *tls,
            "--client-cert-auth=true",
            f"--trusted-ca-file={self._path('pki', 'ca.crt')}",
            *peer_tls,
            # The data is thrown away with the plane: durability buys nothing here.
            "--unsafe-no-fsync=true",
        ]

    def _apiserver_argv(self, apiserver: Path, ports: Ports) -> list[str]:
        return [
            str(apiserver),
            f"--advertise-address={LOOPBACK}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={ports.apiserver}",
            f"--etcd-servers=https://{LOOPBACK}:{ports.etcd_client}",
            f"--etcd-cafile={self._path('pki', 'ca.crt')}",
            *self._tls_flags("--etcd-certfile", "--etcd-keyfile", "etcd-client"),
            *self._tls_flags("--tls-cert-file", "--tls-private-key-file", "serving"),
            f"--cert-dir={self._path('apiserver')}",
            f"--client-ca-file={self._path('pki', 'ca.crt')}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={self._path('pki', 'sa.pub')}",
            f"--service-account-signing-key-file={self._path('pki', 'sa.key')}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # The `kubernetes` Service's Endpoints may not hold a loopback address;
            # nothing in a plane without nodes routes to it anyway.
            "--endpoint-reconciler-type=none",
            *self._audit_flags(),
        ]

    def _audit_flags(self) -> list[str]:
        """Audit only the listed users, at Metadata level: never a request body."""
        if not self.audit_users:
            return []
        policy = self._path("audit-policy.yaml")
        users = ", ".join(json.dumps(user) for user in self.audit_users)
        policy.write_text(
            "apiVersion: audit.k8s.io/v1\n"
            "kind: Policy\n"
            "omitStages: [RequestReceived]\n"
            "rules:\n"
            f"  - level: Metadata\n    users: [{users}]\n"
            "  - level: None\n"
        )
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self._path('logs', 'audit.log')}",
            "--audit-log-format=json",
        ]

    def _controller_manager_argv(self, manager: Path, ports: Ports) -> list[str]:
        return [
            str(manager),
            f"--kubeconfig={self._path('controller-manager.kubeconfig')}",
            f"--controllers={','.join(CONTROLLERS)}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            f"--service-account-private-key-file={self._path('pki', 'sa.key')}",
            f"--root-ca-file={self._path('pki', 'ca.crt')}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={ports.controller_manager}",
            *self._tls_flags("--tls-cert-file", "--tls-private-key-file", "serving"),
        ]

    def _tls_flags(self, cert_flag: str, key_flag: str, stem: str) -> list[str]:
        return [
            f"{cert_flag}={self._path('pki', f'{stem}.crt')}",
            f"{key_flag}={self._path('pki', f'{stem}.key')}",
        ]

    def _path(self, *parts: str) -> Path:
        assert self.workdir is not None, "the plane has no workdir before start()"
        return self.workdir.joinpath(*parts)

    def _read(self, name: str) -> bytes:
        return self._path("pki", name).read_bytes()

    def _kubectl_path(self) -> Path:
        if self._kubectl is not None:
            return self._kubectl
        try:
            self._kubectl = Binaries.find().kubectl
        except BinariesMissing:
            on_path = shutil.which("kubectl")
            if on_path is None:
                raise
            self._kubectl = Path(on_path)
        return self._kubectl

    def _materialize_ca(self, cluster: Cluster) -> Path | None:
        if "certificate-authority" in cluster:
            return Path(cluster["certificate-authority"])
        ca_pem = kubeconfig.cluster_ca_pem(cluster)
        if ca_pem is None:
            return None
        # Named by content in the user's own cache, so nothing needs cleaning up and
        # no other user can plant a CA there.
        ca_file = _cache_dir() / "ca" / f"{hashlib.sha256(ca_pem).hexdigest()[:16]}.crt"
        if not ca_file.exists() or ca_file.read_bytes() != ca_pem:
            ca_file.parent.mkdir(parents=True, exist_ok=True)
            partial = ca_file.with_suffix(f".{os.getpid()}.partial")
            partial.write_bytes(ca_pem)
            partial.replace(ca_file)
        return ca_file

    def _started(self, value: _T | None) -> _T:
        if value is None:
            raise ControlPlaneError("the control plane is not started; call start()")
        return value


def _cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tokenkeeper")


def _required_version(module_dir: str, module: str) -> str:
    go_mod = REPO_ROOT / "hack" / module_dir / "go.mod"
    match = re.search(
        rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", go_mod.read_text(), re.M
    )
    if match is None:
        raise ControlPlaneError(f"{go_mod} does not require {module}")
    return match.group(1)


def _bin_dir(env_var: str, cache_name: str) -> Path:
    return Path(os.environ.get(env_var) or cache_bin_dir() / cache_name)


def _executable(path: Path, env_var: str) -> Path:
    if os.access(path, os.X_OK):
        return path
    raise BinariesMissing(
        f"{path.name} is not at {path}; run `make controlplane` to build the control "
        f"plane binaries (or point ${env_var} at a directory holding them)"
    )


class _StopRequested(Exception):
    """Raised by the CLI's signal handler to leave the wait and stop the plane."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devenv.controlplane",
        description="Run or build tokenkeeper's local Kubernetes control plane.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a plane and run it until Ctrl-C")
    up.add_argument(
        "--kubeconfig-out", type=Path, help="also write the admin kubeconfig here"
    )
    up.add_argument(
        "--keep-workdir", action="store_true", help="keep PKI, data and logs on stop"
    )
    commands.add_parser("build", help="build or reuse the binaries (slow only once)")
    args = parser.parse_args(argv)

    if args.command == "build":
        return subprocess.call([str(BUILD_SCRIPT)])
    return _up(args.kubeconfig_out, args.keep_workdir)


def _up(kubeconfig_out: Path | None, keep_workdir: bool) -> int:
    interruptible()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _request_stop)
    plane = ControlPlane(keep_workdir=keep_workdir)
    atexit.register(plane.stop)
    try:
        _serve(plane, kubeconfig_out)
    except (KeyboardInterrupt, _StopRequested):
        pass
    except (ControlPlaneError, ComponentFailed) as error:
        print(f"devenv: {error}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the shutdown short and orphan a server.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        plane.stop()
    return 0


def _serve(plane: ControlPlane, kubeconfig_out: Path | None) -> None:
    started = time.monotonic()
    plane.start()
    elapsed = time.monotonic() - started
    path = plane.kubeconfig
    if kubeconfig_out is not None:
        path = kubeconfig_out.resolve()
        pki.write_private(path, plane.kubeconfig.read_bytes())
    print(f"control plane {kube_version()} ready in {elapsed:.1f}s at {plane.server}")
    print(f"logs: {plane.workdir}/logs")
    print(f"kubeconfig: {path}")
    print(f"export KUBECONFIG={shlex.quote(str(path))}")
    print("Ctrl-C or SIGTERM stops it.", flush=True)
    while True:
        signal.pause()


def _request_stop(signum: int, frame: object) -> None:
    raise _StopRequested(signal.Signals(signum).name)


if __name__ == "__main__":
    sys.exit(main())
