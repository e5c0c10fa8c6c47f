"""Verify standard OAuth 2.0 access tokens from any OpenID / OAuth issuer found by discovery:
JWT access tokens locally with the RFC 9068 checks, any other token by RFC 7662 introspection.

It answers like `M2MVerifier` (a VerifiedToken, or the same VerificationError types), so
`require_m2m` and the RFC 6750 answers do not change, and it reuses the JWKS cache, the
verification caches and the error types of `verifier.py` and `jwks.py`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from authlib.integrations.requests_client.oauth2_session import OAuth2ClientAuth

from .jwks import JwksCache, KeysUnavailableError
from .verifier import (
    _JWS_SHAPE,
    JWT_CACHE_SECONDS,
    MAX_ANSWER_BYTES,
    MAX_DOCUMENT_BYTES,
    MAX_TOKEN_LENGTH,
    POOL_SIZE,
    CallerNotAllowedError,
    InvalidTokenError,
    IssuerUnavailableError,
    KeySource,
    VerifiedToken,
    _cache_or_none,
    _describe,
    _remembered,
    _unverified_header,
    pooled_session,
    read_json,
    retry_after_seconds,
)

log = logging.getLogger(__name__)

AT_JWT_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 section 2.1
PLAIN_JWT_TYPES = frozenset({"jwt", ""})  # accepted only with require_at_jwt=False
REQUIRED_JWT_CLAIMS = ["iss", "aud", "exp", "iat"]
# The issuer's scheme -> the schemes its metadata's endpoints may use: the receiver sends its
# client credentials to the introspection endpoint, so never over plain http for an https issuer.
ENDPOINT_SCHEMES = {"https": frozenset({"https"}), "http": frozenset({"http", "https"})}
ENDPOINT_FIELDS = ("jwks_uri", "introspection_endpoint")
# Claims that say who and what, not the caller's own: kept out of VerifiedToken.claims.
STANDARD_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "client_id", "azp", "scope", "scp"}
    | {"active", "token_type", "roles"}
)


class OAuthVerifier:
    """Verifies one bearer token for the resource `audience` of the issuer `issuer_url`.

    JWTs (three dot-separated segments) are checked locally; any other token is introspected
    with this resource's own client credentials (without them it is refused). The calling
    machine is the token's `client_id` (else `azp`, else `sub`); `allowed_callers` and
    `required_scopes` apply to both kinds.
    """

    def __init__(
        self,
        issuer_url: str,
        audience: str,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        allowed_callers: Iterable[str] | None = None,
        required_scopes: Iterable[str] = (),
        require_at_jwt: bool = True,
        algorithms: Iterable[str] = ("RS256",),
        introspection_cache_seconds: float = 0,
        jwt_cache_seconds: float = JWT_CACHE_SECONDS,
        cache_max_entries: int = 10_000,
        leeway_seconds: float = 5,
        issuer_timeout_seconds: float = 5,
        jwks_lifespan_seconds: float = 300,
        jwks_cooldown_seconds: float = 30,
        session: requests.Session | None = None,
        keys: KeySource | None = None,
    ) -> None:
        self.issuer_url = issuer_url
        self.audience = audience
        self.allowed_callers = None if allowed_callers is None else frozenset(allowed_callers)
        self.required_scopes = frozenset(required_scopes)
        self.jwt_types = AT_JWT_TYPES if require_at_jwt else AT_JWT_TYPES | PLAIN_JWT_TYPES
        self.algorithms = list(algorithms)
        self.leeway_seconds = leeway_seconds
        self.issuer_timeout_seconds = issuer_timeout_seconds
        self.discovery_cooldown_seconds = jwks_cooldown_seconds
        self._session = session or pooled_session(POOL_SIZE)
        self._client_auth = (
            OAuth2ClientAuth(client_id, client_secret, "client_secret_basic")
            if client_id and client_secret
            else None
        )
        self._keys = keys or JwksCache(
            self._fetch_jwks, lifespan=jwks_lifespan_seconds, cooldown=jwks_cooldown_seconds
        )
        self._introspection_cache = _cache_or_none(introspection_cache_seconds, cache_max_entries)
        self._jwt_memo = _cache_or_none(jwt_cache_seconds, cache_max_entries)
        self._metadata: Mapping[str, Any] | None = None
        self._discovery_attempted_at: float | None = None
        self._discovery_lock = threading.Lock()

    def verify(self, token: str) -> VerifiedToken:
        """Tell a JWT by its shape, verify it, then apply the allowlist and required scopes."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidTokenError("token is too long")
        if _JWS_SHAPE.fullmatch(token):
            verified = _remembered(self._jwt_memo, token, self.verify_jwt)
        else:
            verified = _remembered(self._introspection_cache, token, self.introspect)
        if self.allowed_callers is not None and verified.machine_id not in self.allowed_callers:
            raise CallerNotAllowedError("calling machine is not allowed here")
        if not self.required_scopes <= set(verified.scopes):
            raise CallerNotAllowedError("token lacks a scope this receiver requires")
        return verified

    # JWT access tokens (RFC 9068): local verification

    def verify_jwt(self, token: str) -> VerifiedToken:
        """Type, signature (pinned algorithms, key by kid from jwks_uri), iss, aud, exp, iat."""
        header = _unverified_header(token)
        if str(header.get("typ", "")).lower() not in self.jwt_types:
            raise InvalidTokenError("token is not a JWT access token (typ)")
        kid = header.get("kid")
        try:
            key = self._keys.key_for(kid if isinstance(kid, str) else None)
        except KeysUnavailableError:
            log.warning("cannot verify a JWT: the issuer's JWKS was never fetched")
            raise IssuerUnavailableError("token signing keys are unavailable") from None
        if key is None:
            raise InvalidTokenError("token signing key is unknown")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self._published_issuer(),
                options={"require": REQUIRED_JWT_CLAIMS},
                leeway=self.leeway_seconds,
            )
        except jwt.InvalidAudienceError:
            raise InvalidTokenError("token is not meant for this receiver") from None
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(_describe(exc)) from None
        for name in ("exp", "iat", "nbf"):  # PyJWT also takes numeric strings ("9999999999")
            if name in claims and not _is_number(claims[name]):
                raise InvalidTokenError(f"token {name} claim is not a number")
        return _verified(claims, token, "jwt")

    def _fetch_jwks(self) -> dict[str, Any]:
        """The key set at the metadata's jwks_uri (called by JwksCache, which keeps the last good
        keys and limits fetches to one per cooldown)."""
        jwks_uri = self.metadata().get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise ValueError("the issuer's metadata names no jwks_uri")
        response = self._session.get(
            jwks_uri, timeout=self.issuer_timeout_seconds, allow_redirects=False, stream=True
        )
        with response:
            response.raise_for_status()
            return read_json(response, MAX_DOCUMENT_BYTES)

    # Other tokens: RFC 7662 introspection

    def introspect(self, token: str) -> VerifiedToken:
        """Ask the issuer's introspection endpoint, authenticated as this resource."""
        if self._client_auth is None:
            raise InvalidTokenError("token format is not recognised")  # no way to check it
        endpoint = self.metadata().get("introspection_endpoint")
        if not isinstance(endpoint, str):
            log.error("the issuer publishes no introspection_endpoint: opaque tokens are refused")
            raise IssuerUnavailableError("token introspection is misconfigured")
        try:
            response = self._session.post(
                endpoint,
                data={"token": token, "token_type_hint": "access_token"},
                auth=self._client_auth,
                timeout=self.issuer_timeout_seconds,
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as exc:
            log.warning("introspection endpoint unreachable (%s)", type(exc).__name__)
            raise IssuerUnavailableError("token issuer is unreachable") from None
        with response:
            return self._read_introspection(response, token)

    def _read_introspection(self, response: requests.Response, token: str) -> VerifiedToken:
        status = response.status_code
        if status in (400, 401, 403):
            log.error(
                "the introspection endpoint refused this receiver (HTTP %s): check "
                "OAUTH_CLIENT_ID / OAUTH_CLIENT_SECRET; opaque tokens cannot be verified",
                status,
            )
            raise IssuerUnavailableError("token verification is misconfigured")
        if status in (429, 503):  # RFC 6749 temporarily_unavailable: its Retry-After passed on
            seconds = retry_after_seconds(response.headers.get("Retry-After"))
            busy = "rate limiting" if status == 429 else "temporarily unavailable"
            raise IssuerUnavailableError(f"token issuer is {busy}", seconds)
        try:
            answer = read_json(response, MAX_ANSWER_BYTES) if status == 200 else None
        except (requests.RequestException, ValueError) as exc:
            log.warning("introspection answer unreadable (%s)", exc)
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("active"), bool):
            log.warning("introspection answered HTTP %s without an RFC 7662 answer", status)
            raise IssuerUnavailableError("token issuer answered unexpectedly")
        return self._check_introspection(answer, token)

    def _check_introspection(self, answer: dict[str, Any], token: str) -> VerifiedToken:
        """An active answer, re-checked: our issuer, our audience, not expired."""
        if answer["active"] is not True:
            raise InvalidTokenError("token is invalid, expired or revoked")
        if "iss" in answer and answer["iss"] != self._published_issuer():
            raise InvalidTokenError("token issuer is not trusted")
        if self.audience not in _strings(answer.get("aud"), "aud"):
            raise InvalidTokenError("token is not meant for this receiver")
        exp = answer.get("exp")
        if exp is not None and not _is_number(exp):
            raise IssuerUnavailableError("token issuer answered unexpectedly")
        if exp is not None and exp <= time.time():
            raise InvalidTokenError("token has expired")
        return _verified(answer, token, "opaque")

    # Discovery

    def metadata(self) -> Mapping[str, Any]:
        """The issuer's metadata (OpenID discovery, else RFC 8414), fetched once; after a
        failure, tried again at most once per cooldown. IssuerUnavailableError meanwhile."""
        with self._discovery_lock:
            if self._metadata is not None:
                return self._metadata
            now = time.monotonic()
            last = self._discovery_attempted_at
            if last is None or now - last >= self.discovery_cooldown_seconds:
                self._discovery_attempted_at = now
                self._metadata = self._discover()
            if self._metadata is None:
                raise IssuerUnavailableError("token issuer metadata is unavailable")
            return self._metadata

    def _discover(self) -> Mapping[str, Any] | None:
        for url in metadata_urls(self.issuer_url):
            try:
                metadata = self._fetch_metadata(url)
            except (requests.RequestException, ValueError) as exc:
                log.warning("discovery at %s failed (%s: %s)", url, type(exc).__name__, exc)
                continue
            if not isinstance(metadata, dict):
                continue
            if str(metadata.get("issuer", "")).rstrip("/") != self.issuer_url.rstrip("/"):
                log.error("the metadata at %s names another issuer: not used", url)
                continue
            refused = unsafe_endpoints(metadata, self.issuer_url)
            if refused:
                log.error(
                    "the metadata at %s names an unusable %s (an absolute URL is needed, "
                    "https when the issuer is): not used",
                    url,
                    " and ".join(refused),
                )
                continue
            return metadata
        log.error("no usable OpenID or RFC 8414 metadata for OAUTH_ISSUER_URL")
        return None

    def _fetch_metadata(self, url: str) -> Any:
        """The JSON document at `url` (None unless 200), read up to MAX_DOCUMENT_BYTES."""
        response = self._session.get(
            url, timeout=self.issuer_timeout_seconds, allow_redirects=False, stream=True
        )
        with response:
            return read_json(response, MAX_DOCUMENT_BYTES) if response.status_code == 200 else None

    def _published_issuer(self) -> str:
        """The `iss` tokens must carry: exactly what the metadata publishes."""
        return str(self.metadata()["issuer"])


