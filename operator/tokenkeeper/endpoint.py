"""Talking to OAuth 2.0 token endpoints: the client-credentials grant and discovery.

This module owns everything that crosses the wire to a token endpoint: building
the request (RFC 6749 section 4.4), authenticating the client, reading a bounded
answer and turning it into a ``Token`` or a ``TokenError``. It is synchronous
(``requests``) and knows nothing about Kubernetes; callers run it in a thread.

Every failure becomes one ``TokenError`` whose ``reason`` is a constant from
``reasons`` and whose ``message`` is written here, from facts we chose to
include. Nothing a server sends is echoed unfiltered, and no exception text
from the transport is passed on, since both can carry URLs, bodies or headers.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import email.utils
import enum
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

import requests

from tokenkeeper import USER_AGENT, reasons
from tokenkeeper.transport import deadline

_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
"""RFC 6750 section 2.1: what a bearer token may contain, so it fits a header."""

_WRONG_SECRET = re.compile(r"invalid client credentials", re.IGNORECASE)
_MAX_TOKEN_CHARS = 64 * 1024
_MAX_QUOTED_CHARS = 200
_OPAQUE_RUN = re.compile(r"[A-Za-z0-9\-._~+/%=]{32,}")
"""A long unbroken run of token characters in server text: a token, a key or
an encoded secret echoed back, never a word a person needs to read."""


class Retry(enum.Enum):
    """How soon a failure may be retried; the schedule maps each to delays."""

    TRANSIENT = "transient"
    """The endpoint may recover by itself: quick exponential backoff."""
    CREDENTIAL = "credential"
    """Someone must change a credential or the client's setup: slow backoff."""
    LOCAL = "local"
    """A Kubernetes object is missing or wrong; no request was sent."""


@dataclasses.dataclass(frozen=True)
class EndpointSettings:
    """Operator-wide limits for every token request."""

    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 30.0
    max_body_bytes: int = 1024 * 1024
    default_lifetime: timedelta = timedelta(seconds=300)
    max_lifetime: timedelta = timedelta(hours=24)


@dataclasses.dataclass(frozen=True)
class TokenRequest:
    """One client-credentials request, resolved from a spec and its Secret."""

    token_url: str
    client_id: str
    client_secret: str = dataclasses.field(repr=False)
    auth_method: str = "client_secret_post"
    scopes: tuple[str, ...] = ()
    audience: str | None = None
    extra_params: Mapping[str, str] = dataclasses.field(default_factory=dict)
    verify: str | bool = True
    """``True`` for the system CAs, or a path to a PEM bundle (caBundleRef)."""


@dataclasses.dataclass(frozen=True)
class Token:
    """An access token as issued, with its expiry as an instant."""

    access_token: str = dataclasses.field(repr=False)
    token_type: str
    issued_at: datetime
    expires_at: datetime
    scope: str | None = None
    lifetime_note: str | None = None
    """Set when the lifetime was not the server's expires_in as given."""


