"""Tokens from any OAuth 2.0 authorization server by the client-credentials grant (RFC 6749
section 4.4), for `M2MTokenClient(minter=...)`: reuse, single flight and retries stay there.

The protocol is Authlib's (`OAuth2Session.fetch_token`: client authentication, form encoding,
the token response); this module finds the token endpoint (OpenID discovery or RFC 8414
metadata, or a configured URL) and turns answers into the token client's errors. Copy it
next to `token_client.py`; it needs `authlib` and `requests`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6749 import OAuth2Token
from requests.adapters import HTTPAdapter

from .token_client import (
    IssuedToken,
    IssuerBusy,
    IssuerRequestRejected,
    IssuerUnavailable,
    MachineSecretKeyRejected,
    bearer_token_shape,
    raise_if_busy,
)

log = logging.getLogger(__name__)

# What we can authenticate with at the token endpoint, best first (RFC 8414 default: basic).
AUTH_METHODS = ("client_secret_basic", "client_secret_post")
_JWS_SHAPE_DOTS = 2  # header.payload.signature: reported as format "jwt"


class OAuthClientCredentialsMinter:
    """Mints access tokens for one client (id and secret) and one target (audience, resource
    and/or scope). Give `issuer_url` (the token endpoint is discovered) or `token_url`."""

    honours_format = False  # the server decides format and lifetime

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        issuer_url: str | None = None,
        token_url: str | None = None,
        audience: str | None = None,
        resource: str | None = None,
        scope: str | None = None,
        timeout: float | tuple[float, float] = (3.05, 10.0),
        session: OAuth2Session | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if (issuer_url is None) == (token_url is None):
            raise ValueError("give either issuer_url (discovery) or token_url")
        self.issuer_url = issuer_url
        self.token_url = token_url
        self.params = {
            name: value
            for name, value in (("audience", audience), ("resource", resource), ("scope", scope))
            if value
        }
        self.timeout = timeout
        self._wall_clock = wall_clock
        self._session = session or _pooled_oauth_session(client_id, client_secret)
        self._session.register_compliance_hook("access_token_response", self._check_status)
        self._auth_method = AUTH_METHODS[0]
        self._lock = threading.Lock()  # discovery runs once, not once per waiting thread

    def __repr__(self) -> str:  # never show the secret
        where = self.issuer_url or self.token_url
        return f"OAuthClientCredentialsMinter({where!r}, {self._session.client_id!r})"

    def mint(self, token_format: str, ttl_seconds: int | None) -> IssuedToken:
        """One token request: format and lifetime are the server's choice, so both are ignored."""
        url = self._token_endpoint()
        asked_at = self._wall_clock()
        try:
            token = self._session.fetch_token(
                url,
                grant_type="client_credentials",
                auth=self._session.client_auth(self._auth_method),
                timeout=self.timeout,
                allow_redirects=False,
                **self.params,
            )
        except requests.RequestException as exc:
            raise IssuerBusy(f"the token endpoint is unreachable ({type(exc).__name__})") from None
        except OAuthError as exc:  # Authlib: a 200 whose body holds an `error`
            raise IssuerRequestRejected(
                "the authorization server refused the token request", 200, exc.error
            ) from None
        except ValueError:  # Authlib: a 200 whose body is not a JSON object
            raise IssuerUnavailable("the token endpoint answered 200 without a token") from None
        return _issued(token, asked_at)

    # -- the token endpoint -----------------------------------------------------------------

    def _token_endpoint(self) -> str:
        """The configured token URL, or the one the issuer's metadata names (found once)."""
        with self._lock:
            if self.token_url is None:
                assert self.issuer_url is not None
                get = functools.partial(self._session.get, withhold_token=True)
                metadata = discover(get, self.issuer_url, self.timeout)
                self._auth_method = _auth_method(metadata)
                self.token_url = metadata["token_endpoint"]
            return self.token_url

    def _check_status(self, response: requests.Response) -> requests.Response:
        """Authlib's hook on every token response: anything but a 200 becomes our error."""
        if response.status_code == 200:
            return response
        raise_if_busy(response, self._wall_clock)
        error, description = _oauth_error(response)
        if response.status_code == 401 or error == "invalid_client":
            raise MachineSecretKeyRejected(
                "the authorization server rejected this client's credentials (OAUTH_CLIENT_ID / "
                f"OAUTH_CLIENT_SECRET): {error or 'no error code'}"
            )
        said = f"{error}: {description}" if description else error or "no error code"
        raise IssuerRequestRejected(
            f"the authorization server refused the token request ({said})",
            response.status_code,
            error,
        )


