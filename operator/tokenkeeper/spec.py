"""A ClientCredential's spec as a typed value, with the checks a schema can't make.

The CRD's structural schema and CEL rules reject most bad input at
``kubectl apply``. This module repeats the checks that matter for safety
(an object stored before a schema change, or a cluster without CEL, must not
slip through) and states each problem as a sentence for the status condition.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from tokenkeeper.schedule import RefreshPolicy

AUTH_METHODS = ("client_secret_post", "client_secret_basic")
RESERVED_PARAMS = frozenset({"grant_type", "client_id", "client_secret"})
DEFAULT_SECRET_KEY = "client-secret"

# What the API server accepts in metadata (apimachinery's validation): a
# template it would refuse must fail here, before a token is requested, not at
# the Secret write after it.
_QUALIFIED_NAME = re.compile(
    r"(?:(?P<prefix>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*)/)?"
    r"(?P<name>[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)"
)
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_MAX_ANNOTATION_BYTES = 256 * 1024 - 4 * 1024
"""The API server's 256 KiB for all annotations, less room for tokenkeeper's own."""


class SpecError(Exception):
    """The spec cannot be used; ``str()`` is the sentence for the status."""


@dataclasses.dataclass(frozen=True)
class Ref:
    name: str
    key: str


@dataclasses.dataclass(frozen=True)
class Spec:
    token_url: str | None
    issuer_url: str | None
    client_id: str
    client_secret_ref: Ref
    auth_method: str
    scopes: tuple[str, ...]
    audience: str | None
    extra_params: Mapping[str, str]
    secret_name: str
    secret_template: Mapping[str, Any]
    refresh: RefreshPolicy
    ca_bundle_ref: Ref | None

    def request_fields(self) -> dict[str, Any]:
        """What a token request depends on: a change here calls for a new token."""
        return {
            "tokenURL": self.token_url,
            "issuerURL": self.issuer_url,
            "clientID": self.client_id,
            "clientSecretRef": dataclasses.asdict(self.client_secret_ref),
            "authMethod": self.auth_method,
            "scopes": list(self.scopes),
            "audience": self.audience,
            "extraParams": dict(sorted(self.extra_params.items())),
            "caBundleRef": dataclasses.asdict(self.ca_bundle_ref)
            if self.ca_bundle_ref
            else None,
        }


def secret_name_of(body: Mapping[str, Any]) -> str:
    name = (body.get("spec") or {}).get("secretName")
    return name if isinstance(name, str) and name else str(body["metadata"]["name"])


def parse_spec(body: Mapping[str, Any]) -> Spec:
    raw = body.get("spec")
    if not isinstance(raw, Mapping):
        raise SpecError("spec is missing")

    token_url = _optional_str(raw, "tokenURL")
    issuer_url = _optional_str(raw, "issuerURL")
    if bool(token_url) == bool(issuer_url):
        raise SpecError("set exactly one of spec.tokenURL and spec.issuerURL")

    client_id = _optional_str(raw, "clientID")
    if not client_id:
        raise SpecError("spec.clientID is required")

    auth_method = _optional_str(raw, "authMethod") or AUTH_METHODS[0]
    if auth_method not in AUTH_METHODS:
        raise SpecError(f"spec.authMethod must be one of {', '.join(AUTH_METHODS)}")

    extra = raw.get("extraParams") or {}
    if not isinstance(extra, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
    ):
        raise SpecError("spec.extraParams must map strings to strings")
    reserved = sorted(RESERVED_PARAMS & set(extra))
    if reserved:
        raise SpecError(
            f"spec.extraParams may not set {', '.join(reserved)}; "
            "tokenkeeper sets them itself"
        )

    scopes = raw.get("scopes") or []
    if not isinstance(scopes, list) or not all(
        isinstance(s, str) and s and " " not in s for s in scopes
    ):
        raise SpecError("spec.scopes must be a list of scope names without spaces")

    before_seconds = raw.get("refreshBeforeSeconds")
    before_percentage = raw.get("refreshBeforePercentage")
    if before_seconds is not None and before_percentage is not None:
        raise SpecError(
            "set at most one of spec.refreshBeforeSeconds and "
            "spec.refreshBeforePercentage"
        )
    _check_int(before_seconds, "refreshBeforeSeconds", 1, 86400)
    _check_int(before_percentage, "refreshBeforePercentage", 1, 90)

    template = raw.get("secretTemplate") or {}
    if not isinstance(template, Mapping):
        raise SpecError("spec.secretTemplate must be an object")
    _check_template(template)

    return Spec(
        token_url=token_url,
        issuer_url=issuer_url,
        client_id=client_id,
        client_secret_ref=_ref(raw, "clientSecretRef", DEFAULT_SECRET_KEY),
        auth_method=auth_method,
        scopes=tuple(scopes),
        audience=_optional_str(raw, "audience"),
        extra_params=dict(extra),
        secret_name=secret_name_of(body),
        secret_template=template,
        refresh=RefreshPolicy(before_seconds, before_percentage),
        ca_bundle_ref=_ref(raw, "caBundleRef", None)
        if raw.get("caBundleRef")
        else None,
    )


def _check_template(template: Mapping[str, Any]) -> None:
    for field in ("labels", "annotations"):
        values = template.get(field) or {}
        if not isinstance(values, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()
        ):
            raise SpecError(f"spec.secretTemplate.{field} must map strings to strings")
        for key in values:
            # The API server lower-cases annotation keys before it checks them.
            if not _is_qualified_name(key if field == "labels" else key.lower()):
                raise SpecError(
                    f"spec.secretTemplate.{field} key {key[:100]!r} is not a valid "
                    "Kubernetes key (an optional DNS prefix and a slash, then at "
                    "most 63 letters, digits, '-', '_' or '.')"
                )
        if field == "labels":
            for key, value in values.items():
                if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
                    raise SpecError(
                        f"spec.secretTemplate.labels value of {key!r} is not a "
                        "valid label value (at most 63 letters, digits, '-', '_' "
                        "or '.', starting and ending with a letter or digit)"
                    )
        elif sum(len(k) + len(v.encode()) for k, v in values.items()) > (
            _MAX_ANNOTATION_BYTES
        ):
            raise SpecError(
                "spec.secretTemplate.annotations are too large in total for a "
                f"Secret (at most {_MAX_ANNOTATION_BYTES // 1024} KiB)"
            )


def _is_qualified_name(key: str) -> bool:
    match = _QUALIFIED_NAME.fullmatch(key)
    if match is None:
        return False
    prefix = match.group("prefix") or ""
    return len(match.group("name")) <= 63 and len(prefix) <= 253


def _optional_str(raw: Mapping[str, Any], field: str) -> str | None:
    value = raw.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SpecError(f"spec.{field} must be a string")
    return value


def _ref(raw: Mapping[str, Any], field: str, default_key: str | None) -> Ref:
    ref = raw.get(field)
    if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str):
        raise SpecError(f"spec.{field}.name is required")
    key = ref.get("key") or default_key
    if not isinstance(key, str) or not key:
        raise SpecError(f"spec.{field}.key is required")
    return Ref(name=ref["name"], key=key)


def _check_int(value: object, field: str, low: int, high: int) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not low <= value <= high
    ):
        raise SpecError(f"spec.{field} must be a whole number from {low} to {high}")
