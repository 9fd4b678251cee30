"""RFC 6749 section 5.2 errors: a reason per error code, advice, slow retries.

The reason comes from the ``error`` field whatever the status (servers differ
on 400 versus 401). Credential and configuration errors are retried slowly,
since only a person can fix them, and at once when that person changes the
spec or the labelled client-secret Secret.
"""

from __future__ import annotations

import collections
import contextlib
from datetime import timedelta

import pytest
from tokenkeeper.status import parse_rfc3339

from devenv.tokenserver import RecordedRequest, Reply, TokenServer, oauth_error
from tests.cluster import CLIENT_ID, CLIENT_SECRET, Cluster, basic_spec
from tests.hostile.conftest import wait_condition, wait_ready

pytestmark = pytest.mark.usefixtures("operator")

OAUTH_ERRORS = [
    # (error code, reason, a fragment of the advice in the message)
    ("invalid_client", "InvalidClient", "spec.clientID"),
    ("unauthorized_client", "UnauthorizedClient", "client-credentials grant"),
    ("invalid_scope", "InvalidScope", "spec.scopes"),
    ("invalid_request", "InvalidRequest", "spec.extraParams"),
    ("invalid_grant", "InvalidGrant", "refused the client-credentials grant"),
    ("access_denied", "TokenEndpointError", "access_denied"),
]


@pytest.mark.parametrize("status", [400, 401])
@pytest.mark.parametrize(
    ("error", "reason", "advice"), OAUTH_ERRORS, ids=[e[0] for e in OAUTH_ERRORS]
)
def test_each_oauth_error_code_has_its_own_reason_and_advice(
    cluster: Cluster,
    namespace: str,
    token_server: TokenServer,
    error: str,
    reason: str,
    advice: str,
    status: int,
) -> None:
    token_server.set_default(oauth_error(error, "said the server", status=status))
    cluster.create_client_secret(namespace)

    cluster.create_credential(namespace, "billing", basic_spec(token_server))

    refreshed = wait_condition(
        cluster, namespace, "billing", "Refreshed", status="False", reason=reason
    )
    ready = cluster.condition(namespace, "billing", "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert f"HTTP {status}, {error}: said the server" in refreshed["message"]
    assert advice in refreshed["message"]
    assert cluster.secret(namespace, "billing") is None


def test_credential_errors_are_not_retried_for_at_least_ten_seconds(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    codes = {f"app-{code.replace('_', '-')}": code for code, _, _ in OAUTH_ERRORS}

    def refuse(request: RecordedRequest) -> Reply:
        return oauth_error(codes[request.field("client_id") or ""])

    token_server.set_default(refuse)
    cluster.create_client_secret(namespace)
    for client_id in codes:
        spec = basic_spec(token_server, clientID=client_id)
        cluster.create_credential(namespace, client_id, spec)
    token_server.wait_for_requests(len(codes), timeout=20, path="/token")

    with contextlib.suppress(TimeoutError):
        token_server.wait_for_requests(len(codes) + 1, timeout=10, path="/token")

    per_client = collections.Counter(
        r.field("client_id") for r in token_server.requests
    )
    assert per_client == dict.fromkeys(codes, 1), per_client
    for name in codes:
        status = cluster.credential(namespace, name)["status"]
        failed_at = parse_rfc3339(status["lastFailureTime"])
        retry_at = parse_rfc3339(status["refreshAt"])
        assert failed_at is not None
        assert retry_at is not None
        # 30 s, jittered down to half; the status keeps whole seconds.
        assert retry_at - failed_at >= timedelta(seconds=14), name


def test_a_rotated_client_secret_is_tried_at_once_after_invalid_client(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace, value="an-outdated-client-secret")
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    wait_condition(cluster, namespace, "billing", "Refreshed", reason="InvalidClient")

    cluster.set_client_secret(namespace, "client", CLIENT_SECRET)

    wait_ready(cluster, namespace, "billing", timeout=5)
    assert token_server.count("/token") == 2


def test_a_fixed_spec_is_tried_at_once_after_invalid_scope(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    token_server.add_client(CLIENT_ID, CLIENT_SECRET, allowed_scopes=["read"])
    cluster.create_client_secret(namespace)
    spec = basic_spec(token_server, scopes=["admin"])
    cluster.create_credential(namespace, "billing", spec)
    wait_condition(cluster, namespace, "billing", "Refreshed", reason="InvalidScope")

    cluster.patch_credential(namespace, "billing", {"spec": {"scopes": ["read"]}})

    wait_ready(cluster, namespace, "billing", timeout=5)
    assert token_server.requests[-1].field("scope") == "read"
    assert token_server.count("/token") == 2
