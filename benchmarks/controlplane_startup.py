"""How long the local control plane takes to become ready, and how much memory it holds.

Starts and stops a plane `--runs` times in a row (warm: binaries built, page cache
hot) and prints, per run, the seconds from start() to ready, the resident memory
(VmRSS) of etcd, kube-apiserver and kube-controller-manager right after ready and
again after `--settle` seconds, and the seconds stop() took; then the median and
range. Run it on an otherwise idle machine:

    .venv/bin/python -m benchmarks.controlplane_startup --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from devenv.controlplane import ControlPlane


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid} has no VmRSS")


def plane_rss(plane: ControlPlane) -> dict[str, float]:
    return {name: rss_mib(pid) for name, pid in plane.pids.items()}


def one_run(settle_seconds: float) -> dict[str, float]:
    plane = ControlPlane()
    started = time.monotonic()
    plane.start()
    ready_seconds = time.monotonic() - started
    try:
        at_ready = plane_rss(plane)
        time.sleep(settle_seconds)
        settled = plane_rss(plane)
    finally:
        stopping = time.monotonic()
        plane.stop()
    return {
        "ready_s": ready_seconds,
        "rss_ready_mib": sum(at_ready.values()),
        "rss_settled_mib": sum(settled.values()),
        **{f"{name}_mib": rss for name, rss in settled.items()},
        "stop_s": time.monotonic() - stopping,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--settle", type=float, default=10.0)
    args = parser.parse_args()

    results = [one_run(args.settle) for _ in range(args.runs)]
    for number, result in enumerate(results, 1):
        row = "  ".join(f"{key}={value:.2f}" for key, value in result.items())
        print(f"run {number}: {row}")
    for key in results[0]:
        values = [result[key] for result in results]
        print(
            f"{key}: median {statistics.median(values):.2f}"
            f"  min {min(values):.2f}  max {max(values):.2f}"
        )


if __name__ == "__main__":
    main()
