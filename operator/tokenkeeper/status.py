"""Status conditions, written the way the Kubernetes API conventions ask.

One setter, ``set_condition``, keeps ``lastTransitionTime`` when a condition's
status does not change, so ``kubectl describe`` shows how long a state has
lasted. ``status_patch`` compares the wanted status with what the object
holds and returns only the fields that differ, so unchanged status is never
written. Timestamps are RFC 3339 in UTC, to the second.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """``conditions`` with ``type_`` set; lastTransitionTime moves only on change."""
    wanted = "True" if status else "False"
    previous = next((c for c in conditions if c.get("type") == type_), None)
    if previous is not None and previous.get("status") == wanted:
        since = previous.get("lastTransitionTime") or rfc3339(now)
    else:
        since = rfc3339(now)
    condition: dict[str, Any] = {
        "type": type_,
        "status": wanted,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    others = [c for c in conditions if c.get("type") != type_]
    return sorted([*others, condition], key=lambda c: str(c.get("type")))


def condition_of(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for condition in status.get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition
    return None


def status_patch(
    current: Mapping[str, Any], wanted: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The merge patch that turns ``current`` status into ``wanted``, or None if equal.

    Fields in ``current`` that ``wanted`` lacks are removed (set to None), so
    stale values such as an old lastFailureTime do not linger.
    """
    patch: dict[str, Any] = {
        key: value for key, value in wanted.items() if current.get(key) != value
    }
    for key in current:
        if key not in wanted:
            patch[key] = None
    return patch or None
