"""The operator against a real Keycloak realm: the API this project exists for.

The realm issues 45-second tokens, so refreshes are observed in-test; the
operator runs on the real control plane as its ServiceAccount. A rotated
client secret is rotated through Keycloak's admin REST API, as an admin would.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from tokenkeeper.status import parse_rfc3339

from devenv.keycloak import (
    NO_SERVICE_ACCOUNT_CLIENT_ID,
    NO_SERVICE_ACCOUNT_CLIENT_SECRET,
    OPTIONAL_SCOPE,
    Keycloak,
)
from tests.cluster import Cluster, wait_for

pytestmark = pytest.mark.usefixtures("operator")


def spec_for(keycloak: Keycloak, **extra: Any) -> dict[str, Any]:
    return {
        "tokenURL": keycloak.token_url,
        "clientID": keycloak.client_id,
        "clientSecretRef": {"name": "client"},
        **extra,
    }


def condition(cluster: Cluster, namespace: str, type_: str) -> dict[str, Any] | None:
    return cluster.condition(namespace, "api", type_)


def is_ready(cluster: Cluster, namespace: str) -> bool:
    found = condition(cluster, namespace, "Ready")
    return bool(found and found["status"] == "True")


def refreshed_false(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    found = condition(cluster, namespace, "Refreshed")
    return found if found and found["status"] == "False" else None


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def request_refresh(cluster: Cluster, namespace: str, value: str) -> None:
    annotation = {"tokenkeeper.dev/refresh-requested-at": value}
    cluster.patch_credential(
        namespace, "api", {"metadata": {"annotations": annotation}}
    )


def test_the_secret_holds_real_jwts_refreshed_before_each_expiry(
    cluster: Cluster, namespace: str, keycloak: Keycloak
) -> None:
    cluster.create_client_secret(namespace, value=keycloak.client_secret)
    cluster.create_credential(
        namespace, "api", spec_for(keycloak, refreshBeforePercentage=85)
    )
    wait_for(lambda: cluster.token(namespace, "api"), timeout=30)

    tokens: list[str] = []
    deadline = time.monotonic() + 60
    while len(tokens) < 4 and time.monotonic() < deadline:
        secret = cluster.secret(namespace, "api")
        assert secret is not None
        data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        expires_at = parse_rfc3339(data["expires_at"])
        assert expires_at is not None
        assert expires_at > datetime.now(UTC), "the Secret held an expired token"
        if not tokens or tokens[-1] != data["access_token"]:
            claims = jwt_claims(data["access_token"])
            assert abs(claims["exp"] - expires_at.timestamp()) <= 2
            assert claims["azp"] == keycloak.client_id
            tokens.append(data["access_token"])
        time.sleep(0.2)

    assert len(tokens) >= 4, "fewer than three refreshes within a minute"
    assert len(set(tokens)) == len(tokens)


def test_issuer_url_discovery_works_against_the_realm(
    cluster: Cluster, namespace: str, keycloak: Keycloak
) -> None:
    cluster.create_client_secret(namespace, value=keycloak.client_secret)
    spec = spec_for(keycloak)
    del spec["tokenURL"]
    spec["issuerURL"] = keycloak.issuer_url

    cluster.create_credential(namespace, "api", spec)

    wait_for(lambda: is_ready(cluster, namespace), timeout=30)
    token = cluster.token(namespace, "api")
    assert token is not None
    assert jwt_claims(token)["iss"] == keycloak.issuer_url


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_both_client_authentication_methods_work(
    cluster: Cluster, namespace: str, keycloak: Keycloak, method: str
) -> None:
    cluster.create_client_secret(namespace, value=keycloak.client_secret)

    cluster.create_credential(namespace, "api", spec_for(keycloak, authMethod=method))

    wait_for(lambda: is_ready(cluster, namespace), timeout=30)
    refreshed = condition(cluster, namespace, "Refreshed")
    assert refreshed is not None
    assert refreshed["reason"] == "TokenIssued"


@pytest.mark.usefixtures("restore_demo_secret")
def test_a_rotated_client_secret_fails_safely_then_recovers_at_once(
    cluster: Cluster, namespace: str, keycloak: Keycloak
) -> None:
    cluster.create_client_secret(namespace, value=keycloak.client_secret)
    cluster.create_credential(namespace, "api", spec_for(keycloak))
    wait_for(lambda: is_ready(cluster, namespace), timeout=30)
    good = cluster.token(namespace, "api")

    rotated = keycloak.rotate_client_secret(keycloak.client_id)
    request_refresh(cluster, namespace, "after-rotation")

    failed = wait_for(lambda: refreshed_false(cluster, namespace), timeout=20)
    assert failed["reason"] == "InvalidClient"
    assert "Invalid client credentials" in failed["message"]
    assert cluster.token(namespace, "api") == good
    assert is_ready(cluster, namespace)

    started = time.monotonic()
    cluster.set_client_secret(namespace, "client", rotated)

    wait_for(
        lambda: (
            (c := condition(cluster, namespace, "Refreshed")) and c["status"] == "True"
        ),
        timeout=15,
    )
    assert time.monotonic() - started < 10
    assert cluster.token(namespace, "api") != good


def test_a_client_without_service_accounts_is_told_what_to_enable(
    cluster: Cluster, namespace: str, keycloak: Keycloak
) -> None:
    cluster.create_client_secret(namespace, value=NO_SERVICE_ACCOUNT_CLIENT_SECRET)

    cluster.create_credential(
        namespace, "api", spec_for(keycloak, clientID=NO_SERVICE_ACCOUNT_CLIENT_ID)
    )

    failed = wait_for(lambda: refreshed_false(cluster, namespace), timeout=30)
    assert failed["reason"] == "UnauthorizedClient"
    assert "Service accounts" in failed["message"]
    assert cluster.secret(namespace, "api") is None


def test_a_scope_the_client_lacks_gives_invalid_scope(
    cluster: Cluster, namespace: str, keycloak: Keycloak
) -> None:
    cluster.create_client_secret(namespace, value=keycloak.client_secret)

    cluster.create_credential(
        namespace, "api", spec_for(keycloak, scopes=["no-such-scope"])
    )

    failed = wait_for(lambda: refreshed_false(cluster, namespace), timeout=30)
    assert failed["reason"] == "InvalidScope"


def test_an_optional_scope_the_client_has_is_granted(
    cluster: Cluster, namespace: str, keycloak: Keycloak
) -> None:
    cluster.create_client_secret(namespace, value=keycloak.client_secret)

    cluster.create_credential(
        namespace, "api", spec_for(keycloak, scopes=[OPTIONAL_SCOPE])
    )

    wait_for(lambda: is_ready(cluster, namespace), timeout=30)
    secret = cluster.secret(namespace, "api")
    assert secret is not None
    scope = base64.b64decode(secret["data"]["scope"]).decode()
    assert OPTIONAL_SCOPE in scope.split()