class TokenError(Exception):
    """A token could not be obtained. ``str()`` is safe to log and to show."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        retry: Retry = Retry.TRANSIENT,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry = retry
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"TokenError({self.reason!r}, {self.message!r})"


_OAUTH_ERRORS: Mapping[str, tuple[str, str]] = {
    "invalid_client": (
        reasons.INVALID_CLIENT,
        "the client id or client secret was refused; check that spec.clientID "
        "exists in the authorization server and that the Secret holds its "
        "current secret",
    ),
    "unauthorized_client": (
        reasons.UNAUTHORIZED_CLIENT,
        "the client may not use the client-credentials grant; enable it for "
        "this client (in Keycloak: Client authentication on and Service "
        "accounts roles checked)",
    ),
    "invalid_scope": (
        reasons.INVALID_SCOPE,
        "a requested scope is unknown or not assigned to this client; fix "
        "spec.scopes or assign the scope to the client",
    ),
    "invalid_request": (
        reasons.INVALID_REQUEST,
        "the server rejected the request's parameters; check spec.audience "
        "and spec.extraParams",
    ),
    "invalid_grant": (
        reasons.INVALID_GRANT,
        "the server refused the client-credentials grant for this client",
    ),
    "unsupported_grant_type": (
        reasons.UNAUTHORIZED_CLIENT,
        "the server does not support the client-credentials grant here",
    ),
}


def fetch_token(
    request: TokenRequest,
    session: requests.Session,
    settings: EndpointSettings,
    now: datetime,
) -> Token:
    """Obtain one token with the client-credentials grant, or raise TokenError."""
    form = _grant_form(request)
    headers = {
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    if request.auth_method == "client_secret_basic":
        headers["Authorization"] = basic_authorization(
            request.client_id, request.client_secret
        )
    else:
        form["client_id"] = request.client_id
        form["client_secret"] = request.client_secret

    secrets = _forms_of(request)
    status, content_type, body, response_headers = _exchange(
        session,
        "POST",
        request.token_url,
        headers=headers,
        data=form,
        verify=request.verify,
        settings=settings,
        secrets=secrets,
    )
    document = _parse_json(body)
    _raise_for_status(status, content_type, document, response_headers, secrets, now)
    return _token_from(document, content_type, settings, now, secrets)


def discover_token_url(
    issuer_url: str,
    session: requests.Session,
    settings: EndpointSettings,
    verify: str | bool = True,
) -> str:
    """Read an OIDC issuer's discovery document and return its token endpoint."""
    well_known = issuer_url.rstrip("/") + "/.well-known/openid-configuration"
    try:
        status, content_type, body, _ = _exchange(
            session,
            "GET",
            well_known,
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            data=None,
            verify=verify,
            settings=settings,
            secrets=(),
        )
    except TokenError as e:
        raise TokenError(
            reasons.DISCOVERY_FAILED, f"OIDC discovery failed: {e.message}"
        ) from None

    document = _parse_json(body)
    if status != 200 or not isinstance(document, dict):
        raise TokenError(
            reasons.DISCOVERY_FAILED,
            f"OIDC discovery at {_origin(well_known)} answered HTTP {status} "
            f"({_describe_type(content_type)}), not a discovery document; "
            "check spec.issuerURL",
        )
    # OpenID Connect Discovery 1.0 section 4.3: the issuer must be the URL the
    # document was fetched for; otherwise whoever served it chose where the
    # client secret goes.
    issuer = document.get("issuer")
    if not isinstance(issuer, str) or issuer.rstrip("/") != issuer_url.rstrip("/"):
        said = _quote(issuer, (), opaque=False) if isinstance(issuer, str) else "none"
        raise TokenError(
            reasons.DISCOVERY_FAILED,
            f"the discovery document names issuer {said!r}, not spec.issuerURL; "
            "use the issuer exactly as the server states it (in Keycloak, check "
            "the hostname setting) or set spec.tokenURL",
        )
    token_url = document.get("token_endpoint")
    if not isinstance(token_url, str) or not token_url.startswith(
        ("https://", "http://")
    ):
        raise TokenError(
            reasons.DISCOVERY_FAILED,
            "the discovery document has no usable token_endpoint; "
            "set spec.tokenURL instead of spec.issuerURL",
        )
    return token_url


def basic_authorization(client_id: str, client_secret: str) -> str:
    """HTTP Basic credentials as RFC 6749 section 2.3.1 wants: form-encoded first."""
    pair = f"{_form_encode(client_id)}:{_form_encode(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode("ascii")).decode("ascii")


def _forms_of(request: TokenRequest) -> tuple[str, ...]:
    """The client secret as it may come back in server text: raw, form- or
    percent-encoded, or inside the Basic credentials."""
    secret = request.client_secret
    basic = basic_authorization(request.client_id, secret).removeprefix("Basic ")
    return (
        secret,
        _form_encode(secret),
        urllib.parse.quote(secret, safe=""),
        basic,
    )


