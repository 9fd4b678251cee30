"""Condition types and reasons: the vocabulary users see in status and events.

Every reason tokenkeeper can report lives here, once, with the situation it
names. The README's troubleshooting table is written from this module, and
tests refer to these names rather than to string literals.
"""

from typing import Final

# Condition types.
READY: Final = "Ready"
"""The managed Secret holds a token that has not expired."""
REFRESHED: Final = "Refreshed"
"""The latest attempt to obtain a token succeeded."""

# Reasons when things are well.
TOKEN_VALID: Final = "TokenValid"
"""Ready=True: the Secret holds a token that is still valid."""
TOKEN_ISSUED: Final = "TokenIssued"
"""Refreshed=True: the token endpoint issued the token now in the Secret."""

# Reasons for Ready=False that are not a failed request.
TOKEN_EXPIRED: Final = "TokenExpired"
"""The last token in the Secret has expired and no new one could be had."""
PENDING: Final = "Pending"
"""No token has been requested yet for this object."""

# Reasons found before any request is sent (the fix is in Kubernetes objects).
INVALID_SPEC: Final = "InvalidSpec"
"""The spec is accepted by the schema but cannot be used (see the message)."""
CLIENT_SECRET_NOT_FOUND: Final = "ClientSecretNotFound"
"""The Secret or key named by spec.clientSecretRef does not exist or is empty."""
CA_BUNDLE_NOT_FOUND: Final = "CABundleNotFound"
"""The ConfigMap or key named by spec.caBundleRef is missing or holds no PEM."""
SECRET_CONFLICT: Final = "SecretConflict"
"""A Secret with the target name exists and is not owned by this object."""
URL_NOT_ALLOWED: Final = "URLNotAllowed"
"""The operator's outbound guard refuses the token endpoint's URL."""
FOUND_BEFORE_REQUEST: Final = frozenset(
    {
        INVALID_SPEC,
        CLIENT_SECRET_NOT_FOUND,
        CA_BUNDLE_NOT_FOUND,
        SECRET_CONFLICT,
        URL_NOT_ALLOWED,
    }
)
"""The reasons above: a pass that gets past them has mended them."""

# Reasons from talking to the endpoint (transient: retried with backoff).
CONNECTION_FAILED: Final = "ConnectionFailed"
"""The endpoint could not be reached: refused, reset, or a name that won't resolve."""
TIMEOUT: Final = "Timeout"
"""The endpoint did not answer within the connect or read timeout."""
TLS_ERROR: Final = "TLSError"
"""The TLS handshake failed, usually an untrusted certificate (see caBundleRef)."""
SERVER_ERROR: Final = "ServerError"
"""The endpoint answered with a 5xx status."""
RATE_LIMITED: Final = "RateLimited"
"""The endpoint answered 429 or 503 with Retry-After; tokenkeeper waits as asked."""
DISCOVERY_FAILED: Final = "DiscoveryFailed"
"""The issuer's /.well-known/openid-configuration could not be read or used."""
INVALID_TOKEN_RESPONSE: Final = "InvalidTokenResponse"
"""The endpoint answered, but not with a usable token (see the message)."""
UNEXPECTED_REDIRECT: Final = "UnexpectedRedirect"
"""The endpoint answered with a redirect; tokenkeeper never follows one."""

# RFC 6749 section 5.2 errors (credential or configuration: slow backoff).
INVALID_CLIENT: Final = "InvalidClient"
"""invalid_client: the client id or secret is wrong, or the client is disabled."""
UNAUTHORIZED_CLIENT: Final = "UnauthorizedClient"
"""unauthorized_client: the client may not use the client-credentials grant."""
INVALID_SCOPE: Final = "InvalidScope"
"""invalid_scope: a requested scope is unknown or not granted to the client."""
INVALID_REQUEST: Final = "InvalidRequest"
"""invalid_request: the server rejected a parameter (often extraParams)."""
INVALID_GRANT: Final = "InvalidGrant"
"""invalid_grant: the server refused the grant itself."""
TOKEN_ENDPOINT_ERROR: Final = "TokenEndpointError"
"""Any other OAuth error code, quoted in the message."""

# Ours.
INTERNAL_ERROR: Final = "InternalError"
"""Requesting a token failed in a way tokenkeeper does not expect: a bug,
logged with a traceback; retried like a transient failure."""
