"""The client secret on the wire: encoded right whatever it holds, sent nowhere else.

Secrets with reserved and non-ASCII characters must authenticate with both
client authentication methods (the token server decodes exactly as RFC 6749
section 2.3.1 says). A redirect is never followed, so a second token server
standing at the redirect's target must record nothing at all.
"""

from __future__ import annotations

import pytest

from devenv.tokenserver import TokenServer, redirect
from tests.cluster import CLIENT_ID, CLIENT_SECRET, Cluster, basic_spec
from tests.hostile.conftest import wait_condition, wait_ready

pytestmark = pytest.mark.usefixtures("operator")

AUTH_METHODS = ["client_secret_post", "client_secret_basic"]


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
@pytest.mark.parametrize(
    ("client_id", "client_secret"),
    [
        pytest.param("billing:app", "p@ss:w/rd?&=+ %20#;,\"'<>\\", id="reserved"),
        pytest.param("rechnungs-app-ü", "geheimnis-üß-密码-🔑", id="non-ascii"),
    ],
)
def test_client_secrets_with_reserved_and_non_ascii_characters_authenticate(
    cluster: Cluster,
    namespace: str,
    token_server: TokenServer,
    auth_method: str,
    client_id: str,
    client_secret: str,
) -> None:
    token_server.add_client(client_id, client_secret)
    cluster.create_client_secret(namespace, value=client_secret)
    spec = basic_spec(token_server, clientID=client_id, authMethod=auth_method)

    cluster.create_credential(namespace, "billing", spec)

    wait_ready(cluster, namespace, "billing")
    sent = token_server.requests[-1]
    if auth_method == "client_secret_basic":
        assert (sent.header("Authorization") or "").startswith("Basic ")
        assert sent.field("client_secret") is None
    else:
        assert sent.header("Authorization") is None
        assert sent.field("client_secret") == client_secret
        assert sent.field("client_id") == client_id


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_and_the_secret_never_reaches_its_target(
    cluster: Cluster,
    namespace: str,
    token_server: TokenServer,
    status: int,
    auth_method: str,
) -> None:
    cluster.create_client_secret(namespace)
    with TokenServer() as elsewhere:
        elsewhere.add_client(CLIENT_ID, CLIENT_SECRET)
        token_server.set_default(redirect(elsewhere.token_url, status=status))
        spec = basic_spec(token_server, authMethod=auth_method)

        cluster.create_credential(namespace, "billing", spec)

        refreshed = wait_condition(
            cluster,
            namespace,
            "billing",
            "Refreshed",
            status="False",
            reason="UnexpectedRedirect",
        )
        assert elsewhere.count() == 0
    assert f"HTTP {status}" in refreshed["message"]
    assert elsewhere.url in refreshed["message"]
    assert "set the final URL" in refreshed["message"]
    assert token_server.count("/token") == 1
    assert cluster.secret(namespace, "billing") is None


def test_a_redirected_discovery_is_not_followed(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    with TokenServer() as elsewhere:
        token_server.set_discovery(redirect(elsewhere.url + "/.well-known/x"))
        spec = basic_spec(token_server, issuerURL=token_server.url)
        del spec["tokenURL"]

        cluster.create_credential(namespace, "billing", spec)

        refreshed = wait_condition(
            cluster,
            namespace,
            "billing",
            "Refreshed",
            status="False",
            reason="DiscoveryFailed",
        )
        assert elsewhere.count() == 0
    assert "redirect" in refreshed["message"]
    assert token_server.count("/token") == 0
