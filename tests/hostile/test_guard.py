"""The outbound guard in a running operator: refused URLs get no request at all.

Two operators run side by side, each serving its own namespace. One has the
shipped defaults: any host, https only (no --plain-http-hosts), no link-local
or metadata addresses. The other allows plain http to loopback but only the
host ``localhost`` (--allowed-hosts). A refused URL must end as URLNotAllowed
with the token server that stands behind it recording nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devenv.tokenserver import Reply, TokenServer
from tests.cluster import CLIENT_ID, CLIENT_SECRET, Cluster, basic_spec
from tests.hostile.conftest import StartOperator, wait_condition, wait_ready


@pytest.fixture(scope="module")
def guarded(
    cluster: Cluster, module_solo_operator: StartOperator
) -> Iterator[dict[str, str]]:
    """Namespace by operator: "defaults" and "localhost-only"."""
    namespaces = {
        kind: f"guard-{kind}-{uuid.uuid4().hex[:6]}"
        for kind in ("defaults", "localhost-only")
    }
    for namespace in namespaces.values():
        cluster.core.create_namespace({"metadata": {"name": namespace}})
        cluster.create_client_secret(namespace)
    module_solo_operator(
        f"--namespace={namespaces['defaults']}",
        plain_http_hosts="",
        log_name="defaults.log",
    )
    module_solo_operator(
        f"--namespace={namespaces['localhost-only']}",
        "--allowed-hosts=localhost,*.example.test",
        log_name="localhost-only.log",
    )
    yield namespaces
    for namespace in namespaces.values():
        cluster.core.delete_namespace(namespace)


@pytest.fixture
def tls_server() -> Iterator[TokenServer]:
    with TokenServer(tls=True) as server:
        server.add_client(CLIENT_ID, CLIENT_SECRET)
        yield server


def _ca(cluster: Cluster, namespace: str, server: TokenServer) -> dict[str, Any]:
    name = f"ca-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespaced_config_map(
        namespace, {"metadata": {"name": name}, "data": {"ca.crt": server.ca_pem}}
    )
    return {"name": name}


REFUSED: list[Any] = [
    pytest.param("defaults", lambda s: s.token_url, "uses plain http", id="plain-http"),
    pytest.param(
        "defaults",
        lambda s: "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "resolves to 169.254.169.254, a link-local or cloud metadata address",
        id="aws-metadata",
    ),
    pytest.param(
        "defaults",
        lambda s: "https://169.254.170.2/v2/credentials",
        "link-local or cloud metadata address",
        id="ecs-credentials",
    ),
    pytest.param(
        "defaults",
        lambda s: "https://[fe80::a9fe:a9fe]/token",
        "link-local or cloud metadata address",
        id="ipv6-link-local",
    ),
    pytest.param(
        "defaults",
        lambda s: "https://metadata.google.internal/computeMetadata/v1/",
        "cloud metadata service",
        id="gce-metadata",
    ),
    pytest.param(
        "localhost-only",
        lambda s: s.token_url,
        "names host 127.0.0.1, which the operator's --allowed-hosts",
        id="host-not-allowed",
    ),
]


@pytest.mark.parametrize(("operator_kind", "url", "says"), REFUSED)
def test_a_refused_url_is_reported_and_never_requested(
    cluster: Cluster,
    guarded: dict[str, str],
    token_server: TokenServer,
    operator_kind: str,
    url: Callable[[TokenServer], str],
    says: str,
) -> None:
    namespace, name = guarded[operator_kind], f"refused-{uuid.uuid4().hex[:6]}"
    spec = basic_spec(token_server, tokenURL=url(token_server))

    cluster.create_credential(namespace, name, spec)

    refreshed = wait_condition(
        cluster, namespace, name, "Refreshed", status="False", reason="URLNotAllowed"
    )
    assert says in refreshed["message"]
    assert token_server.count() == 0


def test_https_to_loopback_is_allowed_by_the_defaults(
    cluster: Cluster, guarded: dict[str, str], tls_server: TokenServer
) -> None:
    namespace = guarded["defaults"]
    spec = basic_spec(tls_server, caBundleRef=_ca(cluster, namespace, tls_server))

    cluster.create_credential(namespace, "https", spec)

    wait_ready(cluster, namespace, "https")
    assert tls_server.count("/token") == 1


def test_an_allowed_host_gets_its_token(
    cluster: Cluster, guarded: dict[str, str], token_server: TokenServer
) -> None:
    namespace = guarded["localhost-only"]
    url = token_server.token_url.replace("127.0.0.1", "localhost")

    cluster.create_credential(
        namespace, "local", basic_spec(token_server, tokenURL=url)
    )

    wait_ready(cluster, namespace, "local")
    assert token_server.count("/token") == 1


def test_a_discovered_token_endpoint_is_guarded_too(
    cluster: Cluster, guarded: dict[str, str], tls_server: TokenServer
) -> None:
    namespace = guarded["defaults"]
    tls_server.set_discovery(
        Reply(
            json={
                "issuer": tls_server.url,
                "token_endpoint": "https://169.254.169.254/t",
            }
        )
    )
    spec = basic_spec(
        tls_server,
        issuerURL=tls_server.url,
        caBundleRef=_ca(cluster, namespace, tls_server),
    )
    del spec["tokenURL"]

    cluster.create_credential(namespace, "discovered", spec)

    refreshed = wait_condition(
        cluster,
        namespace,
        "discovered",
        "Refreshed",
        status="False",
        reason="DiscoveryFailed",
    )
    assert "the discovered token_endpoint resolves" in refreshed["message"]
    assert tls_server.count("/.well-known/openid-configuration") == 1
    assert tls_server.count("/token") == 0
