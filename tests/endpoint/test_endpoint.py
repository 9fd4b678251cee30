"""The token-endpoint client against a real loopback server scripted to misbehave."""

import base64
import contextlib
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
from tokenkeeper import USER_AGENT, reasons
from tokenkeeper.endpoint import (
    EndpointSettings,
    Retry,
    TokenError,
    TokenRequest,
    basic_authorization,
    discover_token_url,
    fetch_token,
    jwt_expiry,
)
from tokenkeeper.transport import new_session

from devenv import tokenserver as ts

SECRET = "s3cr3t-canary-5f1d"
SETTINGS = EndpointSettings(connect_timeout=2, read_timeout=1, total_timeout=5)


@pytest.fixture(scope="module")
def module_server() -> Iterator[ts.TokenServer]:
    with ts.TokenServer() as server:
        yield server


@pytest.fixture
def server(module_server: ts.TokenServer) -> ts.TokenServer:
    module_server.reset()
    module_server.clear_requests()
    module_server.add_client("app", SECRET, lifetime=300)
    return module_server


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with new_session() as s:
        yield s


def now() -> datetime:
    return datetime.now(UTC)


def request_for(server: ts.TokenServer, **overrides: object) -> TokenRequest:
    fields: dict[str, object] = {
        "token_url": server.token_url,
        "client_id": "app",
        "client_secret": SECRET,
    }
    fields.update(overrides)
    return TokenRequest(**fields)  # type: ignore[arg-type]


def fail(
    server: ts.TokenServer, session: requests.Session, **overrides: object
) -> TokenError:
    with pytest.raises(TokenError) as caught:
        fetch_token(request_for(server, **overrides), session, SETTINGS, now())
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)
    return caught.value


def test_client_secret_post_sends_form_fields_and_gets_a_token(
    server: ts.TokenServer, session: requests.Session
) -> None:
    before = now()

    token = fetch_token(request_for(server), session, SETTINGS, before)

    sent = server.requests[-1]
    assert sent.field("grant_type") == "client_credentials"
    assert sent.field("client_id") == "app"
    assert sent.field("client_secret") == SECRET
    assert sent.header("Authorization") is None
    assert sent.header("Accept") == "application/json"
    assert sent.header("User-Agent") == USER_AGENT
    assert token.token_type == "Bearer"
    assert token.expires_at == before + timedelta(seconds=300)


def test_client_secret_basic_sends_credentials_only_in_the_header(
    server: ts.TokenServer, session: requests.Session
) -> None:
    fetch_token(
        request_for(server, auth_method="client_secret_basic"), session, SETTINGS, now()
    )

    sent = server.requests[-1]
    assert sent.field("client_secret") is None
    assert sent.field("client_id") is None
    assert sent.header("Authorization") == basic_authorization("app", SECRET)


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
@pytest.mark.parametrize(
    "secret", ["a+b c/d?e=f&g%h:i@j", "pässwörd-ünïcødé-秘密", "colon:first:second"]
)
def test_secrets_with_reserved_and_non_ascii_characters_work(
    server: ts.TokenServer, session: requests.Session, method: str, secret: str
) -> None:
    server.add_client("odd:client id", secret)

    token = fetch_token(
        request_for(
            server, client_id="odd:client id", client_secret=secret, auth_method=method
        ),
        session,
        SETTINGS,
        now(),
    )

    assert token.access_token


def test_basic_credentials_are_form_encoded_before_base64() -> None:
    header = basic_authorization("id with space", "p@ss:wörd")

    decoded = base64.b64decode(header.removeprefix("Basic ")).decode("ascii")
    assert decoded == "id+with+space:p%40ss%3Aw%C3%B6rd"
    _, _, password = decoded.partition(":")
    assert urllib.parse.unquote_plus(password) == "p@ss:wörd"


