"""Verify Clerk M2M tokens: JWTs locally with the issuer's keys, opaque `mt_` tokens by asking
the issuer. Depends only on PyJWT, requests and the two small modules next to it (`jwks.py`,
`verify_cache.py`): copy the three files into another service to reuse it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from requests.adapters import HTTPAdapter

from .jwks import JwksCache, KeysUnavailableError, StaticKey
from .verify_cache import VerifyCache

log = logging.getLogger(__name__)

CLERK_M2M_CATEGORY = "cl_B7d4PD333AAA"  # the `cat` header Clerk puts on M2M JWTs
ALGORITHMS = ["RS256"]  # pinned: the token header never chooses the algorithm
REQUIRED_CLAIMS = ["exp", "iat", "iss", "sub", "jti"]
REGISTERED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scopes"})
MAX_TOKEN_LENGTH = 8192  # checked before any parsing
JWT_CACHE_SECONDS = 60  # default of the verified-JWT memo (M2M_JWT_CACHE_SECONDS)
RETRY_AFTER_SECONDS = 5  # sent with 503 answers when the issuer gave no usable Retry-After
MAX_RETRY_AFTER_SECONDS = 60  # an issuer's Retry-After passed on to callers is capped to this
POOL_SIZE = 10  # keep-alive connections to the issuer

_JWS_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# Opaque tokens are `mt_` + 64 hex from our issuer; the cap leaves room for Clerk's format and
# keeps junk from reaching the issuer (each verification is billed and rate limited).
MAX_OPAQUE_TOKEN_LENGTH = 128
_OPAQUE_SHAPE = re.compile(rf"mt_[A-Za-z0-9_-]{{1,{MAX_OPAQUE_TOKEN_LENGTH - 3}}}")
_MACHINE_ID = re.compile(r"mch_[A-Za-z0-9_]+")


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token that passed verification: who sent it and what it carries."""

    id: str  # `mt_...` (the JWT's `jti`)
    machine_id: str  # the calling machine (`subject` / `sub`)
    scopes: tuple[str, ...]  # machine ids this token may be sent to
    claims: dict[str, Any] = field(hash=False)  # the caller's custom claims
    format: str  # "jwt" or "opaque"
    expiration: int | None  # Unix milliseconds, like Clerk's token objects

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "format": self.format,
            "claims": self.claims,
            "scopes": list(self.scopes),
            "expiration": self.expiration,
        }


class VerificationError(Exception):
    """A token was not accepted; `status`, `error` and `description` form the HTTP answer.
    The description is a fixed phrase: it never contains the token."""

    status = 401
    error = "invalid_token"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class InvalidTokenError(VerificationError):
    """Bad, expired, revoked or out-of-scope token: 401 invalid_token."""


class CallerNotAllowedError(VerificationError):
    """A valid token from a machine this receiver does not accept: 403 insufficient_scope."""

    status = 403
    error = "insufficient_scope"


