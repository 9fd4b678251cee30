"""Runs the operator as a real process, as its Deployment does, for tests and the demo.

The operator is started with ``python -m tokenkeeper run`` and a kubeconfig of
our choosing (in tests: one that acts as the operator's own ServiceAccount),
its output goes to a log file that tests search, and it is stopped with
SIGTERM (or killed with SIGKILL, to test crashes). Readiness is the liveness
endpoint answering, which kopf serves only once it is running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

LOOPBACK_HOSTS = "127.0.0.1,localhost,[::1]"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    """One ``tokenkeeper run`` process; a context manager that stops it on exit."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *extra_args: str,
        plain_http_hosts: str = LOOPBACK_HOSTS,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "tokenkeeper",
            "run",
            f"--kubeconfig={kubeconfig}",
            f"--liveness=http://127.0.0.1:{self.port}/healthz",
            f"--plain-http-hosts={plain_http_hosts}",
            *extra_args,
        ]
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, timeout: float = 30.0) -> OperatorProcess:
        self._log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KUBECONFIG", None)
        self._process = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._finish()
                raise RuntimeError(
                    f"the operator exited with {code} at start; read {self.log_path}"
                )
            if self.healthy():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the operator did not become ready; read {self.log_path}")

    def healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it lingers; returns the exit code."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        return self._finish()

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies or the OOM killer strikes."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._finish()

    def _finish(self) -> int | None:
        code = self._process.returncode if self._process else None
        if self._log is not None:
            self._log.close()
            self._log = None
        self._process = None
        return code

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")
