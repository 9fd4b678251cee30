"""The operator killed or restarted: Secrets never go missing or backwards, and a
restart spends no token request on tokens that are still good.

SIGKILL is what a node failure or the OOM killer does: no cleanup, requests
cut off mid-flight. A poller lists the managed Secrets all the while; a lapse
is a Secret missing, an expiry that moves backwards (an older token written
over a newer one), or an expired token while the operator has been up long
enough to refresh it. The restart at scale counts token requests per client on
the token server and times when the refreshes that fell due during the
downtime arrive.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import os
import random
import threading
import time
from typing import Any

from tokenkeeper.status import parse_rfc3339

from devenv.tokenserver import TokenServer, server_error
from tests.cluster import CLIENT_SECRET, GROUP, PLURAL, VERSION, Cluster, wait_for
from tests.hostile.conftest import StartOperator, audit_events

MANAGED = "tokenkeeper.dev/secret=access-token"
CHAOS_SECONDS = 45
"""Kill and restart for this long: about 14 kills when a start takes 2 s."""


@dataclasses.dataclass(frozen=True)
class Seen:
    at: float
    expires_at: dict[str, float]


class SecretPoller:
    """Lists the managed Secrets of a namespace as fast as the API answers."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self._cluster, self._namespace = cluster, namespace
        self._stop = threading.Event()
        self.seen: list[Seen] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SecretPoller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            at = time.time()
            secrets = self._cluster.core.list_namespaced_secret(
                self._namespace, label_selector=MANAGED
            ).items
            expires_at = {}
            for secret in secrets:
                text = base64.b64decode(secret.data["expires_at"]).decode()
                instant = parse_rfc3339(text)
                assert instant is not None
                expires_at[secret.metadata.name] = instant.timestamp()
            self.seen.append(Seen(at, expires_at))
            self._stop.wait(0.05)


def _spec(server: TokenServer, client_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "tokenURL": server.token_url,
        "clientID": client_id,
        "clientSecretRef": {"name": "client"},
        **extra,
    }


def test_sigkill_at_random_moments_never_leaves_a_secret_missing_or_older(
    cluster: Cluster, namespace: str, solo_operator: StartOperator
) -> None:
    rng = random.Random()
    seed = rng.randrange(10**6)
    rng.seed(seed)
    names = [f"chaos-{n}" for n in range(4)]
    with TokenServer() as server:
        server.add_client("chaos", CLIENT_SECRET, lifetime=2)
        cluster.create_client_secret(namespace)
        for name in names:
            cluster.create_credential(namespace, name, _spec(server, "chaos"))
        process = solo_operator("--verbose", log_name="chaos.log")
        for name in names:
            wait_for(lambda n=name: cluster.token(namespace, n), timeout=20)

        up_since: list[tuple[float, float]] = []
        with SecretPoller(cluster, namespace) as poller:
            deadline = time.monotonic() + CHAOS_SECONDS
            while time.monotonic() < deadline:
                started = time.time()
                time.sleep(rng.uniform(0.2, 2.0))
                process.kill()
                up_since.append((started, time.time()))
                process.start()
            started = time.time()
            time.sleep(4)
        up_since.append((started, time.time()))

    kills = len(up_since) - 1
    print(f"\n{kills} kills in {CHAOS_SECONDS} s (seed {seed})")
    assert kills >= 5, f"only {kills} kills: each restart took too long"
    assert poller.seen, "the poller saw nothing"
    latest: dict[str, float] = {}
    for seen in poller.seen:
        assert set(seen.expires_at) == set(names), f"seed {seed}: a Secret was missing"
        for name, expires_at in seen.expires_at.items():
            assert expires_at >= latest.get(name, 0), (
                f"seed {seed}: {name} went back to an older token"
            )
            latest[name] = expires_at
    settled = [
        seen
        for seen in poller.seen
        if any(start + 3 <= seen.at <= end for start, end in up_since)
    ]
    assert settled, f"seed {seed}: the operator was never up 3 s in a row"
    for seen in settled:
        # The Secret's expiry is kept to the whole second, rounded down.
        expired = {n: e for n, e in seen.expires_at.items() if e + 1 <= seen.at}
        assert not expired, f"seed {seed}: expired while the operator was up"


SCALE = int(os.environ.get("TOKENKEEPER_RESTART_OBJECTS", "1000"))
"""How many objects the restart test serves: the 1,000 the issue names."""
STEADY = SCALE * 9 // 10
"""Objects whose tokens (an hour long) stay good through the restart."""
DUE = SCALE - STEADY
"""Objects whose refresh falls due while no operator runs (60 s tokens)."""


def _create_all(cluster: Cluster, namespace: str, specs: dict[str, Any]) -> None:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for future in [
            pool.submit(cluster.create_credential, namespace, name, spec)
            for name, spec in specs.items()
        ]:
            future.result()


