"""The ``tokenkeeper`` command: flags in, a configured kopf operator running.

``tokenkeeper run`` builds the reconciler and keeper from its flags and hands
them to kopf through ``memo``; kopf does the watching, logging setup, the
liveness endpoint and, when asked, peering. Errors in the flags end the
program with a one-line message before anything connects to a cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import kopf

from tokenkeeper import __version__
from tokenkeeper.endpoint import EndpointSettings
from tokenkeeper.guard import OutboundGuard
from tokenkeeper.keeper import Keeper
from tokenkeeper.kube import Kube, api_client
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
        help="serve only this namespace (repeat for more; patterns as kopf "
        "accepts them); all namespaces when not given",
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
        default=0,
        help="peering priority; give each replica a different one",
    )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.workers < 1:
        print("tokenkeeper: --workers must be at least 1", file=sys.stderr)
        return 2
    kopf.configure(verbose=args.verbose, log_format=_LOG_FORMATS[args.log_format])
    logging.getLogger("urllib3").setLevel(logging.WARNING)

    def clock() -> datetime:
        return datetime.now(UTC)

    reconciler = Reconciler(
        Kube(api_client(args.kubeconfig)),
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
    )
    keeper = Keeper(reconciler, workers=args.workers, clock=clock)

    import tokenkeeper.handlers  # noqa: F401 - registers the kopf handlers

    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=args.liveness,
            standalone=args.peering is None,
            peering_name=args.peering,
            priority=args.priority,
            memo=kopf.Memo(keeper=keeper, kubeconfig=args.kubeconfig),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
