"""``make bench``: how fast and how cheaply the operator keeps tokens fresh.

One program, one command. It starts a real control plane on loopback
(devenv.controlplane), installs the CRD and the operator's RBAC as shipped,
starts a fast token endpoint in its own process (``fast_endpoint``) and runs
the operator as its ServiceAccount with ``--workers`` workers, then measures:

floor
    The same token POST and Secret PUT done by a bare client loop
    (``floor``), with the same number of threads: the cost no operator
    can go below.
serial, burst
    Time to Secret: from the create call of a ClientCredential to the watch
    event of its Secret holding a token; objects created one at a time, then
    all at once from 8 threads.
short, long
    Sustained refresh: N objects with tokens of a given lifetime, held for a
    window after they all have Secrets. Refreshes per second, the smallest
    remaining lifetime of any replaced token, token requests and API calls
    per refresh (counted at the endpoint and from the API server's
    ``apiserver_request_total``), and the operator's resident memory and
    CPU time from /proc.

Each sustained phase and the time-to-Secret phases get a fresh operator, and
namespaces are deleted between phases, so no phase carries another's load.
Nothing is asserted against a time: the figures are printed as a table and
written as JSON (with the machine and versions) to ``--results-dir``, whose
path is printed; the operator's logs and any profile go beside it.

The machine is often shared, so the JSON records the load average and, for
each window, how many cores the whole machine was busy against how many our
processes used. Compare runs by ratios (to the floor) and distributions.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException
from tokenkeeper.schedule import RefreshPolicy, refresh_lead

from benchmarks import probes, profiling
from benchmarks.secret_watch import SecretWatch
from devenv.controlplane import ControlPlane
from devenv.runner import OperatorProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "tokenkeeper.dev", "v1alpha1", "clientcredentials"
PHASES = ("floor", "serial", "burst", "short", "long")
CREATORS = 8
"""Threads that create objects in a burst (the driver's own concurrency)."""
API_RESOURCES = ("secrets", "clientcredentials", "events", "configmaps")
SERVERS = ("kube-apiserver", "etcd")


@dataclasses.dataclass(frozen=True)
class Settings:
    serial: int = 200
    burst: int = 1000
    short_objects: int = 1000
    short_lifetime: int = 30
    short_warmup: float = 30.0
    short_hold: float = 120.0
    long_objects: int = 10_000
    long_lifetime: int = 300
    long_warmup: float = 0.0
    long_hold: float = 360.0
    floor_operations: int = 2000
    floor_secrets: int = 200
    workers: int = 8


SMOKE = Settings(
    serial=3,
    burst=10,
    short_objects=10,
    short_lifetime=6,
    short_warmup=2.0,
    short_hold=7.0,
    long_objects=20,
    long_lifetime=8,
    long_warmup=0.0,
    long_hold=6.0,
    floor_operations=40,
    floor_secrets=4,
)


class Bench:
    """The servers of one run and the helpers every phase uses."""

    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        self.args = args
        self.settings = settings
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.results_dir = Path(args.results_dir).resolve()
        self.artifacts = self.results_dir / self.stamp
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.client_secret = secrets.token_urlsafe(24)
        self.py_spy = profiling.find_py_spy(args.py_spy) if args.profile else None
        if args.profile and self.py_spy is None:
            raise SystemExit("bench: --profile needs py-spy (pip install py-spy)")
        self.plane = ControlPlane()
        self.endpoint: subprocess.Popen[str] | None = None
        self.metrics_port = 0
        """The running operator's --metrics-port (its refresh-lag histogram)."""
        self.token_url = ""
        self.own_cpu_at_start = _own_cpu()

    @contextlib.contextmanager
    def running(self) -> Iterator[Bench]:
        self.plane.start()
        try:
            configuration = kubernetes.client.Configuration()
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(self.plane.kubeconfig),
                client_configuration=configuration,
            )
            configuration.connection_pool_maxsize = 32
            self.api = kubernetes.client.ApiClient(configuration)
            # Raw dicts in and out, as the operator does: typed as Any.
            self.core: Any = kubernetes.client.CoreV1Api(self.api)
            self.custom: Any = kubernetes.client.CustomObjectsApi(self.api)
            self._install()
            self._start_endpoint()
            yield self
        finally:
            if self.endpoint is not None:
                self.endpoint.terminate()
                self.endpoint.wait(10)
            self.plane.stop()

    def _install(self) -> None:
        self.plane.kubectl("apply", "-k", str(ROOT / "crds"))
        self.plane.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/clientcredentials.tokenkeeper.dev",
        )
        for name in ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml"):
            self.plane.kubectl("apply", "-f", str(ROOT / "manifests" / name))
        self.operator_kubeconfig = self.plane.serviceaccount_kubeconfig(
            "tokenkeeper-system",
            "tokenkeeper",
            self.artifacts / "operator.kubeconfig",
            expiration_seconds=6 * 3600,
        )

    def _start_endpoint(self) -> None:
        self.endpoint = subprocess.Popen(
            probes.python_command("benchmarks.fast_endpoint"),
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "BENCH_CLIENT_SECRET": self.client_secret},
            cwd=ROOT,
        )
        assert self.endpoint.stdout is not None
        self.token_url = self.endpoint.stdout.readline().strip()
        if not self.token_url.startswith("http://"):
            raise RuntimeError("the fast token endpoint did not start")

    # Helpers for phases.

    def namespace(self, name: str) -> str:
        self.core.create_namespace({"metadata": {"name": name}})
        self.core.create_namespaced_secret(
            name,
            {
                "metadata": {
                    "name": "client",
                    "labels": {"tokenkeeper.dev/secret": "client-secret"},
                },
                "stringData": {"client-secret": self.client_secret},
            },
        )
        return name

    def delete_namespaces(self, *names: str, timeout: float = 900.0) -> float:
        started = time.monotonic()
        for name in names:
            self.core.delete_namespace(name)
        deadline = started + timeout
        for name in names:
            while time.monotonic() < deadline:
                try:
                    self.core.read_namespace(name)
                except ApiException as e:
                    if e.status == 404:
                        break
                    raise
                time.sleep(0.5)
        return time.monotonic() - started

    def create(self, namespace: str, name: str, lifetime: int) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClientCredential",
            "metadata": {"name": name},
            "spec": {
                "tokenURL": self.token_url,
                "clientID": f"bench-{lifetime}",
                "clientSecretRef": {"name": "client"},
            },
        }
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, _preload_content=False
        )

    def create_many(
        self, namespace: str, names: Sequence[str], lifetime: int
    ) -> dict[str, float]:
        """Create from CREATORS threads; return when each create call started."""
        started: dict[str, float] = {}

        def one(name: str) -> None:
            started[name] = time.monotonic()
            self.create(namespace, name, lifetime)

        with ThreadPoolExecutor(CREATORS) as pool:
            list(pool.map(one, names))
        return started

    @contextlib.contextmanager
    def operator(self, phase: str) -> Iterator[OperatorProcess]:
        previous = os.environ.get("PYTHONPATH")
        if self.args.operator_path:
            os.environ["PYTHONPATH"] = str(Path(self.args.operator_path).resolve())
        try:
            self.metrics_port = free_port()
            process = OperatorProcess(
                self.operator_kubeconfig,
                self.artifacts / f"operator-{phase}.log",
                f"--workers={self.settings.workers}",
                f"--metrics-port={self.metrics_port}",
            )
            with process:
                yield process
        finally:
            if previous is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = previous

    def endpoint_requests(self) -> dict[str, int]:
        url = self.token_url.rsplit("/", 1)[0] + "/stats"
        import urllib.request

        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            requests: dict[str, int] = json.load(response)["requests"]
        return requests

    def server_pids(self) -> dict[str, int]:
        return {n: p for n, p in self.plane.pids.items() if n in SERVERS}


