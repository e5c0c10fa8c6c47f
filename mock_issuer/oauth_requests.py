"""Reading OAuth 2.0 requests: the form body (RFC 6749 §3.2) and client authentication by
`client_secret_basic` or `client_secret_post` (§2.3.1), where the client is a machine (client id
= machine id, client secret = its machine secret key)."""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

from flask import request
from werkzeug.datastructures import MultiDict

from . import machines
from .auth import MAX_KEY_LENGTH
from .db import get_conn
from .oauth_errors import invalid_client, invalid_request

FORM_TYPE = "application/x-www-form-urlencoded"
REPEATABLE = frozenset({"resource"})  # RFC 8707 §2: the one parameter that may repeat
# Parameters an error may name; any other name is client input (maybe a misplaced secret).
_CREDENTIAL_FIELDS = ("client_secret", "client_id")
KNOWN_PARAMETERS = frozenset(
    {"grant_type", "scope", "resource", "audience", "token_format", "token", "token_type_hint"}
    | set(_CREDENTIAL_FIELDS)
)
AUTH_METHODS = ("client_secret_basic", "client_secret_post")
MAX_CLIENT_ID_LENGTH = 64


@dataclass(frozen=True)
class OAuthForm:
    """The request's parameters: each at most once, except those in REPEATABLE."""

    params: MultiDict = field(repr=False)

    def get(self, name: str) -> str | None:
        """The parameter's value; absent and empty both mean not sent (RFC 6749 §3.1)."""
        return self.params.get(name) or None

    def get_all(self, name: str) -> list[str]:
        return self.params.getlist(name)

    def __contains__(self, name: str) -> bool:
        return name in self.params


def read_form() -> OAuthForm:
    """The form body; credentials in the URL, repeated parameters or another body type are
    `invalid_request`."""
    for name in _CREDENTIAL_FIELDS:
        if name in request.args:
            raise invalid_request(f"{name} must be sent in the body, never in the URL")
    if request.content_length and request.mimetype != FORM_TYPE:
        raise invalid_request(f"the body must be {FORM_TYPE}")
    params = request.form if request.mimetype == FORM_TYPE else MultiDict()
    for name, values in params.lists():
        if len(values) > 1 and name not in REPEATABLE:
            shown = name if name in KNOWN_PARAMETERS else "(a parameter we do not use)"
            raise invalid_request(f"the parameter {shown} is repeated")
    return OAuthForm(params)


@dataclass(frozen=True)
class Client:
    """An authenticated client: the machine, and which method proved it."""

    client_id: str
    method: str


def _basic_credentials(header: str) -> tuple[str, str]:
    """(client id, secret) from `Authorization: Basic ...`: base64 of the form-encoded id and
    secret joined by a colon (RFC 6749 §2.3.1)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise invalid_client("the Authorization header must use the Basic scheme")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # bad base64 (binascii.Error), non-ASCII input, or not UTF-8
        raise invalid_client("the Basic credentials are not valid base64 of id:secret") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise invalid_client("the Basic credentials are not valid base64 of id:secret")
    return unquote_plus(client_id), unquote_plus(secret)


def authenticate_client(form: OAuthForm) -> Client:
    """The machine that authenticated with exactly one method; `invalid_client` (401) when the
    id and secret do not belong together, `invalid_request` when two methods are used."""
    header = request.headers.get("Authorization")
    if header is not None and "client_secret" in form:
        raise invalid_request("use one client authentication method, not both")
    if header is not None:
        client_id, secret = _basic_credentials(header)
        posted_id = form.get("client_id")
        if posted_id is not None and posted_id != client_id:
            raise invalid_request("client_id in the body differs from the Basic credentials")
        method = "client_secret_basic"
    elif "client_secret" in form:
        client_id, secret = form.get("client_id") or "", form.get("client_secret") or ""
        if not client_id:
            raise invalid_request("client_id is required with client_secret")
        method = "client_secret_post"
    else:
        raise invalid_client(
            "client authentication is required: client_secret_basic or client_secret_post"
        )
    if not _credentials_match(client_id, secret):
        raise invalid_client("client authentication failed")
    return Client(client_id, method)


def _credentials_match(client_id: str, secret: str) -> bool:
    """True when `secret` is a live key of machine `client_id`: one lookup by the key's hash,
    then a constant-time comparison of the ids."""
    if not secret.startswith("ak_") or len(secret) > MAX_KEY_LENGTH:
        return False
    if len(client_id) > MAX_CLIENT_ID_LENGTH:
        return False
    owner = machines.machine_id_for_key(get_conn(), secret)
    return owner is not None and hmac.compare_digest(
        owner.encode("utf-8"), client_id.encode("utf-8", "replace")
    )
