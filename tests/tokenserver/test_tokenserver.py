"""Behaviour of the loopback token endpoint the integration tests rely on.

Every test talks to a real `TokenServer` over a socket with ``requests``, so a
hostile reply is proven on the wire, not in the reply object.
"""

from __future__ import annotations

import base64
import datetime
import json
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devenv import tokenserver
from devenv.tokenserver import TokenServer

CLIENT_ID = "demo"
SECRET = "s3cret"
GRANT = {"grant_type": "client_credentials"}
POST_CREDENTIALS = {**GRANT, "client_id": CLIENT_ID, "client_secret": SECRET}
TIMEOUT = 5
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[TokenServer]:
    with TokenServer() as server:
        server.add_client(CLIENT_ID, SECRET)
        yield server


@pytest.fixture
def other_server() -> Iterator[TokenServer]:
    with TokenServer() as server:
        yield server


def post_token(
    server: TokenServer,
    data: Any = POST_CREDENTIALS,
    timeout: Any = TIMEOUT,
    **kwargs: Any,
) -> requests.Response:
    return requests.post(server.token_url, data, timeout=timeout, **kwargs)


def basic_header(client_id: str, secret: str) -> str:
    quote = urllib.parse.quote_plus
    pair = f"{quote(client_id)}:{quote(secret)}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    claims: dict[str, Any] = json.loads(decoded)
    return claims


# Default behaviour.


def test_client_secret_post_gets_a_bearer_token(server: TokenServer) -> None:
    response = post_token(server)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert len(body["access_token"].split(".")) == 3


def test_client_secret_basic_gets_a_bearer_token(server: TokenServer) -> None:
    response = post_token(server, data=GRANT, auth=(CLIENT_ID, SECRET))

    assert response.status_code == 200
    assert response.json()["token_type"] == "Bearer"


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    client_id=st.text(st.characters(exclude_categories=["Cs"]), min_size=1),
    secret=st.text(st.characters(exclude_categories=["Cs"]), min_size=1),
)
def test_client_secret_basic_decodes_form_encoded_credentials(
    server: TokenServer, client_id: str, secret: str
) -> None:
    server.add_client(client_id, secret)
    headers = {"Authorization": basic_header(client_id, secret)}

    response = post_token(server, data=GRANT, headers=headers)

    assert response.status_code == 200, response.text


def test_tokens_are_fresh_jwts_naming_the_client(server: TokenServer) -> None:
    server.add_client("scoped", "pw", allowed_scopes=["read", "write"], lifetime=60)
    credentials = {**GRANT, "client_id": "scoped", "client_secret": "pw"}

    first = post_token(server, data={**credentials, "scope": "read"}).json()
    second = post_token(server, data=credentials).json()

    assert first["access_token"] != second["access_token"]
    assert first["scope"] == "read"
    assert second["scope"] == "read write"
    claims = jwt_claims(first["access_token"])
    assert claims["azp"] == "scoped"
    assert claims["scope"] == "read"
    assert claims["exp"] == claims["iat"] + 60


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        pytest.param(
            {**POST_CREDENTIALS, "client_secret": "wrong"},
            401,
            "invalid_client",
            id="wrong-secret",
        ),
        pytest.param(
            {**POST_CREDENTIALS, "client_id": "stranger"},
            401,
            "invalid_client",
            id="unknown-client",
        ),
        pytest.param(
            {**GRANT, "client_id": CLIENT_ID}, 401, "invalid_client", id="no-secret"
        ),
        pytest.param(
            {**POST_CREDENTIALS, "grant_type": "password"},
            400,
            "unsupported_grant_type",
            id="password-grant",
        ),
        pytest.param(
            {"client_id": CLIENT_ID, "client_secret": SECRET},
            400,
            "invalid_request",
            id="no-grant-type",
        ),
    ],
)
def test_bad_token_requests_get_oauth_errors(
    server: TokenServer, data: dict[str, str], status: int, error: str
) -> None:
    response = post_token(server, data=data)

    assert response.status_code == status
    assert response.json()["error"] == error


def test_wrong_secret_is_answered_like_keycloak(server: TokenServer) -> None:
    response = post_token(server, data=GRANT, auth=(CLIENT_ID, "wrong"))

    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "Invalid client or Invalid client credentials",
    }


def test_scope_outside_the_allowed_ones_is_invalid_scope(server: TokenServer) -> None:
    server.add_client("scoped", "pw", allowed_scopes=["read"])
    data = {**GRANT, "client_id": "scoped", "client_secret": "pw", "scope": "admin"}

    response = post_token(server, data=data)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_json_body_is_refused_as_invalid_request(server: TokenServer) -> None:
    response = post_token(server, data=None, json=POST_CREDENTIALS)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_set_secret_rotates_the_client_secret(server: TokenServer) -> None:
    server.set_secret(CLIENT_ID, "rotated")

    with_old = post_token(server)
    with_new = post_token(server, data={**POST_CREDENTIALS, "client_secret": "rotated"})

    assert with_old.status_code == 401
    assert with_new.status_code == 200


