"""A real Keycloak on loopback, for tokenkeeper's tests and demo.

Owns one Keycloak server in dev mode (``kc.sh start-dev``): launching it from the
distribution that hack/fetch-keycloak.sh caches, importing the ``tokenkeeper``
realm at start, waiting until that realm serves its discovery document, and
stopping it. Admin helpers change client secrets through Keycloak's admin REST
API, so tests can rotate a credential under a running operator.

The design choice is that the cached distribution stays read-only and shareable.
Each run lays out a private Keycloak home in a temporary directory: small files
(bin, conf, the Quarkus build output) are copied, the 170 MB of library jars are
a symlink, and ``data/`` (the realm import, transaction logs) is the run's own.
The database is ``dev-mem``, so nothing outlives the process, and if a start ever
needs a rebuild it rewrites the run's copy, never the cache. The build options
come from the cache (``.tokenkeeper-build-options``), written by the script that
built it, so a start never pays for a rebuild by accident.

    with Keycloak() as keycloak:
        requests.post(keycloak.token_url, data={...})

Command line: ``python -m devenv.keycloak up`` runs one until Ctrl-C or SIGTERM;
``python -m devenv.keycloak fetch`` fetches and prepares the distribution.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from devenv.process import Component, ComponentFailed, interruptible, stop_all

REPO_ROOT = Path(__file__).resolve().parent.parent
FETCH_SCRIPT = REPO_ROOT / "hack" / "fetch-keycloak.sh"
BUILD_OPTIONS_FILE = ".tokenkeeper-build-options"

LOOPBACK = "127.0.0.1"
REALM = "tokenkeeper"
DEMO_CLIENT_ID = "tokenkeeper-demo"
DEMO_CLIENT_SECRET = "tokenkeeper-demo-secret"
NO_SERVICE_ACCOUNT_CLIENT_ID = "no-service-account"
NO_SERVICE_ACCOUNT_CLIENT_SECRET = "no-service-account-secret"
OPTIONAL_SCOPE = "billing:read"
DEFAULT_TOKEN_LIFESPAN_SECONDS = 45

MIN_JAVA_MAJOR = 21
JVM_ROOT = Path("/usr/lib/jvm")
# C1 only: on two shared cores a start to ready took about 32 CPU-seconds instead
# of 55 (and 25-30 s of wall time instead of 37-50 on a quiet machine), and
# resident memory fell from about 440 to 380 MiB; a short-lived test server never
# runs long enough to repay C2. -Xmx256m, SerialGC and a dynamic CDS archive
# saved at most a few CPU-seconds or 40 MiB more: not worth a 150 MB archive in
# the cache or overriding the collector kc.sh chooses.
DEFAULT_JAVA_OPTIONS = ("-XX:TieredStopAtLevel=1",)

STARTUP_TIMEOUT_SECONDS = 300.0
STOP_GRACE_SECONDS = 15.0
POLL_INTERVAL_SECONDS = 0.25
PORT_ATTEMPTS = 3
ADMIN_TIMEOUT_SECONDS = 10.0

# kc.sh reads these from its environment; a developer's own settings (DEBUG=true
# opens a debugger port, JAVA_OPTS replaces the heap limits) must not leak in.
_INHERITED_ENV_BLOCKLIST = re.compile(
    r"^(KC_.*|KEYCLOAK_.*|JAVA_OPTS.*|JAVA_ADD_OPENS|JAVA_LOCALE|JAVA|"
    r"DEBUG|DEBUG_PORT|DEBUG_SUSPEND|PRINT_ENV)$"
)
_PORT_CLASH = re.compile(r"address already in use|port\(s\) already bound", re.I)


class KeycloakError(RuntimeError):
    """Keycloak could not be found, started or administered."""


class DistributionMissing(KeycloakError):
    """The cached Keycloak distribution is absent or was never finished."""


class Keycloak:
    """One Keycloak in dev mode on loopback, serving the ``tokenkeeper`` realm.

    Use as a context manager, or call start() and stop(). After start():
    `issuer_url` is the realm's URL, `token_url` its token endpoint, and
    `client_id` / `client_secret` the confidential client ``tokenkeeper-demo``,
    whose tokens live `token_lifespan` seconds.
    """

    def __init__(
        self,
        *,
        token_lifespan: int = DEFAULT_TOKEN_LIFESPAN_SECONDS,
        client_secret: str = DEMO_CLIENT_SECRET,
        java_options: Sequence[str] = DEFAULT_JAVA_OPTIONS,
        startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
    ) -> None:
        self.token_lifespan = token_lifespan
        self.client_id = DEMO_CLIENT_ID
        self.client_secret = client_secret
        self.java_options = tuple(java_options)
        self.startup_timeout = startup_timeout
        self.workdir: Path | None = None
        self.admin_username = "tokenkeeper-admin"
        self.admin_password = secrets.token_urlsafe(24)
        self._port: int | None = None
        self._component: Component | None = None

    def __repr__(self) -> str:
        state = self.base_url if self._port else "stopped"
        return f"<Keycloak {state}>"

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise KeycloakError("Keycloak is not started; call start() first")
        return f"http://{LOOPBACK}:{self._port}"

    @property
    def issuer_url(self) -> str:
        return f"{self.base_url}/realms/{REALM}"

    @property
    def token_url(self) -> str:
        return f"{self.issuer_url}/protocol/openid-connect/token"

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer_url}/.well-known/openid-configuration"

    @property
    def log_path(self) -> Path | None:
        return self._component.log_path if self._component else None

    @property
    def java_pid(self) -> int | None:
        """The JVM's process id (kc.sh runs it as a child), for measurements."""
        if self._component is None or self._component.pid is None:
            return None
        return _java_in_group(self._component.pid)

    def start(self) -> None:
        """Start Keycloak and return once the realm serves its discovery document.

        On failure the process is stopped and the work directory is kept, so the
        log named in the error can be read; stop() removes it.
        """
        if self._component is not None:
            raise KeycloakError("Keycloak is already started")
        home = distribution_home()
        java_home = find_java_home()
        self.workdir = Path(tempfile.mkdtemp(prefix="tokenkeeper-keycloak-"))
        try:
            self._start_with_free_ports(home, java_home)
        except BaseException:
            self._stop_process()
            raise

    def stop(self) -> None:
        """Stop the process group (SIGTERM, then SIGKILL) and delete the workdir."""
        self._stop_process()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Keycloak:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def rotate_client_secret(self, client_id: str = DEMO_CLIENT_ID) -> str:
        """Have Keycloak generate a new secret for the client; the old one dies."""
        response = self._admin(
            "POST", f"clients/{self._client_uuid(client_id)}/client-secret"
        )
        secret: str = response.json()["value"]
        self._remember_secret(client_id, secret)
        return secret

    def set_client_secret(self, client_id: str, secret: str) -> None:
        """Give the client a secret of the caller's choosing."""
        path = f"clients/{self._client_uuid(client_id)}"
        representation = self._admin("GET", path).json()
        representation["secret"] = secret
        self._admin("PUT", path, body=representation)
        self._remember_secret(client_id, secret)

    def _start_with_free_ports(self, home: Path, java_home: Path) -> None:
        # Keycloak binds its port only at the end of a long start, so a port taken
        # meanwhile shows up late; it is rare, and a retry with new ports fixes it.
        assert self.workdir is not None
        for attempt in range(1, PORT_ATTEMPTS + 1):
            run_home = self.workdir / f"run-{attempt}"
            _lay_out_home(home, run_home)
            _write_realm(run_home, self._realm())
            self._port, management_port = _free_ports(2)
            self._launch(home, run_home, java_home, management_port)
            try:
                self._wait_until_ready()
                return
            except KeycloakError:
                if attempt == PORT_ATTEMPTS or not self._lost_port_race():
                    raise
                self._stop_process()

    def _launch(
        self, home: Path, run_home: Path, java_home: Path, management_port: int
    ) -> None:
        assert self._port is not None
        argv = [
            str(run_home / "bin" / "kc.sh"),
            "start-dev",
            *_build_options(home),
            f"--http-host={LOOPBACK}",
            f"--http-port={self._port}",
            f"--http-management-port={management_port}",
            "--import-realm",
        ]
        env = _child_environment(
            {
                "JAVA_HOME": str(java_home),
                "JAVA_OPTS_APPEND": " ".join(self.java_options),
                "KC_BOOTSTRAP_ADMIN_USERNAME": self.admin_username,
                "KC_BOOTSTRAP_ADMIN_PASSWORD": self.admin_password,
            }
        )
        component = Component("keycloak", run_home / "keycloak.log")
        with component.log_path.open("ab") as log:
            component.process = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._component = component

    def _wait_until_ready(self) -> None:
        assert self._component is not None
        deadline = time.monotonic() + self.startup_timeout
        with requests.Session() as session:
            while time.monotonic() < deadline:
                try:
                    self._component.check_running()
                except ComponentFailed as error:
                    raise KeycloakError(str(error)) from error
                if _serves(session, self.discovery_url):
                    return
                time.sleep(POLL_INTERVAL_SECONDS)
        raise KeycloakError(
            f"Keycloak did not serve {self.discovery_url} within "
            f"{self.startup_timeout:.0f}s; its log is {self._component.log_path}"
        )

    def _lost_port_race(self) -> bool:
        assert self._component is not None
        log = self._component.log_path.read_text(errors="replace")
        return bool(_PORT_CLASH.search(log))

    def _stop_process(self) -> None:
        if self._component is not None:
            stop_all([self._component], STOP_GRACE_SECONDS)
        self._component = None
        self._port = None

    def _realm(self) -> dict[str, Any]:
        return realm_representation(
            client_secret=self.client_secret, token_lifespan=self.token_lifespan
        )

    def _admin(
        self,
        method: str,
        path: str,
        body: object = None,
        params: Mapping[str, str] | None = None,
    ) -> requests.Response:
        response = requests.request(
            method,
            f"{self.base_url}/admin/realms/{REALM}/{path}",
            params=params,
            json=body,
            headers={"Authorization": f"Bearer {self._admin_token()}"},
            timeout=ADMIN_TIMEOUT_SECONDS,
        )
        if not response.ok:
            raise KeycloakError(
                f"Keycloak admin API {method} {path} answered {response.status_code}"
            )
        return response

    def _admin_token(self) -> str:
        # Master-realm admin tokens live a minute; one per call never goes stale.
        response = requests.post(
            f"{self.base_url}/realms/master/protocol/openid-connect/token",
            data={
                "grant_type": "password",
                "client_id": "admin-cli",
                "username": self.admin_username,
                "password": self.admin_password,
            },
            timeout=ADMIN_TIMEOUT_SECONDS,
        )
        if not response.ok:
            raise KeycloakError(
                f"Keycloak refused the bootstrap admin ({response.status_code})"
            )
        token: str = response.json()["access_token"]
        return token

    def _client_uuid(self, client_id: str) -> str:
        found = self._admin("GET", "clients", params={"clientId": client_id}).json()
        if not found:
            raise KeycloakError(f"realm {REALM} has no client {client_id!r}")
        uuid: str = found[0]["id"]
        return uuid

    def _remember_secret(self, client_id: str, secret: str) -> None:
        if client_id == self.client_id:
            self.client_secret = secret