def test_scopes_audience_and_extra_params_are_sent(
    server: ts.TokenServer, session: requests.Session
) -> None:
    fetch_token(
        request_for(
            server,
            scopes=("read", "write"),
            audience="https://api.example",
            extra_params={"resource": "billing"},
        ),
        session,
        SETTINGS,
        now(),
    )

    sent = server.requests[-1]
    assert sent.field("scope") == "read write"
    assert sent.field("audience") == "https://api.example"
    assert sent.field("resource") == "billing"


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        ("invalid_client", 401, reasons.INVALID_CLIENT),
        ("invalid_client", 400, reasons.INVALID_CLIENT),
        ("unauthorized_client", 400, reasons.UNAUTHORIZED_CLIENT),
        ("unauthorized_client", 401, reasons.UNAUTHORIZED_CLIENT),
        ("invalid_scope", 400, reasons.INVALID_SCOPE),
        ("invalid_request", 400, reasons.INVALID_REQUEST),
        ("invalid_grant", 400, reasons.INVALID_GRANT),
        ("temporarily_weird", 400, reasons.TOKEN_ENDPOINT_ERROR),
    ],
)
def test_oauth_errors_are_classified_by_the_error_field_not_the_status(
    server: ts.TokenServer,
    session: requests.Session,
    error: str,
    status: int,
    reason: str,
) -> None:
    server.script(ts.oauth_error(error, "described", status=status))

    e = fail(server, session)

    assert e.reason == reason
    assert e.retry is Retry.CREDENTIAL
    assert error in e.message
    assert "described" in e.message


@pytest.mark.parametrize(
    ("description", "reason"),
    [
        ("Invalid client or Invalid client credentials", reasons.INVALID_CLIENT),
        ("Client not enabled to retrieve service account", reasons.UNAUTHORIZED_CLIENT),
    ],
)
def test_keycloaks_unauthorized_client_for_a_wrong_secret_is_an_invalid_client(
    server: ts.TokenServer, session: requests.Session, description: str, reason: str
) -> None:
    server.script(ts.oauth_error("unauthorized_client", description, status=401))

    e = fail(server, session)

    assert e.reason == reason
    assert description in e.message


def test_a_server_echoing_the_client_secret_has_it_redacted(
    server: ts.TokenServer, session: requests.Session
) -> None:
    server.script(ts.oauth_error("invalid_client", f"bad secret {SECRET}"))

    e = fail(server, session)

    assert "[redacted]" in e.message


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (ts.server_error(500), reasons.SERVER_ERROR),
        (ts.server_error(502), reasons.SERVER_ERROR),
        (ts.oauth_error("invalid_client", status=200), reasons.INVALID_TOKEN_RESPONSE),
        (ts.missing_access_token(), reasons.INVALID_TOKEN_RESPONSE),
        (ts.html_page(), reasons.INVALID_TOKEN_RESPONSE),
        (ts.text_body(), reasons.INVALID_TOKEN_RESPONSE),
        (ts.token_response(expires_in=0), reasons.INVALID_TOKEN_RESPONSE),
        (ts.token_response(expires_in=-5), reasons.INVALID_TOKEN_RESPONSE),
        (ts.token_response(expires_in="soon"), reasons.INVALID_TOKEN_RESPONSE),
        (ts.token_response(expires_in=True), reasons.INVALID_TOKEN_RESPONSE),
        (ts.token_response(token_type=["Bearer"]), reasons.INVALID_TOKEN_RESPONSE),
        (ts.huge_body(8 * 1024 * 1024), reasons.INVALID_TOKEN_RESPONSE),
        (ts.disconnect(), reasons.CONNECTION_FAILED),
        (ts.delayed(3), reasons.TIMEOUT),
        (ts.html_page(status=404), reasons.TOKEN_ENDPOINT_ERROR),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_answers_become_a_specific_reason_and_never_a_token(
    server: ts.TokenServer, session: requests.Session, reply: ts.Reply, reason: str
) -> None:
    server.script(reply)

    e = fail(server, session)

    assert e.reason == reason
    assert e.message


def test_json_with_a_charset_in_the_content_type_is_accepted(
    server: ts.TokenServer, session: requests.Session
) -> None:
    server.script(ts.token_response(content_type="application/json; charset=utf-8"))

    token = fetch_token(request_for(server), session, SETTINGS, now())

    assert token.access_token


