"""The image's command, run from an installed wheel, as the Dockerfile builds it.

The Dockerfile builds wheels of the package and its pinned dependencies, then
installs only those into a clean Python and runs ``tokenkeeper`` with its CMD.
This test does the same in a temporary directory (no Docker needed): if a
module is missing from the wheel, the console script is misnamed or an import
fails outside the source tree, it fails here, not in a pod.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tokenkeeper import __version__

from devenv.runner import free_port
from tests.cluster import ROOT, Cluster


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, check=False
    )
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheels the Dockerfile's build stage makes."""
    work = tmp_path_factory.mktemp("image")
    source = work / "src"
    source.mkdir()
    # The build stage's COPY lines.
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "operator",
        source / "operator",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    wheels = work / "wheels"
    run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", wheels,
        "--constraint", "constraints.txt", ".",
        cwd=source,
    )  # fmt: skip
    venv = work / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(
        venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-index",
        *sorted(wheels.glob("*.whl")),
    )  # fmt: skip
    return venv / "bin" / "tokenkeeper"


def image_cmd() -> list[str]:
    """The Dockerfile's CMD, the arguments the image runs ``tokenkeeper`` with."""
    text = (ROOT / "Dockerfile").read_text()
    [entrypoint] = re.findall(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    [cmd] = re.findall(r"^CMD (\[.*\])$", text, re.M)
    assert json.loads(entrypoint) == ["tokenkeeper"]
    return list(json.loads(cmd))


def test_the_installed_command_reports_its_version(installed: Path) -> None:
    out = run(installed, "--version")

    assert out.strip() == f"tokenkeeper {__version__}"


def test_the_installed_command_explains_run(installed: Path) -> None:
    out = run(installed, "run", "--help")

    for flag in ("--liveness", "--metrics-port", "--peering", "--shutdown-timeout"):
        assert flag in out


@pytest.fixture
def empty_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.core.create_namespace({"metadata": {"name": name}})
    yield name
    cluster.core.delete_namespace(name)


def test_the_image_command_starts_an_operator_that_answers_its_probe(
    installed: Path,
    operator_kubeconfig: Path,
    empty_namespace: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    argv = [
        arg.replace("http://0.0.0.0:8080/", f"http://127.0.0.1:{port}/")
        for arg in image_cmd()
    ]
    log = (tmp_path / "operator.log").open("wb")
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    process = subprocess.Popen(
        [
            installed,
            *argv,
            f"--kubeconfig={operator_kubeconfig}",
            f"--namespace={empty_namespace}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        answered = False
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/healthz", timeout=1
                ) as response:
                    answered = response.status == 200
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()

    output = (tmp_path / "operator.log").read_text()
    assert answered, output
    assert code == 0, output
    assert '"message"' in output  # --log-format=json, as the CMD asks
