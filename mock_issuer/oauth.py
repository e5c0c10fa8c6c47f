"""OAuth 2.0 authorization server for machines (ours, beyond Clerk's M2M API): the token
endpoint with the client-credentials grant (RFC 6749 §4.4, resource indicators RFC 8707),
introspection (RFC 7662), revocation (RFC 7009) and metadata (RFC 8414, OpenID discovery).

Routes parse the request and call `oauth_tokens`; every error is an RFC 6749 §5.2 answer.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response

from . import db, oauth_clients
from .config import current_settings
from .db import get_conn
from .oauth_errors import OAuthError, invalid_request, json_answer, register_error_handlers
from .oauth_requests import AUTH_METHODS, authenticate_client, read_form
from .oauth_tokens import TOKEN_FORMATS, init_storage, introspect, issue
from .oauth_tokens import revoke as revoke_token

TOKEN_PATH = "/oauth/token"  # noqa: S105 (a route, not a secret)
INTROSPECTION_PATH = "/oauth/introspect"
REVOCATION_PATH = "/oauth/revoke"
JWKS_PATH = "/.well-known/jwks.json"
METADATA_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")
GRANT_TYPE = "client_credentials"

bp = Blueprint("oauth", __name__)
register_error_handlers(bp)


def _issuer_url() -> str:
    """The issuer identifier: `MOCK_ISSUER_URL`, the `iss` of every JWT (never the Host)."""
    return current_settings().mock_issuer_url


@bp.post(TOKEN_PATH)
def token() -> Response:
    """Client credentials grant: an access token for the authenticated machine."""
    form = read_form()
    client = authenticate_client(form)
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise invalid_request("grant_type is required")
    if grant_type != GRANT_TYPE:
        raise OAuthError("unsupported_grant_type", f"only {GRANT_TYPE} is supported")
    token_format = form.get("token_format")  # ours; else the machine's setting
    if token_format is not None and token_format not in TOKEN_FORMATS:
        raise invalid_request("token_format must be jwt or opaque")
    resources = form.get_all("resource")
    if form.get("audience"):
        resources.append(form.get("audience") or "")
    if any(not r for r in resources):
        raise OAuthError("invalid_target", "resource must not be empty")
    scope = (form.get("scope") or "").split() or None
    issued = issue(
        get_conn(),
        client.client_id,
        resources=resources,
        scope=scope,
        token_format=token_format or oauth_clients.token_format(get_conn(), client.client_id),
        issuer_url=_issuer_url(),
    )
    return json_answer(
        {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": issued.scope,
        }
    )


def _token_param() -> tuple[str, str]:
    """(client id, token) of an introspection or revocation request."""
    form = read_form()
    client = authenticate_client(form)
    value = form.get("token")
    if value is None:
        raise invalid_request("token is required")
    return client.client_id, value


@bp.post(INTROSPECTION_PATH)
def introspection() -> Response:
    """RFC 7662: the asking machine is the resource; it learns only about tokens meant for it."""
    client_id, value = _token_param()
    answer = introspect(get_conn(), value, resource_id=client_id, issuer_url=_issuer_url())
    return json_answer(answer)


@bp.post(REVOCATION_PATH)
def revocation() -> Response:
    """RFC 7009: a client revokes its own token; unknown tokens answer 200 as well."""
    client_id, value = _token_param()
    revoke_token(get_conn(), value, client_id=client_id, issuer_url=_issuer_url())
    return json_answer({})


@bp.route(TOKEN_PATH, methods=["GET", "PUT", "PATCH", "DELETE"])
@bp.route(INTROSPECTION_PATH, methods=["GET", "PUT", "PATCH", "DELETE"])
@bp.route(REVOCATION_PATH, methods=["GET", "PUT", "PATCH", "DELETE"])
def wrong_method() -> Response:
    """These endpoints take POST alone (RFC 6749 §3.2): say so as an OAuth error."""
    err = invalid_request("use POST", status=405)
    err.headers["Allow"] = "POST"
    raise err


def metadata(issuer: str) -> dict[str, Any]:
    """RFC 8414 authorization server metadata; `issuer` is the `iss` of every JWT. No
    authorization endpoint, so no response types."""
    auth_methods = list(AUTH_METHODS)
    return {
        "issuer": issuer,
        "token_endpoint": issuer + TOKEN_PATH,
        "jwks_uri": issuer + JWKS_PATH,
        "introspection_endpoint": issuer + INTROSPECTION_PATH,
        "revocation_endpoint": issuer + REVOCATION_PATH,
        "grant_types_supported": [GRANT_TYPE],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "subject_types_supported": ["public"],
    }


@bp.get(METADATA_PATHS[0])
@bp.get(METADATA_PATHS[1])
def server_metadata() -> Response:
    """The same document at both addresses: OAuth clients read RFC 8414's, and many resource
    server libraries find `jwks_uri` through OpenID discovery."""
    resp = json_answer(metadata(_issuer_url()))
    resp.headers["Cache-Control"] = "public, max-age=60"
    del resp.headers["Pragma"]
    return resp


def init_app(app: Flask) -> None:
    """Create the OAuth tables (the JWT deny list) and register the routes."""
    init_storage(db.connect(app.extensions["settings"].mock_issuer_db))
    app.register_blueprint(bp)
