"""`GET /send` (token, then POST to the receiver) and `GET /healthz`; every failure is a JSON
answer that names the dependency that failed, never a traceback."""

from __future__ import annotations

from urllib.parse import urlsplit

import requests
from flask import Blueprint, current_app, jsonify, request

from .errors import json_error
from .token_client import (
    TOKEN_FORMATS,
    AuthorizedResponse,
    IssuerRequestRejected,
    IssuerUnavailable,
    M2MTokenClient,
    MachineSecretKeyRejected,
    retry_after_seconds,
)
from .www_authenticate import parse_bearer_challenge

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
    settings = current_app.extensions["settings"]
    client: M2MTokenClient = current_app.extensions["m2m_token_client"]
    token_format = request.args.get("format") or settings.m2m_token_format
    if token_format not in TOKEN_FORMATS:
        return json_error(400, "invalid_format", "format must be opaque or jwt", dependency=None)
    url = f"{settings.receiver_url}/receive"
    shown = _without_credentials(url)  # the URL as errors and logs may show it
    try:
        result = client.request("POST", url, token_format=token_format, json=MESSAGE)
    except IssuerUnavailable as exc:
        answer = json_error(503, "issuer_unavailable", f"no M2M token: {exc}", dependency="issuer")
        answer.headers["Retry-After"] = _retry_after_header(exc.retry_after)
        return answer
    except MachineSecretKeyRejected as exc:
        return json_error(502, "machine_secret_key_rejected", str(exc), dependency="issuer")
    except IssuerRequestRejected as exc:
        return json_error(
            502,
            "issuer_rejected_request",
            str(exc),
            dependency="issuer",
            issuer_status=exc.status,
            issuer_code=exc.code,
        )
    except requests.RequestException as exc:
        what = "timed out" if isinstance(exc, requests.Timeout) else "is unreachable"
        message = f"the receiver at {shown} {what} ({type(exc).__name__})"
        return json_error(502, "receiver_unreachable", message, dependency="receiver")
    return _receiver_answer(result, shown)


def _without_credentials(url: str) -> str:
    """`url` without any user:password@ part, which must never reach an answer or a log."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _receiver_answer(result: AuthorizedResponse, url: str):
    """Pass on the receiver's reply with the token used, or a JSON error naming the receiver."""
    response = result.response
    if response.status_code in (401, 403):
        return _receiver_rejected_token(result)
    if response.status_code == 503:
        return _receiver_unavailable(response, url)
    if response.status_code >= 500:
        return _receiver_error(response, url)
    body = _json_or_none(response)
    if not response.ok or body is None:
        message = f"the receiver at {url} answered {response.status_code} without the expected JSON"
        return json_error(
            502,
            "receiver_bad_answer",
            message,
            dependency="receiver",
            receiver_status=response.status_code,
        )
    token = {"format": result.token.format, "id": result.token.id}
    return jsonify(receiver=body, token=token, retried_after_401=result.retried_after_401)


def _receiver_rejected_token(result: AuthorizedResponse):
    """A 401 (also to a fresh token: the client already retried once) or a 403: a 502 with
    the `error` and `error_description` of the receiver's WWW-Authenticate challenge."""
    status = result.response.status_code
    challenge = parse_bearer_challenge(result.response.headers.get("WWW-Authenticate", ""))
    reason = challenge.get("error_description") or challenge.get("error") or "no reason given"
    message = f"the receiver answered {status}: {reason}"
    if result.retried_after_401:
        message += " (also to a freshly created token)"
    return json_error(
        502,
        "receiver_rejected_token",
        message,
        dependency="receiver",
        receiver_status=status,
        receiver_error=challenge.get("error"),
        receiver_error_description=challenge.get("error_description"),
        token={"format": result.token.format, "id": result.token.id},
        retried_after_401=result.retried_after_401,
    )


def _receiver_unavailable(response: requests.Response, url: str):
    """The receiver cannot serve right now (e.g. it cannot reach the issuer to verify an opaque
    token): a 503 naming it, with its Retry-After passed on (bounded)."""
    said = _error_description(response)
    message = f"the receiver at {url} is unavailable" + (f": {said}" if said else "")
    answer = json_error(
        503,
        "receiver_unavailable",
        message,
        dependency="receiver",
        receiver_status=503,
        receiver_error_description=said,
    )
    seconds = retry_after_seconds(response.headers.get("Retry-After"))
    answer.headers["Retry-After"] = _retry_after_header(seconds)
    return answer


def _receiver_error(response: requests.Response, url: str):
    """Another 5xx: a 502, not retried (the POST may have had effects)."""
    said = _error_description(response)
    message = f"the receiver at {url} answered {response.status_code}"
    message += f": {said}" if said else ""
    return json_error(
        502,
        "receiver_error",
        message,
        dependency="receiver",
        receiver_status=response.status_code,
        receiver_error_description=said,
    )


def _retry_after_header(seconds: float | None) -> str:
    """A dependency's Retry-After for our own answer: the default when it gave none, else
    rounded into 1..MAX_RETRY_AFTER seconds."""
    if seconds is None:
        return str(DEFAULT_RETRY_AFTER)
    return str(min(MAX_RETRY_AFTER, max(1, round(seconds))))


def _error_description(response: requests.Response) -> str | None:
    """The `error_description` (or `error`) of a JSON error body, if the receiver sent one."""
    body = _json_or_none(response)
    if not isinstance(body, dict):
        return None
    said = body.get("error_description") or body.get("error")
    return str(said)[:200] if said else None


def _json_or_none(response: requests.Response):
    try:
        return response.json()
    except ValueError:
        return None
