"""Obtain, reuse and present M2M tokens: one class, liftable into any Python service.

Needs only `requests`. Copy this file, then:

    client = M2MTokenClient("https://api.clerk.com", os.environ["CLERK_MACHINE_SECRET_KEY"])
    result = client.request("POST", "https://orders.internal/receive", json={...})

The client gets a token from its minter (by default `ClerkM2MMinter`: `POST
{api_url}/m2m_tokens`; `oauth_minter.OAuthClientCredentialsMinter` for any OAuth 2.0
server), keeps it until its expiration (read from the issuer's answer, never by decoding the
token) minus a refresh margin, makes exactly one creation when many threads need a token at
once (single flight), retries the issuer's 429/5xx with capped exponential backoff and full
jitter, and when the receiving service answers 401 it drops the token, gets a fresh one and
retries once.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Protocol

import requests
from requests.adapters import HTTPAdapter

log = logging.getLogger(__name__)

TOKEN_FORMATS = ("opaque", "jwt")
# What may follow "Bearer " (RFC 6750 b64token): opaque mt_... and JWTs both fit.
MAX_TOKEN_LENGTH = 8192  # the longest token our receiver (and Clerk's verify route) reads
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class TokenClientError(Exception):
    """Base class: no token could be obtained from the issuer."""


class IssuerUnavailable(TokenClientError):
    """The issuer was unreachable, timed out, or kept answering 429/5xx after bounded retries."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IssuerBusy(IssuerUnavailable):
    """An IssuerUnavailable worth retrying: a network error, a timeout, a 429 or a 5xx."""


class MachineSecretKeyRejected(TokenClientError):
    """The issuer answered 401: this machine's credentials (Clerk machine secret key, or OAuth
    client id and secret) are wrong, deleted or rotated away."""