def test_expires_in_as_a_numeric_string_is_accepted(
    server: ts.TokenServer, session: requests.Session
) -> None:
    before = now()
    server.script(ts.token_response(expires_in="120"))

    token = fetch_token(request_for(server), session, SETTINGS, before)

    assert token.expires_at == before + timedelta(seconds=120)
    assert token.lifetime_note is None


def test_absurd_lifetime_is_clamped_with_a_note(
    server: ts.TokenServer, session: requests.Session
) -> None:
    before = now()
    server.script(ts.token_response(expires_in=10**12))

    token = fetch_token(request_for(server), session, SETTINGS, before)

    assert token.expires_at == before + SETTINGS.max_lifetime
    assert token.lifetime_note is not None
    assert "limit" in token.lifetime_note


def test_missing_expires_in_falls_back_to_the_jwt_exp_claim(
    server: ts.TokenServer, session: requests.Session
) -> None:
    server.script(ts.token_response(expires_in=ts.OMIT, exp_in=90))

    token = fetch_token(request_for(server), session, SETTINGS, now())

    assert jwt_expiry(token.access_token) is not None
    assert abs((token.expires_at - now()).total_seconds() - 90) < 3
    assert token.lifetime_note is not None
    assert "JWT exp" in token.lifetime_note


def test_missing_expires_in_on_an_opaque_token_uses_the_default_lifetime(
    server: ts.TokenServer, session: requests.Session
) -> None:
    before = now()
    server.script(ts.token_response(expires_in=ts.OMIT, opaque=True))

    token = fetch_token(request_for(server), session, SETTINGS, before)

    assert token.expires_at == before + SETTINGS.default_lifetime
    assert token.lifetime_note is not None
    assert "default lifetime" in token.lifetime_note


def test_retry_after_in_seconds_is_reported(
    server: ts.TokenServer, session: requests.Session
) -> None:
    server.script(ts.throttled(7))

    e = fail(server, session)

    assert e.reason == reasons.RATE_LIMITED
    assert e.retry_after == 7


def test_retry_after_as_an_http_date_on_503_is_reported(
    server: ts.TokenServer, session: requests.Session
) -> None:
    server.script(ts.throttled(now() + timedelta(seconds=40), status=503))

    e = fail(server, session)

    assert e.reason == reasons.RATE_LIMITED
    assert e.retry_after is not None
    assert 35 <= e.retry_after <= 41


def test_a_503_without_retry_after_is_a_server_error(
    server: ts.TokenServer, session: requests.Session
) -> None:
    server.script(ts.server_error(503))

    assert fail(server, session).reason == reasons.SERVER_ERROR


def test_redirects_are_never_followed_and_the_secret_stays_home(
    server: ts.TokenServer, session: requests.Session
) -> None:
    with ts.TokenServer() as elsewhere:
        server.script(ts.redirect(elsewhere.token_url, status=307))

        e = fail(server, session)

        assert e.reason == reasons.UNEXPECTED_REDIRECT
        assert elsewhere.count() == 0
        assert urllib.parse.urlsplit(elsewhere.url).netloc in e.message


def test_connection_refused_is_a_connection_failure(session: requests.Session) -> None:
    with ts.TokenServer() as gone:
        url = gone.token_url
    request = TokenRequest(token_url=url, client_id="app", client_secret=SECRET)

    with pytest.raises(TokenError) as caught:
        fetch_token(request, session, SETTINGS, now())

    assert caught.value.reason == reasons.CONNECTION_FAILED
    assert caught.value.retry is Retry.TRANSIENT


def test_tls_is_verified_with_the_given_ca_and_refused_without_it(
    session: requests.Session,
) -> None:
    with ts.TokenServer(tls=True) as tls_server:
        tls_server.add_client("app", SECRET)

        with pytest.raises(TokenError) as caught:
            fetch_token(request_for(tls_server), session, SETTINGS, now())
        token = fetch_token(
            request_for(tls_server, verify=str(tls_server.ca_file)),
            session,
            SETTINGS,
            now(),
        )

    assert caught.value.reason == reasons.TLS_ERROR
    assert "caBundleRef" in caught.value.message
    assert token.access_token


