"""``make bench-smoke``: the benchmark program runs end to end and writes its figures.

A handful of objects and a few seconds per phase, on a control plane of its
own: this proves the program works and that its JSON has every figure the
README and benchmarks/RESULTS.md quote. No figure is compared with a target;
timings on a shared machine are not something a test can hold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.cluster

MACHINE_KEYS = {
    "cores",
    "memory_gib",
    "python",
    "kopf",
    "kubernetes_client",
    "kubernetes_server",
    "load_average_at_start",
    "load_average_at_end",
}
LATENCY_KEYS = {"objects", "missing", "p50_ms", "p95_ms", "p99_ms", "max_ms"}
SUSTAINED_KEYS = {
    "objects",
    "token_lifetime_s",
    "window_s",
    "refreshes",
    "refreshes_per_second",
    "scheduled_refreshes_per_second",
    "min_remaining_s",
    "lapses",
    "refresh_lag",
    "token_requests_per_refresh",
    "api_writes_per_refresh",
    "api_reads_per_refresh",
    "api_requests",
    "operator_rss_mb",
    "operator_rss_mb_per_1000",
    "operator_cpu_cores_per_1000",
    "operator_cpu_ms_per_refresh",
    "server_cpu_ms_per_refresh",
    "machine_busy_cores",
    "others_busy_cores",
}
FLOOR_KEYS = {
    "workers",
    "operations",
    "refreshes_per_second",
    "cpu_ms_per_refresh",
    "server_cpu_ms_per_refresh",
}


def test_the_smoke_run_prints_a_table_and_writes_every_figure(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--smoke",
            f"--results-dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    [path] = tmp_path.glob("*.json")
    assert f"results: {path}" in result.stdout
    assert "Time to Secret" in result.stdout
    assert "Sustained refresh" in result.stdout
    results = json.loads(path.read_text())
    assert set(results["machine"]) >= MACHINE_KEYS
    assert set(results["time_to_secret"]) == {"serial", "burst"}
    for figures in results["time_to_secret"].values():
        assert set(figures) >= LATENCY_KEYS
    assert set(results["sustained"]) == {"short", "long"}
    for figures in results["sustained"].values():
        assert set(figures) >= SUSTAINED_KEYS
        assert figures["refreshes"] > 0
        assert figures["refresh_lag"]["refreshes"] > 0
    assert set(results["floor"]) >= FLOOR_KEYS
    assert results["floor"]["operations"] > 0
