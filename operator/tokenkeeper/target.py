"""The managed Secret: what tokenkeeper writes, how ownership is proved, what is read.

A managed Secret is type Opaque, has a controller ownerReference to its
ClientCredential (so garbage collection removes it with its owner, and no
finalizer is needed), and carries the token in ``data`` plus the instants
tokenkeeper needs to resume after a restart in annotations. Ownership is
decided by the ownerReference's uid alone: a Secret without it is someone
else's and is never modified.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tokenkeeper.endpoint import Token
from tokenkeeper.status import parse_rfc3339, rfc3339

GROUP = "tokenkeeper.dev"
VERSION = "v1alpha1"
KIND = "ClientCredential"
PLURAL = "clientcredentials"

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "tokenkeeper"
SECRET_ROLE_LABEL = f"{GROUP}/secret"
"""One label key on every Secret the operator watches: one server-side selector."""
ROLE_ACCESS_TOKEN = "access-token"
ROLE_CLIENT_SECRET = "client-secret"
CREDENTIAL_LABEL = f"{GROUP}/client-credential"

EXPIRES_AT_ANNOTATION = f"{GROUP}/expires-at"
ISSUED_AT_ANNOTATION = f"{GROUP}/issued-at"
REQUEST_HASH_ANNOTATION = f"{GROUP}/request-hash"
REFRESH_REQUESTED_ANNOTATION = f"{GROUP}/refresh-requested-at"

ACCESS_TOKEN_KEY = "access_token"
TOKEN_TYPE_KEY = "token_type"
EXPIRES_AT_KEY = "expires_at"
SCOPE_KEY = "scope"


@dataclasses.dataclass(frozen=True)
class StoredToken:
    """A token as kept in a managed Secret, with what it was requested for."""

    access_token: str = dataclasses.field(repr=False)
    token_type: str
    issued_at: datetime
    expires_at: datetime
    scope: str | None
    request_hash: str

    @classmethod
    def issued(cls, token: Token, request_hash: str) -> StoredToken:
        return cls(
            access_token=token.access_token,
            token_type=token.token_type,
            issued_at=token.issued_at,
            expires_at=token.expires_at,
            scope=token.scope,
            request_hash=request_hash,
        )


@dataclasses.dataclass(frozen=True)
class Owner:
    """The ClientCredential a managed Secret belongs to."""

    namespace: str
    name: str
    uid: str


def owned_by(secret: Mapping[str, Any], uid: str) -> bool:
    for ref in secret.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("uid") == uid and ref.get("controller"):
            return True
    return False


def owner_name(secret: Mapping[str, Any]) -> str | None:
    """The name of the ClientCredential controlling this Secret, if any."""
    for ref in secret.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("kind") == KIND and ref.get("controller"):
            name = ref.get("name")
            return name if isinstance(name, str) else None
    return None


def desired_secret(
    owner: Owner,
    secret_name: str,
    token: StoredToken,
    template: Mapping[str, Any],
) -> dict[str, Any]:
    """The whole Secret tokenkeeper wants to exist for this token."""
    data = {
        ACCESS_TOKEN_KEY: token.access_token,
        TOKEN_TYPE_KEY: token.token_type,
        EXPIRES_AT_KEY: rfc3339(token.expires_at),
    }
    if token.scope:
        data[SCOPE_KEY] = token.scope
    labels = {
        **_strings(template.get("labels")),
        MANAGED_BY_LABEL: MANAGED_BY,
        SECRET_ROLE_LABEL: ROLE_ACCESS_TOKEN,
        CREDENTIAL_LABEL: owner.name,
    }
    annotations = {
        **_strings(template.get("annotations")),
        EXPIRES_AT_ANNOTATION: rfc3339(token.expires_at),
        ISSUED_AT_ANNOTATION: rfc3339(token.issued_at),
        REQUEST_HASH_ANNOTATION: token.request_hash,
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": secret_name,
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": True,
                }
            ],
        },
        "data": {key: _b64(value) for key, value in data.items()},
    }


def needs_write(actual: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether ``actual`` differs from ``desired`` in anything tokenkeeper owns.

    Labels and annotations that others add are left alone; the data keys,
    the type and tokenkeeper's own metadata must match exactly.
    """
    if actual is None:
        return True
    meta, want = actual.get("metadata", {}), desired["metadata"]
    for field in ("labels", "annotations"):
        have = meta.get(field) or {}
        if any(have.get(k) != v for k, v in want[field].items()):
            return True
    if actual.get("type") != desired["type"]:
        return True
    return bool((actual.get("data") or {}) != desired["data"])


def merged_for_update(
    actual: Mapping[str, Any], desired: Mapping[str, Any]
) -> dict[str, Any]:
    """``desired`` on top of ``actual``: others' labels, annotations and refs stay."""
    meta = actual.get("metadata", {})
    want = desired["metadata"]
    refs = [
        ref
        for ref in meta.get("ownerReferences") or ()
        if ref.get("uid") != want["ownerReferences"][0]["uid"]
    ]
    return {
        **desired,
        "metadata": {
            **want,
            "resourceVersion": meta.get("resourceVersion"),
            "labels": {**(meta.get("labels") or {}), **want["labels"]},
            "annotations": {**(meta.get("annotations") or {}), **want["annotations"]},
            "ownerReferences": [*want["ownerReferences"], *refs],
        },
    }


def read_stored(secret: Mapping[str, Any]) -> StoredToken | None:
    """The token kept in a managed Secret, or None if anything in it is off."""
    data = secret.get("data") or {}
    annotations = secret.get("metadata", {}).get("annotations") or {}
    access_token = _unb64(data.get(ACCESS_TOKEN_KEY))
    token_type = _unb64(data.get(TOKEN_TYPE_KEY))
    expires_at = parse_rfc3339(annotations.get(EXPIRES_AT_ANNOTATION))
    issued_at = parse_rfc3339(annotations.get(ISSUED_AT_ANNOTATION))
    request_hash = annotations.get(REQUEST_HASH_ANNOTATION)
    if not (access_token and token_type and expires_at and issued_at):
        return None
    if not isinstance(request_hash, str):
        return None
    if _unb64(data.get(EXPIRES_AT_KEY)) != rfc3339(expires_at):
        return None
    return StoredToken(
        access_token=access_token,
        token_type=token_type,
        issued_at=issued_at,
        expires_at=expires_at,
        scope=_unb64(data.get(SCOPE_KEY)),
        request_hash=request_hash,
    )


def decode_key(secret: Mapping[str, Any], key: str) -> str | None:
    """A Secret's data value as text, or None when missing, empty or not UTF-8."""
    return _unb64((secret.get("data") or {}).get(key))


def _strings(mapping: object) -> dict[str, str]:
    if not isinstance(mapping, Mapping):
        return {}
    return {str(k): str(v) for k, v in mapping.items()}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _unb64(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return text or None