def test_discovery_finds_the_token_endpoint(
    server: ts.TokenServer, session: requests.Session
) -> None:
    assert discover_token_url(server.url, session, SETTINGS) == server.token_url


def test_broken_discovery_says_so(
    server: ts.TokenServer, session: requests.Session
) -> None:
    server.set_discovery(ts.html_page(status=404))

    with pytest.raises(TokenError) as caught:
        discover_token_url(server.url, session, SETTINGS)

    assert caught.value.reason == reasons.DISCOVERY_FAILED


def test_a_token_with_a_trailing_newline_is_refused(
    server: ts.TokenServer, session: requests.Session
) -> None:
    server.script(ts.Reply(json={"access_token": "abc\n", "expires_in": 300}))

    assert fail(server, session).reason == reasons.INVALID_TOKEN_RESPONSE


@pytest.mark.parametrize(
    "retry_after",
    ["\u00b2", "9" * 400, "100000000000000", "Fri, 01 Jan 99999999999 00:00:00 GMT"],
    ids=["superscript-digit", "400-digits", "huge", "far-date"],
)
def test_a_hostile_retry_after_is_still_rate_limiting_not_a_crash(
    server: ts.TokenServer, session: requests.Session, retry_after: str
) -> None:
    server.script(ts.throttled(retry_after))

    e = fail(server, session)

    assert e.reason == reasons.RATE_LIMITED


def test_an_expires_in_of_hundreds_of_digits_is_clamped_not_a_crash(
    server: ts.TokenServer, session: requests.Session
) -> None:
    before = now()
    server.script(ts.token_response(expires_in=10**400))

    token = fetch_token(request_for(server), session, SETTINGS, before)

    assert token.expires_at == before + SETTINGS.max_lifetime
    assert token.lifetime_note is not None


ODD_SECRET = "p+s/w=rd&é %canary-0a1b"


@pytest.mark.parametrize("auth_method", ["client_secret_post", "client_secret_basic"])
def test_a_server_echoing_the_request_leaks_no_form_of_the_secret(
    server: ts.TokenServer, session: requests.Session, auth_method: str
) -> None:
    server.add_client("odd", ODD_SECRET)

    def echo(request: ts.RecordedRequest) -> ts.Reply:
        said = f"{request.body.decode()} {request.header('Authorization')}"
        return ts.oauth_error("invalid_request", said)

    server.script(echo)
    request = request_for(
        server, client_id="odd", client_secret=ODD_SECRET, auth_method=auth_method
    )

    with pytest.raises(TokenError) as caught:
        fetch_token(request, session, SETTINGS, now())

    text = f"{caught.value} {caught.value!r}"
    basic = basic_authorization("odd", ODD_SECRET).removeprefix("Basic ")
    for form in (
        ODD_SECRET,
        urllib.parse.quote_plus(ODD_SECRET),
        urllib.parse.quote(ODD_SECRET, safe=""),
        basic,
        "canary-0a1b",
    ):
        assert form not in text
    assert "[redacted]" in text


def test_a_token_echoed_in_an_error_description_is_not_quoted(
    server: ts.TokenServer, session: requests.Session
) -> None:
    token = fetch_token(request_for(server), session, SETTINGS, now()).access_token
    server.script(ts.oauth_error("invalid_grant", f"token {token} was revoked"))

    e = fail(server, session)

    for start in range(0, len(token) - 16, 8):
        assert token[start : start + 16] not in e.message
    assert "was revoked" in e.message


def _drip(total: float) -> Iterator[bytes]:
    deadline = time.monotonic() + total
    while time.monotonic() < deadline:
        time.sleep(0.2)
        yield b" "


