"""A real OAuth2 token endpoint on loopback, scriptable for tests and the demo.

Integration tests point the operator at a `TokenServer` instead of Keycloak
when they need behaviour Keycloak will not produce on demand: throttling with
``Retry-After``, redirects, proxy pages, huge bodies, stalls, dropped
connections and malformed token responses. The demo runs it from the command
line as a stand-in token endpoint.

By default it behaves like Keycloak's client-credentials grant (RFC 6749
section 4.4): it authenticates registered clients by ``client_secret_post`` or
``client_secret_basic``, checks the grant type and scopes, and issues fresh
JWT-shaped tokens nobody verifies. Tests change that with `TokenServer.script`
(one-shot replies, consumed in order) and `TokenServer.set_default`.

The design choice is fidelity on the wire over convenience: the server is the
standard library's ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive,
every hostile reply is really sent (or really not sent) over a socket, huge
bodies are streamed in chunks, and every request is recorded raw so tests can
search it. Nothing is mocked at the client's transport.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import contextlib
import dataclasses
import datetime
import email.utils
import enum
import hmac
import http
import json
import logging
import os
import secrets
import signal
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

from devenv import pki
from devenv.process import interruptible

_log = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB

BEARER = "Bearer"
TOKEN_PATH = "/token"
DISCOVERY_PATH = "/.well-known/openid-configuration"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
INVALID_CLIENT_DESCRIPTION = "Invalid client or Invalid client credentials"

# Keep-alive connections and stalled TLS handshakes give up after this long,
# so an abandoned client never pins a handler thread for the whole test run.
_IDLE_TIMEOUT = 30.0
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class _Omit(enum.Enum):
    OMIT = "omit"


OMIT = _Omit.OMIT
"""Pass as a field value to `token_response` to leave that field out."""


@dataclasses.dataclass(frozen=True)
class Reply:
    """One HTTP response, exactly as it will go on the wire.

    ``json`` wins over ``body``; ``stream`` (a factory of byte chunks) wins over
    both and is sent with chunked transfer encoding unless ``headers`` carries
    a Content-Length. ``delay`` seconds pass before anything is written;
    ``close`` drops the connection without writing a response at all.
    """

    status: int = 200
    json: Any = None
    body: bytes | str | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0
    close: bool = False
    stream: Callable[[], Iterable[bytes]] | None = None


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request as received, unredacted: tests search these for secrets."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    form: dict[str, list[str]]
    time: float
    monotonic: float
    client: tuple[str, int]

    @property
    def route(self) -> str:
        """The path without its query string."""
        return urllib.parse.urlsplit(self.path).path

    def header(self, name: str) -> str | None:
        """The first header of that name, compared case-insensitively."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    def field(self, name: str) -> str | None:
        """The first form field of that name."""
        values = self.form.get(name)
        return values[0] if values else None


Responder = Reply | Callable[[RecordedRequest], Reply]
"""A canned reply, or a function that builds one for each request."""


@dataclasses.dataclass
class _Client:
    client_id: str
    secret: str
    allowed_scopes: tuple[str, ...] | None
    lifetime: int


