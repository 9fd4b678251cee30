"""Running the control plane's server processes.

Owns the life of each component process: launching it with its output in a log file,
noticing that it died, and stopping it. Each component leads its own process group
(its own session), so a terminal's Ctrl-C reaches only the Python parent, which then
stops the components in order, and a stop signal reaches anything a component forked.
On Linux each component is also told to die with its parent (PR_SET_PDEATHSIG), so
a parent killed with SIGKILL, which runs no clean-up, still leaves no server behind.
The kernel ties that signal to the thread that started the process: start a plane
from a thread that lives as long as the plane (the main thread, in practice).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PORT_CLASH_MARKER = "address already in use"
LOG_EXCERPT_CHARS = 240


class ComponentFailed(RuntimeError):
    """A component exited or never became ready; the message names its log file."""

    def __init__(self, component: Component, problem: str) -> None:
        self.component = component
        super().__init__(
            f"{component.name} {problem}; its log is {component.log_path}"
            f"{_last_line(component.log_path)}"
        )


class PortClash(ComponentFailed):
    """A component could not listen because another process took its port."""


@dataclass
class Component:
    """One server process of the plane and the log file it writes."""

    name: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def launch(self, argv: list[str]) -> None:
        with self.log_path.open("ab") as log:
            try:
                self.process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            except OSError as error:
                raise ComponentFailed(self, f"could not be run ({error})") from error

    def check_running(self) -> None:
        """Raise ComponentFailed (PortClash if that is why) if the process exited."""
        status = self.process.poll() if self.process else None
        if status is None:
            return
        if PORT_CLASH_MARKER in self.log_path.read_text(errors="replace"):
            raise PortClash(
                self, f"exited with status {status}: a port it needs is in use"
            )
        raise ComponentFailed(self, f"exited with status {status} while starting")

    def signal(self, signum: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)


def interruptible() -> None:
    """Make Ctrl-C (SIGINT) raise KeyboardInterrupt, whatever we inherited.

    A shell without job control starts background commands with SIGINT
    ignored, and Python then leaves it ignored: a CLI run from a script or
    CI would not stop on SIGINT at all.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)


def stop_all(components: Iterable[Component], grace_seconds: float) -> None:
    """Stop components one by one, in the order given: SIGTERM, then SIGKILL.

    One at a time, because a component shuts down cleanly only while the ones it
    depends on still run (the API server deletes its lease in etcd on the way out).
    """
    for component in components:
        if component.process is None:
            continue
        component.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            component.process.wait(grace_seconds)
        # The group may hold children even when the leader has exited.
        component.signal(signal.SIGKILL)
        component.process.wait()


def _die_with_parent() -> None:
    if sys.platform != "linux":
        return
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _last_line(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    if not lines:
        return ""
    return f"; last line: {lines[-1].strip()[:LOG_EXCERPT_CHARS]}"
