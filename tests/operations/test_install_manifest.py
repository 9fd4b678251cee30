"""manifests/install.yaml and manifests/monitoring/: in sync, accepted, consistent.

install.yaml is generated (``make install.yaml``); these tests render it again
so it cannot drift from manifests/ and crds/, and have the real API server
validate it. The monitoring manifests need the Prometheus operator's CRDs, so
they stay out of the default kustomization, and their alert rules may only
name metrics the operator exports.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from tokenkeeper.metrics import Metrics

from devenv.controlplane import Binaries
from devenv.installyaml import INSTALL_YAML, render
from tests.cluster import ROOT, Cluster

MONITORING = ROOT / "manifests" / "monitoring"


def kustomize(path: Path) -> list[dict]:
    built = subprocess.run(
        [str(Binaries.find().kubectl), "kustomize", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def test_install_yaml_is_the_current_rendering_of_the_kustomization() -> None:
    assert INSTALL_YAML.read_text() == render(), "run `make install.yaml`"


def test_install_yaml_passes_a_server_side_dry_run(
    cluster: Cluster, operator_kubeconfig: Path
) -> None:
    applied = cluster.kubectl("apply", "--dry-run=server", "-f", str(INSTALL_YAML))

    for what in (
        "customresourcedefinition.apiextensions.k8s.io/clientcredentials.tokenkeeper.dev",
        "customresourcedefinition.apiextensions.k8s.io/clusterkopfpeerings.kopf.dev",
        "clusterrole.rbac.authorization.k8s.io/tokenkeeper",
        "deployment.apps/tokenkeeper",
        "poddisruptionbudget.policy/tokenkeeper",
    ):
        assert what in applied


def test_install_yaml_runs_two_peered_replicas_with_metrics() -> None:
    documents = list(yaml.safe_load_all(INSTALL_YAML.read_text()))
    [deployment] = [d for d in documents if d["kind"] == "Deployment"]

    spec = deployment["spec"]
    [container] = spec["template"]["spec"]["containers"]
    assert spec["replicas"] == 2
    assert "--peering=tokenkeeper" in container["args"]
    assert "--metrics-port=8081" in container["args"]
    assert {"name": "metrics", "containerPort": 8081} in container["ports"]
    assert not [d for d in documents if "monitoring.coreos.com" in d["apiVersion"]]


def test_the_monitoring_kustomization_builds_its_service_and_rules() -> None:
    kinds = sorted(doc["kind"] for doc in kustomize(MONITORING))

    assert kinds == ["PrometheusRule", "Service", "ServiceMonitor"]


def test_the_metrics_service_passes_a_server_side_dry_run(
    cluster: Cluster, operator_kubeconfig: Path
) -> None:
    applied = cluster.kubectl(
        "apply", "--dry-run=server", "-f", str(MONITORING / "service.yaml")
    )

    assert "service/tokenkeeper-metrics" in applied


def test_alert_rules_name_only_metrics_the_operator_exports() -> None:
    [rules] = [d for d in kustomize(MONITORING) if d["kind"] == "PrometheusRule"]
    exported = {
        metric.name + suffix
        for metric in Metrics().registry.collect()
        for suffix in ("", "_total", "_bucket", "_sum", "_count")
    }
    alerts = [rule for group in rules["spec"]["groups"] for rule in group["rules"]]

    named = {m for rule in alerts for m in re.findall(r"tokenkeeper_\w+", rule["expr"])}

    assert {rule["alert"] for rule in alerts} >= {
        "TokenkeeperTokenExpiringSoon",
        "TokenkeeperRefreshFailing",
        "TokenkeeperDown",
    }
    assert named
    assert named <= exported