# Phases.


def floor_phase(bench: Bench) -> dict[str, Any]:
    settings = bench.settings
    namespace = bench.namespace("bench-floor")
    pids = [f"--pid={n}={p}" for n, p in bench.server_pids().items()]
    result = subprocess.run(
        probes.python_command(
            "benchmarks.floor",
            f"--kubeconfig={bench.operator_kubeconfig}",
            f"--namespace={namespace}",
            f"--token-url={bench.token_url}",
            "--client-id=bench-300",
            f"--workers={settings.workers}",
            f"--secrets={settings.floor_secrets}",
            f"--operations={settings.floor_operations}",
            *pids,
        ),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "BENCH_CLIENT_SECRET": bench.client_secret},
    )
    raw = json.loads(result.stdout.strip().splitlines()[-1])
    bench.delete_namespaces(namespace)
    operations = max(raw["operations"], 1)
    return {
        "workers": raw["workers"],
        "operations": raw["operations"],
        "errors": raw["errors"],
        "refreshes_per_second": raw["operations"] / raw["wall_seconds"],
        "cpu_ms_per_refresh": 1000 * raw["cpu_seconds"] / operations,
        "server_cpu_ms_per_refresh": {
            name: 1000 * seconds / operations
            for name, seconds in raw["server_cpu_seconds"].items()
        },
    }


