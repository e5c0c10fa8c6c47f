"""`GET /send` (token, then POST to the receiver) and `GET /healthz`; every failure is a JSON
answer that names the dependency that failed, never a traceback."""

from __future__ import annotations

import requests
from flask import Blueprint, current_app, jsonify, request

from caller_app.errors import json_error
from caller_app.token_client import (
    TOKEN_FORMATS,
    IssuerRequestRejected,
    IssuerUnavailable,
    M2MTokenClient,
    MachineSecretKeyRejected,
)
from caller_app.www_authenticate import parse_bearer_challenge

bp = Blueprint("send", __name__)

MESSAGE = {"message": "Hello from the caller"}
DEFAULT_RETRY_AFTER = 5  # seconds, when the dependency gave no usable Retry-After
MAX_RETRY_AFTER = 60  # seconds: never tell our own clients to wait longer than this


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers. Dependencies are reported by /send, not here."""
    return jsonify(status="ok")


@bp.get("/send")
def send():
    """Get a token (reused while fresh) and POST the message to the receiver's /receive."""
    settings = current_app.extensions["caller_settings"]
    client: M2MTokenClient = current_app.extensions["m2m_token_client"]
    token_format = request.args.get("format") or settings.token_format
    if token_format not in TOKEN_FORMATS:
        return json_error(400, "invalid_format", "format must be opaque or jwt", dependency=None)
    url = f"{settings.receiver_url}/receive"
    try:
        result = client.request("POST", url, token_format=token_format, json=MESSAGE)
    except IssuerUnavailable as exc:
        response = json_error(
            503, "issuer_unavailable", f"no M2M token: {exc}", dependency="issuer"
        )
        response.headers["Retry-After"] = _retry_after_header(exc.retry_after)
        return response
    except MachineSecretKeyRejected as exc:
        return json_error(502, "machine_secret_key_rejected", str(exc), dependency="issuer")
    except IssuerRequestRejected as exc:
        return json_error(502, "issuer_rejected_request", str(exc), dependency="issuer",
                      issuer_status=exc.status, issuer_code=exc.code)  # fmt: skip
    except requests.Timeout:
        return json_error(502, "receiver_unreachable", f"the receiver at {url} timed out",
                      dependency="receiver")  # fmt: skip
    except requests.RequestException as exc:
        return json_error(502, "receiver_unreachable",
                      f"the receiver at {url} is unreachable ({type(exc).__name__})",
                      dependency="receiver")  # fmt: skip
    return _receiver_answer(result, url)


def _receiver_answer(result, url: str):
    """Pass on the receiver's reply with the token used, or a clear JSON 502."""
    response, token = result.response, result.token
    used = {"format": token.format, "id": token.id}
    if response.status_code in (401, 403):
        challenge = parse_bearer_challenge(response.headers.get("WWW-Authenticate", ""))
        reason = challenge.get("error_description") or challenge.get("error") or "no reason given"
        return json_error(
            502, "receiver_rejected_token",
            f"the receiver answered {response.status_code}: {reason}"
            + (" (also to a freshly created token)" if result.retried_after_401 else ""),
            dependency="receiver", receiver_status=response.status_code,
            receiver_error=challenge.get("error"),
            receiver_error_description=challenge.get("error_description"),
            token=used, retried_after_401=result.retried_after_401,
        )  # fmt: skip
    if response.status_code == 503:
        return _receiver_unavailable(response, url)
    if response.status_code >= 500:
        said = _error_description(response)
        return json_error(502, "receiver_error", f"the receiver at {url} answered "
                      f"{response.status_code}" + (f": {said}" if said else ""),
                      dependency="receiver", receiver_status=response.status_code,
                      receiver_error_description=said)  # fmt: skip
    try:
        body = response.json()
    except ValueError:
        body = None
    if not response.ok or body is None:
        return json_error(502, "receiver_bad_answer", f"the receiver at {url} answered "
                      f"{response.status_code} without the expected JSON", dependency="receiver",
                      receiver_status=response.status_code)  # fmt: skip
    return jsonify(receiver=body, token=used, retried_after_401=result.retried_after_401)


def _receiver_unavailable(response, url: str):
    """The receiver cannot serve right now (e.g. it cannot reach the issuer to verify an opaque
    token): a 503 naming it, with its Retry-After passed on (bounded)."""
    said = _error_description(response)
    answer = json_error(
        503,
        "receiver_unavailable",
        f"the receiver at {url} is unavailable" + (f": {said}" if said else ""),
        dependency="receiver",
        receiver_status=503,
        receiver_error_description=said,
    )
    retry_after = response.headers.get("Retry-After", "").strip()
    answer.headers["Retry-After"] = _retry_after_header(
        int(retry_after) if retry_after.isdigit() else None
    )
    return answer


def _retry_after_header(seconds: float | None) -> str:
    """A dependency's Retry-After for our own answer: the default when it gave none, else
    rounded into 1..MAX_RETRY_AFTER seconds."""
    if seconds is None:
        return str(DEFAULT_RETRY_AFTER)
    return str(min(MAX_RETRY_AFTER, max(1, round(seconds))))


def _error_description(response) -> str | None:
    """The `error_description` (or `error`) of a JSON error body, if the receiver sent one."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    said = body.get("error_description") or body.get("error")
    return str(said)[:200] if said else None