def realm_representation(*, client_secret: str, token_lifespan: int) -> dict[str, Any]:
    """The ``tokenkeeper`` realm as Keycloak's import format.

    Listing ``clientScopes`` replaces Keycloak's built-in scopes (profile, email,
    roles, ...), which a service-account token does not need; tokens still carry
    iss, sub, azp, exp, iat and scope.
    """
    return {
        "realm": REALM,
        "enabled": True,
        "accessTokenLifespan": token_lifespan,
        "clientScopes": [
            {
                "name": OPTIONAL_SCOPE,
                "protocol": "openid-connect",
                "attributes": {
                    "include.in.token.scope": "true",
                    "display.on.consent.screen": "false",
                },
            }
        ],
        "clients": [
            _confidential_client(
                DEMO_CLIENT_ID,
                client_secret,
                serviceAccountsEnabled=True,
                optionalClientScopes=[OPTIONAL_SCOPE],
            ),
            _confidential_client(
                NO_SERVICE_ACCOUNT_CLIENT_ID,
                NO_SERVICE_ACCOUNT_CLIENT_SECRET,
                serviceAccountsEnabled=False,
            ),
        ],
    }


def _confidential_client(
    client_id: str, secret: str, **settings: object
) -> dict[str, object]:
    # "client-secret" accepts client_secret_basic and client_secret_post alike.
    return {
        "clientId": client_id,
        "enabled": True,
        "protocol": "openid-connect",
        "publicClient": False,
        "clientAuthenticatorType": "client-secret",
        "secret": secret,
        "standardFlowEnabled": False,
        "directAccessGrantsEnabled": False,
        **settings,
    }