def metadata_urls(issuer_url: str) -> list[str]:
    """`{issuer}/.well-known/openid-configuration` (OpenID Connect Discovery), then
    `{origin}/.well-known/oauth-authorization-server{path}` (RFC 8414)."""
    parts = urlsplit(issuer_url)
    path = parts.path.rstrip("/")
    origin = f"{parts.scheme}://{parts.netloc}"
    return [
        f"{origin}{path}/.well-known/openid-configuration",
        f"{origin}/.well-known/oauth-authorization-server{path}",
    ]


def unsafe_endpoints(metadata: Mapping[str, Any], issuer_url: str) -> list[str]:
    """The endpoint fields of `metadata` this receiver must not call: not an absolute URL, or
    on a scheme weaker than the issuer's (ENDPOINT_SCHEMES). Other hosts are allowed: metadata
    fetched from the issuer is authoritative (RFC 8414 section 3.3), and Google or Entra do serve
    their keys from another host."""
    allowed = ENDPOINT_SCHEMES.get(urlsplit(issuer_url).scheme.lower(), frozenset())
    return [
        field
        for field in ENDPOINT_FIELDS
        if field in metadata and not _is_url_on(metadata[field], allowed)
    ]


def _is_url_on(value: Any, schemes: frozenset[str]) -> bool:
    """Whether `value` is an absolute URL with a host on one of `schemes`."""
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        return parts.scheme.lower() in schemes and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False


