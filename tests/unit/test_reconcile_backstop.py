"""A token request that fails in a way nobody foresaw still ends as a condition.

The keeper would survive the exception, but status would say nothing: the
person reading ``kubectl describe`` must see that requests fail, and why to
look at the log.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pytest_mock import MockerFixture
from tokenkeeper import reasons
from tokenkeeper.guard import OutboundGuard
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

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get(name)

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