class IssuerUnavailableError(VerificationError):
    """The token cannot be checked right now (issuer down or misconfigured): 503, fail closed."""

    status = 503
    error = "temporarily_unavailable"

    def __init__(self, description: str, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(description)
        self.retry_after = retry_after


MAX_DOCUMENT_BYTES = 1 << 20  # a key set or discovery document: never read past this
MAX_ANSWER_BYTES = 64 * 1024  # a verify or introspection answer: never read past this


class KeySource(Protocol):
    def key_for(self, kid: str | None) -> RSAPublicKey | None: ...


class M2MVerifier:
    """Verifies one bearer token: returns a VerifiedToken or raises a VerificationError.

    The first three arguments say who this receiver is; `jwt_issuer` defaults to `api_url` and
    `jwks_url` to `{api_url}/.well-known/jwks.json` (unused when a PEM `jwt_key` is given). The
    keyword defaults are documented in receiver_app/README.md ("Tunables").
    """

    def __init__(
        self,
        api_url: str,
        machine_secret_key: str,
        machine_id: str,
        *,
        jwt_issuer: str | None = None,
        jwks_url: str | None = None,
        jwt_key: str | None = None,
        allowed_callers: Iterable[str] | None = None,
        audience_required: bool = True,
        opaque_cache_seconds: float = 0,
        jwt_cache_seconds: float = JWT_CACHE_SECONDS,
        cache_max_entries: int = 10_000,
        leeway_seconds: float = 5,
        issuer_timeout_seconds: float = 5,
        jwks_lifespan_seconds: float = 300,
        jwks_cooldown_seconds: float = 30,
        session: requests.Session | None = None,
        keys: KeySource | None = None,
    ) -> None:
        api_url = api_url.rstrip("/")
        self.machine_id = machine_id
        self.jwt_issuer = jwt_issuer or api_url
        self.jwks_url = jwks_url or f"{api_url}/.well-known/jwks.json"
        self.allowed_callers = None if allowed_callers is None else frozenset(allowed_callers)
        self.audience_required = audience_required
        self.leeway_seconds = leeway_seconds
        self.issuer_timeout_seconds = issuer_timeout_seconds
        self._session = session or pooled_session(POOL_SIZE)
        if keys is None and jwt_key:
            keys = StaticKey(jwt_key)
        self._keys = keys or JwksCache(
            self._fetch_jwks, lifespan=jwks_lifespan_seconds, cooldown=jwks_cooldown_seconds
        )
        # Remembered successes (see verify_cache.py): bounded, keyed by the token's SHA-256,
        # never past the token's expiration; a cache of 0 seconds is off.
        self._opaque_cache = _cache_or_none(opaque_cache_seconds, cache_max_entries)
        self._jwt_memo = _cache_or_none(jwt_cache_seconds, cache_max_entries)
        self._verify_url = f"{api_url}/m2m_tokens/verify"
        self._issuer_auth = {"Authorization": f"Bearer {machine_secret_key}"}

    def verify(self, token: str) -> VerifiedToken:
        """Tell the format by its shape, verify it, then apply the caller allowlist."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidTokenError("token is too long")
        if _JWS_SHAPE.fullmatch(token):
            verified = _remembered(self._jwt_memo, token, self.verify_jwt)
        elif _OPAQUE_SHAPE.fullmatch(token):
            verified = _remembered(self._opaque_cache, token, self.verify_opaque)
        else:
            raise InvalidTokenError("token format is not recognised")
        if self.allowed_callers is not None and verified.machine_id not in self.allowed_callers:
            raise CallerNotAllowedError("calling machine is not allowed here")
        return verified

    # JWT: local verification

    def verify_jwt(self, token: str) -> VerifiedToken:
        """Check signature (RS256, key chosen by kid), registered claims, category and audience."""
        kid = _unverified_header(token).get("kid")
        try:
            key = self._keys.key_for(kid if isinstance(kid, str) else None)
        except KeysUnavailableError:
            log.warning("cannot verify a JWT: the issuer's JWKS was never fetched")
            raise IssuerUnavailableError("token signing keys are unavailable") from None
        if key is None:
            raise InvalidTokenError("token signing key is unknown")
        try:
            decoded = jwt.decode_complete(
                token,
                key,
                algorithms=ALGORITHMS,
                options={"require": REQUIRED_CLAIMS, "verify_aud": False},
                issuer=self.jwt_issuer,
                leeway=self.leeway_seconds,
            )
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(_describe(exc)) from None
        return self._check_m2m_claims(decoded["header"], decoded["payload"])

    def _check_m2m_claims(self, header: dict[str, Any], claims: dict[str, Any]) -> VerifiedToken:
        _check_numeric_dates(claims)
        if header.get("cat", CLERK_M2M_CATEGORY) != CLERK_M2M_CATEGORY:
            raise InvalidTokenError("token is not an M2M token")
        subject = claims["sub"]
        if not _MACHINE_ID.fullmatch(subject):
            raise InvalidTokenError("token subject is not a machine")
        audience = _id_list(claims.get("aud"), "aud")
        scopes = _id_list(claims.get("scopes"), "scopes")
        if audience or scopes:
            if self.machine_id not in audience and self.machine_id not in scopes:
                raise InvalidTokenError("token is not meant for this receiver")
        elif self.audience_required:
            raise InvalidTokenError("token names no audience")
        return VerifiedToken(
            id=claims["jti"],
            machine_id=subject,
            scopes=scopes or audience,
            claims={k: v for k, v in claims.items() if k not in REGISTERED_CLAIMS},
            format="jwt",
            expiration=int(claims["exp"]) * 1000,
        )

    def _fetch_jwks(self) -> dict[str, Any]:
        response = self._session.get(
            self.jwks_url, timeout=self.issuer_timeout_seconds, allow_redirects=False, stream=True
        )
        with response:
            response.raise_for_status()
            return read_json(response, MAX_DOCUMENT_BYTES)

    # Opaque: ask the issuer

    def verify_opaque(self, token: str) -> VerifiedToken:
        """POST the token to the issuer's verify route with this receiver's own machine key."""
        try:
            response = self._session.post(
                self._verify_url,
                json={"token": token},
                headers=self._issuer_auth,
                timeout=self.issuer_timeout_seconds,
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as exc:
            log.warning("token issuer unreachable (%s)", type(exc).__name__)
            raise IssuerUnavailableError("token issuer is unreachable") from None
        with response:
            return self._read_verify_answer(response)

    def _read_verify_answer(self, response: requests.Response) -> VerifiedToken:
        status = response.status_code
        if status == 404:
            raise InvalidTokenError("token is invalid, expired or revoked")
        if status in (400, 422):
            raise InvalidTokenError("token was refused by the issuer")
        if status in (401, 403):
            log.error(
                "the issuer rejected this receiver's CLERK_MACHINE_SECRET_KEY (HTTP %s): "
                "fix the receiver's configuration; opaque tokens cannot be verified until then",
                status,
            )
            raise IssuerUnavailableError("token verification is misconfigured")
        if status == 429:
            seconds = retry_after_seconds(response.headers.get("Retry-After"))
            raise IssuerUnavailableError("token issuer is rate limiting", seconds)
        if status != 200:
            log.warning("token issuer answered HTTP %s to a verification", status)
            # A 503 may say when to come back (RFC 9110 §10.2.3): pass that on, bounded.
            seconds = retry_after_seconds(response.headers.get("Retry-After"))
            raise IssuerUnavailableError("token issuer failed", seconds)
        try:
            return self._token_from_object(read_json(response, MAX_ANSWER_BYTES))
        except (ValueError, KeyError, TypeError, requests.RequestException):
            log.error("token issuer answered a verification with an unexpected body")
            raise IssuerUnavailableError("token issuer answered unexpectedly") from None

    def _token_from_object(self, obj: dict[str, Any]) -> VerifiedToken:
        """A VerifiedToken from the issuer's token object, re-checking what it vouches for."""
        subject, scopes, expiration = obj["subject"], obj["scopes"], obj["expiration"]
        claims = obj.get("claims") or {}  # Clerk sends null for a token minted without claims
        if not (isinstance(subject, str) and _MACHINE_ID.fullmatch(subject)):
            raise ValueError("subject")
        if not (isinstance(scopes, list) and all(isinstance(s, str) for s in scopes)):
            raise ValueError("scopes")
        if not isinstance(claims, dict):
            # The issuer accepts any JSON as claims at mint time; this receiver only takes an
            # object. It is the token's fault, not the issuer's: 401, so nobody retries it.
            raise InvalidTokenError("token claims are not a JSON object")
        if obj.get("revoked") or obj.get("expired"):
            raise InvalidTokenError("token is invalid, expired or revoked")
        if expiration is not None and int(expiration) <= time.time() * 1000:
            raise InvalidTokenError("token has expired")
        if self.machine_id not in scopes:
            raise InvalidTokenError("token is not meant for this receiver")
        return VerifiedToken(
            id=str(obj["id"]),
            machine_id=subject,
            scopes=tuple(scopes),
            claims=claims,
            format="opaque",
            expiration=None if expiration is None else int(expiration),
        )


def _cache_or_none(seconds: float, max_entries: int) -> VerifyCache[VerifiedToken] | None:
    return VerifyCache(seconds, max_entries) if seconds > 0 else None


def _remembered(
    cache: VerifyCache[VerifiedToken] | None,
    token: str,
    check: Callable[[str], VerifiedToken],
) -> VerifiedToken:
    """`check(token)`, or its earlier success while `cache` keeps it (never past the token's
    expiration). Failures raise and are never kept, so only successes are remembered."""
    if cache is None:
        return check(token)
    verified = cache.get(token)
    if verified is None:
        verified = check(token)
        expires_at = None if verified.expiration is None else verified.expiration / 1000
        cache.put(token, verified, expires_at)
    return verified


def pooled_session(pool_size: int) -> requests.Session:
    """A requests session that keeps up to `pool_size` connections alive and never retries
    on its own (a request waiting on the issuer gets a quick 503 instead)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, needed for its `kid` before a key can be chosen (untrusted until the
    signature is checked). Only the header segment is handed to PyJWT: its parser validates
    every character of every segment in Python, so passing the whole token would cost about
    half a signature check on top of the full parse in `decode_complete`."""
    header_segment = token.partition(".")[0]
    try:
        return jwt.get_unverified_header(f"{header_segment}..")
    except jwt.PyJWTError:
        raise InvalidTokenError("token is malformed") from None


def retry_after_seconds(value: str | None) -> int:
    """An issuer's Retry-After (delta-seconds) capped to 1..MAX_RETRY_AFTER_SECONDS, or
    RETRY_AFTER_SECONDS when it is absent or not a plain number (an HTTP date counts as absent)."""
    value = (value or "").strip()
    if not (value.isascii() and value.isdigit()):
        return RETRY_AFTER_SECONDS
    return max(1, min(int(value), MAX_RETRY_AFTER_SECONDS))


def _id_list(value: Any, name: str) -> tuple[str, ...]:
    """`aud` (string or list) or `scopes` (space-separated string or list) as a tuple of ids."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise InvalidTokenError(f"token {name} claim is malformed")


_DESCRIPTIONS: list[tuple[type[jwt.PyJWTError], str]] = [
    (jwt.ExpiredSignatureError, "token has expired"),
    (jwt.ImmatureSignatureError, "token is not valid yet"),
    (jwt.InvalidIssuerError, "token issuer is not trusted"),
    (jwt.InvalidSignatureError, "token signature is invalid"),
    (jwt.InvalidAlgorithmError, "token algorithm is not allowed"),
    (jwt.InvalidIssuedAtError, "token iat claim is invalid"),
    (jwt.DecodeError, "token is malformed"),
]


def _describe(exc: jwt.PyJWTError) -> str:
    """A fixed phrase for a PyJWT error (PyJWT's own messages are never passed on)."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token lacks the {exc.claim} claim"
    for error_type, description in _DESCRIPTIONS:
        if isinstance(exc, error_type):
            return description
    return "token is invalid"


MAX_NUMERIC_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z: later times are not real expiries


def _check_numeric_dates(claims: dict[str, Any]) -> None:
    """`exp`, `nbf` and `iat` must be JSON numbers (RFC 7519 NumericDate) between 0 and
    MAX_NUMERIC_DATE: PyJWT takes `"exp": "123"` (a string) and huge values that later
    overflow arithmetic; the signature being valid does not make them sane."""
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidTokenError(f"token {name} claim is not a number")
        if not 0 <= value <= MAX_NUMERIC_DATE:  # NaN fails this too
            raise InvalidTokenError(f"token {name} claim is out of range")


def read_json(response: requests.Response, max_bytes: int) -> Any:
    """A streamed answer's JSON, reading at most `max_bytes` (decompressed): an issuer cannot
    make the receiver hold a huge or endlessly nested document. ValueError otherwise."""
    body = bytearray()
    for chunk in response.iter_content(chunk_size=16 * 1024):
        body += chunk
        if len(body) > max_bytes:
            raise ValueError(f"the answer is larger than {max_bytes} bytes")
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("the answer is nested too deeply") from None
