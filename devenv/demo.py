"""``make demo``: the operator doing its job on a local control plane, start to finish.

It starts a real kube-apiserver (and etcd, and the garbage collector) on
loopback, a token endpoint (our loopback server, or Keycloak with
``--keycloak``), installs the CRD and the operator's RBAC from the repo, runs
the operator as its own ServiceAccount, applies an example ClientCredential,
and prints what a user would look at: ``kubectl get``, ``kubectl describe``,
the Secret's keys, then the same after the first refresh. Everything it
started is stopped when it ends or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from devenv.controlplane import ControlPlane
from devenv.process import interruptible
from devenv.runner import OperatorProcess

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "demo"
NAME = "billing-api"

CREDENTIAL = """\
apiVersion: tokenkeeper.dev/v1alpha1
kind: ClientCredential
metadata:
  name: {name}
  namespace: {namespace}
spec:
  {url_field}: {url}
  clientID: {client_id}
  clientSecretRef:
    name: billing-api-client
  secretTemplate:
    labels:
      team: billing
"""


def banner(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(plane: ControlPlane, *args: str) -> str:
    print(f"$ kubectl {' '.join(args)}")
    output = plane.kubectl(*args)
    print(output.rstrip(), flush=True)
    return output


def wait(what: str, probe: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.5)
    raise SystemExit(f"demo: timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def token_endpoint(use_keycloak: bool) -> Iterator[tuple[str, str, str, str]]:
    """(url field, url, client id, client secret) of a running token endpoint."""
    if use_keycloak:
        from devenv.keycloak import Keycloak

        banner("Starting Keycloak (a minute on a cold JVM)")
        with Keycloak() as keycloak:
            yield (
                "issuerURL",
                keycloak.issuer_url,
                keycloak.client_id,
                keycloak.client_secret,
            )
        return

    from devenv.tokenserver import TokenServer

    with TokenServer() as server:
        server.add_client("billing-api", "demo-client-secret", lifetime=40)
        yield "tokenURL", server.token_url, "billing-api", "demo-client-secret"


def secret_summary(plane: ControlPlane) -> dict[str, str]:
    secret = json.loads(
        plane.kubectl("get", "secret", NAME, "-n", NAMESPACE, "-o", "json")
    )
    shown = {}
    for key, value in sorted(secret["data"].items()):
        text = base64.b64decode(value).decode()
        shown[key] = (
            f"{text[:12]}... ({len(text)} chars)" if key == "access_token" else text
        )
    return shown


def run(use_keycloak: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="tokenkeeper-demo-") as scratch:
        work = Path(scratch)
        banner(
            "Starting a local control plane: etcd, kube-apiserver, "
            "kube-controller-manager"
        )
        with ControlPlane() as plane, token_endpoint(use_keycloak) as endpoint:
            url_field, url, client_id, client_secret = endpoint
            print(
                f"export KUBECONFIG={plane.kubeconfig}   # to look around while it runs"
            )

            banner(
                "Installing the CRD and the operator's RBAC from crds/ and manifests/"
            )
            show(plane, "apply", "-k", str(ROOT / "crds"))
            plane.kubectl(
                "wait",
                "--for=condition=Established",
                "crd/clientcredentials.tokenkeeper.dev",
            )
            for name in ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml"):
                show(plane, "apply", "-f", str(ROOT / "manifests" / name))

            banner("Running the operator as its ServiceAccount")
            kubeconfig = plane.serviceaccount_kubeconfig(
                "tokenkeeper-system", "tokenkeeper", work / "operator.kubeconfig"
            )
            log = work / "operator.log"
            with OperatorProcess(kubeconfig, log) as operator:
                print(f"operator pid {operator.pid}, log {log}")

                banner("Creating the client secret and a ClientCredential")
                show(plane, "create", "namespace", NAMESPACE)
                show(
                    plane,
                    "create",
                    "secret",
                    "generic",
                    "billing-api-client",
                    "-n",
                    NAMESPACE,
                    f"--from-literal=client-secret={client_secret}",
                )
                show(
                    plane,
                    "label",
                    "secret",
                    "billing-api-client",
                    "-n",
                    NAMESPACE,
                    "tokenkeeper.dev/secret=client-secret",
                )
                manifest = work / "clientcredential.yaml"
                manifest.write_text(
                    CREDENTIAL.format(
                        name=NAME,
                        namespace=NAMESPACE,
                        url_field=url_field,
                        url=url,
                        client_id=client_id,
                    )
                )
                print(manifest.read_text())
                show(plane, "apply", "-f", str(manifest))

                wait(
                    "the ClientCredential to be Ready",
                    lambda: (
                        "True"
                        in plane.kubectl(
                            "get",
                            "ccred",
                            NAME,
                            "-n",
                            NAMESPACE,
                            "-o",
                            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                        )
                    ),
                    timeout=60,
                )

                banner("What a user sees")
                show(plane, "get", "ccred", "-n", NAMESPACE)
                show(plane, "get", "ccred", "-n", NAMESPACE, "-o", "wide")
                show(plane, "describe", "ccred", NAME, "-n", NAMESPACE)
                first = secret_summary(plane)
                banner(f"Secret {NAMESPACE}/{NAME} keys (token abbreviated)")
                for key, value in first.items():
                    print(f"  {key}: {value}")

                banner("Waiting for the first refresh (before the token expires)")
                wait(
                    "a refreshed token",
                    lambda: secret_summary(plane) != first,
                    timeout=180,
                )
                for key, value in secret_summary(plane).items():
                    print(f"  {key}: {value}")
                show(plane, "get", "ccred", "-n", NAMESPACE, "-o", "wide")

                if os.environ.get("DEMO_HOLD"):
                    banner("DEMO_HOLD is set: running until Ctrl-C")
                    with contextlib.suppress(KeyboardInterrupt):
                        while True:
                            time.sleep(3600)
            banner("Stopping everything the demo started")
    print("demo: done", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv.demo")
    parser.add_argument(
        "--keycloak",
        action="store_true",
        help="use a real Keycloak as the token endpoint",
    )
    args = parser.parse_args(argv)
    interruptible()
    try:
        run(args.keycloak)
    except KeyboardInterrupt:
        print("\ndemo: interrupted; everything it started was stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
