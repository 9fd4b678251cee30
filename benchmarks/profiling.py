"""Where the operator spends its CPU under load: py-spy attached to its process.

py-spy samples every thread of a running process from outside (it needs
ptrace, so root or CAP_SYS_PTRACE), which matters here because a pass runs in
worker threads that cProfile would not see. ``record`` writes py-spy's raw
collapsed stacks next to the results; ``summarise`` folds them into the
share of samples per function (self, and anywhere on the stack) and per area
of the program (a pass's token request, its API calls, kopf's handling of
watch events, logging, ...). Only samples of threads holding the GIL count,
so the shares are of the operator's Python CPU time, not of its waiting.

py-spy is not a dependency of the project: install it with
``pip install py-spy`` and pass ``--profile`` (or ``--py-spy PATH``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")

AREAS: dict[str, Callable[[list[str]], bool]] = {
    "reconcile pass (all)": lambda s: _has(s, "reconcile (", "tokenkeeper/reconcile"),
    "  token request (requests)": lambda s: _has(s, "fetch_token", ""),
    "  Kubernetes API calls (client)": lambda s: _has(s, "_call (", "tokenkeeper/kube"),
    "  status report": lambda s: _has(s, "_report (", "tokenkeeper/reconcile"),
    "  its logging": lambda s: _in_pass(s) and _has(s, "", "logging/__init__"),
    "kopf: watch events and handlers": lambda s: (
        _has(s, "", "kopf/") and not _in_pass(s)
    ),
    "asyncio loop (other)": lambda s: (
        _has(s, "", "asyncio/") and not _has(s, "", "kopf/") and not _in_pass(s)
    ),
    "logging (anywhere)": lambda s: _has(s, "", "logging/__init__"),
    "JSON (anywhere)": lambda s: _has(s, "", "json/"),
    "TLS (anywhere)": lambda s: _has(s, "", "ssl.py"),
}


def find_py_spy(explicit: str | None) -> str | None:
    return explicit or shutil.which("py-spy")


def record(py_spy: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` for ``seconds``; wait on the returned process."""
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            "100",
            "--format",
            "raw",
            "--function",
            "--nonblocking",
            # Only threads holding the GIL: Python's CPU time, not its waiting
            # on sockets (which py-spy would otherwise count as active).
            "--gil",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def summarise(raw: Path, top: int = 15) -> dict[str, Any]:
    """Shares (percent of all samples) by function and by area."""
    self_samples: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        stack = stack_text.split(";")[2:]  # drop the process and thread frames
        frames = [_short(frame) for frame in stack]
        total += count
        if frames:
            self_samples[frames[-1]] += count
        for frame in set(frames):
            anywhere[frame] += count
        for area, matches in AREAS.items():
            if matches(stack):
                areas[area] += count

    def share(counter: Counter[str], n: int) -> dict[str, float]:
        return {
            key: round(100 * value / total, 1) for key, value in counter.most_common(n)
        }

    return {
        "samples": total,
        "areas_percent": {a: round(100 * areas[a] / max(total, 1), 1) for a in AREAS},
        "self_percent": share(self_samples, top) if total else {},
        "anywhere_percent": share(anywhere, top * 2) if total else {},
    }


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "python3.11/", "operator/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['function']} ({path})"


def _has(stack: list[str], function: str, file: str) -> bool:
    return any(function in frame and file in frame for frame in stack)


def _in_pass(stack: list[str]) -> bool:
    return _has(stack, "reconcile (", "tokenkeeper/reconcile")
