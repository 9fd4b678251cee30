"""What the real Keycloak answers to a client-credentials grant.

These tests pin the wire behaviour the operator is written against: the token
response, both ways of sending a client secret, and the exact error bodies for a
client without a service account, an unknown scope and a stale secret. The exact
texts belong to the Keycloak version hack/fetch-keycloak.sh pins; a bump that
changes them fails here first.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import requests

from devenv import keycloak as devenv_keycloak
from devenv.keycloak import DistributionMissing, Keycloak

pytestmark = pytest.mark.keycloak

TIMEOUT = 10
GRANT = {"grant_type": "client_credentials"}
# Characters that RFC 6749 section 2.3.1 makes a client form-urlencode before
# putting its credentials into HTTP Basic: a colon would split the pair.
AWKWARD_SECRET = "s3cr:t/with+plus&amp=equals%percent space"


def test_client_secret_post_returns_a_bearer_jwt_for_the_configured_lifespan(
    keycloak: Keycloak,
) -> None:
    response = _post_credentials(keycloak, keycloak.client_id, keycloak.client_secret)

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == keycloak.token_lifespan
    claims = _jwt_claims(body["access_token"])
    assert claims["iss"] == keycloak.issuer_url
    assert claims["azp"] == keycloak.client_id
    assert claims["exp"] - claims["iat"] == keycloak.token_lifespan


def test_client_secret_basic_is_accepted(keycloak: Keycloak) -> None:
    auth = _basic(keycloak.client_id, keycloak.client_secret)

    response = requests.post(
        keycloak.token_url, data=GRANT, headers=auth, timeout=TIMEOUT
    )

    assert response.status_code == 200
    assert response.json()["token_type"] == "Bearer"


@pytest.mark.usefixtures("restore_demo_secret")
def test_client_secret_basic_credentials_are_form_urlencoded_first(
    keycloak: Keycloak,
) -> None:
    keycloak.set_client_secret(keycloak.client_id, AWKWARD_SECRET)
    auth = _basic(keycloak.client_id, AWKWARD_SECRET)

    response = requests.post(
        keycloak.token_url, data=GRANT, headers=auth, timeout=TIMEOUT
    )

    assert response.status_code == 200


def test_optional_scope_is_granted_on_request(keycloak: Keycloak) -> None:
    scope = devenv_keycloak.OPTIONAL_SCOPE

    response = _post_credentials(
        keycloak, keycloak.client_id, keycloak.client_secret, scope=scope
    )

    assert response.status_code == 200
    assert response.json()["scope"].split() == [scope]
    assert _jwt_claims(response.json()["access_token"])["scope"] == scope


def test_client_without_service_account_gets_401_unauthorized_client(
    keycloak: Keycloak,
) -> None:
    response = _post_credentials(
        keycloak,
        devenv_keycloak.NO_SERVICE_ACCOUNT_CLIENT_ID,
        devenv_keycloak.NO_SERVICE_ACCOUNT_CLIENT_SECRET,
    )

    assert response.status_code == 401
    assert response.json() == {
        "error": "unauthorized_client",
        "error_description": "Client not enabled to retrieve service account",
    }


def test_unknown_scope_gets_400_invalid_scope(keycloak: Keycloak) -> None:
    response = _post_credentials(
        keycloak, keycloak.client_id, keycloak.client_secret, scope="no-such-scope"
    )

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_scope",
        "error_description": "Invalid scopes: no-such-scope",
    }


def test_unknown_client_gets_401_invalid_client(keycloak: Keycloak) -> None:
    response = _post_credentials(keycloak, "no-such-client", "whatever")

    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "Invalid client or Invalid client credentials",
    }


@pytest.mark.usefixtures("restore_demo_secret")
def test_rotation_refuses_the_old_secret_and_accepts_the_new_one(
    keycloak: Keycloak,
) -> None:
    old_secret = keycloak.client_secret

    new_secret = keycloak.rotate_client_secret(keycloak.client_id)

    assert new_secret != old_secret
    assert keycloak.client_secret == new_secret
    refused = _post_credentials(keycloak, keycloak.client_id, old_secret)
    accepted = _post_credentials(keycloak, keycloak.client_id, new_secret)
    assert accepted.status_code == 200
    # Keycloak says unauthorized_client, not RFC 6749's invalid_client, when a
    # known client sends a wrong secret; only an unknown client gets invalid_client.
    assert refused.status_code == 401
    assert refused.json() == {
        "error": "unauthorized_client",
        "error_description": "Invalid client or Invalid client credentials",
    }


def test_discovery_document_names_the_token_endpoint(keycloak: Keycloak) -> None:
    response = requests.get(keycloak.discovery_url, timeout=TIMEOUT)

    assert response.status_code == 200
    document = response.json()
    assert document["issuer"] == keycloak.issuer_url
    assert document["token_endpoint"] == keycloak.token_url
    assert {"client_secret_basic", "client_secret_post"} <= set(
        document["token_endpoint_auth_methods_supported"]
    )


def test_missing_distribution_fails_with_the_command_that_fetches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENKEEPER_CACHE", str(tmp_path))

    with pytest.raises(DistributionMissing, match="run `make keycloak`"):
        Keycloak().start()


def _post_credentials(
    keycloak: Keycloak, client_id: str, client_secret: str, **form: str
) -> requests.Response:
    data = {**GRANT, "client_id": client_id, "client_secret": client_secret, **form}
    return requests.post(keycloak.token_url, data=data, timeout=TIMEOUT)


def _basic(client_id: str, client_secret: str) -> dict[str, str]:
    pair = f"{_form_encode(client_id)}:{_form_encode(client_secret)}"
    return {"Authorization": f"Basic {base64.b64encode(pair.encode()).decode()}"}


def _form_encode(value: str) -> str:
    return urllib.parse.quote_plus(value)


def _jwt_claims(token: str) -> dict[str, Any]:
    header, payload, signature = token.split(".")
    assert json.loads(_unpad(header))["alg"] == "RS256"
    assert signature
    claims: dict[str, Any] = json.loads(_unpad(payload))
    return claims


def _unpad(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
