"""The wiring into kopf: watch handlers feed the keeper; nothing else happens here.

Only ``on.event`` handlers are used. They add no finalizer, keep no progress in
the object, and see the initial listing at start-up, so a restarted operator
resumes every object from what the cluster holds. Every event is also shown to
the ``WatchEcho`` and the probes ask ``health`` for the verdict; with peering,
the startup handler starts the ``peering.Gate``. Secrets are watched with a
server-side label selector, so the operator never lists or caches Secrets
that are not labelled for it.
"""

from __future__ import annotations

from typing import Any

import kopf

from tokenkeeper.health import CREDENTIALS, SECRETS, Limits, WatchEcho, problems
from tokenkeeper.keeper import Keeper
from tokenkeeper.kube import load_configuration
from tokenkeeper.peering import Gate
from tokenkeeper.target import (
    GROUP,
    PLURAL,
    ROLE_ACCESS_TOKEN,
    ROLE_CLIENT_SECRET,
    SECRET_ROLE_LABEL,
    VERSION,
)

SECRET_SELECTOR = f"{SECRET_ROLE_LABEL} in ({ROLE_ACCESS_TOKEN},{ROLE_CLIENT_SECRET})"


class _EventsOnlyDiffBase(kopf.AnnotationsDiffBaseStorage):
    """Builds no essence: with only ``on.event`` handlers, kopf never diffs one.

    kopf builds an object's essence (a deep copy of its body) for every watch
    event, for on.create/on.update handlers, which tokenkeeper does not have;
    under sustained refresh that copying was the largest part of kopf's cost
    per event (benchmarks/RESULTS.md). An on.update handler added here would
    need the stock storage back.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.watching.label_selectors["v1", "secrets"] = SECRET_SELECTOR
    if memo.get("namespaces"):
        # Named namespaces need no namespace listing, which the ClusterRole does
        # not grant: kopf would retry it, forbidden, for a minute before serving.
        settings.scanning.disabled = True
    settings.posting.loggers = False
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=GROUP
    )
    settings.persistence.diffbase_storage = _EventsOnlyDiffBase(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


@kopf.on.startup()
async def start_peering(
    settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any
) -> None:
    gate: Gate | None = memo.get("gate")
    if gate is None:
        return
    settings.peering.lifetime = gate.lifetime
    await gate.ensure_object()
    gate.start(memo["keeper"], memo["echo"])


@kopf.on.login()
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf connects exactly as the worker threads do: in-cluster, or --kubeconfig."""
    configuration = load_configuration(memo.get("kubeconfig"))
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    scheme, _space, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or ("Bearer" if token else None),
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


@kopf.on.cleanup()
async def stop_keeper(memo: kopf.Memo, **_: Any) -> None:
    gate: Gate | None = memo.get("gate")
    if gate is not None:
        await gate.stop()
    keeper: Keeper = memo["keeper"]
    await keeper.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def credential_changed(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    keeper: Keeper = memo["keeper"]
    body = event["object"]
    memo["echo"].event(CREDENTIALS, event["type"], body)
    if event["type"] == "DELETED":
        keeper.remove(body)
    else:
        keeper.upsert(body)


@kopf.on.event("v1", "secrets")
async def secret_changed(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    keeper: Keeper = memo["keeper"]
    memo["echo"].event(SECRETS, event["type"], event["object"])
    keeper.secret_changed(event["type"], event["object"])


@kopf.on.probe(id="objects")
async def objects_served(memo: kopf.Memo, **_: Any) -> int:
    keeper: Keeper = memo["keeper"]
    return len(keeper)


@kopf.on.probe(id="working")
async def still_working(
    memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any
) -> bool:
    """Fails the liveness endpoint (kopf answers 500) when the operator is stuck."""
    keeper: Keeper = memo["keeper"]
    echo: WatchEcho = memo["echo"]
    gate: Gate | None = memo.get("gate")
    limits = Limits(
        stall=memo["stall_timeout"],
        echo=2 * settings.watching.inactivity_timeout,
    )
    found = problems(keeper, echo, limits, gate_running=gate is None or gate.running)
    if found:
        raise kopf.PermanentError("; ".join(found) + ".")
    return keeper.active