def _verified(claims: Mapping[str, Any], token: str, token_format: str) -> VerifiedToken:
    """The VerifiedToken of checked claims (a JWT's payload or an introspection answer)."""
    machine = next(
        (claims[name] for name in ("client_id", "azp", "sub") if isinstance(claims.get(name), str)),
        None,
    )
    if not machine:
        raise InvalidTokenError("token names no client")
    jti = claims.get("jti")
    exp = claims.get("exp")
    return VerifiedToken(
        id=jti if isinstance(jti, str) and jti else token_id(token),
        machine_id=machine,
        scopes=_scopes(claims),
        claims={k: v for k, v in claims.items() if k not in STANDARD_CLAIMS},
        format=token_format,
        expiration=int(exp * 1000) if _is_number(exp) else None,
    )


def _scopes(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """`scope` (RFC 9068, RFC 7662: space-separated), `scp` (Okta: a list; Entra: a string)
    and `roles` (Entra's application permissions), in that order, without repeats."""
    found: list[str] = []
    for name in ("scope", "scp", "roles"):
        found += [s for s in _strings(claims.get(name), name) if s not in found]
    return tuple(found)


def _strings(value: Any, name: str) -> tuple[str, ...]:
    """A space-separated string or a list of strings as a tuple; None as ()."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise InvalidTokenError(f"token {name} claim is malformed")


def _is_number(value: Any) -> bool:
    """An int or a finite float, not a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def token_id(token: str) -> str:
    """A name for a token without a `jti` that gives nothing away: the start of its SHA-256
    (the caller names the tokens it gets from an OAuth server the same way)."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]
