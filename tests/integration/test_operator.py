"""The main job end to end: a ClientCredential on a real API server yields a token.

A real kube-apiserver (with the garbage collector running), the shipped CRD
and RBAC, the operator as its own ServiceAccount, and a real token endpoint
on loopback. Token lifetimes are a few seconds so refreshes happen in-test.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from tokenkeeper.status import parse_rfc3339

from devenv.runner import OperatorProcess
from devenv.tokenserver import TokenServer, server_error
from tests.integration.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    ROOT,
    Cluster,
    basic_spec,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("operator")


def ready(cluster: Cluster, namespace: str, name: str) -> bool:
    condition = cluster.condition(namespace, name, "Ready")
    return bool(condition and condition["status"] == "True")


def decoded(secret: dict, key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def test_crd_and_manifests_pass_server_side_dry_run(cluster: Cluster) -> None:
    crds = cluster.kubectl("apply", "--dry-run=server", "-k", str(ROOT / "crds"))
    manifests = cluster.kubectl(
        "apply", "--dry-run=server", "-k", str(ROOT / "manifests")
    )

    assert "clientcredentials.tokenkeeper.dev" in crds
    assert "deployment.apps/tokenkeeper" in manifests
    assert "clusterrole.rbac.authorization.k8s.io/tokenkeeper" in manifests


def test_a_clientcredential_yields_a_managed_secret_holding_the_token(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    created = cluster.create_credential(
        namespace,
        "billing",
        basic_spec(
            token_server,
            scopes=["read"],
            secretTemplate={"labels": {"team": "billing"}, "annotations": {"a": "b"}},
        ),
    )

    wait_for(lambda: ready(cluster, namespace, "billing"))

    secret = cluster.secret(namespace, "billing")
    assert secret is not None
    assert secret["type"] == "Opaque"
    assert set(secret["data"]) == {"access_token", "token_type", "expires_at", "scope"}
    assert decoded(secret, "token_type") == "Bearer"
    assert decoded(secret, "scope") == "read"
    meta = secret["metadata"]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "tokenkeeper"
    assert meta["labels"]["team"] == "billing"
    assert meta["annotations"]["a"] == "b"
    expires_at = decoded(secret, "expires_at")
    assert meta["annotations"]["tokenkeeper.dev/expires-at"] == expires_at
    assert expires_at.endswith("Z")
    [owner] = meta["ownerReferences"]
    assert owner["uid"] == created["metadata"]["uid"]
    assert owner["controller"] is True
    assert owner["kind"] == "ClientCredential"
    assert token_server.count("/token") == 1
    issued = token_server.requests[-1]
    assert issued.field("client_id") == CLIENT_ID
    assert issued.field("client_secret") == CLIENT_SECRET
    assert cluster.token(namespace, "billing")


def test_status_tells_the_truth_and_carries_no_framework_bookkeeping(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    wait_for(lambda: ready(cluster, namespace, "billing"))

    body = cluster.credential(namespace, "billing")

    status = body["status"]
    assert set(status) <= {
        "conditions",
        "observedGeneration",
        "secretName",
        "tokenType",
        "expiresAt",
        "refreshAt",
        "lastRefreshTime",
        "lastFailureTime",
        "failedAttempts",
        "refreshRequestedAt",
    }
    assert status["secretName"] == "billing"
    assert status["tokenType"] == "Bearer"
    assert status["observedGeneration"] == body["metadata"]["generation"]
    assert status["failedAttempts"] == 0
    expires_at = parse_rfc3339(status["expiresAt"])
    refresh_at = parse_rfc3339(status["refreshAt"])
    assert expires_at is not None
    assert refresh_at is not None
    assert refresh_at < expires_at
    # 300 s tokens: refresh 120 s before expiry (minus at most 5 s of jitter).
    assert timedelta(seconds=119) <= expires_at - refresh_at <= timedelta(seconds=126)
    for condition in status["conditions"]:
        assert condition["status"] == "True"
        assert condition["reason"] in ("TokenValid", "TokenIssued")
        assert condition["message"].endswith(".")
        assert condition["observedGeneration"] == body["metadata"]["generation"]
        assert condition["lastTransitionTime"]
    assert "finalizers" not in body["metadata"]
    annotations = body["metadata"].get("annotations") or {}
    assert not [a for a in annotations if "kopf" in a]


def test_kubectl_get_shows_ready_secret_and_expiry_and_wide_adds_refresh_columns(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    wait_for(lambda: ready(cluster, namespace, "billing"))

    narrow = cluster.kubectl("get", "ccred", "-n", namespace).splitlines()
    wide = cluster.kubectl("get", "clientcredentials", "-n", namespace, "-o", "wide")
    by_category = cluster.kubectl("get", "tokenkeeper", "-n", namespace)

    assert narrow[0].split() == ["NAME", "READY", "SECRET", "EXPIRES", "AGE"]
    row = narrow[1].split()
    assert row[:3] == ["billing", "True", "billing"]
    assert row[3].endswith("Z")
    assert "invalid" not in row[3]
    header = wide.splitlines()[0].split()
    assert header[-4:] == ["REFRESHED", "REASON", "NEXT", "REFRESH"]
    assert "TokenIssued" in wide
    assert "billing" in by_category


def test_tokens_are_refreshed_before_they_expire(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    token_server.add_client(CLIENT_ID, CLIENT_SECRET, lifetime=4)
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "short", basic_spec(token_server))
    wait_for(lambda: cluster.token(namespace, "short"))

    seen: list[tuple[str, datetime, datetime]] = []
    deadline = time.monotonic() + 9
    while time.monotonic() < deadline:
        secret = cluster.secret(namespace, "short")
        assert secret is not None
        token = decoded(secret, "access_token")
        expires_at = parse_rfc3339(decoded(secret, "expires_at"))
        assert expires_at is not None
        now = datetime.now(UTC)
        assert expires_at > now, "the Secret held an expired token"
        if not seen or seen[-1][0] != token:
            seen.append((token, now, expires_at))
        time.sleep(0.05)

    assert len(seen) >= 3, f"only {len(seen)} tokens in 9 s of 4 s tokens"
    # Every replacement came before the previous token expired.
    for (_, _, old_expiry), (_, replaced_at, _) in itertools.pairwise(seen):
        assert replaced_at < old_expiry
    # One token request per refresh, not more.
    assert token_server.count("/token") <= len(seen) + 1


def test_an_operator_restart_resumes_without_requesting_valid_tokens(
    cluster: Cluster,
    namespace: str,
    token_server: TokenServer,
    start_operator: callable,
    operator: OperatorProcess,
) -> None:
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    wait_for(lambda: ready(cluster, namespace, "billing"))
    token = cluster.token(namespace, "billing")
    operator.stop()

    try:
        second = start_operator("--verbose")
        time.sleep(3)
        logs = second.logs()
    finally:
        second.stop()
        operator.start()

    assert token_server.count("/token") == 1
    assert cluster.token(namespace, "billing") == token
    assert "Refreshed the token" not in logs


def test_a_spec_change_gets_a_new_token_at_once(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    wait_for(lambda: ready(cluster, namespace, "billing"))
    first = cluster.token(namespace, "billing")

    cluster.patch_credential(namespace, "billing", {"spec": {"scopes": ["write"]}})

    secret = wait_for(
        lambda: (
            (s := cluster.secret(namespace, "billing")) and "scope" in s["data"] and s
        )
    )
    assert decoded(secret, "scope") == "write"
    assert decoded(secret, "access_token") != first
    assert token_server.requests[-1].field("scope") == "write"


def test_a_changed_client_secret_is_used_at_once(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    wait_for(lambda: ready(cluster, namespace, "billing"))

    token_server.set_secret(CLIENT_ID, "rotated-canary-client-secret")
    cluster.set_client_secret(namespace, "client", "rotated-canary-client-secret")

    wait_for(lambda: token_server.count("/token") == 2, timeout=10)
    assert (
        token_server.requests[-1].field("client_secret")
        == "rotated-canary-client-secret"
    )
    wait_for(lambda: ready(cluster, namespace, "billing"))


def test_a_deleted_managed_secret_is_restored_without_a_new_request(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    wait_for(lambda: ready(cluster, namespace, "billing"))
    token = cluster.token(namespace, "billing")

    cluster.core.delete_namespaced_secret("billing", namespace)

    wait_for(lambda: cluster.token(namespace, "billing"), timeout=10)
    assert cluster.token(namespace, "billing") == token
    assert token_server.count("/token") == 1
    reasons = [e["reason"] for e in cluster.events(namespace, "billing")]
    assert "SecretRestored" in reasons


def test_an_edited_managed_secret_is_restored(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    wait_for(lambda: ready(cluster, namespace, "billing"))
    token = cluster.token(namespace, "billing")

    cluster.core.patch_namespaced_secret(
        "billing", namespace, {"stringData": {"access_token": "tampered", "extra": "x"}}
    )

    wait_for(lambda: cluster.token(namespace, "billing") == token, timeout=10)
    secret = cluster.secret(namespace, "billing")
    assert secret is not None
    assert "extra" not in secret["data"]


def test_a_template_or_secret_name_change_rewrites_the_secret_without_a_request(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    wait_for(lambda: ready(cluster, namespace, "billing"))
    token = cluster.token(namespace, "billing")

    template = {"labels": {"team": "billing"}, "annotations": {"owner": "ops"}}
    cluster.patch_credential(
        namespace, "billing", {"spec": {"secretTemplate": template}}
    )
    wait_for(
        lambda: (
            (cluster.secret(namespace, "billing") or {})["metadata"]
            .get("labels", {})
            .get("team")
            == "billing"
        ),
        timeout=10,
    )
    cluster.patch_credential(namespace, "billing", {"spec": {"secretName": "renamed"}})
    wait_for(lambda: cluster.token(namespace, "renamed") == token, timeout=10)

    secret = cluster.secret(namespace, "billing")
    assert secret is not None
    assert secret["metadata"]["annotations"]["owner"] == "ops"
    assert token_server.count("/token") == 1
    reasons = [e["reason"] for e in cluster.events(namespace, "billing")]
    assert "SecretRestored" not in reasons


def test_a_refresh_request_annotation_gets_a_new_token_and_is_acknowledged(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    wait_for(lambda: ready(cluster, namespace, "billing"))
    first = cluster.token(namespace, "billing")

    cluster.patch_credential(
        namespace,
        "billing",
        {
            "metadata": {
                "annotations": {"tokenkeeper.dev/refresh-requested-at": "now-1"}
            }
        },
    )

    wait_for(
        lambda: (
            (cluster.credential(namespace, "billing").get("status") or {}).get(
                "refreshRequestedAt"
            )
            == "now-1"
        ),
        timeout=10,
    )
    assert cluster.token(namespace, "billing") != first
    assert token_server.count("/token") == 2


def test_a_foreign_secret_with_the_target_name_is_left_untouched(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    cluster.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "taken"}, "stringData": {"mine": "yes"}}
    )
    before = cluster.secret(namespace, "taken")

    cluster.create_credential(
        namespace, "billing", basic_spec(token_server, secretName="taken")
    )

    condition = wait_for(
        lambda: (
            (c := cluster.condition(namespace, "billing", "Ready"))
            and c["reason"] == "SecretConflict"
            and c
        ),
    )
    assert condition["status"] == "False"
    assert "taken" in condition["message"]
    after = cluster.secret(namespace, "taken")
    assert after is not None
    assert before is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert token_server.count("/token") == 0


def test_deleting_a_clientcredential_needs_no_operator_and_collects_its_secret(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    wait_for(lambda: ready(cluster, namespace, "billing"))
    assert "finalizers" not in cluster.credential(namespace, "billing")["metadata"]

    cluster.delete_credential(namespace, "billing")

    wait_for(lambda: cluster.secret(namespace, "billing") is None, timeout=30)


def test_a_missing_client_secret_is_reported_and_recovers_when_it_appears(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_credential(namespace, "billing", basic_spec(token_server))

    condition = wait_for(
        lambda: (
            (c := cluster.condition(namespace, "billing", "Refreshed"))
            and c["status"] == "False"
            and c
        )
    )
    assert condition["reason"] == "ClientSecretNotFound"
    assert "client" in condition["message"]
    ready_condition = cluster.condition(namespace, "billing", "Ready")
    assert ready_condition is not None
    assert ready_condition["status"] == "False"

    cluster.create_client_secret(namespace)

    wait_for(lambda: ready(cluster, namespace, "billing"), timeout=10)


def test_a_failing_refresh_keeps_the_last_good_token_and_recovers(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    token_server.add_client(CLIENT_ID, CLIENT_SECRET, lifetime=6)
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    wait_for(lambda: ready(cluster, namespace, "billing"))
    good = cluster.token(namespace, "billing")
    token_server.set_default(server_error(503))

    failed = wait_for(
        lambda: (
            (c := cluster.condition(namespace, "billing", "Refreshed"))
            and c["status"] == "False"
            and c
        ),
        timeout=10,
    )
    assert failed["reason"] == "ServerError"
    assert cluster.token(namespace, "billing") == good
    assert ready(cluster, namespace, "billing")
    wait_for(
        lambda: (
            cluster.credential(namespace, "billing")["status"]["failedAttempts"] >= 3
        ),
        timeout=10,
    )

    token_server.set_default(None)

    wait_for(
        lambda: (
            (c := cluster.condition(namespace, "billing", "Refreshed"))
            and c["status"] == "True"
        ),
        timeout=10,
    )
    assert cluster.token(namespace, "billing") != good
    events = [(e["type"], e["reason"]) for e in cluster.events(namespace, "billing")]
    # One event on the change into failure, one on recovery: not one per attempt.
    assert events.count(("Warning", "ServerError")) == 1
    assert events.count(("Normal", "TokenIssued")) == 2


def test_a_token_that_expires_during_an_outage_turns_ready_false(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    token_server.add_client(CLIENT_ID, CLIENT_SECRET, lifetime=3)
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    wait_for(lambda: ready(cluster, namespace, "billing"))
    token_server.set_default(server_error(500))

    condition = wait_for(
        lambda: (
            (c := cluster.condition(namespace, "billing", "Ready"))
            and c["status"] == "False"
            and c
        ),
        timeout=10,
    )

    assert condition["reason"] == "TokenExpired"
    assert cluster.token(namespace, "billing"), "the expired token must not be blanked"


def test_routine_refreshes_post_no_events(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    token_server.add_client(CLIENT_ID, CLIENT_SECRET, lifetime=3)
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    wait_for(lambda: token_server.count("/token") >= 4, timeout=15)

    events = cluster.events(namespace, "billing")

    assert [e["reason"] for e in events] == ["TokenIssued"]
    assert "first token" in events[0]["message"]


def test_issuer_url_discovers_the_token_endpoint(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    spec = basic_spec(token_server)
    del spec["tokenURL"]
    spec["issuerURL"] = token_server.url

    cluster.create_credential(namespace, "billing", spec)

    wait_for(lambda: ready(cluster, namespace, "billing"))
    assert token_server.count("/.well-known/openid-configuration") == 1


def test_client_secret_basic_is_used_when_asked(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)

    cluster.create_credential(
        namespace, "billing", basic_spec(token_server, authMethod="client_secret_basic")
    )

    wait_for(lambda: ready(cluster, namespace, "billing"))
    sent = token_server.requests[-1]
    assert sent.header(
        "Authorization",
    ).startswith("Basic ")
    assert sent.field("client_secret") is None


def test_one_broken_object_does_not_hold_up_the_others(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    with TokenServer() as hanging:
        hanging.set_default(server_error(500))
        cluster.create_credential(
            namespace,
            "broken",
            {**basic_spec(token_server), "tokenURL": hanging.token_url},
        )
        cluster.create_credential(
            namespace,
            "missing",
            basic_spec(token_server, clientSecretRef={"name": "nope"}),
        )
        cluster.create_credential(namespace, "fine", basic_spec(token_server))

        wait_for(lambda: ready(cluster, namespace, "fine"), timeout=10)
        assert not ready(cluster, namespace, "broken")
        assert not ready(cluster, namespace, "missing")


def test_events_and_status_never_carry_the_client_secret_or_token(
    cluster: Cluster, namespace: str, token_server: TokenServer
) -> None:
    cluster.create_client_secret(namespace)
    cluster.create_credential(namespace, "billing", basic_spec(token_server))
    wait_for(lambda: ready(cluster, namespace, "billing"))
    token = cluster.token(namespace, "billing")
    assert token

    shown = (
        json.dumps(cluster.credential(namespace, "billing"))
        + json.dumps(cluster.events(namespace, "billing"))
        + cluster.kubectl("describe", "ccred", "-n", namespace, "billing")
    )

    assert CLIENT_SECRET not in shown
    assert token not in shown
