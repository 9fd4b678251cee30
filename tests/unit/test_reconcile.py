"""One reconcile pass against a fake API, for outcomes a real server can't force.

An exception nobody foresaw while requesting a token, and a Secret write that
fails after a token was obtained: each must end where people look (status and
events), without a second token request.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pytest_mock import MockerFixture
from tokenkeeper import reasons
from tokenkeeper.endpoint import Token
from tokenkeeper.guard import OutboundGuard
from tokenkeeper.kube import KubeError
from tokenkeeper.reconcile import Memory, Reconciler

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
BODY = {
    "metadata": {"namespace": "ns", "name": "api", "uid": "u-1", "generation": 1},
    "spec": {
        "tokenURL": "https://sso.example.test/token",
        "clientID": "api",
        "clientSecretRef": {"name": "client"},
    },
}


class FakeKube:
    def __init__(self) -> None:
        self.statuses: list[Mapping[str, Any]] = []
        self.events: list[tuple[str, str]] = []
        secret = base64.b64encode(b"s3cret").decode()
        self.secrets: dict[str, dict[str, Any]] = {
            "client": {
                "metadata": {"name": "client", "uid": "c", "resourceVersion": "1"},
                "data": {"client-secret": secret},
            }
        }

        self.failing_writes = 0
        self.writes = 0

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get(name)

    def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if self.failing_writes:
            self.failing_writes -= 1
            raise KubeError(f"POST secret {namespace}/{body['metadata']['name']}", 500)
        self.writes += 1
        written = {**body, "metadata": {**body["metadata"], "resourceVersion": "7"}}
        self.secrets[body["metadata"]["name"]] = written
        return written

    def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        self.statuses.append(status)
        return {}

    def post_event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        self.events.append((type_, reason))


def test_an_unexpected_exception_in_a_request_becomes_an_internal_error_condition(
    mocker: MockerFixture,
) -> None:
    mocker.patch("tokenkeeper.reconcile.fetch_token", side_effect=KeyError("x"))
    kube = FakeKube()
    reconciler = Reconciler(
        kube,  # type: ignore[arg-type]
        guard=OutboundGuard(resolver=lambda host: ["203.0.113.9"]),
        clock=lambda: NOW,
    )

    retry_at = reconciler.reconcile(BODY, Memory(uid="u-1"))

    conditions = {c["type"]: c for c in kube.statuses[-1]["conditions"]}
    refreshed = conditions[reasons.REFRESHED]
    assert (refreshed["status"], refreshed["reason"]) == ("False", "InternalError")
    assert "KeyError" in refreshed["message"]
    assert conditions[reasons.READY]["status"] == "False"
    assert ("Warning", "InternalError") in kube.events
    assert retry_at > NOW


def reconciler(kube: FakeKube) -> Reconciler:
    return Reconciler(
        kube,  # type: ignore[arg-type]
        guard=OutboundGuard(resolver=lambda host: ["203.0.113.9"]),
        clock=lambda: NOW,
    )


def test_a_token_whose_write_failed_is_written_and_announced_without_a_new_request(
    mocker: MockerFixture,
) -> None:
    issued = Token(
        access_token="tok-1",
        token_type="Bearer",
        issued_at=NOW,
        expires_at=NOW + timedelta(seconds=300),
    )
    fetch = mocker.patch("tokenkeeper.reconcile.fetch_token", return_value=issued)
    kube = FakeKube()
    kube.failing_writes = 1
    memory = Memory(uid="u-1")
    passes = reconciler(kube)

    with pytest.raises(KubeError):
        passes.reconcile(BODY, memory)
    passes.reconcile(BODY, memory)

    assert fetch.call_count == 1
    assert kube.writes == 1
    secret = kube.secrets["api"]
    assert base64.b64decode(secret["data"]["access_token"]) == b"tok-1"
    conditions = {c["type"]: c for c in kube.statuses[-1]["conditions"]}
    assert conditions[reasons.REFRESHED]["reason"] == reasons.TOKEN_ISSUED
    assert conditions[reasons.READY]["status"] == "True"
    assert ("Normal", "TokenIssued") in kube.events
    assert all(reason != "SecretRestored" for _, reason in kube.events)