def time_to_secret_phases(
    bench: Bench, run_serial: bool, run_burst: bool
) -> dict[str, Any]:
    settings = bench.settings
    found: dict[str, Any] = {}
    namespaces = []
    with bench.operator("time-to-secret"):
        if run_serial:
            namespaces.append(bench.namespace("bench-serial"))
            found["serial"] = _serial(bench, "bench-serial", settings.serial)
        if run_burst:
            namespaces.append(bench.namespace("bench-burst"))
            found["burst"] = _burst(bench, "bench-burst", settings.burst)
    bench.delete_namespaces(*namespaces)
    return found


def _serial(bench: Bench, namespace: str, count: int) -> dict[str, Any]:
    latencies, missing = [], 0
    with SecretWatch(bench.api, namespace) as watch:
        for i in range(count):
            name = f"serial-{i}"
            started = time.monotonic()
            bench.create(namespace, name, 300)
            if watch.wait_for_tokens({name}, timeout=30):
                missing += 1
                continue
            seen = watch.first_token_at(name)
            assert seen is not None
            latencies.append(seen - started)
    return _latency_figures(latencies, count, missing)


def _burst(bench: Bench, namespace: str, count: int) -> dict[str, Any]:
    names = [f"burst-{i}" for i in range(count)]
    with SecretWatch(bench.api, namespace) as watch:
        started = bench.create_many(namespace, names, 300)
        created = time.monotonic()
        missing = watch.wait_for_tokens(set(names), timeout=max(60.0, count * 0.5))
        seen = {name: watch.first_token_at(name) for name in names}
    latencies = [at - started[name] for name, at in seen.items() if at is not None]
    first, last = (
        min(started.values()),
        max((at for at in seen.values() if at is not None), default=created),
    )
    return {
        **_latency_figures(latencies, count, len(missing)),
        "create_seconds": created - first,
        "all_done_seconds": last - first,
        "secrets_per_second": len(latencies) / max(last - first, 1e-9),
    }


def _latency_figures(
    latencies: Sequence[float], count: int, missing: int
) -> dict[str, Any]:
    ms = [1000 * s for s in latencies]
    return {
        "objects": count,
        "missing": missing,
        **{f"{k}_ms": v for k, v in probes.percentiles(ms, (50, 95, 99)).items()},
        "max_ms": max(ms, default=None),
        "mean_ms": sum(ms) / len(ms) if ms else None,
    }


