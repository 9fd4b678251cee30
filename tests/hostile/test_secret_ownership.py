"""Whose Secret is it: a foreign Secret is never touched; a managed one is restored.

Ownership is the ownerReference's uid and nothing else: a Secret that merely
looks like tokenkeeper's (its labels, its keys) or that another
ClientCredential controls is left alone. A managed Secret that someone deletes
or edits is written back with the current token, without a new token request.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from devenv.tokenserver import TokenServer
from tests.cluster import Cluster, basic_spec, wait_for
from tests.hostile.conftest import request_refresh, wait_condition, wait_ready

pytestmark = pytest.mark.usefixtures("operator")


def _foreign(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return {"metadata": {"name": "taken"}, "stringData": {"mine": "yes"}}


def _lookalike(cluster: Cluster, namespace: str) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/managed-by": "tokenkeeper",
        "tokenkeeper.dev/secret": "access-token",
        "tokenkeeper.dev/client-credential": "billing",
    }
    return {
        "metadata": {"name": "taken", "labels": labels},
        "stringData": {"access_token": "someone-elses", "token_type": "Bearer"},
    }


def _owned_by_another(cluster: Cluster, namespace: str) -> dict[str, Any]:
    other = cluster.create_credential(
        namespace,
        "other",
        {
            "tokenURL": "https://sso.example.com/token",
            "clientID": "x",
            "clientSecretRef": {"name": "nope"},
        },
    )
    reference = {
        "apiVersion": "tokenkeeper.dev/v1alpha1",
        "kind": "ClientCredential",
        "name": "other",
        "uid": other["metadata"]["uid"],
        "controller": True,
    }
    return {
        "metadata": {"name": "taken", "ownerReferences": [reference]},
        "stringData": {"mine": "yes"},
    }


@pytest.mark.parametrize(
    "foreign",
    [
        pytest.param(_foreign, id="plain"),
        pytest.param(_lookalike, id="tokenkeeper-labels-without-owner"),
        pytest.param(_owned_by_another, id="controlled-by-another-credential"),
    ],
)
def test_a_foreign_secret_with_the_target_name_is_never_modified(
    cluster: Cluster, namespace: str, token_server: TokenServer, foreign: Any
) -> None:
    cluster.create_client_secret(namespace)
    cluster.core.create_namespaced_secret(namespace, foreign(cluster, namespace))
    before = cluster.secret(namespace, "taken")
    assert before is not None
    cluster.create_credential(
        namespace, "billing", basic_spec(token_server, secretName="taken")
    )
    wait_condition(cluster, namespace, "billing", "Ready", reason="SecretConflict")

    request_refresh(cluster, namespace, "billing", "try-again")

    wait_for(
        lambda: (
            cluster.credential(namespace, "billing")["status"].get("refreshRequestedAt")
            == "try-again"
        )
    )
    after = cluster.secret(namespace, "taken")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert token_server.count("/token") == 0


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


EDITS = [
    pytest.param({"data": {"access_token": _b64("tampered")}}, id="token-replaced"),
    pytest.param({"data": {"token_type": None}}, id="key-removed"),
    pytest.param({"data": {"extra": _b64("x")}}, id="key-added"),
    pytest.param(
        {
            "metadata": {
                "annotations": {"tokenkeeper.dev/expires-at": "2999-01-01T00:00:00Z"}
            }
        },
        id="expiry-annotation-changed",
    ),
    pytest.param(
        {"metadata": {"labels": {"tokenkeeper.dev/secret": None}}},
        id="watch-label-removed",
    ),
    pytest.param(
        {"metadata": {"labels": {"app.kubernetes.io/managed-by": "helm"}}},
        id="managed-by-changed",
    ),
]


@pytest.mark.parametrize("edit", EDITS)
def test_an_edited_managed_secret_is_restored_without_a_token_request(
    cluster: Cluster, namespace: str, token_server: TokenServer, edit: dict[str, Any]
) -> None:
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    token = wait_ready(cluster, namespace, "billing")
    original = cluster.secret(namespace, "billing")
    assert original is not None

    cluster.core.patch_namespaced_secret("billing", namespace, edit)

    restored = wait_for(
        lambda: (
            (s := cluster.secret(namespace, "billing"))
            and s["data"] == original["data"]
            and s["metadata"]["labels"] == original["metadata"]["labels"]
            and _ours(s["metadata"]["annotations"])
            == _ours(original["metadata"]["annotations"])
            and s
        ),
        timeout=10,
    )
    assert base64.b64decode(restored["data"]["access_token"]).decode() == token
    assert token_server.count("/token") == 1
    reasons = [e["reason"] for e in cluster.events(namespace, "billing")]
    assert "SecretRestored" in reasons


def _ours(annotations: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in annotations.items() if k.startswith("tokenkeeper.dev/")}


def test_a_deleted_managed_secret_is_restored_with_the_same_token(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    token = wait_ready(cluster, namespace, "billing")

    cluster.core.delete_namespaced_secret("billing", namespace)

    restored = wait_for(lambda: cluster.token(namespace, "billing"), timeout=10)
    assert restored == token
    assert token_server.count("/token") == 1


def test_two_credentials_claiming_one_secret_name_leave_the_owner_alone(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "first", basic_spec(token_server))
    token = wait_ready(cluster, namespace, "first")
    version = (cluster.secret(namespace, "first") or {})["metadata"]["resourceVersion"]

    cluster.create_credential(
        namespace, "second", basic_spec(token_server, secretName="first")
    )

    conflict = wait_condition(
        cluster, namespace, "second", "Ready", status="False", reason="SecretConflict"
    )
    assert "Secret first already exists" in conflict["message"]
    secret = cluster.secret(namespace, "first")
    assert secret is not None
    assert secret["metadata"]["resourceVersion"] == version
    assert cluster.token(namespace, "first") == token
    assert token_server.count("/token") == 1