def test_discovery_document_points_at_the_token_endpoint(server: TokenServer) -> None:
    url = server.url + "/.well-known/openid-configuration"

    document = requests.get(url, timeout=TIMEOUT).json()

    assert document["issuer"] == server.url
    assert document["token_endpoint"] == server.token_url


# Scripting.


def test_scripted_replies_are_consumed_in_order_then_default_resumes(
    server: TokenServer,
) -> None:
    server.script(tokenserver.server_error(502), tokenserver.throttled(1))

    statuses = [post_token(server).status_code for _ in range(3)]

    assert statuses == [502, 429, 200]


def test_set_default_holds_until_reset(server: TokenServer) -> None:
    server.set_default(tokenserver.server_error(503))

    before = [post_token(server).status_code for _ in range(2)]
    server.reset()
    after = post_token(server).status_code

    assert before == [503, 503]
    assert after == 200


def test_a_responder_function_builds_a_reply_per_request(server: TokenServer) -> None:
    server.set_default(lambda request: tokenserver.token_response(opaque=True))

    tokens = {post_token(server).json()["access_token"] for _ in range(2)}

    assert len(tokens) == 2
    assert all("." not in token for token in tokens)


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [
        pytest.param(7, "7", id="seconds"),
        pytest.param(
            datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
            "Wed, 02 Jan 2030 03:04:05 GMT",
            id="http-date",
        ),
    ],
)
@pytest.mark.parametrize("status", [429, 503])
def test_throttled_reply_carries_retry_after(
    server: TokenServer,
    retry_after: int | datetime.datetime,
    header: str,
    status: int,
) -> None:
    server.script(tokenserver.throttled(retry_after, status=status))

    response = post_token(server)

    assert response.status_code == status
    assert response.headers["Retry-After"] == header


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(tokenserver.oauth_error("unauthorized_client"), id="400"),
        pytest.param(tokenserver.oauth_error("invalid_client"), id="401"),
        pytest.param(tokenserver.oauth_error("invalid_grant", status=200), id="200"),
    ],
)
def test_oauth_error_replies_carry_an_error_object(
    server: TokenServer, reply: tokenserver.Reply
) -> None:
    server.script(reply)

    response = post_token(server)

    assert response.status_code == reply.status
    assert response.json() == reply.json


@pytest.mark.parametrize(
    ("reply", "content_type", "text"),
    [
        pytest.param(tokenserver.html_page(), "text/html", "<html>", id="html"),
        pytest.param(tokenserver.text_body("oops"), "text/plain", "oops", id="text"),
        pytest.param(
            tokenserver.missing_access_token(),
            "application/json",
            '"token_type"',
            id="no-access-token",
        ),
    ],
)
def test_odd_bodies_arrive_as_written(
    server: TokenServer, reply: tokenserver.Reply, content_type: str, text: str
) -> None:
    server.script(reply)

    response = post_token(server)

    assert response.headers["Content-Type"].startswith(content_type)
    assert text in response.text
    assert "access_token" not in response.text


@pytest.mark.parametrize("expires_in", [0, -30, "300", "soon", 10**30], ids=repr)
def test_token_response_sends_expires_in_as_given(
    server: TokenServer, expires_in: object
) -> None:
    server.script(tokenserver.token_response(expires_in))

    body = post_token(server).json()

    assert body["expires_in"] == expires_in


@pytest.mark.parametrize("opaque", [False, True], ids=["jwt", "opaque"])
def test_token_response_can_leave_expires_in_out(
    server: TokenServer, opaque: bool
) -> None:
    reply = tokenserver.token_response(tokenserver.OMIT, exp_in=120, opaque=opaque)
    server.script(reply)

    body = post_token(server).json()

    assert "expires_in" not in body
    token = body["access_token"]
    if opaque:
        assert "." not in token
    else:
        claims = jwt_claims(token)
        assert claims["exp"] == claims["iat"] + 120


def test_charset_content_type_is_sent_verbatim(server: TokenServer) -> None:
    content_type = "application/json; charset=utf-8"
    server.script(tokenserver.token_response(content_type=content_type))

    response = post_token(server)

    assert response.headers["Content-Type"] == content_type
    assert response.json()["token_type"] == "Bearer"


def test_redirect_points_at_the_other_server_and_is_not_followed(
    server: TokenServer, other_server: TokenServer
) -> None:
    server.script(tokenserver.redirect(other_server.token_url))

    response = post_token(server, allow_redirects=False)

    assert response.status_code == 302
    assert response.headers["Location"] == other_server.token_url
    assert other_server.count() == 0


