"""`GET /metrics` in Prometheus text format (prometheus-client): what the receiver saw.

Verifications by format and outcome, their latency, calls to the issuer (verification and JWKS
fetches) and hits of the verification caches. Labels are bounded: a format, an outcome, a route
name, a status class; never a token, a machine id or a raw method or path.

Under gunicorn each worker has its own memory; set `PROMETHEUS_MULTIPROC_DIR` to an empty
folder (prometheus-client's multiprocess mode) and every scrape adds up all workers. Without it
the numbers are the answering process's own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from .auth import EXTENSION_KEY
from .oauth_verifier import OAuthVerifier
from .verifier import (
    _JWS_SHAPE,
    _OPAQUE_SHAPE,
    MAX_TOKEN_LENGTH,
    CallerNotAllowedError,
    IssuerUnavailableError,
    M2MVerifier,
    VerificationError,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
EXTENSION = "receiver_metrics"


class ReceiverMetrics:
    """The receiver's metrics in one registry (one per app, so tests can build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.verifications = Counter(
            "receiver_verifications",
            "Token verifications by token format and outcome",
            ["format", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "receiver_verification_seconds",
            "Time to verify one token (issuer call included)",
            ["format"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.issuer_calls = Counter(
            "receiver_issuer_requests",
            "Calls to the issuer by route and answer status class",
            ["route", "status"],
            registry=self.registry,
        )
        self.cache = Counter(
            "receiver_verify_cache",
            "Lookups in the verification caches (opaque cache, JWT memo)",
            ["cache", "result"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The text a scrape gets: every gunicorn worker's numbers in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def token_format(token: str, any_opaque: bool = False) -> str:
    """The format label, by the token's shape as the verifier tells it (bounded: 3 values).
    With `any_opaque` (OAuth: every non-JWT token is introspected) any other token is opaque."""
    if len(token) > MAX_TOKEN_LENGTH:
        return "other"
    if _JWS_SHAPE.fullmatch(token):
        return "jwt"
    return "opaque" if any_opaque or _OPAQUE_SHAPE.fullmatch(token) else "other"


def outcome(error: VerificationError | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, IssuerUnavailableError):
        return "unavailable"
    if isinstance(error, CallerNotAllowedError):
        return "insufficient_scope"
    return "invalid_token"


def status_class(status: int | None) -> str:
    return "error" if status is None else f"{status // 100}xx"


def issuer_route(url: str) -> str:
    """A bounded label for an issuer call: verify, introspect, jwks, discovery or other."""
    path = urlsplit(url).path
    if path.endswith("/m2m_tokens/verify"):
        return "verify"
    if "introspect" in path:
        return "introspect"
    if "jwks" in path:
        return "jwks"
    return "discovery" if "/.well-known/" in path else "other"


def instrument(verifier: M2MVerifier | OAuthVerifier, metrics: ReceiverMetrics) -> None:
    """Wrap this verifier instance's methods and its session: the verifier's code is unchanged
    (it stays copyable alone), and only this app's verifier reports to `metrics`. Works for
    both providers (Clerk M2M: verify_opaque; OAuth: introspect)."""
    checked = threading.local()  # which uncached check ran during the current verify()

    def checking(name: str, check: Callable[[str], Any]) -> Callable[[str], Any]:
        def run(token: str) -> Any:
            checked.name = name
            return check(token)

        return run

    oauth = isinstance(verifier, OAuthVerifier)
    opaque_check = "introspect" if oauth else "verify_opaque"
    verifier.verify_jwt = checking("jwt", verifier.verify_jwt)
    setattr(verifier, opaque_check, checking("opaque", getattr(verifier, opaque_check)))
    opaque_cache = getattr(
        verifier, "_opaque_cache", getattr(verifier, "_introspection_cache", None)
    )
    caches = {"jwt": verifier._jwt_memo, "opaque": opaque_cache}
    verify = verifier.verify

    def timed_verify(token: str) -> Any:
        checked.name = None
        kind = token_format(token, any_opaque=oauth)
        started = time.perf_counter()
        error: VerificationError | None = None
        try:
            return verify(token)
        except VerificationError as exc:
            error = exc
            raise
        finally:
            metrics.latency.labels(kind).observe(time.perf_counter() - started)
            metrics.verifications.labels(kind, outcome(error)).inc()
            if kind in caches and caches[kind] is not None:
                hit = checked.name is None  # answered without running the check
                metrics.cache.labels(kind, "hit" if hit else "miss").inc()

    verifier.verify = timed_verify
    session = verifier._session
    send = session.request

    def counted_request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        status = None
        try:
            response = send(method, url, *args, **kwargs)
            status = response.status_code
            return response
        finally:
            metrics.issuer_calls.labels(issuer_route(url), status_class(status)).inc()

    session.request = counted_request


def install(app: Flask) -> None:
    """Instrument the app's verifier and serve `GET /metrics`."""
    metrics = ReceiverMetrics()
    app.extensions[EXTENSION] = metrics
    instrument(app.extensions[EXTENSION_KEY], metrics)
    bp = Blueprint("receiver_metrics", __name__)

    @bp.get("/metrics")
    def scrape() -> Response:
        return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)

    app.register_blueprint(bp)