def distribution_home() -> Path:
    """The cached, prepared Keycloak distribution; DistributionMissing if absent."""
    printed = subprocess.run(
        [str(FETCH_SCRIPT), "--print-home"],
        capture_output=True,
        text=True,
        check=True,
    )
    home = Path(printed.stdout.strip())
    if not (home / BUILD_OPTIONS_FILE).is_file():
        raise DistributionMissing(
            f"the Keycloak distribution is not at {home}; run `make keycloak` "
            f"(or `python -m devenv.keycloak fetch`) to fetch and prepare it"
        )
    return home


def find_java_home() -> Path:
    """A JDK new enough for Keycloak: $JAVA_HOME if it is, else the newest one."""
    declared = os.environ.get("JAVA_HOME")
    if declared and _java_major(Path(declared)) >= MIN_JAVA_MAJOR:
        return Path(declared)
    installed = [path for path in JVM_ROOT.glob("*") if (path / "bin/java").exists()]
    newest = max(installed, key=_java_major, default=None)
    if newest is None or _java_major(newest) < MIN_JAVA_MAJOR:
        raise KeycloakError(
            f"Keycloak needs Java {MIN_JAVA_MAJOR} or newer and there is none under "
            f"{JVM_ROOT} (nor at $JAVA_HOME); install a JDK {MIN_JAVA_MAJOR}+"
        )
    return newest


