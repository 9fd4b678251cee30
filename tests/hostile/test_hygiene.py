"""Tokens and client secrets never appear in logs, events, status or errors.

Canary values are planted: a client secret made for this test (with reserved
and non-ASCII characters, so its encoded forms differ from it), and every
access token the token servers issue or offer (collected on the server side). Two
operators run at DEBUG level, one with the default log format and one with
JSON, each serving its own namespace, through successes, refreshes, a restore
and every kind of failure, including servers that echo the secret and the
last token back in error_description, in an error code, in an HTML page and
in a redirect's Location, and one that echoes the whole request back. Then
everything the operators emitted is searched for the canaries, as they are and
as base64 and form encoding would show them, and for any 16-character piece of
a token, so that a token cut short in a quoted message is found too.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator

import pytest

from devenv.tokenserver import (
    RecordedRequest,
    Reply,
    TokenServer,
    delayed,
    html_page,
    huge_body,
    oauth_error,
    redirect,
    throttled,
    token_response,
)
from tests.cluster import Cluster, basic_spec, wait_for
from tests.hostile.conftest import StartOperator, wait_condition, wait_ready

CANARY_SECRET = f"hygiene+canary/{uuid.uuid4().hex}=&é %"
CLIENT_ID = "hygiene-app"


class Issuer:
    """Token replies whose tokens are remembered: the canaries to search for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tokens: list[str] = []
        self.offered: list[str] = []
        """Tokens in answers the operator must refuse: canaries all the same."""

    def issue(self, request: RecordedRequest) -> Reply:
        reply = token_response(expires_in=3)
        with self._lock:
            self.tokens.append(reply.json["access_token"])
        return reply

    def offer(self, reply: Reply) -> Reply:
        with self._lock:
            self.offered.append(reply.json["access_token"])
        return reply

    def last(self) -> str:
        with self._lock:
            return self.tokens[-1] if self.tokens else "no-token-yet"


def _echoing(
    issuer: Issuer,
) -> dict[str, tuple[Callable[[RecordedRequest], Reply], str]]:
    """Failure modes, each answering with the canaries where a server might."""

    def said() -> str:
        return f"client_secret={CANARY_SECRET} token={issuer.last()}"

    def echo(request: RecordedRequest) -> Reply:
        everything = f"{request.body.decode()} {request.header('Authorization')}"
        return oauth_error("invalid_request", everything)

    def page(status: int) -> Reply:
        plain = html_page(status)
        body = f"<html><body><pre>{said()}</pre></body></html>"
        return Reply(status=status, body=body, headers=plain.headers)

    return {
        "echo-description": (
            lambda r: oauth_error("invalid_client", said()),
            "InvalidClient",
        ),
        "echo-error-code": (
            lambda r: oauth_error(CANARY_SECRET, said(), status=401),
            "TokenEndpointError",
        ),
        "echo-error-at-200": (
            lambda r: oauth_error(CANARY_SECRET, said(), status=200),
            "InvalidTokenResponse",
        ),
        "echo-html-200": (lambda r: page(200), "InvalidTokenResponse"),
        "echo-html-500": (lambda r: page(500), "ServerError"),
        "echo-redirect": (
            lambda r: redirect(f"https://elsewhere.example/?{said()}"),
            "UnexpectedRedirect",
        ),
        "echo-bad-token": (
            lambda r: issuer.offer(
                token_response(
                    expires_in=300, opaque=True, scope=said(), token_type=CANARY_SECRET
                )
            ),
            "InvalidTokenResponse",
        ),
        "echo-request": (echo, "InvalidRequest"),
        "echo-request-basic": (echo, "InvalidRequest"),
        "throttled": (lambda r: throttled(1), "RateLimited"),
        "timeout": (lambda r: delayed(3), "Timeout"),
        "huge": (lambda r: huge_body(2 * 1024 * 1024), "InvalidTokenResponse"),
    }


@pytest.fixture
def servers() -> Iterator[tuple[Issuer, dict[str, tuple[TokenServer, str]]]]:
    issuer = Issuer()
    started: dict[str, tuple[TokenServer, str]] = {}
    try:
        ok = TokenServer()
        ok.set_default(issuer.issue)
        started["ok"] = (ok, "TokenIssued")
        for mode, (responder, reason) in _echoing(issuer).items():
            server = TokenServer()
            server.set_default(responder)
            started[mode] = (server, reason)
        tls = TokenServer(tls=True)
        started["tls-untrusted"] = (tls, "TLSError")
        yield issuer, started
    finally:
        for server, _ in started.values():
            server.stop()


