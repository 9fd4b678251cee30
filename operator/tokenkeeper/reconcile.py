"""One reconcile pass for one ClientCredential: read, decide, request, write, report.

A pass is synchronous and runs in a worker thread; ``keeper`` makes sure only
one pass per object runs at a time and calls the next one at the instant this
one returns. A pass is level-triggered: it reads the managed Secret and the
client secret afresh, so it does the right thing whether it was woken by a
timer, a watch event or a restart.

What the operator remembers between passes lives in ``Memory``; everything a
restart needs is in the cluster (the Secret's annotations and the status), so
a lost ``Memory`` costs at most one token request, never a lapse.

The order of a pass:

1. Find the managed Secret; a foreign Secret with that name stops the pass.
2. Take the newest good token: ours from memory, or the one stored.
3. Resolve the request (spec, outbound guard, client secret, CA bundle).
4. Decide whether a token request is due; if not, make sure the Secret holds
   the current token (restoring it after a delete or an edit) and report.
5. Request a token; on success write the Secret, then the status; on failure
   keep the Secret as it is, report, and schedule a retry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from tokenkeeper import reasons
from tokenkeeper.endpoint import (
    EndpointSettings,
    Retry,
    Token,
    TokenError,
    TokenRequest,
    discover_token_url,
    fetch_token,
)
from tokenkeeper.guard import OutboundGuard, URLNotAllowed
from tokenkeeper.kube import Conflict, Kube, KubeError, NotFound
from tokenkeeper.observer import Observer
from tokenkeeper.schedule import Plan, plan_refresh, retry_delay
from tokenkeeper.spec import Spec, SpecError, parse_spec, secret_name_of
from tokenkeeper.status import (
    condition_of,
    parse_rfc3339,
    rfc3339,
    set_condition,
    status_patch,
)
from tokenkeeper.target import (
    REFRESH_REQUESTED_ANNOTATION,
    Owner,
    StoredToken,
    decode_key,
    desired_secret,
    merged_for_update,
    needs_write,
    owned_by,
    read_stored,
)
from tokenkeeper.transport import new_session

logger = logging.getLogger("tokenkeeper")

DISCOVERY_TTL = timedelta(hours=1)
STARTUP_SPREAD = timedelta(seconds=30)
"""Overdue refreshes found at start-up are spread over up to this long."""


@dataclasses.dataclass
class Memory:
    """What the operator remembers about one ClientCredential between passes."""

    uid: str
    token: StoredToken | None = None
    plan: Plan | None = None
    plan_key: tuple[Any, ...] | None = None
    failures: int = 0
    retry_at: datetime | None = None
    attempted_hash: str | None = None
    last_failure_time: datetime | None = None
    failure: Failure | None = None
    """Why the latest attempt failed, while it stands; Ready says it meanwhile."""
    status: dict[str, Any] | None = None
    discovered: tuple[str, str, datetime] | None = None
    secret_version: str | None = None
    """resourceVersion of the managed Secret as this operator last saw or wrote it."""
    secret_name: str | None = None
    """The managed Secret's name when it was last seen to exist."""
    unwritten: Token | None = None
    """A token obtained whose Secret write failed: the next pass writes it and
    reports it as issued, instead of asking the endpoint for another."""
    started: bool = False


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why this pass could not obtain a token, in the words the status uses."""

    reason: str
    message: str
    retry: Retry
    retry_after: float | None = None

    @classmethod
    def of(cls, error: TokenError) -> Failure:
        return cls(error.reason, error.message, error.retry, error.retry_after)


class CredentialGone(Exception):
    """The ClientCredential no longer exists, though no deletion was seen.

    kopf does not report a deletion that happened while its watch was down;
    the keeper drops such an object when its status write finds it gone.
    """


class _Stop(Exception):
    """Ends a pass early with a failure that was found before any request."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclasses.dataclass
