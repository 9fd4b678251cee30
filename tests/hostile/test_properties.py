"""Properties over generated token responses and specs: no crash, no leak, a reason.

Hypothesis writes the answers; the real token server sends them over a socket
to the real client, which must return a usable token or a ``TokenError`` with a
known reason, never another exception and never the client secret or the
token in its text. Generated specs must parse or fail with a ``SpecError``. A
few generated answers also go through the running operator, whose status must
name a known reason for every one of them.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenkeeper import reasons
from tokenkeeper.endpoint import (
    EndpointSettings,
    Token,
    TokenError,
    TokenRequest,
    fetch_token,
)
from tokenkeeper.spec import Spec, SpecError, parse_spec
from tokenkeeper.transport import new_session

from devenv.tokenserver import RecordedRequest, Reply, TokenServer
from tests.cluster import Cluster, basic_spec, wait_for

KNOWN_REASONS = {
    value
    for name, value in vars(reasons).items()
    if name.isupper() and isinstance(value, str)
}
SETTINGS = EndpointSettings(connect_timeout=2, read_timeout=2, total_timeout=5)
SECRET = "prop-canary-secret-Zq8"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.just(SECRET),
)
tokens = st.one_of(
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=",
        min_size=1,
        max_size=80,
    ),
    st.text(max_size=40),
    st.just(SECRET),
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "access_token": st.one_of(tokens, scalars),
        "token_type": st.one_of(st.sampled_from(["Bearer", "bearer", "DPoP"]), scalars),
        "expires_in": st.one_of(
            st.integers(min_value=-100, max_value=10**12),
            st.sampled_from(["300", " 60 ", "1e3", "soon", "0.5"]),
            scalars,
        ),
        "scope": scalars,
        "error": st.one_of(
            st.sampled_from(["invalid_client", "invalid_scope"]), scalars
        ),
        "error_description": scalars,
    },
)
bodies = st.one_of(
    documents.map(lambda d: json.dumps(d).encode()),
    st.lists(scalars, max_size=3).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.just(b"<html>" + SECRET.encode() + b"</html>"),
)


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    retry_after: str | None

    def reply(self) -> Reply:
        headers = {"Content-Type": self.content_type}
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        return Reply(status=self.status, body=self.body, headers=headers)


answers = st.builds(
    Answer,
    status=st.sampled_from([200, 200, 200, 201, 400, 401, 403, 404, 429, 500, 503]),
    body=bodies,
    content_type=st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "text/html", ""]
    ),
    retry_after=st.one_of(
        st.none(),
        st.sampled_from(["1", "abc", "-5", "Wed, 21 Oct 2015 07:28:00 GMT", ""]),
    ),
)


@pytest.fixture(scope="module")
def server() -> Iterator[TokenServer]:
    with TokenServer() as server:
        yield server


def _fetch(
    answer: Answer, server: TokenServer
) -> tuple[Token | None, TokenError | None]:
    server.set_default(answer.reply())
    request = TokenRequest(server.token_url, "prop-app", SECRET)
    with new_session() as session:
        try:
            return fetch_token(request, session, SETTINGS, datetime.now(UTC)), None
        except TokenError as error:
            return None, error


@settings(max_examples=150, deadline=None)
@given(answer=answers)
def test_any_answer_gives_a_token_or_a_known_reason_without_the_secret(
    server: TokenServer, answer: Answer
) -> None:
    asked_at = datetime.now(UTC)

    token, error = _fetch(answer, server)

    if error is not None:
        assert error.reason in KNOWN_REASONS
        assert error.message
        assert SECRET not in str(error)
        assert SECRET not in repr(error)
    else:
        assert token is not None
        assert token.access_token
        assert SECRET not in repr(token)
        assert 200 <= answer.status < 300
        assert asked_at + timedelta(seconds=1) <= token.expires_at
        assert token.expires_at <= asked_at + SETTINGS.max_lifetime + timedelta(
            seconds=5
        )


specs = st.fixed_dictionaries(
    {},
    optional={
        "tokenURL": st.one_of(st.just("https://sso.example.com/token"), scalars),
        "issuerURL": st.one_of(st.just("https://sso.example.com"), scalars),
        "clientID": scalars,
        "clientSecretRef": st.one_of(
            st.fixed_dictionaries({"name": scalars}, optional={"key": scalars}),
            scalars,
        ),
        "authMethod": st.one_of(st.sampled_from(["client_secret_basic"]), scalars),
        "scopes": st.one_of(st.lists(scalars, max_size=3), scalars),
        "extraParams": st.one_of(
            st.dictionaries(st.text(max_size=12), scalars, max_size=3), scalars
        ),
        "refreshBeforeSeconds": scalars,
        "refreshBeforePercentage": scalars,
        "secretTemplate": st.one_of(
            st.dictionaries(st.text(max_size=5), scalars), scalars
        ),
        "caBundleRef": st.one_of(st.fixed_dictionaries({"name": scalars}), scalars),
    },
)


@settings(max_examples=300, deadline=None)
@given(spec=specs)
def test_any_spec_parses_or_says_what_is_wrong(spec: dict[str, Any]) -> None:
    body = {"metadata": {"name": "generated", "namespace": "ns"}, "spec": spec}

    try:
        parsed, error = parse_spec(body), None
    except SpecError as raised:
        parsed, error = None, raised

    if error is not None:
        assert str(error)
        return
    assert isinstance(parsed, Spec)
    assert bool(parsed.token_url) != bool(parsed.issuer_url)
    assert parsed.auth_method in ("client_secret_post", "client_secret_basic")


class Dispatch:
    """A token server answering each client id with the answer generated for it."""

    def __init__(self, server: TokenServer) -> None:
        self.server = server
        self.answers: dict[str, Answer] = {}
        server.set_default(self._reply)

    def _reply(self, request: RecordedRequest) -> Reply:
        return self.answers[request.field("client_id") or ""].reply()


@pytest.fixture(scope="module")
def dispatch() -> Iterator[Dispatch]:
    with TokenServer() as server:
        yield Dispatch(server)


@pytest.mark.usefixtures("operator")
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(answer=answers)
def test_the_operator_reports_a_known_reason_for_any_answer(
    cluster: Cluster, namespace: str, dispatch: Dispatch, answer: Answer
) -> None:
    name = f"app-{uuid.uuid4().hex[:8]}"
    dispatch.answers[name] = answer
    if cluster.secret(namespace, "client") is None:
        cluster.create_client_secret(namespace, value=SECRET)

    cluster.create_credential(
        namespace, name, basic_spec(dispatch.server, clientID=name)
    )

    refreshed = wait_for(
        lambda: (
            (c := cluster.condition(namespace, name, "Refreshed"))
            and c["reason"] != "Pending"
            and c
        )
    )
    ready = cluster.condition(namespace, name, "Ready")
    assert ready is not None
    assert refreshed["reason"] in KNOWN_REASONS
    assert ready["reason"] in KNOWN_REASONS
    assert SECRET not in json.dumps(cluster.credential(namespace, name))
    assert (ready["status"] == "True") == (cluster.token(namespace, name) is not None)