class _Refusal(Exception):
    """Raised inside the default grant to answer with an OAuth error reply."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


# Reply factories: the hostile and odd cases the integration tests need.


def token_response(
    expires_in: object = 300,
    *,
    exp_in: int = 300,
    opaque: bool = False,
    scope: object = OMIT,
    token_type: object = BEARER,
    content_type: str = "application/json",
) -> Reply:
    """A 200 token response whose fields may be odd or missing (`OMIT`).

    ``exp_in`` sets the JWT's ``exp`` claim relative to now, independently of
    ``expires_in``, so tests can leave ``expires_in`` out and rely on ``exp``.
    """
    access_token = _opaque_token() if opaque else _jwt("tokenserver", "", exp_in)
    document = {
        "access_token": access_token,
        "expires_in": expires_in,
        "token_type": token_type,
        "scope": scope,
    }
    present = {key: value for key, value in document.items() if value is not OMIT}
    return Reply(json=present, headers={**_NO_STORE, "Content-Type": content_type})


def oauth_error(
    error: str, description: str | None = None, *, status: int | None = None
) -> Reply:
    """An RFC 6749 section 5.2 error object; 401 for invalid_client, else 400.

    Any status may be forced, including 200 for servers that hide errors.
    """
    if status is None:
        status = 401 if error == "invalid_client" else 400
    document = {"error": error}
    if description is not None:
        document["error_description"] = description
    return Reply(status=status, json=document, headers=dict(_NO_STORE))


def server_error(status: int = 500) -> Reply:
    """A 5xx with the small HTML page a reverse proxy would send."""
    phrase = _reason_phrase(status)
    page = f"<html><head><title>{status} {phrase}</title></head>" + (
        f"<body><center><h1>{status} {phrase}</h1></center></body></html>\n"
    )
    return Reply(status=status, body=page, headers={"Content-Type": "text/html"})


def throttled(
    retry_after: int | datetime.datetime | str | None = None, *, status: int = 429
) -> Reply:
    """A 429 (or 503) with ``Retry-After`` in seconds, as an HTTP date, or raw."""
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if isinstance(retry_after, datetime.datetime):
        headers["Retry-After"] = email.utils.format_datetime(retry_after, usegmt=True)
    elif retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Reply(status=status, body=_reason_phrase(status) + "\n", headers=headers)


def missing_access_token() -> Reply:
    """A 200 that looks like a token response but has no access_token."""
    document = {"token_type": "Bearer", "expires_in": 300}
    return Reply(json=document, headers=dict(_NO_STORE))


def html_page(status: int = 200) -> Reply:
    """An interception proxy's sign-in page where JSON was expected."""
    page = (
        "<!DOCTYPE html>\n<html><head><title>Sign in to continue</title></head>"
        "<body><form method='post' action='/proxy-login'>"
        "<p>Your network requires you to sign in.</p></form></body></html>\n"
    )
    headers = {"Content-Type": "text/html; charset=utf-8"}
    return Reply(status=status, body=page, headers=headers)


def text_body(
    text: str = "upstream connect error or disconnect/reset before headers",
    *,
    status: int = 200,
    content_type: str = "text/plain; charset=utf-8",
) -> Reply:
    """A body that is not JSON at all."""
    return Reply(status=status, body=text, headers={"Content-Type": content_type})


def huge_body(size: int = 64 * MiB, *, chunk_size: int = 64 * KiB) -> Reply:
    """A valid JSON token response of ``size`` bytes, produced chunk by chunk.

    It parses if read to the end, so only a client-side size limit stops it.
    """
    prefix = b'{"access_token": "'
    suffix = b'", "token_type": "Bearer", "expires_in": 300}'
    padding = size - len(prefix) - len(suffix)
    if padding < 0:
        raise ValueError(f"huge_body needs at least {size - padding} bytes")

    def stream() -> Iterator[bytes]:
        yield prefix
        yield from _filler(padding, chunk_size)
        yield suffix

    headers = {"Content-Type": "application/json", "Content-Length": str(size)}
    return Reply(stream=stream, headers=headers)


def delayed(seconds: float, reply: Reply | None = None) -> Reply:
    """A reply (a token response by default) sent only after ``seconds``."""
    return dataclasses.replace(reply or token_response(), delay=seconds)


def disconnect() -> Reply:
    """Close the connection after reading the request, writing nothing."""
    return Reply(close=True)


def redirect(location: str, *, status: int = 302) -> Reply:
    """A redirect (302, 307, ...) with an empty body."""
    return Reply(status=status, headers={"Location": location})


def _reason_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _filler(size: int, chunk_size: int) -> Iterator[bytes]:
    full_chunks, remainder = divmod(size, chunk_size)
    chunk = b"A" * chunk_size
    for _ in range(full_chunks):
        yield chunk
    yield chunk[:remainder]


def _opaque_token() -> str:
    return secrets.token_urlsafe(32)


def _jwt(client_id: str, scope: str, lifetime: int, issuer: str = "") -> str:
    """A fresh, unique, JWT-shaped token; the signature is random bytes."""
    issued_at = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": "tokenserver"}
    claims = {
        "exp": issued_at + lifetime,
        "iat": issued_at,
        "jti": str(uuid.uuid4()),
        "iss": issuer or "tokenserver",
        "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"tokenserver:{client_id}")),
        "typ": "Bearer",
        "azp": client_id,
        "scope": scope,
    }
    parts = [_b64url(json.dumps(header)), _b64url(json.dumps(claims))]
    parts.append(_b64url(secrets.token_bytes(256)))
    return ".".join(parts)


