"""Answers that are not a usable token never reach the Secret.

Each test starts from a good token, then asks for a refresh that the token
server answers with garbage: the refresh must fail with InvalidTokenResponse
and a message saying what was wrong, and the Secret must keep the good token.
Odd but usable answers (a charset on the JSON, an absurd lifetime) are taken,
with a note in the message where the operator changed what it was told. The
tables hold reply factories, so that tokens and JWT claims are made when used.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from tokenkeeper.status import parse_rfc3339

from devenv.tokenserver import (
    OMIT,
    MiB,
    Reply,
    TokenServer,
    html_page,
    huge_body,
    missing_access_token,
    oauth_error,
    text_body,
    token_response,
)
from tests.cluster import Cluster, basic_spec, wait_for
from tests.hostile.conftest import request_refresh, wait_condition, wait_ready

pytestmark = pytest.mark.usefixtures("operator")


def _document(**fields: object) -> Reply:
    body = {"token_type": "Bearer", "expires_in": 300, **fields}
    return Reply(json=body, headers={"Content-Type": "application/json"})


REJECTED = [
    pytest.param(
        lambda: oauth_error("invalid_client", status=200),
        "error object",
        id="200-with-error",
    ),
    pytest.param(missing_access_token, "without an access_token", id="no-token"),
    pytest.param(
        lambda: _document(access_token=""), "without an access_token", id="empty"
    ),
    pytest.param(
        lambda: _document(access_token=12345), "without an access_token", id="number"
    ),
    pytest.param(
        lambda: _document(access_token="two words\r\nX-Injected: 1"),
        "not a valid bearer token",
        id="header-injection",
    ),
    pytest.param(html_page, "not a JSON object", id="html"),
    pytest.param(text_body, "not a JSON object", id="plain-text"),
    pytest.param(
        lambda: Reply(json=["access_token"]), "not a JSON object", id="json-array"
    ),
    pytest.param(
        lambda: huge_body(3 * MiB), "more than 1048576 bytes", id="three-megabytes"
    ),
    pytest.param(
        lambda: token_response(expires_in=0), "expires_in is 0", id="expires-in-0"
    ),
    pytest.param(
        lambda: token_response(expires_in=-60),
        "expires_in is -60",
        id="expires-in-negative",
    ),
    pytest.param(
        lambda: token_response(expires_in=0.5),
        "expires_in is 0.5",
        id="expires-in-half",
    ),
    pytest.param(
        lambda: token_response(expires_in="soon"), "not a number", id="expires-in-word"
    ),
    pytest.param(
        lambda: token_response(expires_in=OMIT, exp_in=-60),
        "already in the past",
        id="expired-jwt-without-expires-in",
    ),
    pytest.param(
        lambda: token_response(token_type="Bearer\r\nX: 1"),
        "not a short word",
        id="token-type",
    ),
]


@pytest.mark.parametrize(("garbage", "says"), REJECTED)
def test_garbage_is_an_invalid_token_response_and_the_good_token_stays(
    cluster: Cluster,
    namespace: str,
    token_server: TokenServer,
    garbage: Callable[[], Reply],
    says: str,
) -> None:
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    good = wait_ready(cluster, namespace, "billing")
    token_server.set_default(garbage())

    request_refresh(cluster, namespace, "billing", "after-garbage")

    refreshed = wait_condition(
        cluster,
        namespace,
        "billing",
        "Refreshed",
        status="False",
        reason="InvalidTokenResponse",
    )
    assert says.lower() in refreshed["message"].lower()
    assert cluster.token(namespace, "billing") == good
    ready = cluster.condition(namespace, "billing", "Ready")
    assert ready is not None
    assert ready["status"] == "True"
    assert token_server.count("/token") <= 6, "garbage was retried in a tight loop"


def _expires_in(cluster: Cluster, namespace: str) -> timedelta:
    status = cluster.credential(namespace, "billing")["status"]
    expires_at = parse_rfc3339(status["expiresAt"])
    assert expires_at is not None
    return expires_at - datetime.now(UTC)


ACCEPTED = [
    pytest.param(
        lambda: token_response(content_type="application/json; charset=utf-8"),
        None,
        timedelta(seconds=300),
        id="json-with-charset",
    ),
    pytest.param(
        lambda: token_response(expires_in="300"),
        None,
        timedelta(seconds=300),
        id="string",
    ),
    pytest.param(
        lambda: token_response(expires_in=10**12),
        "exceeds the operator's limit",
        timedelta(hours=24),
        id="expires-in-huge",
    ),
    pytest.param(
        lambda: token_response(expires_in=OMIT, exp_in=600),
        "used the JWT exp claim",
        timedelta(seconds=600),
        id="jwt-exp-without-expires-in",
    ),
    pytest.param(
        lambda: token_response(expires_in=OMIT, opaque=True),
        "assumed the operator's default lifetime",
        timedelta(seconds=300),
        id="opaque-without-expires-in",
    ),
]


@pytest.mark.parametrize(("odd", "note", "lifetime"), ACCEPTED)
def test_odd_but_usable_answers_are_stored_with_a_note_where_changed(
    cluster: Cluster,
    namespace: str,
    token_server: TokenServer,
    odd: Callable[[], Reply],
    note: str | None,
    lifetime: timedelta,
) -> None:
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    good = wait_ready(cluster, namespace, "billing")
    reply = odd()
    token_server.script(reply)

    request_refresh(cluster, namespace, "billing", "after-odd")

    wait_for(
        lambda: (
            cluster.credential(namespace, "billing")["status"].get("refreshRequestedAt")
            == "after-odd"
        )
    )
    token = cluster.token(namespace, "billing")
    refreshed = cluster.condition(namespace, "billing", "Refreshed")
    assert refreshed is not None
    assert token != good
    assert token == reply.json["access_token"]
    if note is None:
        assert "Note:" not in refreshed["message"]
    else:
        assert note in refreshed["message"]
    assert (
        lifetime - timedelta(seconds=30) < _expires_in(cluster, namespace) <= lifetime
    )
