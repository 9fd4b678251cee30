"""The ``tokenkeeper`` command: flags in, a configured kopf operator running.

``tokenkeeper run`` builds the reconciler and keeper from its flags and hands
them to kopf through ``memo``; kopf does the watching, logging setup, the
liveness endpoint and, when asked, peering. Metrics are served from this
process. Errors in the flags end the program with a one-line message before
anything connects to a cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf

from tokenkeeper import __version__
from tokenkeeper.endpoint import EndpointSettings
from tokenkeeper.guard import OutboundGuard
from tokenkeeper.health import EchoedKube, WatchEcho
from tokenkeeper.keeper import Keeper
from tokenkeeper.kube import api_client
from tokenkeeper.metrics import Metrics
from tokenkeeper.peering import DEFAULT_LIFETIME, Gate, own_identity, seniority
from tokenkeeper.reconcile import Reconciler

_LOG_FORMATS = {
    "plain": kopf.LogFormat.PLAIN,
    "full": kopf.LogFormat.FULL,
    "json": kopf.LogFormat.JSON,
}


def _patterns(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError("must be a port number from 1 to 65535")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="tokenkeeper",
        description="Keep OAuth 2.0 client-credentials tokens fresh in Secrets.",
    )
    top.add_argument(
        "--version", action="version", version=f"tokenkeeper {__version__}"
    )
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator")

    where = run.add_argument_group("what to serve")
    where.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="serve only this namespace (repeat for more; exact names, not "
        "patterns); all namespaces when not given",
    )
    where.add_argument(
        "--kubeconfig", help="kubeconfig file (default: in-cluster, then KUBECONFIG)"
    )

    out = run.add_argument_group("logging and health")
    out.add_argument("--log-format", choices=sorted(_LOG_FORMATS), default="full")
    out.add_argument("--verbose", action="store_true", help="log at DEBUG level")
    out.add_argument(
        "--liveness",
        metavar="URL",
        help="serve the liveness probe here, e.g. http://0.0.0.0:8080/healthz",
    )
    out.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics at /metrics on this port (default: off)",
    )
    out.add_argument(
        "--stall-timeout",
        type=_seconds,
        default=180.0,
        metavar="SECONDS",
        help="the liveness probe fails when a due pass has not finished for this "
        "long (default: 180)",
    )
    out.add_argument(
        "--shutdown-timeout",
        type=_seconds,
        default=20.0,
        metavar="SECONDS",
        help="on SIGTERM, wait this long for running passes to finish their "
        "writes; keep it below terminationGracePeriodSeconds (default: 20)",
    )

    guard = run.add_argument_group("outbound guard")
    guard.add_argument(
        "--allowed-hosts",
        type=_patterns,
        default=("*",),
        metavar="PATTERNS",
        help="comma-separated host patterns token endpoints may use (default: *)",
    )
    guard.add_argument(
        "--plain-http-hosts",
        type=_patterns,
        default=(),
        metavar="PATTERNS",
        help="hosts that may be reached over plain http (default: none)",
    )
    guard.add_argument(
        "--allow-link-local",
        action="store_true",
        help="allow link-local and cloud metadata addresses (refused by default)",
    )

    tuning = run.add_argument_group("token requests")
    tuning.add_argument(
        "--workers",
        type=int,
        default=8,
        help="passes run at once (token requests and API writes)",
    )
    tuning.add_argument("--connect-timeout", type=_seconds, default=5.0)
    tuning.add_argument("--read-timeout", type=_seconds, default=10.0)
    tuning.add_argument(
        "--default-token-lifetime",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help="lifetime assumed when a response has no expires_in and no JWT exp",
    )

    ha = run.add_argument_group("high availability")
    ha.add_argument(
        "--peering",
        metavar="NAME",
        help="kopf peering object to coordinate replicas (default: standalone)",
    )
    ha.add_argument(
        "--priority",
        type=int,
        help="peering priority (default: seniority, the oldest replica ranks "
        "highest); replicas of equal priority all stand by",
    )
    ha.add_argument(
        "--peering-lifetime",
        type=int,
        default=DEFAULT_LIFETIME,
        metavar="SECONDS",
        help="how long a replica's keep-alive counts: the longest failover after "
        f"a crash (default: {DEFAULT_LIFETIME})",
    )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.workers < 1:
        print("tokenkeeper: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.peering and args.namespace:
        print(
            "tokenkeeper: --peering works only cluster-wide, without --namespace",
            file=sys.stderr,
        )
        return 2
    if args.peering_lifetime < 2:
        print("tokenkeeper: --peering-lifetime must be at least 2", file=sys.stderr)
        return 2
    kopf.configure(verbose=args.verbose, log_format=_LOG_FORMATS[args.log_format])
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if not args.verbose:
        # kopf logs each watch event it hands us ("Handler ... succeeded"): two
        # lines per refresh that say nothing, and a tenth of our CPU under load.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)

    def clock() -> datetime:
        return datetime.now(UTC)

    echo = WatchEcho()
    kube = EchoedKube(api_client(args.kubeconfig), echo)
    metrics = Metrics() if args.metrics_port else None
    reconciler = Reconciler(
        kube,
        endpoint=EndpointSettings(
            connect_timeout=args.connect_timeout,
            read_timeout=args.read_timeout,
            default_lifetime=timedelta(seconds=args.default_token_lifetime),
        ),
        guard=OutboundGuard(
            allowed_hosts=args.allowed_hosts,
            plain_http_hosts=args.plain_http_hosts,
            allow_link_local=args.allow_link_local,
        ),
        clock=clock,
        observer=metrics,
    )
    keeper = Keeper(
        reconciler,
        workers=args.workers,
        clock=clock,
        observer=metrics,
        active=args.peering is None,
        shutdown_timeout=args.shutdown_timeout,
    )
    identity = own_identity()
    priority = args.priority
    if priority is None:
        priority = seniority(clock(), random.Random())  # noqa: S311 - not secret
    gate = (
        Gate(
            kube,
            name=args.peering,
            identity=identity,
            priority=priority,
            lifetime=args.peering_lifetime,
            clock=clock,
        )
        if args.peering
        else None
    )
    if metrics is not None:
        metrics.watch(objects=keeper.managed, active=lambda: float(keeper.active))
        try:
            metrics.serve(args.metrics_port)
        except OSError as e:
            print(
                f"tokenkeeper: cannot serve metrics on port {args.metrics_port}: "
                f"{e.strerror}",
                file=sys.stderr,
            )
            return 2

    import tokenkeeper.handlers  # noqa: F401 - registers the kopf handlers

    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=args.liveness,
            standalone=args.peering is None,
            peering_name=args.peering,
            priority=priority,
            # kopf types it as a NewType of str that it does not export.
            identity=cast(Any, identity),
            memo=kopf.Memo(
                keeper=keeper,
                kubeconfig=args.kubeconfig,
                namespaces=tuple(args.namespace),
                echo=echo,
                gate=gate,
                stall_timeout=args.stall_timeout,
            ),
        )
    )
    if keeper.abandoned:
        # A pass hangs in a worker thread, and the interpreter would join it at
        # exit, past the pod's grace period; leave without it (see Keeper.stop).
        logging.shutdown()
        os._exit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