def _form_encode(value: str) -> str:
    return urllib.parse.quote_plus(value, safe="", encoding="utf-8")


def _grant_form(request: TokenRequest) -> dict[str, str]:
    form = dict(request.extra_params)
    form["grant_type"] = "client_credentials"
    if request.scopes:
        form["scope"] = " ".join(request.scopes)
    if request.audience:
        form["audience"] = request.audience
    return form


def _exchange(
    session: requests.Session,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    data: Mapping[str, str] | None,
    verify: str | bool,
    settings: EndpointSettings,
    secrets: Iterable[str],
) -> tuple[int, str, bytes, Mapping[str, str]]:
    """Send one request, never following redirects; read a bounded body.

    The whole exchange, from connecting to the last byte, must fit in
    ``total_timeout`` (see ``transport``), and the body in ``max_body_bytes``.
    """
    where = _origin(url)
    with deadline(settings.total_timeout) as watch:
        try:
            answer = _send(session, method, url, where, headers, data, verify, settings)
        except TokenError:
            if watch.expired:
                raise _too_slow(where, settings) from None
            raise
    # A connection cut mid-headers can read as a complete, empty answer.
    if watch.expired:
        raise _too_slow(where, settings)
    return answer


def _send(
    session: requests.Session,
    method: str,
    url: str,
    where: str,
    headers: Mapping[str, str],
    data: Mapping[str, str] | None,
    verify: str | bool,
    settings: EndpointSettings,
) -> tuple[int, str, bytes, Mapping[str, str]]:
    try:
        response = session.request(
            method,
            url,
            headers=dict(headers),
            data=data,
            verify=verify,
            timeout=(settings.connect_timeout, settings.read_timeout),
            allow_redirects=False,
            stream=True,
        )
    except requests.exceptions.SSLError as e:
        raise TokenError(
            reasons.TLS_ERROR,
            f"TLS handshake with {where} failed ({_root_cause(e)}); if the "
            "endpoint uses a private CA, set spec.caBundleRef",
        ) from None
    except requests.exceptions.Timeout:
        raise TokenError(
            reasons.TIMEOUT,
            f"{where} did not answer within {settings.connect_timeout:g} s "
            f"(connect) / {settings.read_timeout:g} s (read)",
        ) from None
    except requests.exceptions.RequestException as e:
        raise TokenError(
            reasons.CONNECTION_FAILED,
            f"could not reach {where} ({_root_cause(e)})",
        ) from None

    with response:
        if 300 <= response.status_code < 400:
            location = response.headers.get("Location", "")
            target = "?"
            with contextlib.suppress(ValueError):  # "http://[bad/": unclosed IPv6
                target = (
                    _origin(urllib.parse.urljoin(url, location)) if location else "?"
                )
            raise TokenError(
                reasons.UNEXPECTED_REDIRECT,
                f"{where} answered HTTP {response.status_code} with a redirect to "
                f"{target}; tokenkeeper never follows redirects with credentials, "
                "so set the final URL in the spec",
                retry=Retry.CREDENTIAL,
            )
        body = _read_bounded(response, settings, where)
        content_type = response.headers.get("Content-Type", "")
        return response.status_code, content_type, body, response.headers


def _too_slow(where: str, settings: EndpointSettings) -> TokenError:
    return TokenError(
        reasons.TIMEOUT,
        f"{where} took longer than {settings.total_timeout:g} s to answer in "
        "full; tokenkeeper cut the exchange off",
    )


def _read_bounded(
    response: requests.Response, settings: EndpointSettings, where: str
) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(chunk_size=64 * 1024):
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise TokenError(
                    reasons.INVALID_TOKEN_RESPONSE,
                    f"{where} sent more than {settings.max_body_bytes} bytes; "
                    "a token response is far smaller, so the rest was not read",
                )
            chunks.append(chunk)
    except requests.exceptions.RequestException as e:
        raise TokenError(
            reasons.CONNECTION_FAILED,
            f"the answer from {where} broke off ({_root_cause(e)})",
        ) from None
    return b"".join(chunks)


