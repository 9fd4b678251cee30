"""Which Secrets the operator touches, proved from the API server's audit log.

The test control plane audits every request of the operator's ServiceAccount
(metadata only, see tests/conftest.py). Kubernetes RBAC cannot narrow Secrets
to those labelled or referenced, so the narrowing lives in the code, and this
is where it is proved: Secrets are listed and watched only with the label
selector, read by name only when a ClientCredential references them or owns
them, written only when owned. The ClusterRole must grant what the operator
used, and nothing it never uses.
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from typing import Any

import pytest
import yaml

from devenv.tokenserver import TokenServer, oauth_error
from tests.cluster import CLIENT_ID, CLIENT_SECRET, ROOT, Cluster, basic_spec, wait_for
from tests.hostile.conftest import (
    audit_events,
    request_refresh,
    wait_condition,
)

pytestmark = pytest.mark.usefixtures("operator")

SELECTOR = "tokenkeeper.dev/secret in (access-token,client-secret)"
UNUSED_GRANTS = {
    ("kopf.dev", "clusterkopfpeerings"): "used only with --peering",
}
"""Rules the ClusterRole may hold without this suite's operators using them."""


def _ref(event: dict[str, Any]) -> dict[str, Any]:
    ref: dict[str, Any] = event.get("objectRef") or {}
    return ref


def _complete(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One event per request: watches end late, so take their start instead."""
    return [
        e
        for e in events
        if e["stage"] == "ResponseComplete"
        or (e["stage"] == "ResponseStarted" and e["verb"] == "watch")
    ]


def _selector(event: dict[str, Any]) -> str | None:
    query = urllib.parse.urlsplit(event["requestURI"]).query
    values = urllib.parse.parse_qs(query).get("labelSelector")
    return values[0] if values else None


def _exercise(cluster: Cluster, namespace: str) -> None:
    """Everything the operator does to Secrets: create, update, restore, CA bundle."""
    cluster.create_client_secret(namespace)
    cluster.create_client_secret(namespace, "unreferenced-client")
    cluster.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "bystander"}, "stringData": {"k": "v"}}
    )
    with TokenServer(tls=True) as tls:
        tls.add_client(CLIENT_ID, CLIENT_SECRET)
        cluster.core.create_namespaced_config_map(
            namespace, {"metadata": {"name": "ca"}, "data": {"ca.crt": tls.ca_pem}}
        )
        spec = basic_spec(tls, caBundleRef={"name": "ca"}, secretName="token")
        cluster.create_credential(namespace, "billing", spec)
        wait_condition(cluster, namespace, "billing", "Ready", status="True")
        token = cluster.token(namespace, "token")
        cluster.core.patch_namespaced_secret(
            "bystander", namespace, {"stringData": {"k": "changed"}}
        )
        request_refresh(cluster, namespace, "billing", "to-update-the-secret")
        wait_for(lambda: cluster.token(namespace, "token") not in (None, token))
        cluster.core.delete_namespaced_secret("token", namespace)
        wait_for(lambda: cluster.token(namespace, "token"))


def test_secrets_are_read_by_name_only_when_referenced_or_owned(
    cluster: Cluster, namespace: str
) -> None:
    began = time.time()

    _exercise(cluster, namespace)

    events = [
        e for e in _complete(audit_events(cluster, began)) if e["verb"] != "watch"
    ]
    secrets = [
        e
        for e in events
        if _ref(e).get("resource") == "secrets"
        and _ref(e).get("namespace") == namespace
    ]
    by_verb: dict[str, set[str]] = {}
    for event in secrets:
        by_verb.setdefault(event["verb"], set()).add(_ref(event)["name"])
    assert by_verb.get("get", set()) == {"client", "token"}
    assert by_verb.get("create", set()) == {"token"}
    assert by_verb.get("update", set()) == {"token"}
    assert set(by_verb) <= {"get", "create", "update"}
    configmaps = {
        _ref(e).get("name") for e in events if _ref(e).get("resource") == "configmaps"
    }
    assert configmaps == {"ca"}


def test_secrets_are_listed_and_watched_only_with_the_label_selector(
    cluster: Cluster,
) -> None:
    events = _complete(audit_events(cluster))

    collections = [
        e
        for e in events
        if _ref(e).get("resource") == "secrets" and e["verb"] in ("list", "watch")
    ]

    assert collections, "the operator never watched Secrets: is the audit log on?"
    assert {_selector(e) for e in collections} == {SELECTOR}
    assert not [
        e
        for e in events
        if _ref(e).get("resource") == "secrets"
        and e["verb"] in ("delete", "deletecollection", "patch")
    ]


def test_no_request_of_the_operator_was_denied_by_rbac(cluster: Cluster) -> None:
    events = _complete(audit_events(cluster))

    denied = [
        (e["verb"], e["requestURI"])
        for e in events
        if (e.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"
    ]

    assert events
    assert not denied


def _granted() -> set[tuple[str, str, str]]:
    documents = yaml.safe_load_all((ROOT / "manifests" / "rbac.yaml").read_text())
    role = next(d for d in documents if d["kind"] == "ClusterRole")
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _used(events: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    used = set()
    for event in events:
        ref = _ref(event)
        if not ref.get("resource"):
            continue  # discovery: /api, /apis, allowed to every authenticated user
        resource = ref["resource"]
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        used.add((ref.get("apiGroup", ""), resource, event["verb"]))
    return used


def test_the_cluster_role_grants_exactly_what_the_operator_uses(
    cluster: Cluster, namespace: str
) -> None:
    _exercise(cluster, namespace)

    used = _used(_complete(audit_events(cluster)))
    granted = _granted()

    assert used <= granted, f"used but not granted: {used - granted}"
    unused = {
        (group, resource, verb)
        for group, resource, verb in granted - used
        if (group, resource) not in UNUSED_GRANTS
    }
    assert not unused, f"granted but never used: {sorted(unused)}"


def test_a_secret_without_the_label_is_invisible_to_the_operator(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    token_server.set_default(oauth_error("invalid_client"))
    cluster.create_client_secret(namespace, value="outdated", labelled=False)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    wait_condition(cluster, namespace, "billing", "Refreshed", reason="InvalidClient")
    began = time.time()

    cluster.set_client_secret(namespace, "client", CLIENT_SECRET)

    # A labelled Secret would be read again at once (test_oauth_errors); this
    # one is not seen: no read of it, no request, until the slow retry.
    with contextlib.suppress(TimeoutError):
        token_server.wait_for_requests(2, timeout=5, path="/token")
    assert token_server.count("/token") == 1
    reads = [
        e
        for e in _complete(audit_events(cluster, began))
        if _ref(e).get("namespace") == namespace and _ref(e).get("name") == "client"
    ]
    assert not reads