def _run_scenario(
    cluster: Cluster,
    namespace: str,
    servers: dict[str, tuple[TokenServer, str]],
) -> None:
    cluster.create_client_secret(namespace, value=CANARY_SECRET)
    for mode, (server, _) in servers.items():
        basic = mode in ("ok", "echo-request-basic")
        method = "client_secret_basic" if basic else "client_secret_post"
        spec = basic_spec(server, clientID=CLIENT_ID, authMethod=method)
        cluster.create_credential(namespace, mode, spec)
    cluster.create_credential(
        namespace,
        "no-client-secret",
        basic_spec(servers["ok"][0], clientSecretRef={"name": "nope"}),
    )


def _encodings(value: str) -> set[str]:
    raw = value.encode()
    form = urllib.parse.quote_plus(value)
    return {
        value,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        form,
        urllib.parse.quote(value, safe=""),
        base64.b64encode(f"{CLIENT_ID}:{value}".encode()).decode(),
        base64.b64encode(f"{CLIENT_ID}:{form}".encode()).decode(),
    }


def _pieces(token: str, size: int = 16) -> set[str]:
    """Every piece of ``size`` characters, at every eighth offset."""
    return {token[i : i + size] for i in range(0, len(token) - size + 1, 8)}


def test_no_token_or_client_secret_appears_in_anything_the_operator_emits(
    cluster: Cluster,
    solo_operator: StartOperator,
    servers: tuple[Issuer, dict[str, tuple[TokenServer, str]]],
) -> None:
    issuer, by_mode = servers
    namespaces = [f"hygiene-{kind}-{uuid.uuid4().hex[:6]}" for kind in ("full", "json")]
    for namespace in namespaces:
        cluster.core.create_namespace({"metadata": {"name": namespace}})
    try:
        full = solo_operator(
            "--verbose",
            "--read-timeout=1",
            f"--namespace={namespaces[0]}",
            log_name="full.log",
        )
        structured = solo_operator(
            "--verbose",
            "--read-timeout=1",
            "--log-format=json",
            f"--namespace={namespaces[1]}",
            log_name="json.log",
        )
        for namespace in namespaces:
            _run_scenario(cluster, namespace, by_mode)
        for namespace in namespaces:
            for mode, (_, reason) in by_mode.items():
                wait_condition(
                    cluster, namespace, mode, "Refreshed", reason=reason, timeout=30
                )
            wait_condition(
                cluster,
                namespace,
                "no-client-secret",
                "Ready",
                reason="ClientSecretNotFound",
            )
            first = wait_ready(cluster, namespace, "ok")
            cluster.core.delete_namespaced_secret("ok", namespace)
            wait_for(lambda n=namespace: cluster.token(n, "ok"), timeout=10)
            wait_for(
                lambda n=namespace, t=first: cluster.token(n, "ok") not in (None, t),
                timeout=10,
            )

        full.stop()
        structured.stop()
        emitted = {
            "full log": full.logs(),
            "json log": structured.logs(),
        }
        for namespace in namespaces:
            events = cluster.core.list_namespaced_event(namespace)
            emitted[f"events in {namespace}"] = json.dumps(
                cluster.api.sanitize_for_serialization(events.items)
            )
            emitted[f"ClientCredentials in {namespace}"] = cluster.kubectl(
                "get", "clientcredentials", "-n", namespace, "-o", "json"
            )
            emitted[f"describe in {namespace}"] = cluster.kubectl(
                "describe", "clientcredentials", "-n", namespace
            )
    finally:
        for namespace in namespaces:
            cluster.core.delete_namespace(namespace)

    canaries = _encodings(CANARY_SECRET)
    for token in issuer.tokens + issuer.offered:
        canaries |= _encodings(token) | _pieces(token)
    assert len(issuer.tokens) >= 4, "too few tokens issued to prove anything"
    assert issuer.offered, "no refused token was offered"
    leaks = [
        (where, canary[:12])
        for where, text in emitted.items()
        for canary in canaries
        if canary in text
    ]
    assert not leaks, f"canaries found: {leaks}"
    for reason in {reason for _, reason in by_mode.values()} - {"TokenIssued"}:
        assert reason in emitted["full log"]
        assert reason in emitted["json log"]
    assert "[redacted]" in emitted["full log"]
    json_lines = [line for line in emitted["json log"].splitlines() if line]
    assert all(line.startswith("{") for line in json_lines[:20])