def discover(
    get: Callable[..., requests.Response],
    issuer_url: str,
    timeout: float | tuple[float, float],
) -> Mapping[str, Any]:
    """The issuer's metadata (fetched with `get`, e.g. `requests.get`): OpenID discovery, else
    RFC 8414; its `issuer` must be ours. Network errors and 5xx are IssuerBusy (retried); no
    usable document is a rejection."""
    for url in metadata_urls(issuer_url):
        try:
            response = get(url, timeout=timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise IssuerBusy(f"discovery at the issuer failed ({type(exc).__name__})") from None
        raise_if_busy(response)
        metadata = _json_object(response) if response.status_code == 200 else None
        if metadata is None:
            continue
        if str(metadata.get("issuer", "")).rstrip("/") != issuer_url.rstrip("/"):
            raise IssuerRequestRejected(
                "the issuer's metadata names another issuer (check OAUTH_ISSUER_URL)", 200, None
            )
        if not isinstance(metadata.get("token_endpoint"), str):
            raise IssuerRequestRejected("the issuer's metadata has no token_endpoint", 200, None)
        return metadata
    raise IssuerRequestRejected(
        "no OpenID or RFC 8414 metadata found at OAUTH_ISSUER_URL", 404, "discovery_failed"
    )


def metadata_urls(issuer_url: str) -> list[str]:
    """Where metadata may be: `{issuer}/.well-known/openid-configuration` (OpenID Connect
    Discovery), then `{origin}/.well-known/oauth-authorization-server{path}` (RFC 8414)."""
    parts = urlsplit(issuer_url)
    path = parts.path.rstrip("/")
    origin = f"{parts.scheme}://{parts.netloc}"
    return [
        f"{origin}{path}/.well-known/openid-configuration",
        f"{origin}/.well-known/oauth-authorization-server{path}",
    ]


def _auth_method(metadata: Mapping[str, Any]) -> str:
    """The first of AUTH_METHODS the server supports (RFC 8414: basic when not listed)."""
    supported = metadata.get("token_endpoint_auth_methods_supported") or [AUTH_METHODS[0]]
    for method in AUTH_METHODS:
        if method in supported:
            return method
    raise IssuerRequestRejected(
        "the authorization server accepts neither client_secret_basic nor client_secret_post",
        200,
        None,
    )


def _issued(token: OAuth2Token, asked_at: float) -> IssuedToken:
    """The token response checked (RFC 6749 section 5.1): a Bearer access token usable as a
    header value, and `expires_in` a finite number when given (counted from when we asked)."""
    secret = token.get("access_token")
    token_type = str(token.get("token_type", "")).lower()
    expires_in = token.get("expires_in")
    bad = []
    if not (isinstance(secret, str) and bearer_token_shape(secret)):
        bad.append("access_token")
    if token_type != "bearer":  # noqa: S105 (a token type name, not a secret)
        bad.append("token_type")
    if expires_in is not None and not (
        isinstance(expires_in, int | float)
        and not isinstance(expires_in, bool)
        and math.isfinite(expires_in)
        and expires_in > 0  # already expired: the server is broken, not the token short-lived
    ):
        bad.append("expires_in")
    if bad:
        raise IssuerUnavailable(f"the token endpoint answered with a bad {', '.join(bad)}")
    expiration = None if expires_in is None else (asked_at + expires_in) * 1000
    token_format = "jwt" if secret.count(".") == _JWS_SHAPE_DOTS else "opaque"
    return IssuedToken(secret, token_id(secret), token_format, expiration, asked_at * 1000)


def token_id(secret: str) -> str:
    """A name for logs and answers that gives nothing away: the start of the token's SHA-256
    (the receiver names an opaque token the same way)."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


def _oauth_error(response: requests.Response) -> tuple[str | None, str | None]:
    """`error` and `error_description` of an RFC 6749 section 5.2 answer, if it is one."""
    body = _json_object(response) or {}
    error, description = body.get("error"), body.get("error_description")
    return (
        error if isinstance(error, str) else None,
        description[:200] if isinstance(description, str) else None,
    )


def _json_object(response: requests.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _pooled_oauth_session(client_id: str, client_secret: str) -> OAuth2Session:
    """Authlib's session (a requests.Session) with keep-alive connections and no retries."""
    session = OAuth2Session(client_id, client_secret)
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=10, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
