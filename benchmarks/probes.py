"""Counters a benchmark reads before and after a window, and the machine it ran on.

Each probe returns plain numbers so that a window's figures are differences
of two readings: the API server's ``apiserver_request_total`` (scraped from
/metrics with the admin credentials), a process's resident memory and CPU
time from /proc, and the whole machine's busy time from /proc/stat, which
shows how much of the CPU other work on a shared machine took meanwhile.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import kubernetes

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY"})
_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

RequestKey = tuple[str, str]
"""(verb, resource[/subresource]) as the API server labels a request."""


def api_requests(api_client: kubernetes.client.ApiClient) -> Counter[RequestKey]:
    """``apiserver_request_total`` summed by verb and resource, all codes."""
    method, url, headers, _body, _post = api_client.param_serialize(
        "GET", "/metrics", auth_settings=["BearerToken"]
    )
    response: Any = api_client.call_api(method, url, header_params=headers)
    totals: Counter[RequestKey] = Counter()
    for line in response.read().decode().splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        totals[labels.get("verb", ""), resource] += int(float(match["value"]))
    return totals


def request_delta(
    before: Counter[RequestKey],
    after: Counter[RequestKey],
    resources: Iterable[str],
) -> dict[str, int]:
    """Requests made between two scrapes on ``resources``, as "VERB resource"."""
    wanted = set(resources)
    return {
        f"{verb} {resource}": after[verb, resource] - before[verb, resource]
        for verb, resource in sorted(after)
        if resource.split("/")[0] in wanted
        and after[verb, resource] > before[verb, resource]
    }


_BUCKET = re.compile(
    r'^tokenkeeper_refresh_lag_seconds_bucket\{le="(?P<le>[^"]+)"\} (?P<n>\S+)$'
)


def refresh_lag_buckets(port: int) -> dict[float, float]:
    """The operator's refresh-lag histogram: cumulative count by upper bound."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        float(m["le"]): float(m["n"])
        for m in map(_BUCKET.match, text.splitlines())
        if m is not None
    }


def lag_figures(
    before: Mapping[float, float], after: Mapping[float, float]
) -> dict[str, Any]:
    """How late routine refreshes started in a window, from two histogram scrapes.

    The histogram keeps buckets, not samples: percentiles are the bucket bound
    they fall under ("at most").
    """
    delta = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = delta.get(float("inf"), 0.0)
    if not total:
        return {"refreshes": 0}

    def at_most(share: float) -> float:
        return next(le for le, n in delta.items() if n >= share * total)

    return {
        "refreshes": int(total),
        "within_1s_share": delta.get(1.0, 0.0) / total,
        "p50_at_most_s": at_most(0.5),
        "p99_at_most_s": at_most(0.99),
    }


def writes(delta: Mapping[str, int]) -> int:
    return sum(n for key, n in delta.items() if key.split(" ")[0] in WRITE_VERBS)


@dataclasses.dataclass(frozen=True)
class ProcessSample:
    rss_bytes: int
    cpu_seconds: float


def process_sample(pid: int) -> ProcessSample:
    """VmRSS and utime+stime of a running process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    # The command name (field 2) may hold spaces; count fields after its ")".
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return ProcessSample(rss, (utime + stime) / CLOCK_TICKS)


def cpu_seconds(pids: Mapping[str, int]) -> dict[str, float]:
    found = {}
    for name, pid in pids.items():
        try:
            found[name] = process_sample(pid).cpu_seconds
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def percentiles(values: Sequence[float], points: Iterable[int]) -> dict[str, float]:
    """Nearest-rank percentiles, e.g. {"p50": ...}; empty when there is no value."""
    ordered = sorted(values)
    if not ordered:
        return {}
    found = {}
    for point in points:
        rank = max(1, -(-point * len(ordered) // 100))
        found[f"p{point}"] = ordered[rank - 1]
    return found


def machine(api_client: kubernetes.client.ApiClient) -> dict[str, Any]:
    """What ran the benchmark: hardware, load, versions of everything measured."""
    meminfo = Path("/proc/meminfo").read_text()
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo)[1])  # type: ignore[index]
    model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    version = kubernetes.client.VersionApi(api_client).get_code()
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model[1].strip() if model else platform.processor(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "kopf": importlib.metadata.version("kopf"),
        "kubernetes_client": importlib.metadata.version("kubernetes"),
        "requests": importlib.metadata.version("requests"),
        "tokenkeeper": importlib.metadata.version("tokenkeeper"),
        "kubernetes_server": version.git_version,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", "operator")),
    }


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    return result.stdout.strip()


def python_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def sleep_until(deadline: float) -> None:
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 1.0))