def _parse_json(body: bytes) -> object:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _raise_for_status(
    status: int,
    content_type: str,
    document: object,
    headers: Mapping[str, str],
    secrets: Iterable[str],
    now: datetime,
) -> None:
    if 200 <= status < 300:
        return

    retry_after = _retry_after(headers.get("Retry-After"), now)
    if status == 429 or (status == 503 and retry_after is not None):
        wait = min(retry_after or 0.0, 3600.0)  # what schedule.retry_delay honours
        hint = f"; retrying after {wait:.0f} s as asked" if wait else ""
        raise TokenError(
            reasons.RATE_LIMITED,
            f"the token endpoint answered HTTP {status} (too many requests){hint}",
            retry_after=retry_after,
        )
    # A 5xx is the server's trouble even when it carries an OAuth error object
    # (Keycloak's unknown_error, a server_error): retry it quickly.
    if status >= 500:
        raise TokenError(
            reasons.SERVER_ERROR,
            f"the token endpoint answered HTTP {status} "
            f"({_describe_type(content_type)})",
        )
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        raise _oauth_error(status, document, secrets)
    raise TokenError(
        reasons.TOKEN_ENDPOINT_ERROR,
        f"the token endpoint answered HTTP {status} ({_describe_type(content_type)}) "
        "without an OAuth error; check that the URL is the token endpoint",
        retry=Retry.CREDENTIAL,
    )


def _oauth_error(
    status: int, document: Mapping[str, object], secrets: Iterable[str]
) -> TokenError:
    code = _quote(str(document["error"]), secrets)
    description = document.get("error_description")
    description = _quote(description, secrets) if isinstance(description, str) else ""
    kind = code
    if code == "unauthorized_client" and _WRONG_SECRET.search(description):
        # Keycloak answers a known client's wrong secret with unauthorized_client
        # (RFC 6749 says invalid_client); its description tells the two apart.
        kind = "invalid_client"
    reason, advice = _OAUTH_ERRORS.get(
        kind,
        (reasons.TOKEN_ENDPOINT_ERROR, "see the authorization server's documentation"),
    )
    said = f"{code}: {description}" if description else code
    return TokenError(
        reason,
        f"the token endpoint refused the request (HTTP {status}, {said}); {advice}",
        retry=Retry.CREDENTIAL,
    )


def _token_from(
    document: object,
    content_type: str,
    settings: EndpointSettings,
    now: datetime,
    secrets: Iterable[str],
) -> Token:
    if not isinstance(document, dict):
        raise TokenError(
            reasons.INVALID_TOKEN_RESPONSE,
            f"the token endpoint answered with {_describe_type(content_type)} that "
            "is not a JSON object; a proxy or login page may stand in front of it",
        )
    if "error" in document:
        code = _quote(str(document["error"]), secrets)
        raise TokenError(
            reasons.INVALID_TOKEN_RESPONSE,
            f"the token endpoint answered HTTP 200 with an error object ({code})",
        )

    access_token = document.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise TokenError(
            reasons.INVALID_TOKEN_RESPONSE,
            "the token endpoint answered without an access_token",
        )
    if len(access_token) > _MAX_TOKEN_CHARS or not _B64TOKEN.fullmatch(access_token):
        raise TokenError(
            reasons.INVALID_TOKEN_RESPONSE,
            "the access_token is not a valid bearer token (RFC 6750 characters, "
            f"at most {_MAX_TOKEN_CHARS} of them)",
        )

    token_type = document.get("token_type", "Bearer")
    if not isinstance(token_type, str) or not re.fullmatch(
        r"[A-Za-z0-9_\-]{1,40}", token_type
    ):
        raise TokenError(
            reasons.INVALID_TOKEN_RESPONSE, "the token_type is not a short word"
        )
    if token_type.lower() == "bearer":
        token_type = "Bearer"

    scope = document.get("scope")
    lifetime, note = _lifetime(document.get("expires_in"), access_token, settings, now)
    return Token(
        access_token=access_token,
        token_type=token_type,
        issued_at=now,
        expires_at=now + lifetime,
        scope=scope if isinstance(scope, str) and scope else None,
        lifetime_note=note,
    )


