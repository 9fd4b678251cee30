"""What the core reports as it works, for metrics: the ``Observer`` interface.

``reconcile`` and ``keeper`` call an observer at the few points where a fact
worth counting happens: a token request (timed, with its outcome), a pass that
leaves an object's status as it is now, an object no longer served. This base
class does nothing, so the core runs the same with or without metrics and never
imports Prometheus; ``metrics.Metrics`` is the real one.

Everything passed here is already safe to show: Kubernetes names, the status
the object carries, the spec's endpoint URL. No token or client secret is ever
an argument.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from tokenkeeper.spec import Spec


class Observer:
    """Receives facts from the core; every method is a no-op here."""

    @contextlib.contextmanager
    def token_request(
        self, spec: Spec, scheduled_at: datetime | None, now: datetime
    ) -> Iterator[None]:
        """Wraps one attempt to obtain a token for ``spec``, discovery included.

        ``scheduled_at`` is the planned refresh instant when the attempt is a
        routine refresh (None for a first token, a retry, or a spec change);
        ``now`` is when the pass started. A ``TokenError`` leaving the block is
        a failed request; the block re-raises whatever it sees.
        """
        yield

    def reported(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """A pass ended; ``status`` is the object's status as it now stands."""

    def forget(self, namespace: str, name: str) -> None:
        """The object is no longer served here (deleted, or this replica stands by)."""