def test_a_body_trickling_in_byte_by_byte_is_cut_off_at_the_total_timeout(
    server: ts.TokenServer, session: requests.Session
) -> None:
    server.script(
        ts.Reply(
            stream=lambda: _drip(30),
            headers={"Content-Type": "application/json", "Content-Length": "1000"},
        )
    )
    started = time.monotonic()

    e = fail(server, session)

    assert e.reason == reasons.TIMEOUT
    assert "cut the exchange off" in e.message
    assert time.monotonic() - started < 25


def _trickled(
    scheme: str, opening: bytes, byte: bytes, session: requests.Session
) -> tuple[TokenError, float]:
    """Ask a raw loopback server that reads the request, sends ``opening`` and
    then ``byte`` every 0.2 s, for 30 s at most (a client that waits it out
    fails rather than hangs); the error and the seconds taken."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection, contextlib.suppress(OSError):
            connection.recv(65536)
            connection.sendall(opening)
            for _ in range(150):
                if stop.wait(0.2):
                    return
                connection.sendall(byte)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"{scheme}://127.0.0.1:{listener.getsockname()[1]}/token"
    started = time.monotonic()
    try:
        with pytest.raises(TokenError) as caught:
            fetch_token(TokenRequest(url, "app", SECRET), session, SETTINGS, now())
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    return caught.value, time.monotonic() - started


def test_headers_trickling_in_byte_by_byte_are_cut_off_at_the_total_timeout(
    session: requests.Session,
) -> None:
    e, took = _trickled("http", b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a", session)

    assert e.reason == reasons.TIMEOUT
    assert "cut the exchange off" in e.message
    assert took < 25


def test_the_session_keeps_no_cookies(
    server: ts.TokenServer, session: requests.Session
) -> None:
    reply = ts.token_response()
    server.script(
        ts.Reply(json=reply.json, headers={**reply.headers, "Set-Cookie": "sid=1"})
    )

    fetch_token(request_for(server), session, SETTINGS, now())
    fetch_token(request_for(server), session, SETTINGS, now())

    assert server.requests[-1].header("Cookie") is None
    assert not session.cookies


@pytest.mark.parametrize("issuer", ["https://elsewhere.example/realms/x", None])
def test_discovery_refuses_a_document_for_another_issuer(
    server: ts.TokenServer, session: requests.Session, issuer: str | None
) -> None:
    document = {"token_endpoint": server.token_url}
    if issuer:
        document["issuer"] = issuer
    server.set_discovery(ts.Reply(json=document))

    with pytest.raises(TokenError) as caught:
        discover_token_url(server.url, session, SETTINGS)

    assert caught.value.reason == reasons.DISCOVERY_FAILED
    assert "issuer" in caught.value.message


def test_discovery_accepts_the_issuer_with_a_trailing_slash(
    server: ts.TokenServer, session: requests.Session
) -> None:
    assert discover_token_url(server.url + "/", session, SETTINGS) == server.token_url


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("https://elsewhere.example/?q=caf\u00e9", "https://elsewhere.example"),
        ("http://[bad/", "redirect to ?"),
    ],
    ids=["not-utf8", "unclosed-ipv6"],
)
def test_a_redirect_to_a_hostile_location_is_reported_not_a_crash(
    server: ts.TokenServer, session: requests.Session, location: str, shown: str
) -> None:
    server.script(ts.redirect(location))

    e = fail(server, session)

    assert e.reason == reasons.UNEXPECTED_REDIRECT
    assert shown in e.message


def test_a_tls_handshake_trickling_in_ends_at_the_connect_timeout(
    session: requests.Session,
) -> None:
    # A handshake record announcing 16 KiB, then one byte at a time.
    e, took = _trickled("https", b"\x16\x03\x03\x40\x00", b"\x00", session)

    # CPython bounds a whole handshake by the socket timeout, not each read.
    assert e.reason == reasons.TIMEOUT
    assert "(connect)" in e.message
    assert took < 25


def test_a_redirect_without_a_location_names_no_target(
    server: ts.TokenServer, session: requests.Session
) -> None:
    server.script(ts.Reply(status=302))

    e = fail(server, session)

    assert e.reason == reasons.UNEXPECTED_REDIRECT
    assert "redirect to ?" in e.message