def _lifetime(
    expires_in: object, access_token: str, settings: EndpointSettings, now: datetime
) -> tuple[timedelta, str | None]:
    """The token's lifetime and, when it is not expires_in as sent, why."""
    if expires_in is None:
        exp = jwt_expiry(access_token)
        if exp is not None:
            until_exp = (exp - now).total_seconds()
            if until_exp < 1:
                raise TokenError(
                    reasons.INVALID_TOKEN_RESPONSE,
                    "the response has no expires_in and the token's JWT exp "
                    "claim is already in the past (or less than a second away)",
                )
            lifetime, note = _clamped(until_exp, settings)
            return lifetime, note or "expires_in was missing; used the JWT exp claim"
        default = settings.default_lifetime
        return default, (
            "expires_in was missing and the token is not a JWT; assumed the "
            f"operator's default lifetime of {default.total_seconds():g} s"
        )

    seconds = _number(expires_in)
    if seconds is None:
        raise TokenError(reasons.INVALID_TOKEN_RESPONSE, "expires_in is not a number")
    # Under a second, the whole-second lifetime would be 0: an expired token
    # stored, and refreshed again at once, in a loop.
    if seconds < 1:
        raise TokenError(
            reasons.INVALID_TOKEN_RESPONSE,
            f"expires_in is {seconds:g}: the token would already be expired",
        )
    return _clamped(seconds, settings)


def _clamped(
    seconds: float, settings: EndpointSettings
) -> tuple[timedelta, str | None]:
    limit = settings.max_lifetime.total_seconds()
    if seconds > limit:
        return settings.max_lifetime, (
            f"the server's lifetime of {seconds:.0f} s exceeds the operator's "
            f"limit; treated as {limit:g} s"
        )
    return timedelta(seconds=int(seconds)), None


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) or (
        isinstance(value, str) and re.fullmatch(r"\s*[0-9]+(\.[0-9]+)?\s*", value)
    ):
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits
            return float("inf")
    else:
        return None
    return number if number == number else None


def jwt_expiry(token: str) -> datetime | None:
    """The ``exp`` claim of a JWT, unverified; ``None`` if it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    try:
        return datetime.fromtimestamp(exp, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After in seconds, from delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL: enough to say where, never a path or query."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _describe_type(content_type: str) -> str:
    kind = content_type.split(";")[0].strip().lower()
    return (
        f"content type {_quote(kind, (), opaque=False)}" if kind else "no content type"
    )


def _quote(text: str, secrets: Iterable[str], *, opaque: bool = True) -> str:
    """Server-sent text made safe to show: printable, short, no known secret in it,
    and (unless ``opaque`` is off, for text sent without any credential, such as
    an issuer URL) no long opaque run that could be a token or an encoded secret.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    if opaque:
        text = _OPAQUE_RUN.sub("[redacted]", text)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    if len(text) > _MAX_QUOTED_CHARS:
        text = text[:_MAX_QUOTED_CHARS] + "..."
    return text


def _root_cause(error: BaseException) -> str:
    """The innermost exception's class name: specific, and carries no URL or body."""
    seen: set[int] = set()
    current: BaseException = error
    while id(current) not in seen:
        seen.add(id(current))
        inner = current.__cause__ or current.__context__
        if (
            inner is None
            and current.args
            and isinstance(current.args[0], BaseException)
        ):
            inner = current.args[0]
        reason = getattr(current, "reason", None)
        if inner is None and isinstance(reason, BaseException):
            inner = reason
        if inner is None:
            break
        current = inner
    errno_text = getattr(current, "strerror", None)
    if isinstance(errno_text, str) and errno_text:
        return errno_text
    return type(current).__name__