def sustained_phase(
    bench: Bench, label: str, objects: int, lifetime: int, warmup: float, hold: float
) -> dict[str, Any]:
    namespace = bench.namespace(f"bench-{label}")
    names = [f"{label}-{i}" for i in range(objects)]
    client_id = f"bench-{lifetime}"
    lead, _note = refresh_lead(timedelta(seconds=lifetime), RefreshPolicy())
    interval = lifetime - lead.total_seconds()
    figures: dict[str, Any] = {
        "objects": objects,
        "token_lifetime_s": lifetime,
        "warmup_s": warmup,
        "hold_s": hold,
        "refresh_interval_s": interval,
        "scheduled_refreshes_per_second": objects / interval,
    }

    with bench.operator(label) as operator, SecretWatch(bench.api, namespace) as watch:
        idle = probes.process_sample(operator.pid)
        populating = time.monotonic()
        bench.create_many(namespace, names, lifetime)
        missing = watch.wait_for_tokens(set(names), timeout=max(120.0, objects * 0.2))
        figures["populate_s"] = time.monotonic() - populating
        figures["missing"] = len(missing)
        time.sleep(warmup)

        before = _snapshot(bench, operator.pid, client_id)
        profile = None
        if bench.py_spy:
            raw = bench.artifacts / f"profile-{label}.txt"
            profile = (raw, profiling.record(bench.py_spy, operator.pid, hold, raw))
        peak_rss = before["operator"].rss_bytes
        deadline = before["at"] + hold
        while time.monotonic() < deadline:
            time.sleep(min(5.0, max(deadline - time.monotonic(), 0)))
            peak_rss = max(peak_rss, probes.process_sample(operator.pid).rss_bytes)
        after = _snapshot(bench, operator.pid, client_id)
        replaced = watch.replacements_between(before["at"], after["at"])
        lapsed_at_end = watch.lapsed_now()
        watch_errors = list(watch.errors)

    if profile is not None:
        raw, recorder = profile
        _stderr = recorder.communicate(timeout=120)[1]
        figures["profile"] = (
            profiling.summarise(raw)
            if raw.exists()
            else {"error": _stderr.decode(errors="replace")[-500:]}
        )
        figures["profile_raw"] = str(raw)

    window = after["at"] - before["at"]
    refreshes = len(replaced)
    per_refresh = max(refreshes, 1)
    requests = probes.request_delta(before["api"], after["api"], API_RESOURCES)
    remaining = [r.remaining for r in replaced]
    operator_cpu = after["operator"].cpu_seconds - before["operator"].cpu_seconds
    servers = {
        name: after["servers"][name] - before["servers"][name]
        for name in after["servers"]
        if name in before["servers"]
    }
    busy = (after["busy"][0] - before["busy"][0]) / window
    ours = (
        operator_cpu
        + sum(servers.values())
        + (after["ours"] - before["ours"])
        + (after["endpoint"] - before["endpoint"])
    ) / window
    per_thousand = objects / 1000
    token_requests = after["tokens"].get(client_id, 0) - before["tokens"].get(
        client_id, 0
    )
    figures.update(
        {
            "window_s": window,
            "refreshes": refreshes,
            "refreshes_per_second": refreshes / window,
            "min_remaining_s": min(remaining, default=None),
            "remaining_percentiles_s": probes.percentiles(remaining, (1, 50)),
            "lapses": sum(1 for r in remaining if r <= 0) + lapsed_at_end,
            "refresh_lag": probes.lag_figures(before["lag"], after["lag"]),
            "token_requests": token_requests,
            "token_requests_per_refresh": token_requests / per_refresh,
            "api_requests": requests,
            "api_writes_per_refresh": probes.writes(requests) / per_refresh,
            "api_reads_per_refresh": sum(
                n for k, n in requests.items() if k.startswith("GET ")
            )
            / per_refresh,
            "operator_rss_idle_mb": idle.rss_bytes / 2**20,
            "operator_rss_mb": after["operator"].rss_bytes / 2**20,
            "operator_rss_peak_mb": peak_rss / 2**20,
            "operator_rss_mb_per_1000": after["operator"].rss_bytes
            / 2**20
            / per_thousand,
            "operator_rss_added_mb_per_1000": (
                after["operator"].rss_bytes - idle.rss_bytes
            )
            / 2**20
            / per_thousand,
            "operator_cpu_cores": operator_cpu / window,
            "operator_cpu_cores_per_1000": operator_cpu / window / per_thousand,
            "operator_cpu_ms_per_refresh": 1000 * operator_cpu / per_refresh,
            "server_cpu_ms_per_refresh": {
                name: 1000 * seconds / per_refresh for name, seconds in servers.items()
            },
            "machine_busy_cores": busy,
            "others_busy_cores": max(busy - ours, 0.0),
            "watch_errors": watch_errors,
        }
    )
    if label != "long":  # the last phase: its namespace goes with the plane
        figures["namespace_delete_s"] = bench.delete_namespaces(namespace)
    return figures


def _snapshot(bench: Bench, pid: int, client_id: str) -> dict[str, Any]:
    endpoint_pid = bench.endpoint.pid if bench.endpoint else 0
    return {
        "at": time.monotonic(),
        "api": probes.api_requests(bench.api),
        "tokens": bench.endpoint_requests(),
        "operator": probes.process_sample(pid),
        "servers": probes.cpu_seconds(bench.server_pids()),
        "endpoint": probes.process_sample(endpoint_pid).cpu_seconds,
        "lag": probes.refresh_lag_buckets(bench.metrics_port),
        "ours": _own_cpu(),
        "busy": probes.machine_busy(),
    }


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# Reporting.