class _Pass:
    """The facts one pass gathers, passed between its steps."""

    body: Mapping[str, Any]
    memory: Memory
    now: datetime
    owner: Owner
    secret_name: str
    actual: dict[str, Any] | None = dataclasses.field(default=None, repr=False)
    """The managed Secret as last read or written: it holds the token."""
    current: StoredToken | None = None
    spec: Spec | None = None

    @property
    def generation(self) -> int | None:
        value = self.body["metadata"].get("generation")
        return value if isinstance(value, int) else None

    @property
    def requested(self) -> str | None:
        annotations = self.body["metadata"].get("annotations") or {}
        value = annotations.get(REFRESH_REQUESTED_ANNOTATION)
        return value if isinstance(value, str) and value else None

    @property
    def valid(self) -> StoredToken | None:
        if self.current is not None and self.current.expires_at > self.now:
            return self.current
        return None


class Reconciler:
    """Runs passes; one instance serves every object, from many threads."""

    def __init__(
        self,
        kube: Kube,
        *,
        endpoint: EndpointSettings | None = None,
        guard: OutboundGuard | None = None,
        clock: Callable[[], datetime],
        rng: random.Random | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._kube = kube
        self._endpoint = endpoint or EndpointSettings()
        self._guard = guard or OutboundGuard()
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._observer = observer or Observer()
        self._sessions = threading.local()
        self._ca_dir: Path | None = None
        self._ca_lock = threading.Lock()

    def reconcile(self, body: Mapping[str, Any], memory: Memory) -> datetime:
        """Run one pass and return the instant the next one is due."""
        run = self._start(body, memory)
        try:
            return self._pass(run)
        finally:
            meta = (run.actual or {}).get("metadata") or {}
            memory.secret_version = meta.get("resourceVersion")
            if run.actual is not None:
                memory.secret_name = run.secret_name

    def _start(self, body: Mapping[str, Any], memory: Memory) -> _Pass:
        meta = body["metadata"]
        run = _Pass(
            body=body,
            memory=memory,
            now=self._clock(),
            owner=Owner(meta["namespace"], meta["name"], meta["uid"]),
            secret_name=secret_name_of(body),
        )
        if memory.status is None:
            memory.status = dict(body.get("status") or {})
            memory.failures = int(memory.status.get("failedAttempts") or 0)
            memory.last_failure_time = parse_rfc3339(
                memory.status.get("lastFailureTime")
            )
        return run

    def _pass(self, run: _Pass) -> datetime:
        memory = run.memory
        fresh = not memory.started
        memory.started = True

        run.actual = self._kube.get_secret(run.owner.namespace, run.secret_name)
        if run.actual is not None and not owned_by(run.actual, run.owner.uid):
            return self._conflict(run)
        run.current = self._newest_token(memory, run.actual)

        try:
            run.spec, request, request_hash = self._resolve(run)
        except _Stop as stop:
            return self._failed(run, stop.failure, request_hash=None)

        due = self._why_due(run, request_hash)
        if due is None:
            return self._keep(run)
        if self._backing_off(run, request_hash):
            return self._wait(run)
        if fresh and due == "routine" and run.valid is not None:
            return self._spread(run)

        scheduled = self._plan(run).refresh_at if due == "routine" else None
        try:
            with self._observer.token_request(run.spec, scheduled, run.now):
                token = self._fetch(run, request)
        except TokenError as e:
            return self._failed(run, Failure.of(e), request_hash=request_hash)
        except Exception as e:
            # A bug, or a library's surprise at a hostile answer: say so where
            # people look, not only in the log, and retry as if transient.
            logger.exception(
                "[%s/%s] Unexpected %s while requesting a token",
                *_ref(run),
                type(e).__name__,
            )
            failure = Failure(
                reasons.INTERNAL_ERROR,
                f"requesting a token failed unexpectedly ({type(e).__name__}); "
                "the operator's log has the details",
                Retry.TRANSIENT,
            )
            return self._failed(run, failure, request_hash=request_hash)
        logger.debug("[%s/%s] token request succeeded (%s)", *_ref(run), due)
        return self._issued(run, token, request_hash)

    # Step 2: which token is current.

    def _newest_token(
        self, memory: Memory, actual: Mapping[str, Any] | None
    ) -> StoredToken | None:
        stored = read_stored(actual) if actual is not None else None
        if memory.token is None:
            return stored
        if stored is not None and stored.expires_at > memory.token.expires_at:
            return stored
        return memory.token

    # Step 3: what to request, and whether we may.

    def _resolve(self, run: _Pass) -> tuple[Spec, TokenRequest, str]:
        namespace = run.owner.namespace
        try:
            spec = parse_spec(run.body)
        except SpecError as e:
            raise _Stop(Failure(reasons.INVALID_SPEC, str(e), Retry.LOCAL)) from None

        url, field = (
            (spec.token_url, "spec.tokenURL")
            if spec.token_url
            else (spec.issuer_url, "spec.issuerURL")
        )
        self._check_url(str(url), field)

        ref = spec.client_secret_ref
        client = self._kube.get_secret(namespace, ref.name)
        client_secret = decode_key(client, ref.key) if client else None
        if client is None or not client_secret:
            what = (
                f"Secret {ref.name}"
                if client is None
                else f"key {ref.key} of Secret {ref.name}"
            )
            raise _Stop(
                Failure(
                    reasons.CLIENT_SECRET_NOT_FOUND,
                    f"{what} (spec.clientSecretRef) does not exist or is empty "
                    f"in namespace {namespace}",
                    Retry.LOCAL,
                )
            )
        versions: list[Any] = [_version(client)]

        verify: str | bool = True
        if spec.ca_bundle_ref is not None:
            verify, version = self._ca_bundle(namespace, spec)
            versions.append(version)

        fields = {**spec.request_fields(), "versions": versions}
        request_hash = hashlib.sha256(
            json.dumps(fields, sort_keys=True).encode()
        ).hexdigest()[:16]
        request = TokenRequest(
            token_url=spec.token_url or "",
            client_id=spec.client_id,
            client_secret=client_secret,
            auth_method=spec.auth_method,
            scopes=spec.scopes,
            audience=spec.audience,
            extra_params=spec.extra_params,
            verify=verify,
        )
        return spec, request, request_hash

    def _check_url(self, url: str, field: str) -> None:
        try:
            self._guard.check(url, field)
        except URLNotAllowed as e:
            raise _Stop(Failure(reasons.URL_NOT_ALLOWED, str(e), Retry.LOCAL)) from None

    def _ca_bundle(self, namespace: str, spec: Spec) -> tuple[str, Any]:
        ref = spec.ca_bundle_ref
        assert ref is not None
        configmap = self._kube.get_configmap(namespace, ref.name)
        pem = (configmap or {}).get("data", {}).get(ref.key) if configmap else None
        if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
            raise _Stop(
                Failure(
                    reasons.CA_BUNDLE_NOT_FOUND,
                    f"key {ref.key} of ConfigMap {ref.name} (spec.caBundleRef) is "
                    "missing or holds no PEM certificate",
                    Retry.LOCAL,
                )
            )
        digest = hashlib.sha256(pem.encode()).hexdigest()
        path = self._ca_directory() / f"{digest}.pem"
        if not path.exists():
            scratch = path.with_suffix(f".{threading.get_ident()}")
            scratch.write_text(pem)
            scratch.replace(path)
        return str(path), _version(configmap or {})

    def _ca_directory(self) -> Path:
        """Where CA bundles are written for the TLS library; removed when we exit."""
        with self._ca_lock:
            if self._ca_dir is None:
                self._ca_dir = Path(tempfile.mkdtemp(prefix="tokenkeeper-ca-"))
                weakref.finalize(self, shutil.rmtree, self._ca_dir, True)
            return self._ca_dir

    # Step 4: is a request due?

    def _why_due(self, run: _Pass, request_hash: str) -> str | None:
        current, status = run.current, run.memory.status or {}
        if current is None:
            return "no token yet"
        if current.expires_at <= run.now:
            return "the token expired"
        if current.request_hash != request_hash:
            return "the spec or the client secret changed"
        if run.requested and run.requested != status.get("refreshRequestedAt"):
            return "a refresh was requested"
        if run.now >= self._plan(run).refresh_at:
            return "routine"
        return None

    def _backing_off(self, run: _Pass, request_hash: str) -> bool:
        memory, status = run.memory, run.memory.status or {}
        if memory.retry_at is None or run.now >= memory.retry_at:
            return False
        if memory.attempted_hash != request_hash:
            return False
        return not (run.requested and run.requested != status.get("refreshRequestedAt"))

    def _plan(self, run: _Pass) -> Plan:
        current, spec, memory = run.current, run.spec, run.memory
        assert current is not None
        assert spec is not None
        key = (current.issued_at, current.expires_at, spec.refresh)
        if memory.plan is None or memory.plan_key != key:
            memory.plan = self._resumed_plan(run) or plan_refresh(
                current.issued_at, current.expires_at, spec.refresh, self._rng
            )
            memory.plan_key = key
        return memory.plan

    def _resumed_plan(self, run: _Pass) -> Plan | None:
        """After a restart, the plan the status holds if it was made for this token.

        A fresh jitter would move refreshAt for every object, and rewrite every
        status, each time the operator starts.
        """
        current, status = run.current, run.memory.status or {}
        assert current is not None
        refresh_at = parse_rfc3339(status.get("refreshAt"))
        if (
            run.memory.plan is not None
            or refresh_at is None
            or status.get("failedAttempts")
            or status.get("observedGeneration") != run.generation
            or status.get("lastRefreshTime") != rfc3339(current.issued_at)
            or status.get("expiresAt") != rfc3339(current.expires_at)
            or not current.issued_at < refresh_at < current.expires_at
        ):
            return None
        return Plan(refresh_at=refresh_at)

    # Step 5: the request.

    def _fetch(self, run: _Pass, request: TokenRequest) -> Token:
        spec = run.spec
        assert spec is not None
        session = self._session()
        if spec.issuer_url:
            token_url = self._discover(run, spec.issuer_url, request.verify, session)
            request = dataclasses.replace(request, token_url=token_url)
        try:
            return fetch_token(request, session, self._endpoint, run.now)
        except TokenError:
            run.memory.discovered = None
            raise

    def _discover(
        self, run: _Pass, issuer_url: str, verify: str | bool, session: requests.Session
    ) -> str:
        cached = run.memory.discovered
        if cached and cached[0] == issuer_url and run.now - cached[2] < DISCOVERY_TTL:
            return cached[1]
        token_url = discover_token_url(issuer_url, session, self._endpoint, verify)
        try:
            self._guard.check(token_url, "the discovered token_endpoint")
        except URLNotAllowed as e:
            # Not URLNotAllowed: that reason means no request was sent, and
            # the discovery request was.
            raise TokenError(
                reasons.DISCOVERY_FAILED,
                f"OIDC discovery named a token endpoint the operator refuses: {e}",
                retry=Retry.CREDENTIAL,
            ) from None
        run.memory.discovered = (issuer_url, token_url, run.now)
        return token_url

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = new_session()
        return session

    # Outcomes: each writes the Secret if needed, then the status; each says when
    # to wake next.

    def _issued(self, run: _Pass, token: Token, request_hash: str) -> datetime:
        stored = StoredToken.issued(token, request_hash)
        run.memory.token, run.memory.unwritten = stored, token
        self._write_secret(run, stored)
        return self._announce(run, token, stored)

    def _announce(self, run: _Pass, token: Token, stored: StoredToken) -> datetime:
        """Report a token that the Secret now holds as issued."""
        memory = run.memory
        previous = condition_of(memory.status or {}, reasons.REFRESHED)
        recovered_after = memory.failures

        run.current = stored
        memory.unwritten = None
        memory.failures = 0
        memory.retry_at = None
        memory.attempted_hash = stored.request_hash
        memory.last_failure_time = None
        memory.failure = None
        plan = self._plan(run)

        note = " ".join(n for n in (token.lifetime_note, plan.note) if n)
        message = (
            f"Token issued at {rfc3339(token.issued_at)}; next refresh at "
            f"{rfc3339(plan.refresh_at)}." + (f" Note: {note}." if note else "")
        )
        self._report(
            run,
            refreshed=(True, reasons.TOKEN_ISSUED, message),
            refresh_at=plan.refresh_at,
            acknowledge=True,
        )
        if previous is None or previous.get("reason") == reasons.PENDING:
            self._event(
                run,
                "Normal",
                reasons.TOKEN_ISSUED,
                f"Stored the first token in Secret {run.secret_name}; it "
                f"expires at {rfc3339(stored.expires_at)}.",
            )
        elif previous.get("status") != "True":
            self._event(
                run,
                "Normal",
                reasons.TOKEN_ISSUED,
                f"Token requests work again after {recovered_after} failed "
                f"attempt(s); Secret {run.secret_name} holds a new token.",
            )
        logger.info(
            "[%s/%s] Refreshed the token in Secret %s; it expires at %s, "
            "next refresh at %s.",
            *_ref(run),
            run.secret_name,
            rfc3339(stored.expires_at),
            rfc3339(plan.refresh_at),
        )
        return plan.refresh_at

    def _keep(self, run: _Pass) -> datetime:
        """No request due: keep the Secret holding the current token, report, sleep."""
        assert run.current is not None
        memory = run.memory
        if memory.unwritten is not None and memory.token is run.current:
            self._restore(run, outside=False)
            return self._announce(run, memory.unwritten, run.current)
        self._restore(run)
        memory.token = run.current
        plan = self._plan(run)
        previous = condition_of(memory.status or {}, reasons.REFRESHED)
        refreshed = None
        if previous is None or previous.get("reason") in (reasons.PENDING, None):
            refreshed = (
                True,
                reasons.TOKEN_ISSUED,
                f"Resumed with the token issued at {rfc3339(run.current.issued_at)}; "
                f"next refresh at {rfc3339(plan.refresh_at)}.",
            )
        elif (
            previous.get("status") == "False"
            and previous.get("reason") in reasons.FOUND_BEFORE_REQUEST
        ):
            # A problem found before any request (a missing Secret, a URL the
            # guard refused until the operator's flags changed) was mended and
            # the token in use is still good: say so now, not at the next
            # routine refresh.
            memory.failures, memory.failure = 0, None
            memory.retry_at = memory.last_failure_time = None
            refreshed = (
                True,
                reasons.TOKEN_ISSUED,
                f"The problem was resolved; the token issued at "
                f"{rfc3339(run.current.issued_at)} stays in use until the next "
                f"refresh at {rfc3339(plan.refresh_at)}.",
            )
        self._report(run, refreshed=refreshed, refresh_at=plan.refresh_at)
        return plan.refresh_at

    def _spread(self, run: _Pass) -> datetime:
        """An overdue refresh found at start-up waits a random moment (spread out)."""
        assert run.valid is not None
        remaining = run.valid.expires_at - run.now
        window = min(STARTUP_SPREAD, remaining / 4)
        self._restore(run)
        run.memory.token = run.current
        return run.now + window * self._rng.random()

    def _wait(self, run: _Pass) -> datetime:
        """Backing off after a failure: keep the Secret as it is until the retry."""
        assert run.memory.retry_at is not None
        if run.valid is not None:
            self._restore(run)
        self._report(
            run,
            refreshed=None,
            refresh_at=run.memory.retry_at,
            failure=run.memory.failure,
        )
        return self._wake(run, run.memory.retry_at)

    def _failed(
        self, run: _Pass, failure: Failure, request_hash: str | None
    ) -> datetime:
        memory = run.memory
        previous = condition_of(memory.status or {}, reasons.REFRESHED)
        memory.failures += 1
        memory.last_failure_time = run.now
        memory.failure = failure
        memory.attempted_hash = request_hash
        # Count the delay (and a Retry-After) from the answer, not from the start
        # of the pass: a request that took its whole timeout must not eat it.
        failed_at = self._clock()
        remaining = run.valid.expires_at - failed_at if run.valid else None
        delay = retry_delay(
            memory.failures,
            failure.retry,
            remaining=remaining,
            retry_after=failure.retry_after,
            rng=self._rng,
        )
        memory.retry_at = failed_at + delay

        if run.valid is not None:
            self._restore(run)
        self._report(
            run,
            refreshed=(False, failure.reason, failure.message),
            refresh_at=memory.retry_at,
            failure=failure,
            acknowledge=True,
        )
        if previous is None or (previous.get("status"), previous.get("reason")) != (
            "False",
            failure.reason,
        ):
            self._event(run, "Warning", failure.reason, _sentence(failure.message))
        logger.warning(
            "[%s/%s] Could not refresh the token (%s): %s. Attempt %d; "
            "retrying in %.0f s%s.",
            *_ref(run),
            failure.reason,
            failure.message,
            memory.failures,
            delay.total_seconds(),
            f"; the current token stays valid until {rfc3339(run.valid.expires_at)}"
            if run.valid
            else "; the Secret holds no valid token",
        )
        return self._wake(run, memory.retry_at)

    def _conflict(self, run: _Pass) -> datetime:
        failure = Failure(
            reasons.SECRET_CONFLICT,
            f"Secret {run.secret_name} already exists and is not owned by this "
            "ClientCredential; tokenkeeper leaves it untouched. Delete it or set "
            "spec.secretName to a free name",
            Retry.LOCAL,
        )
        run.current = None
        return self._failed(run, failure, request_hash=None)

    def _wake(self, run: _Pass, at: datetime) -> datetime:
        """``at``, or the current token's expiry if sooner (Ready flips then)."""
        if run.valid is not None and run.valid.expires_at < at:
            return run.valid.expires_at
        return at

    # Writing.

    def _restore(self, run: _Pass, *, outside: bool | None = None) -> bool:
        """Make the Secret hold the current token again; True if it was written.

        ``outside`` says whether someone else deleted or changed the Secret (an
        event tells of it); by default it is worked out from what this
        operator last saw.
        """
        assert run.current is not None
        spec_template = (run.body.get("spec") or {}).get("secretTemplate") or {}
        desired = desired_secret(run.owner, run.secret_name, run.current, spec_template)
        if not needs_write(run.actual, desired):
            return False
        # Written because someone else deleted or edited it, or because the spec
        # now asks for another name, labels or annotations.
        what = "deleted" if run.actual is None else "changed"
        if outside is None:
            if run.actual is None:
                outside = run.memory.secret_name == run.secret_name
            else:
                version = run.actual["metadata"].get("resourceVersion")
                outside = version != run.memory.secret_version
        self._put(run, desired)
        if not outside:
            logger.info(
                "[%s/%s] Wrote the current token to Secret %s.",
                *_ref(run),
                run.secret_name,
            )
            return True
        self._event(
            run,
            "Normal",
            "SecretRestored",
            f"Secret {run.secret_name} was {what} outside tokenkeeper; "
            "wrote the current token back.",
        )
        logger.info(
            "[%s/%s] Restored Secret %s, which was %s.",
            *_ref(run),
            run.secret_name,
            what,
        )
        return True

    def _write_secret(self, run: _Pass, token: StoredToken) -> None:
        spec_template = run.spec.secret_template if run.spec else {}
        desired = desired_secret(run.owner, run.secret_name, token, spec_template)
        self._put(run, desired)

    def _put(self, run: _Pass, desired: dict[str, Any]) -> None:
        """Create or replace the Secret (optimistic concurrency); retry once on 409."""
        namespace = run.owner.namespace
        for _attempt in range(2):
            try:
                if run.actual is None:
                    run.actual = self._kube.create_secret(namespace, desired)
                else:
                    body = merged_for_update(run.actual, desired)
                    run.actual = self._kube.replace_secret(namespace, body)
                return
            except Conflict:
                run.actual = self._kube.get_secret(namespace, run.secret_name)
                if run.actual is not None and not owned_by(run.actual, run.owner.uid):
                    raise KubeError(
                        f"PUT secret {namespace}/{run.secret_name}", 409
                    ) from None
        raise KubeError(f"PUT secret {namespace}/{run.secret_name}", 409)

    # Reporting.

    def _report(
        self,
        run: _Pass,
        *,
        refreshed: tuple[bool, str, str] | None,
        refresh_at: datetime,
        failure: Failure | None = None,
        acknowledge: bool = False,
    ) -> None:
        """Write the status this pass found, if it differs from what is there.

        ``acknowledge`` records the refresh-requested-at annotation as handled.
        """
        memory, current, valid = run.memory, run.current, run.valid
        old = memory.status or {}
        conditions = list(old.get("conditions") or [])
        generation = run.generation

        if refreshed is not None:
            ok, reason, message = refreshed
            conditions = set_condition(
                conditions,
                reasons.REFRESHED,
                ok,
                reason,
                _sentence(message),
                generation,
                run.now,
            )
        elif condition_of(old, reasons.REFRESHED) is None:
            conditions = set_condition(
                conditions,
                reasons.REFRESHED,
                False,
                reasons.PENDING,
                "No token has been requested yet.",
                generation,
                run.now,
            )

        if valid is not None:
            ready = (
                True,
                reasons.TOKEN_VALID,
                f"Secret {run.secret_name} holds a token valid until "
                f"{rfc3339(valid.expires_at)}.",
            )
        elif failure is not None and failure.reason == reasons.SECRET_CONFLICT:
            ready = (False, failure.reason, _sentence(failure.message))
        elif current is not None:
            ready = (
                False,
                reasons.TOKEN_EXPIRED,
                f"The token in Secret {run.secret_name} expired at "
                f"{rfc3339(current.expires_at)} and no new one could be obtained"
                + (f" ({failure.reason})." if failure else "."),
            )
        elif failure is not None:
            ready = (
                False,
                failure.reason,
                f"Secret {run.secret_name} holds no token yet: "
                f"{_sentence(failure.message)}",
            )
        else:
            ready = (False, reasons.PENDING, "No token has been obtained yet.")
        conditions = set_condition(
            conditions, reasons.READY, *ready, generation, run.now
        )

        wanted: dict[str, Any] = {
            "conditions": conditions,
            "secretName": run.secret_name,
            "refreshAt": rfc3339(refresh_at),
            "failedAttempts": memory.failures,
        }
        if generation is not None:
            wanted["observedGeneration"] = generation
        if current is not None:
            wanted["tokenType"] = current.token_type
            wanted["expiresAt"] = rfc3339(current.expires_at)
            wanted["lastRefreshTime"] = rfc3339(current.issued_at)
        if memory.last_failure_time is not None:
            wanted["lastFailureTime"] = rfc3339(memory.last_failure_time)
        handled = run.requested if acknowledge else old.get("refreshRequestedAt")
        if handled:
            wanted["refreshRequestedAt"] = handled

        patch = status_patch(old, wanted)
        if patch is None:
            return
        try:
            self._kube.patch_status(run.owner.namespace, run.owner.name, patch)
        except NotFound:
            # Gone, or replaced by a namesake; anything else (a status
            # subresource missing after a CRD change) is an API error.
            namespace, name = _ref(run)
            if self._kube.credential_uid(namespace, name) != run.owner.uid:
                raise CredentialGone from None
            raise
        memory.status = wanted

    def _event(self, run: _Pass, type_: str, reason: str, message: str) -> None:
        try:
            self._kube.post_event(run.body, type_, reason, message)
        except KubeError as e:
            logger.warning("[%s/%s] Could not post an event: %s", *_ref(run), e)


def _version(obj: Mapping[str, Any]) -> list[Any]:
    meta = obj.get("metadata") or {}
    return [meta.get("uid"), meta.get("resourceVersion")]


def _ref(run: _Pass) -> tuple[str, str]:
    return run.owner.namespace, run.owner.name


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