def _java_major(java_home: Path) -> int:
    try:
        release = (java_home / "release").read_text()
    except OSError:
        return 0
    found = re.search(r'^JAVA_VERSION="(\d+)', release, re.M)
    return int(found.group(1)) if found else 0


def _build_options(home: Path) -> list[str]:
    return (home / BUILD_OPTIONS_FILE).read_text().split()


def _lay_out_home(dist: Path, run_home: Path) -> None:
    """A private Keycloak home whose only shared part is the read-only jar tree."""
    run_home.mkdir()
    for entry in dist.iterdir():
        if entry.name == "lib":
            continue
        _copy(entry, run_home / entry.name)
    (run_home / "lib").mkdir()
    for entry in (dist / "lib").iterdir():
        if entry.name == "lib":
            (run_home / "lib" / "lib").symlink_to(entry)
        else:
            _copy(entry, run_home / "lib" / entry.name)


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copy2(source, target)


def _write_realm(run_home: Path, realm: Mapping[str, Any]) -> None:
    imports = run_home / "data" / "import"
    imports.mkdir(parents=True)
    path = imports / f"{REALM}-realm.json"
    path.write_text(json.dumps(realm, indent=2))
    path.chmod(0o600)


def _child_environment(settings: Mapping[str, str]) -> dict[str, str]:
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not _INHERITED_ENV_BLOCKLIST.match(name)
    }
    return {**inherited, **settings}


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _serves(session: requests.Session, url: str) -> bool:
    try:
        return session.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _java_in_group(leader_pid: int) -> int | None:
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(status.parent.name)
        if int(fields[2]) == leader_pid and _is_java(pid):
            return pid
    return None


def _is_java(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "java"
    except OSError:
        return False


class _StopRequested(Exception):
    """Raised by the CLI's signal handler to leave the wait and stop Keycloak."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devenv.keycloak",
        description="Run or fetch the Keycloak that tokenkeeper's tests use.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start Keycloak and run it until Ctrl-C")
    commands.add_parser("fetch", help="fetch and prepare the distribution (once)")
    args = parser.parse_args(argv)

    if args.command == "fetch":
        return subprocess.call([str(FETCH_SCRIPT)])
    return _up()


def _up() -> int:
    interruptible()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _request_stop)
    keycloak = Keycloak()
    atexit.register(keycloak.stop)
    try:
        _serve(keycloak)
    except (KeyboardInterrupt, _StopRequested):
        pass
    except KeycloakError as error:
        print(f"devenv: {error}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the shutdown short and orphan the JVM.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        keycloak.stop()
    return 0


def _serve(keycloak: Keycloak) -> None:
    started = time.monotonic()
    keycloak.start()
    elapsed = time.monotonic() - started
    print(f"Keycloak ready in {elapsed:.1f}s (log: {keycloak.log_path})")
    print(f"issuer:        {keycloak.issuer_url}")
    print(f"token URL:     {keycloak.token_url}")
    print(f"client id:     {keycloak.client_id}")
    print(f"client secret: {keycloak.client_secret}  (throwaway, this run only)")
    print(f"token lifespan: {keycloak.token_lifespan}s")
    print(f"admin console: {keycloak.base_url}/admin/  user {keycloak.admin_username}")
    print(f"               password {keycloak.admin_password}")
    print("Ctrl-C or SIGTERM stops it.", flush=True)
    while True:
        signal.pause()


def _request_stop(signum: int, frame: object) -> None:
    raise _StopRequested(signal.Signals(signum).name)


if __name__ == "__main__":
    sys.exit(main())