def table(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"tokenkeeper benchmark {results['started_at']}: {m['cores']} cores "
        f"({m['cpu_model']}), {m['memory_gib']} GiB, load average "
        f"{'/'.join(str(x) for x in m['load_average_at_start'])} at start",
        f"Kubernetes {m['kubernetes_server']}, Python {m['python']}, kopf "
        f"{m['kopf']}, kubernetes client {m['kubernetes_client']}, "
        f"tokenkeeper {m['tokenkeeper']} ({m['git_commit']}"
        f"{', operator modified' if m['git_dirty'] else ''}), "
        f"--workers {results['settings']['workers']}",
        "",
    ]
    time_to_secret = results.get("time_to_secret", {})
    if time_to_secret:
        lines.append(
            f"{'Time to Secret':<26}{'objects':>8}{'p50':>10}{'p95':>10}"
            f"{'p99':>10}{'max':>10}  target"
        )
        targets = {"serial": "p50 < 100 ms", "burst": "p99 < 1 s"}
        for kind, title in (("serial", "one at a time"), ("burst", "burst")):
            row = time_to_secret.get(kind)
            if row:
                cells = "".join(
                    f"{_ms(row.get(key)):>10}"
                    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms")
                )
                missing = f" ({row['missing']} missing)" if row["missing"] else ""
                lines.append(
                    f"  {title:<24}{row['objects']:>8}{cells}  {targets[kind]}{missing}"
                )
        burst = time_to_secret.get("burst")
        if burst:
            lines.append(
                f"  burst: created in {burst['create_seconds']:.1f} s, all Secrets "
                f"in {burst['all_done_seconds']:.1f} s "
                f"({burst['secrets_per_second']:.0f}/s)"
            )
        lines.append("")

    sustained = results.get("sustained", {})
    floor = results.get("floor")
    if sustained:
        heads = [
            f"{p['objects']} x {p['token_lifetime_s']} s" for p in sustained.values()
        ]
        lines.append(f"{'Sustained refresh':<40}" + "".join(f"{h:>16}" for h in heads))
        rows: list[tuple[str, Callable[[dict[str, Any]], str], str]] = [
            ("held for (s)", lambda p: f"{p['window_s']:.0f}", ""),
            (
                "refreshes/s (scheduled)",
                lambda p: (
                    f"{p['refreshes_per_second']:.1f} "
                    f"({p['scheduled_refreshes_per_second']:.1f})"
                ),
                "",
            ),
            (
                "min remaining lifetime at replacement",
                lambda p: _s(p["min_remaining_s"]),
                "> 0",
            ),
            ("lapses (token expired)", lambda p: f"{p['lapses']}", "0"),
            (
                "refreshes started within 1 s of plan",
                lambda p: _share(p["refresh_lag"].get("within_1s_share")),
                "all",
            ),
            (
                "  lag p50 / p99 (s, at most)",
                lambda p: (
                    f"{p['refresh_lag'].get('p50_at_most_s', '-')} / "
                    f"{p['refresh_lag'].get('p99_at_most_s', '-')}"
                ),
                "< 1",
            ),
            (
                "token requests per refresh",
                lambda p: f"{p['token_requests_per_refresh']:.3f}",
                "1.0",
            ),
            (
                "API writes per refresh",
                lambda p: f"{p['api_writes_per_refresh']:.3f}",
                "<= 2",
            ),
            (
                "API reads per refresh",
                lambda p: f"{p['api_reads_per_refresh']:.3f}",
                "",
            ),
            ("operator RSS (MB)", lambda p: f"{p['operator_rss_mb']:.0f}", ""),
            (
                "operator RSS per 1,000 objects (MB)",
                lambda p: f"{p['operator_rss_mb_per_1000']:.1f}",
                "200 at 10,000",
            ),
            (
                "operator CPU (% of a core)",
                lambda p: f"{100 * p['operator_cpu_cores']:.0f}",
                "",
            ),
            (
                "  per 1,000 objects",
                lambda p: f"{100 * p['operator_cpu_cores_per_1000']:.1f}",
                "",
            ),
            (
                "operator CPU per refresh (ms)",
                lambda p: f"{p['operator_cpu_ms_per_refresh']:.2f}",
                "",
            ),
            (
                "  x floor",
                lambda p: _ratio(p["operator_cpu_ms_per_refresh"], floor, None),
                "",
            ),
            (
                "API server CPU per refresh (ms)",
                lambda p: (
                    f"{p['server_cpu_ms_per_refresh'].get('kube-apiserver', 0):.2f}"
                ),
                "",
            ),
            (
                "  x floor",
                lambda p: _ratio(
                    p["server_cpu_ms_per_refresh"].get("kube-apiserver", 0),
                    floor,
                    "kube-apiserver",
                ),
                "",
            ),
            (
                "machine busy / others (cores)",
                lambda p: f"{p['machine_busy_cores']:.2f}/{p['others_busy_cores']:.2f}",
                "",
            ),
        ]
        for title, cell, target in rows:
            values = "".join(f"{cell(p):>16}" for p in sustained.values())
            lines.append(f"  {title:<38}{values}  {target}")
        lines.append("")
    if floor:
        servers = floor["server_cpu_ms_per_refresh"]
        lines.append(
            f"Floor (bare loop, {floor['workers']} threads, {floor['operations']} "
            f"refreshes): {floor['refreshes_per_second']:.0f} refreshes/s, "
            f"{floor['cpu_ms_per_refresh']:.2f} ms client CPU and "
            f"{servers.get('kube-apiserver', 0):.2f} ms API server CPU per refresh"
        )
        lines.append("")
    for label, phase in sustained.items():
        profile = phase.get("profile")
        if profile and "areas_percent" in profile:
            lines.append(
                f"Profile of the operator, {label} ({profile['samples']} samples), "
                "% of samples:"
            )
            for area, share in profile["areas_percent"].items():
                lines.append(f"  {area:<40}{share:>6.1f}")
            lines.append("  top functions (self):")
            for function, share in list(profile["self_percent"].items())[:10]:
                lines.append(f"    {share:>5.1f}  {function}")
            lines.append("")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _ratio(value: float, floor: dict[str, Any] | None, server: str | None) -> str:
    if not floor:
        return "-"
    base = (
        floor["server_cpu_ms_per_refresh"].get(server, 0)
        if server
        else floor["cpu_ms_per_refresh"]
    )
    return f"{value / base:.1f}x" if base else "-"