def _ready_count(cluster: Cluster, namespace: str, prefix: str) -> int:
    items = cluster.custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )["items"]
    return sum(
        1
        for body in items
        if body["metadata"]["name"].startswith(prefix)
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (body.get("status") or {}).get("conditions") or ()
        )
    )


def _latest_refresh_at(cluster: Cluster, namespace: str, prefix: str) -> float:
    items = cluster.custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )["items"]
    instants = [
        parse_rfc3339(body["status"]["refreshAt"])
        for body in items
        if body["metadata"]["name"].startswith(prefix)
    ]
    return max(i.timestamp() for i in instants if i is not None)


def _passes_since(cluster: Cluster, namespace: str, since: float) -> int:
    """Managed Secrets the operator has read since ``since`` (one per pass)."""
    return sum(
        1
        for event in audit_events(cluster, since)
        if event["verb"] == "get"
        and event["stage"] == "ResponseComplete"
        and event.get("objectRef", {}).get("resource") == "secrets"
        and event.get("objectRef", {}).get("namespace") == namespace
        and event.get("objectRef", {}).get("name") != "client"
    )


def test_a_restart_requests_no_valid_token_and_spreads_the_due_refreshes(
    cluster: Cluster, namespace: str, solo_operator: StartOperator
) -> None:
    with TokenServer() as server:
        server.add_client("steady", CLIENT_SECRET, lifetime=3600)
        for n in range(DUE):
            server.add_client(f"due-{n:04}", CLIENT_SECRET, lifetime=60)
        cluster.create_client_secret(namespace)
        first = solo_operator(log_name="first.log")
        began = time.monotonic()
        _create_all(
            cluster,
            namespace,
            {f"steady-{n:04}": _spec(server, "steady") for n in range(STEADY)},
        )
        wait_for(lambda: _ready_count(cluster, namespace, "steady") == STEADY, 300, 1)
        issued_in = time.monotonic() - began
        _create_all(
            cluster,
            namespace,
            {
                f"due-{n:04}": _spec(server, f"due-{n:04}", refreshBeforePercentage=90)
                for n in range(DUE)
            },
        )
        wait_for(lambda: _ready_count(cluster, namespace, "due") == DUE, 60, 0.5)
        # Refreshes the first operator might still attempt are refused: the due
        # Secrets keep their valid tokens, which the restart must find due.
        server.set_default(server_error(503))
        first.stop()
        server.set_default(None)
        due_at = _latest_refresh_at(cluster, namespace, "due") + 1
        time.sleep(max(0.0, due_at - time.time()))
        restarted_at = time.time()

        began = time.monotonic()
        solo_operator(log_name="second.log")
        started_in = time.monotonic() - began
        wait_for(
            lambda: _passes_since(cluster, namespace, restarted_at) >= STEADY + DUE,
            120,
            1,
        )
        resumed_in = time.monotonic() - began
        after = [r for r in server.requests if r.time >= restarted_at]
        wait_for(
            lambda: len(_first_by_client(server, restarted_at, "due-")) == DUE, 60, 0.5
        )

    due = sorted(_first_by_client(server, restarted_at, "due-").values())
    assert not _first_by_client(server, restarted_at, "steady")
    assert len(due) == DUE
    spread = due[-1] - due[0]
    busiest = max(sum(1 for t in due if start <= t < start + 1) for start in due)
    patched = sum(
        1
        for event in audit_events(cluster, restarted_at)
        if event["verb"] == "patch"
        and event.get("objectRef", {}).get("subresource") == "status"
        and event.get("objectRef", {}).get("namespace") == namespace
        and event["objectRef"].get("name", "").startswith("steady")
        and event["stage"] == "ResponseComplete"
    )
    print(
        f"\n{STEADY + DUE} objects: first tokens in {issued_in:.1f} s; restart "
        f"ready in {started_in:.1f} s, every object passed in {resumed_in:.1f} s; "
        f"{len(after)} token requests and {patched} status patches of steady "
        f"objects after the restart; {DUE} due refreshes spread over {spread:.1f} s, "
        f"at most {busiest} in one second"
    )
    assert patched == 0, "a restart rewrote the status of objects it left alone"
    assert spread >= 5, f"the due refreshes came within {spread:.1f} s"
    assert busiest <= DUE / 2, f"{busiest} of {DUE} due refreshes in one second"


def _first_by_client(
    server: TokenServer, since: float, prefix: str
) -> dict[str, float]:
    """When each client whose id starts with ``prefix`` first asked since ``since``."""
    first: dict[str, float] = {}
    for request in server.requests:
        client_id = request.field("client_id") or ""
        if request.time >= since and client_id.startswith(prefix):
            first.setdefault(client_id, request.time)
    return first