def _b64url(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


# The default client-credentials grant, modelled on Keycloak's answers.


def _token_form(request: RecordedRequest) -> dict[str, str]:
    content_type = (request.header("Content-Type") or "").split(";")[0].strip()
    if content_type.lower() != FORM_CONTENT_TYPE:
        description = f"Content-Type must be {FORM_CONTENT_TYPE}"
        raise _Refusal(oauth_error("invalid_request", description))
    repeated = sorted(name for name, values in request.form.items() if len(values) > 1)
    if repeated:
        description = f"Repeated parameters: {', '.join(repeated)}"
        raise _Refusal(oauth_error("invalid_request", description))
    return {name: values[0] for name, values in request.form.items()}


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """Client id and secret from ``Authorization: Basic`` (RFC 6749 2.3.1)."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _Refusal(_invalid_client()) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise _Refusal(_invalid_client())
    return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)


def _invalid_client() -> Reply:
    return oauth_error("invalid_client", INVALID_CLIENT_DESCRIPTION)


def _require_client_credentials_grant(form: Mapping[str, str]) -> None:
    grant_type = form.get("grant_type")
    if grant_type is None:
        description = "Missing form parameter: grant_type"
        raise _Refusal(oauth_error("invalid_request", description))
    if grant_type != "client_credentials":
        description = f"Unsupported grant_type: {grant_type}"
        raise _Refusal(oauth_error("unsupported_grant_type", description))


def _granted_scopes(client: _Client, requested: str | None) -> list[str]:
    wanted = (requested or "").split()
    if client.allowed_scopes is None:
        return wanted
    unknown = [scope for scope in wanted if scope not in client.allowed_scopes]
    if unknown:
        description = f"Invalid scopes: {' '.join(unknown)}"
        raise _Refusal(oauth_error("invalid_scope", description))
    return wanted or list(client.allowed_scopes)


def _write_tls_material(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """Write a fresh CA and a loopback server certificate; return CA file, context."""
    authority = pki.Authority("tokenserver test CA")
    serving = authority.issue_serving("tokenserver")
    cert_file, key_file = serving.write(directory, "server")
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(authority.cert_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return ca_file, context


# The HTTP machinery.


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, port: int, owner: TokenServer, tls: ssl.SSLContext | None
    ) -> None:
        self.owner = owner
        self.tls = tls
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves its own FQDN, which can stall on
        # machines with slow reverse DNS; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(_IDLE_TIMEOUT)
        with self.tls.wrap_socket(request, server_side=True) as tls_request:
            super().finish_request(tls_request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            _log.debug("Connection from %s ended: %r", client_address, error)
        else:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tokenserver"
    timeout = _IDLE_TIMEOUT
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._untrack(self.connection)

    def do_GET(self) -> None:
        self._exchange()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        _log.info("%s %s", self.address_string(), format % args)

    def _exchange(self) -> None:
        owner = self.server.owner
        request = owner._record(self._received(self._read_body()))
        self._send(owner._respond(request))

    def _received(self, body: bytes) -> RecordedRequest:
        text = body.decode("ascii", errors="replace")
        host, port = self.client_address[:2]
        return RecordedRequest(
            method=self.command,
            path=self.path,
            headers=tuple(self.headers.items()),
            body=body,
            form=urllib.parse.parse_qs(text, keep_blank_values=True),
            time=time.time(),
            monotonic=time.monotonic(),
            client=(host, port),
        )

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return b""
        return self.rfile.read(length)

    def _read_chunked_body(self) -> bytes:
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0] or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():
            pass
        return b"".join(chunks)

    def _send(self, reply: Reply) -> None:
        if reply.close or not self.server.owner._pause(reply.delay):
            self.close_connection = True
            return
        payload = _payload(reply)
        headers = _wire_headers(reply, payload)
        self.send_response(reply.status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        chunks = reply.stream() if reply.stream is not None else [payload]
        self._write_body(chunks, chunked=_is_chunked(headers))

    def _write_body(self, chunks: Iterable[bytes], *, chunked: bool) -> None:
        for chunk in chunks:
            if chunk and chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            elif chunk:
                self.wfile.write(chunk)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")


def _payload(reply: Reply) -> bytes:
    if reply.json is not None:
        return json.dumps(reply.json).encode()
    if isinstance(reply.body, str):
        return reply.body.encode()
    return reply.body or b""


def _wire_headers(reply: Reply, payload: bytes) -> list[tuple[str, str]]:
    """The reply's headers, plus Content-Type and framing unless it set them."""
    given = {name.lower() for name in reply.headers}
    headers = list(reply.headers.items())
    if reply.json is not None and "content-type" not in given:
        headers.insert(0, ("Content-Type", "application/json"))
    if given & {"content-length", "transfer-encoding"}:
        return headers
    if reply.stream is not None:
        headers.append(("Transfer-Encoding", "chunked"))
    else:
        headers.append(("Content-Length", str(len(payload))))
    return headers


def _is_chunked(headers: Sequence[tuple[str, str]]) -> bool:
    return any(
        name.lower() == "transfer-encoding" and "chunked" in value.lower()
        for name, value in headers
    )


class TokenServer:
    """An OAuth2 token endpoint on 127.0.0.1, serving from construction on.

    Use it as a context manager or call `stop`. With ``tls=True`` it serves
    HTTPS with a certificate for 127.0.0.1 and localhost signed by a fresh CA
    (`ca_pem`, `ca_file`), which is deleted again by `stop`.
    """

    def __init__(self, *, tls: bool = False, port: int = 0) -> None:
        self._lock = threading.Lock()
        self._recorded = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._clients: dict[str, _Client] = {}
        self._script: collections.deque[Responder] = collections.deque()
        self._default: Responder | None = None
        self._discovery: Responder | None = None
        self._requests: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None
        self._ca_file: Path | None = None
        context = self._prepare_tls() if tls else None
        self._httpd = _HTTPServer(port, self, context)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"tokenserver-{self._httpd.server_port}",
            daemon=True,
        )
        self._thread.start()

    def __enter__(self) -> TokenServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<TokenServer {self.url}>"

    @property
    def url(self) -> str:
        """The base URL, also the issuer URL for OIDC discovery."""
        scheme = "https" if self._ca_file else "http"
        return f"{scheme}://127.0.0.1:{self._httpd.server_port}"

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    @property
    def ca_file(self) -> Path:
        """The CA certificate file (PEM) that signed the server certificate."""
        if self._ca_file is None:
            raise RuntimeError("This TokenServer has no CA: it was made without tls")
        return self._ca_file

    @property
    def ca_pem(self) -> str:
        return self.ca_file.read_text()

    def stop(self) -> None:
        """Stop serving, drop open connections and close the socket; idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._drop_connections()
        self._thread.join()
        if self._tls_dir is not None:
            self._tls_dir.cleanup()

    # Clients.

    def add_client(
        self,
        client_id: str,
        client_secret: str,
        *,
        allowed_scopes: Iterable[str] | None = None,
        lifetime: int = 300,
    ) -> None:
        """Register (or replace) a client; ``None`` scopes means any scope."""
        scopes = None if allowed_scopes is None else tuple(allowed_scopes)
        with self._lock:
            self._clients[client_id] = _Client(
                client_id, client_secret, scopes, lifetime
            )

    def set_secret(self, client_id: str, secret: str) -> None:
        """Rotate a registered client's secret; the old one stops working."""
        with self._lock:
            self._clients[client_id].secret = secret

    # Scripting.

    def script(self, *responses: Responder) -> None:
        """Queue one-shot replies for the next token requests, in order."""
        with self._lock:
            self._script.extend(responses)

    def set_default(self, response: Responder | None) -> None:
        """Answer token requests this way once the script is empty."""
        with self._lock:
            self._default = response

    def set_discovery(self, response: Responder | None) -> None:
        """Answer discovery requests this way instead of the real document."""
        with self._lock:
            self._discovery = response

    def reset(self) -> None:
        """Forget the script and overrides; clients and records stay."""
        with self._lock:
            self._script.clear()
            self._default = None
            self._discovery = None

    # Records.

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def count(self, path: str | None = None) -> int:
        """How many requests arrived, optionally only those for ``path``."""
        with self._lock:
            return len(self._matching(path))

    def wait_for_requests(
        self, n: int, timeout: float = 5.0, *, path: str | None = None
    ) -> list[RecordedRequest]:
        """Block until at least ``n`` requests (for ``path``) have arrived."""
        with self._recorded:
            arrived = self._recorded.wait_for(
                lambda: len(self._matching(path)) >= n, timeout
            )
            matching = self._matching(path)
        if not arrived:
            raise TimeoutError(
                f"Expected {n} requests for {path or 'any path'} within "
                f"{timeout} s, got {len(matching)}"
            )
        return matching

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def _matching(self, path: str | None) -> list[RecordedRequest]:
        return [r for r in self._requests if path is None or r.route == path]

    # Called from handler threads.

    def _record(self, request: RecordedRequest) -> RecordedRequest:
        with self._recorded:
            self._requests.append(request)
            self._recorded.notify_all()
        return request

    def _respond(self, request: RecordedRequest) -> Reply:
        responder = self._responder_for(request)
        return responder if isinstance(responder, Reply) else responder(request)

    def _responder_for(self, request: RecordedRequest) -> Responder:
        if request.route == DISCOVERY_PATH and request.method == "GET":
            with self._lock:
                return self._discovery or self._discovery_document()
        if request.route != TOKEN_PATH:
            return oauth_error(
                "not_found", f"No endpoint at {request.route}", status=404
            )
        if request.method != "POST":
            allow = {"Allow": "POST"}
            return Reply(
                status=405, json={"error": "method_not_allowed"}, headers=allow
            )
        with self._lock:
            if self._script:
                return self._script.popleft()
            return self._default or self._grant

    def _pause(self, delay: float) -> bool:
        """Wait ``delay`` seconds; False if the server stopped meanwhile."""
        if delay > 0:
            return not self._stopping.wait(delay)
        return not self._stopping.is_set()

    def _track(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _untrack(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _drop_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            # The plain socket's shutdown, even for TLS sockets: it wakes the
            # handler blocked in a read, and SSLSocket.shutdown would tear
            # down the TLS state under that handler's feet.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(connection, socket.SHUT_RDWR)

    # Default behaviour.

    def _discovery_document(self) -> Reply:
        document = {
            "issuer": self.url,
            "token_endpoint": self.token_url,
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
            ],
        }
        return Reply(json=document)

    def _grant(self, request: RecordedRequest) -> Reply:
        """The client-credentials grant, answered the way Keycloak answers."""
        try:
            form = _token_form(request)
            client = self._authenticate(request, form)
            _require_client_credentials_grant(form)
            scopes = _granted_scopes(client, form.get("scope"))
        except _Refusal as refusal:
            return refusal.reply
        scope = " ".join(scopes)
        document = {
            "access_token": _jwt(client.client_id, scope, client.lifetime, self.url),
            "expires_in": client.lifetime,
            "token_type": BEARER,
            "scope": scope,
        }
        return Reply(json=document, headers=dict(_NO_STORE))

    def _authenticate(
        self, request: RecordedRequest, form: Mapping[str, str]
    ) -> _Client:
        basic = _basic_credentials(request.header("Authorization"))
        if basic is not None and "client_secret" in form:
            description = "Use only one client authentication method"
            raise _Refusal(oauth_error("invalid_request", description))
        client_id, secret = basic or (form.get("client_id"), form.get("client_secret"))
        with self._lock:
            client = self._clients.get(client_id or "")
        if client is None or secret is None or not _same(secret, client.secret):
            raise _Refusal(_invalid_client())
        return client

    def _prepare_tls(self) -> ssl.SSLContext:
        self._tls_dir = tempfile.TemporaryDirectory(prefix="tokenserver-")
        self._ca_file, context = _write_tls_material(Path(self._tls_dir.name))
        return context


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


# Command line, for the demo.


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devenv.tokenserver",
        description="Serve an OAuth2 client-credentials token endpoint on loopback.",
    )
    parser.add_argument("--client-id", required=True)
    parser.add_argument(
        "--client-secret",
        default=os.environ.get("TOKENSERVER_CLIENT_SECRET"),
        help="defaults to $TOKENSERVER_CLIENT_SECRET, which keeps it out of ps",
    )
    parser.add_argument("--lifetime", type=int, default=300, help="seconds")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--scope", action="append", help="an allowed scope; repeat for more"
    )
    parser.add_argument("--tls", action="store_true", help="serve HTTPS")
    args = parser.parse_args(argv)
    if not args.client_secret:
        parser.error("--client-secret or $TOKENSERVER_CLIENT_SECRET is required")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> NoReturn:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C or SIGTERM; print the token URL on stdout first."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    interruptible()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with TokenServer(tls=args.tls, port=args.port) as server:
        server.add_client(
            args.client_id,
            args.client_secret,
            allowed_scopes=args.scope,
            lifetime=args.lifetime,
        )
        print(server.token_url, flush=True)
        if args.tls:
            _log.info("CA certificate: %s", server.ca_file)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