# Entry point.


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a handful of objects, seconds each"
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated, from {', '.join(PHASES)}",
    )
    for field in dataclasses.fields(Settings):
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=type(getattr(defaults, field.name)),
            default=None,
            help=f"default {getattr(defaults, field.name)}",
        )
    parser.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument(
        "--profile", action="store_true", help="sample the operator with py-spy"
    )
    parser.add_argument("--py-spy", help="path of py-spy (default: from PATH)")
    parser.add_argument(
        "--operator-path",
        help="run the tokenkeeper package from this directory (A/B comparisons)",
    )
    args = parser.parse_args(argv)
    args.phases = tuple(p for p in args.phases.split(",") if p)
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base = SMOKE if args.smoke else Settings()
    settings = dataclasses.replace(
        base,
        **{
            f.name: getattr(args, f.name)
            for f in dataclasses.fields(Settings)
            if getattr(args, f.name) is not None
        },
    )
    bench = Bench(args, settings)
    results: dict[str, Any] = {
        "schema": 1,
        "started_at": bench.stamp,
        "command": shlex.join(
            [
                "python",
                "-m",
                "benchmarks.run",
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
        "settings": dataclasses.asdict(settings),
        "phases": list(args.phases),
        "operator_path": args.operator_path,
        "artifacts": str(bench.artifacts),
    }
    started = time.monotonic()
    with bench.running():
        results["machine"] = probes.machine(bench.api)
        if "floor" in args.phases:
            _progress("floor: bare client loop")
            results["floor"] = floor_phase(bench)
        if "serial" in args.phases or "burst" in args.phases:
            _progress("time to Secret")
            results["time_to_secret"] = time_to_secret_phases(
                bench, "serial" in args.phases, "burst" in args.phases
            )
        results["sustained"] = {}
        for label in ("short", "long"):
            if label in args.phases:
                objects = getattr(settings, f"{label}_objects")
                lifetime = getattr(settings, f"{label}_lifetime")
                _progress(f"sustained: {objects} objects x {lifetime} s tokens")
                results["sustained"][label] = sustained_phase(
                    bench,
                    label,
                    objects,
                    lifetime,
                    getattr(settings, f"{label}_warmup"),
                    getattr(settings, f"{label}_hold"),
                )
        results["machine"]["load_average_at_end"] = [
            round(x, 2) for x in os.getloadavg()
        ]
    results["duration_s"] = time.monotonic() - started

    bench.results_dir.mkdir(parents=True, exist_ok=True)
    path = bench.results_dir / f"{bench.stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table(results))
    print(f"results: {path}")
    print(f"logs and profiles: {bench.artifacts}")
    return 0


def _progress(text: str) -> None:
    print(f"bench: {text} ({datetime.now(UTC).strftime('%H:%M:%S')})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