class IssuerRequestRejected(TokenClientError):
    """The issuer refused the creation request with another 4xx (bad TTL, unknown field...)."""

    def __init__(self, message: str, status: int, code: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class M2MToken:
    """A token as the issuer created it; `token` is the secret sent as the Bearer credential."""

    token: str = field(repr=False)
    id: str
    format: str
    expiration_ms: int | None
    fresh_until: float  # on this client's monotonic clock: when to stop reusing it


@dataclass(frozen=True)
class IssuedToken:
    """A token as a minter received it; the client decides from it how long to reuse it."""

    token: str = field(repr=False)
    id: str
    format: str
    expiration_ms: float | None  # Unix milliseconds; None: no expiry given (used once)
    created_ms: float | None  # Unix milliseconds, when the issuer says it made the token


class TokenMinter(Protocol):
    """One way of getting a token from an issuer, one attempt: an IssuedToken, IssuerBusy when
    a retry may help, another TokenClientError when it cannot. The client does the rest."""

    honours_format: bool  # False: the issuer decides format and lifetime (OAuth)

    def mint(self, token_format: str, ttl_seconds: int | None) -> IssuedToken: ...


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries for the issuer: attempt count, backoff and a total time budget."""

    max_attempts: int = 4
    backoff_base: float = 0.2  # seconds; attempt n sleeps uniform(0, min(cap, base * 2**n))
    backoff_cap: float = 2.0
    retry_after_cap: float = 5.0  # never sleep longer than this for one Retry-After
    max_total_seconds: float = 8.0  # give up rather than start a sleep past this budget


@dataclass(frozen=True)
class AuthorizedResponse:
    """The receiving service's answer, the token that was presented, and whether the one
    retry after a 401 was used."""

    response: requests.Response
    token: M2MToken
    retried_after_401: bool


class M2MTokenClient:
    """Gets tokens from its minter (Clerk M2M with a machine secret key unless `minter` is
    given) and caches one per (format, TTL)."""

    def __init__(
        self,
        api_url: str | None = None,
        machine_secret_key: str | None = None,
        *,
        minter: TokenMinter | None = None,
        token_format: str = "opaque",  # noqa: S107 (a format name, not a secret)
        ttl_seconds: int | None = None,
        refresh_margin_seconds: float = 30.0,
        timeout: float | tuple[float, float] = (3.05, 10.0),
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        pool_size: int = 20,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if token_format not in TOKEN_FORMATS:
            raise ValueError(f"token_format must be one of {TOKEN_FORMATS}, not {token_format!r}")
        if not (math.isfinite(refresh_margin_seconds) and refresh_margin_seconds >= 0):
            raise ValueError(
                f"the refresh margin ({refresh_margin_seconds} s) must be finite, >= 0"
            )
        if ttl_seconds is not None and refresh_margin_seconds >= ttl_seconds:
            raise ValueError(
                f"the refresh margin ({refresh_margin_seconds} s) must be smaller than the token "
                f"TTL ({ttl_seconds} s), or every call would create a token"
            )
        if (minter is None) == (api_url is None or machine_secret_key is None):
            raise ValueError("give either api_url and machine_secret_key, or a minter")
        self.token_format = token_format
        self.ttl_seconds = ttl_seconds
        self.refresh_margin = refresh_margin_seconds
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.session = session or _pooled_session(pool_size)
        self._sleep = sleep
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, int | None], M2MToken] = {}
        self._flights: dict[tuple[str, int | None], Future[M2MToken]] = {}
        self.minter = minter or ClerkM2MMinter(
            api_url or "",
            machine_secret_key or "",
            session=self.session,
            timeout=timeout,
            wall_clock=wall_clock,
        )

    def __repr__(self) -> str:  # never show the key
        return f"M2MTokenClient(minter={self.minter!r}, token_format={self.token_format!r})"

    # -- tokens -----------------------------------------------------------------------------

    def get_token(
        self, token_format: str | None = None, ttl_seconds: int | None = None
    ) -> M2MToken:
        """A fresh-enough token of this format and TTL: the cached one, or exactly one new one
        however many threads ask at the same time."""
        key = self._cache_key(token_format, ttl_seconds)
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and self._monotonic() < cached.fresh_until:
                return cached
            flight = self._flights.get(key)
            is_leader = flight is None  # nobody is creating one: this thread does, others wait
            if is_leader:
                flight = self._flights[key] = Future()
        if is_leader:
            return self._create_for_everyone(key, flight)
        return self._wait_for(flight)

    def _create_for_everyone(
        self, key: tuple[str, int | None], flight: Future[M2MToken]
    ) -> M2MToken:
        """The leader's part of single flight: create the token, cache it while fresh, and
        hand the token (or the error) to every thread waiting on `flight`."""
        try:
            token = self._create_with_retries(*key)
        except BaseException as exc:
            with self._lock:
                del self._flights[key]
            flight.set_exception(exc)
            raise
        with self._lock:
            if self._monotonic() < token.fresh_until:
                self._tokens[key] = token
            del self._flights[key]
        flight.set_result(token)
        return token

    def invalidate(self, token: M2MToken) -> None:
        """Drop `token` from the cache (after a 401). A newer token cached meanwhile by
        another thread is kept, so N concurrent 401s still cause one creation."""
        with self._lock:
            for key, cached in list(self._tokens.items()):
                if cached.id == token.id:
                    del self._tokens[key]

    # -- presenting tokens ------------------------------------------------------------------

    def request(
        self, method: str, url: str, *, token_format: str | None = None, **kwargs
    ) -> AuthorizedResponse:
        """Send `method url` with `Authorization: Bearer <token>`; on a 401 drop the token,
        get a fresh one and retry once. The body must be re-sendable (json=, data=bytes).
        Network errors towards `url` propagate as `requests` exceptions."""
        kwargs.setdefault("timeout", self.timeout)
        token = self.get_token(token_format)
        response = self._send(method, url, token, kwargs)
        if response.status_code != 401:
            return AuthorizedResponse(response, token, retried_after_401=False)
        log.info("receiver answered 401 to token %s; retrying once with a fresh token", token.id)
        self.invalidate(token)
        token = self.get_token(token_format)
        response = self._send(method, url, token, kwargs)
        return AuthorizedResponse(response, token, retried_after_401=True)

    def _send(self, method: str, url: str, token: M2MToken, kwargs: dict) -> requests.Response:
        headers = {**kwargs.get("headers", {}), "Authorization": f"Bearer {token.token}"}
        return self.session.request(method, url, **{**kwargs, "headers": headers})

    # -- creating tokens --------------------------------------------------------------------

    def _cache_key(
        self, token_format: str | None, ttl_seconds: int | None
    ) -> tuple[str, int | None]:
        fmt = token_format or self.token_format
        if fmt not in TOKEN_FORMATS:
            raise ValueError(f"token_format must be one of {TOKEN_FORMATS}, not {fmt!r}")
        if not self.minter.honours_format:
            return "as_issued", None  # one token whatever was asked: the issuer decides
        return fmt, ttl_seconds if ttl_seconds is not None else self.ttl_seconds

    def _wait_for(self, flight: Future[M2MToken]) -> M2MToken:
        """Wait for the creation another thread is making, and share its outcome."""
        longest_creation = self.retry.max_total_seconds + self.retry.max_attempts * _total_timeout(
            self.timeout
        )
        try:
            return flight.result(timeout=longest_creation)
        except FutureTimeout:
            raise IssuerUnavailable("timed out waiting for the issuer to create a token") from None

    def _create_with_retries(self, token_format: str, ttl_seconds: int | None) -> M2MToken:
        """One token creation, retried with backoff on connection errors, timeouts, 429 and
        5xx only, within max_attempts and the max_total_seconds budget."""
        deadline = self._monotonic() + self.retry.max_total_seconds
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                started = self._monotonic()
                return self._token_from(self.minter.mint(token_format, ttl_seconds), started)
            except IssuerBusy as failure:
                delay = self._backoff(attempt - 1, failure.retry_after)
                if attempt == self.retry.max_attempts or self._monotonic() + delay > deadline:
                    raise
                log.warning("%s; retry %d in %.2f s", failure, attempt, delay)
                self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter (AWS style). An issuer's Retry-After is a floor, capped: it can make us
        wait longer, never skip the backoff (`Retry-After: 0` would retry at once)."""
        ceiling = min(self.retry.backoff_cap, self.retry.backoff_base * 2**attempt)
        jittered = random.uniform(0, ceiling)  # noqa: S311 (jitter, not a secret)
        if retry_after is None:
            return jittered
        return min(self.retry.retry_after_cap, max(retry_after, jittered))

    def _token_from(self, issued: IssuedToken, started: float) -> M2MToken:
        """Build the cache entry from the issuer's answer. The lifetime is the smaller of
        expiration-minus-creation and expiration-minus-our-wall-clock, counted from when we
        asked on our monotonic clock, so clock skew can only make us refresh earlier."""
        token_id, expiration, created = issued.id, issued.expiration_ms, issued.created_ms
        if expiration is None:
            fresh_until = started  # no expiry given: use once, never cache
        else:
            lifetime = expiration / 1000 - self._wall_clock()
            if created is not None:
                lifetime = min(lifetime, (expiration - created) / 1000)
            fresh_until = started + lifetime - self.refresh_margin
            if lifetime <= self.refresh_margin:
                log.warning(
                    "token %s lives %.0f s, not more than the refresh margin (%.0f s): not reused",
                    token_id,
                    lifetime,
                    self.refresh_margin,
                )
        log.info("created %s token %s", issued.format, token_id)
        return M2MToken(issued.token, token_id, issued.format, expiration, fresh_until)


class ClerkM2MMinter:
    """Creates Clerk M2M tokens: `POST {api_url}/m2m_tokens` with the machine secret key."""

    honours_format = True

    def __init__(
        self,
        api_url: str,
        machine_secret_key: str,
        *,
        session: requests.Session,
        timeout: float | tuple[float, float],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._key = machine_secret_key
        self.session = session
        self.timeout = timeout
        self._wall_clock = wall_clock

    def __repr__(self) -> str:  # never show the key
        return f"ClerkM2MMinter(api_url={self.api_url!r})"

    def mint(self, token_format: str, ttl_seconds: int | None) -> IssuedToken:
        """One `POST /m2m_tokens`: the token; IssuerBusy when a retry may help; another
        TokenClientError when it cannot (401, other 4xx, a malformed 201)."""
        try:
            response = self._post_create(token_format, ttl_seconds)
        except requests.RequestException as exc:
            raise IssuerBusy(f"the issuer is unreachable ({type(exc).__name__})") from None
        status = response.status_code
        if status in (200, 201):
            secret, token_id, expiration, created = _parse_token_object(response)
            return IssuedToken(secret, token_id, token_format, expiration, created)
        raise_if_busy(response, self._wall_clock)
        raise _rejection(response)

    def _post_create(self, token_format: str, ttl_seconds: int | None) -> requests.Response:
        body: dict[str, object] = {"token_format": token_format}
        if ttl_seconds is not None:
            body["seconds_until_expiration"] = ttl_seconds
        return self.session.post(
            f"{self.api_url}/m2m_tokens",
            json=body,
            headers={"Authorization": f"Bearer {self._key}"},
            timeout=self.timeout,
        )


def raise_if_busy(response: requests.Response, wall_clock: Callable[[], float] = time.time) -> None:
    """IssuerBusy (with its Retry-After) for a 429 or 5xx answer: worth a retry."""
    status = response.status_code
    if status == 429 or status >= 500:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"), wall_clock)
        raise IssuerBusy(f"the issuer answered {status}", retry_after=retry_after)


def _pooled_session(pool_size: int) -> requests.Session:
    """A Session whose per-host pool fits `pool_size` concurrent requests."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _total_timeout(timeout: float | tuple[float, float]) -> float:
    return sum(timeout) if isinstance(timeout, tuple) else float(timeout)


def retry_after_seconds(
    value: str | None, wall_clock: Callable[[], float] = time.time
) -> float | None:
    """A `Retry-After` header as seconds (delta-seconds or HTTP date), or None when it is
    absent or garbled."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - wall_clock())
    except (TypeError, ValueError):
        return None


def _parse_token_object(
    response: requests.Response,
) -> tuple[str, str, float | None, float | None]:
    """(token, id, expiration, created_at) of a 201 answer, checked: a token usable as a Bearer
    credential, a string id, and times that are finite numbers or null. Anything else is
    IssuerUnavailable naming the field (never its value, which may be the secret)."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise IssuerUnavailable(
            "the issuer answered 201 with an unexpected token object (not JSON)"
        )
    secret, token_id = data.get("token"), data.get("id")
    expiration, created = data.get("expiration"), data.get("created_at")
    checks = {
        "token": isinstance(secret, str) and bearer_token_shape(secret),
        "id": isinstance(token_id, str) and token_id != "",
        "expiration": expiration is None or _is_finite_number(expiration),
        "created_at": created is None or _is_finite_number(created),
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise IssuerUnavailable(
            f"the issuer answered 201 with an unexpected token object (bad {', '.join(bad)})"
        )
    return secret, token_id, expiration, created


def bearer_token_shape(value: str) -> bool:
    """Whether `value` can follow "Bearer " in a header (RFC 6750 b64token) and is not longer
    than receivers read (MAX_TOKEN_LENGTH): a longer one would be refused on every call."""
    return len(value) <= MAX_TOKEN_LENGTH and _BEARER_TOKEN.fullmatch(value) is not None


def _is_finite_number(value: object) -> bool:
    """An int or float (not a bool) that converts to a finite float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int too large for a float
        return False


def _rejection(response: requests.Response) -> TokenClientError:
    """Map a non-retryable 4xx from the issuer, reading Clerk's error envelope when present."""
    code, message = None, f"the issuer answered {response.status_code}"
    try:
        error = response.json()["errors"][0]
        code = error.get("code")
        message = error.get("long_message") or error.get("message") or message
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        pass
    if response.status_code == 401:
        return MachineSecretKeyRejected(
            "the issuer rejected this machine's secret key (CLERK_MACHINE_SECRET_KEY): it is "
            f"wrong, deleted or was rotated ({code or 'no code'})"
        )
    return IssuerRequestRejected(
        f"the issuer refused to create a token: {message}", response.status_code, code
    )
