"""The floor: a token POST and a Secret write per refresh, by a bare client loop.

What no operator can do with less: each "refresh" is one client-credentials
POST with ``requests`` and one optimistic PUT of a Secret with the official
client (raw dicts, no models), done by ``--workers`` threads flat out, as the
operator's worker pool would. It runs in its own process, so its CPU time is
its own; the benchmark divides the operator's cost per refresh by this one.

It first creates ``--secrets`` Secrets (at least one per thread; not timed), then times
``--operations`` refreshes and prints one JSON object: operations, wall and
CPU seconds, and the CPU the processes named by ``--pid`` (the API server,
etcd) spent in the same window.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes
import requests

from benchmarks.probes import cpu_seconds

LABELS = {"app.kubernetes.io/managed-by": "tokenkeeper-floor"}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret_body(name: str, token: str, expires_in: int) -> dict[str, Any]:
    expires_at = (datetime.now(UTC) + timedelta(seconds=expires_in)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "labels": LABELS,
            "annotations": {"tokenkeeper.dev/expires-at": expires_at},
        },
        "data": {
            "access_token": _b64(token),
            "token_type": _b64("Bearer"),
            "expires_at": _b64(expires_at),
        },
    }


class Floor:
    def __init__(self, args: argparse.Namespace) -> None:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=args.kubeconfig, client_configuration=configuration
        )
        configuration.connection_pool_maxsize = 32
        self.core: Any = kubernetes.client.CoreV1Api(
            kubernetes.client.ApiClient(configuration)
        )
        self.args = args
        self.local = threading.local()
        self.versions: dict[str, str] = {}

    def create(self) -> list[str]:
        names = [f"floor-{i}" for i in range(self.args.secrets)]
        for name in names:
            body = secret_body(name, "placeholder", 300)
            created = self.core.create_namespaced_secret(
                self.args.namespace, body, _preload_content=False
            )
            self.versions[name] = json.loads(created.data)["metadata"][
                "resourceVersion"
            ]
        return names

    def refresh(self, name: str) -> None:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
            session.trust_env = False
        response = session.post(
            self.args.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": self.args.client_id,
                "client_secret": self.args.client_secret,
            },
            headers={"Accept": "application/json"},
            timeout=(5, 10),
        )
        response.raise_for_status()
        document = response.json()
        body = secret_body(name, document["access_token"], document["expires_in"])
        body["metadata"]["resourceVersion"] = self.versions[name]
        replaced = self.core.replace_namespaced_secret(
            name, self.args.namespace, body, _preload_content=False
        )
        self.versions[name] = json.loads(replaced.data)["metadata"]["resourceVersion"]

    def run(self, names: list[str]) -> dict[str, Any]:
        workers = self.args.workers
        per_worker = -(-self.args.operations // workers)
        errors: list[str] = []

        def work(index: int) -> None:
            own = names[index::workers]  # each thread its own Secrets: no 409s
            for i in range(per_worker):
                try:
                    self.refresh(own[i % len(own)])
                except Exception as e:  # counted and reported
                    errors.append(type(e).__name__)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
        pids = dict(pair.split("=", 1) for pair in self.args.pid)
        watched = {name: int(pid) for name, pid in pids.items()}
        servers_before = cpu_seconds(watched)
        usage_before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - started
        usage_after = resource.getrusage(resource.RUSAGE_SELF)
        servers_after = cpu_seconds(watched)
        cpu = (usage_after.ru_utime + usage_after.ru_stime) - (
            usage_before.ru_utime + usage_before.ru_stime
        )
        return {
            "operations": per_worker * workers - len(errors),
            "errors": len(errors),
            "workers": workers,
            "wall_seconds": wall,
            "cpu_seconds": cpu,
            "server_cpu_seconds": {
                name: servers_after[name] - servers_before[name]
                for name in servers_after
                if name in servers_before
            },
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.floor", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--token-url", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--secrets", type=int, default=200)
    parser.add_argument("--operations", type=int, default=2000)
    parser.add_argument(
        "--pid", action="append", default=[], metavar="NAME=PID", help="also time"
    )
    args = parser.parse_args(argv)
    args.client_secret = os.environ["BENCH_CLIENT_SECRET"]
    args.secrets = max(args.secrets, args.workers)
    floor = Floor(args)
    result = floor.run(floor.create())
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