def test_temporary_redirect_keeps_its_status(
    server: TokenServer, other_server: TokenServer
) -> None:
    server.script(tokenserver.redirect(other_server.token_url, status=307))

    response = post_token(server, allow_redirects=False)

    assert response.status_code == 307
    assert response.headers["Location"] == other_server.token_url


def test_huge_body_streams_without_end_in_sight(server: TokenServer) -> None:
    server.script(tokenserver.huge_body(256 * tokenserver.MiB))

    with post_token(server, stream=True) as response:
        first_megabyte = response.raw.read(tokenserver.MiB)

    assert int(response.headers["Content-Length"]) == 256 * tokenserver.MiB
    assert len(first_megabyte) == tokenserver.MiB
    assert first_megabyte.startswith(b'{"access_token": "AAAA')


def test_huge_body_is_valid_json_when_read_to_the_end(server: TokenServer) -> None:
    server.script(tokenserver.huge_body(3 * tokenserver.MiB + 17))

    response = post_token(server)

    assert len(response.content) == 3 * tokenserver.MiB + 17
    assert response.json()["token_type"] == "Bearer"


def test_delay_beyond_the_read_timeout_times_the_client_out(
    server: TokenServer,
) -> None:
    server.script(tokenserver.delayed(5))

    with pytest.raises(requests.exceptions.ReadTimeout):
        post_token(server, timeout=(TIMEOUT, 0.2))


def test_delay_within_the_read_timeout_still_answers(server: TokenServer) -> None:
    server.script(tokenserver.delayed(0.2))

    started = time.monotonic()
    response = post_token(server)

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2


def test_disconnect_closes_the_connection_without_an_answer(
    server: TokenServer,
) -> None:
    server.script(tokenserver.disconnect())

    with pytest.raises(requests.exceptions.ConnectionError):
        post_token(server)

    assert server.count() == 1


# Recording.


def test_records_capture_form_fields_headers_and_client(server: TokenServer) -> None:
    post_token(server, data={**POST_CREDENTIALS, "scope": "a b"})

    [record] = server.wait_for_requests(1)

    assert record.method == "POST"
    assert record.path == "/token"
    assert record.field("client_secret") == SECRET
    assert record.form["scope"] == ["a b"]
    assert record.header("content-type") == "application/x-www-form-urlencoded"
    assert SECRET.encode() in record.body
    assert record.client[0] == "127.0.0.1"


def test_records_filter_by_path(server: TokenServer) -> None:
    requests.get(server.url + "/.well-known/openid-configuration", timeout=TIMEOUT)
    post_token(server)

    assert server.count() == 2
    assert server.count("/token") == 1
    assert [r.method for r in server.wait_for_requests(1, path="/token")] == ["POST"]


def test_wait_for_requests_gives_up_after_its_timeout(server: TokenServer) -> None:
    with pytest.raises(TimeoutError, match="got 0"):
        server.wait_for_requests(1, timeout=0.05)


# TLS and lifecycle.


def test_tls_server_is_verified_with_its_ca_file() -> None:
    with TokenServer(tls=True) as server:
        server.add_client(CLIENT_ID, SECRET)

        response = post_token(server, verify=str(server.ca_file))

    assert server.url.startswith("https://127.0.0.1:")
    assert response.status_code == 200


def test_tls_server_is_rejected_without_its_ca() -> None:
    with TokenServer(tls=True) as server:
        ca_pem = server.ca_pem

        with pytest.raises(requests.exceptions.SSLError):
            post_token(server)

    assert ca_pem.startswith("-----BEGIN CERTIFICATE-----")


def test_stop_is_idempotent_and_refuses_new_connections() -> None:
    server = TokenServer()
    url = server.token_url

    server.stop()
    server.stop()

    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(url, data=GRANT, timeout=TIMEOUT)


def test_stop_drops_kept_alive_connections(server: TokenServer) -> None:
    with requests.Session() as session:
        first = session.post(server.token_url, data=POST_CREDENTIALS, timeout=TIMEOUT)
        server.stop()

        with pytest.raises(requests.exceptions.ConnectionError):
            session.post(server.token_url, data=POST_CREDENTIALS, timeout=TIMEOUT)

    assert first.status_code == 200


def test_command_line_serves_until_interrupted() -> None:
    command = [sys.executable, "-m", "devenv.tokenserver", "--client-id", "demo"]
    command += ["--client-secret", SECRET, "--lifetime", "60"]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        token_url = process.stdout.readline().strip()  # type: ignore[union-attr]
        response = requests.post(
            token_url, data=GRANT, auth=("demo", SECRET), timeout=TIMEOUT
        )
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=TIMEOUT)

    assert response.json()["expires_in"] == 60
    assert process.returncode == 0, stderr
    assert SECRET not in stderr
