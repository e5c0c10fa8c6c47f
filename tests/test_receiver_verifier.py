"""The receiver's verifier through its Flask app (test client), against a fake issuer served
from a thread: the forged-JWT matrix, opaque verification and its failure modes, RFC 6750 answers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import receiver_app
from receiver_app.config import ENV_VARS
from receiver_app.verifier import MAX_ANSWER_BYTES, MAX_DOCUMENT_BYTES
from tests.harness import free_port

RECEIVER_ID = "mch_unitreceiver000000000000000"
RECEIVER_KEY = "ak_unitreceiver" + "4" * 30
CALLER_ID = "mch_unitcaller00000000000000000"
OTHER_ID = "mch_unitother0000000000000000000"
KID = "ins_unittest"
CAT = "cl_B7d4PD333AAA"
REALM = 'Bearer realm="receiver"'

SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
FOREIGN_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = (
    SIGNING_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def jwk_of(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


class FakeIssuer:
    """Serves a JWKS and /m2m_tokens/verify on 127.0.0.1, with switchable failures."""

    def __init__(self) -> None:
        self.reset()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # clients that timed out
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        self.jwks: dict[str, Any] = {"keys": [jwk_of(SIGNING_KEY, KID)]}
        self.jwks_status = 200
        self.jwks_fetches = 0
        self.tokens: dict[str, dict[str, Any]] = {}
        self.verify_status: int | None = None  # force this status on /m2m_tokens/verify
        self.verify_body: bytes | None = None  # force this body on a 200
        self.verify_delay = 0.0
        self.verify_headers: dict[str, str] = {}
        self.verify_calls: list[dict[str, Any]] = []

    def add_opaque(self, token: str, **fields: Any) -> dict[str, Any]:
        now_ms = int(time.time() * 1000)
        obj = {
            "object": "machine_to_machine_token",
            "id": "mt_" + token[-32:].rjust(32, "0"),
            "subject": CALLER_ID,
            "claims": {"role": "demo"},
            "scopes": [RECEIVER_ID],
            "revoked": False,
            "revocation_reason": None,
            "expired": False,
            "expiration": now_ms + 3_600_000,
            "last_used_at": None,
            "created_at": now_ms,
            "updated_at": now_ms,
        }
        obj.update(fields)
        self.tokens[token] = obj
        return obj

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != "/.well-known/jwks.json":
                    return self._answer(404, b"{}")
                issuer.jwks_fetches += 1
                self._answer(issuer.jwks_status, json.dumps(issuer.jwks).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                issuer.verify_calls.append(
                    {
                        "auth": self.headers["Authorization"],
                        "body": body,
                        "client": self.client_address,
                    }
                )
                time.sleep(issuer.verify_delay)
                if issuer.verify_status is not None:
                    return self._answer(issuer.verify_status, b"{}", issuer.verify_headers)
                if issuer.verify_body is not None:
                    return self._answer(200, issuer.verify_body)
                obj = issuer.tokens.get(body.get("token"))
                if obj is None or self.headers["Authorization"] != f"Bearer {RECEIVER_KEY}":
                    return self._answer(404, b'{"errors":[{"code":"resource_not_found"}]}')
                self._answer(200, json.dumps(obj).encode())

        return Handler


ISSUER = {"url": ""}  # the fake issuer's URL, the `iss` of the JWTs forged here


@pytest.fixture(scope="module")
def fake_issuer() -> Iterator[FakeIssuer]:
    issuer = FakeIssuer()
    ISSUER["url"] = issuer.url
    yield issuer
    issuer.server.shutdown()
    issuer.server.server_close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, fake_issuer) -> None:
    """No developer configuration leaks in; the fake issuer starts each test fresh."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("M2M_SKIP_DOTENV", "1")
    fake_issuer.reset()


@pytest.fixture
def make_client(fake_issuer):
    def _make(tunables: dict[str, Any] | None = None, **settings: str):
        """A test client of the app with these variables; `tunables` override the verifier's
        constructor defaults (leeway, issuer timeout...)."""
        config = {
            "CLERK_API_URL": fake_issuer.url,
            "CLERK_MACHINE_SECRET_KEY": RECEIVER_KEY,
            "CLERK_MACHINE_ID": RECEIVER_ID,
            **settings,
        }
        app = receiver_app.create_app(config)
        if tunables:
            verifier = receiver_app.build_verifier(app.extensions["settings"], **tunables)
            app.extensions["m2m_verifier"] = verifier
        app.testing = True
        return app.test_client()

    return _make


@pytest.fixture
def client(make_client):
    return make_client()


OPAQUE_FORM = "mt_" + "e" * 64  # a token sent as an access_token parameter


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER["url"],
        "sub": CALLER_ID,
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": "mt_" + "a" * 32,
        "scopes": RECEIVER_ID,
        "aud": [RECEIVER_ID],
        "role": "demo",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def make_jwt(
    key: rsa.RSAPrivateKey = SIGNING_KEY,
    kid: str | None = KID,
    cat: str | None = CAT,
    **claim_overrides: Any,
) -> str:
    headers = {"typ": "JWT"}
    if kid is not None:
        headers["kid"] = kid
    if cat is not None:
        headers["cat"] = cat
    return jwt.encode(claims(**claim_overrides), key, algorithm="RS256", headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_public_key() -> str:
    """The classic algorithm-confusion forgery: HMAC keyed with the RSA public key."""
    header = b64(json.dumps({"alg": "HS256", "kid": KID, "typ": "JWT", "cat": CAT}).encode())
    payload = b64(json.dumps(claims()).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(PUBLIC_PEM.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def alg_none(with_signature: bool) -> str:
    header = b64(json.dumps({"alg": "none", "kid": KID, "typ": "JWT", "cat": CAT}).encode())
    payload = b64(json.dumps(claims()).encode())
    return f"{header}.{payload}." + (b64(b"forged") if with_signature else "")


def tampered_payload() -> str:
    header, _, signature = make_jwt().split(".")
    payload = b64(json.dumps(claims(sub=OTHER_ID)).encode())
    return f"{header}.{payload}.{signature}"


def tampered_signature() -> str:
    header, payload, signature = make_jwt().split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{header}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"


def invalid(description: str) -> str:
    """The exact WWW-Authenticate of a 401 invalid_token answer."""
    return f'{REALM}, error="invalid_token", error_description="{description}"'


def now() -> int:
    return int(time.time())


# name: (how to forge the token, the exact error_description of its 401 answer)
FORGED = {
    "alg_none_unsigned": (lambda: alg_none(False), "token format is not recognised"),
    "alg_none_with_signature": (lambda: alg_none(True), "token algorithm is not allowed"),
    "hs256_signed_with_public_key": (hs256_with_public_key, "token algorithm is not allowed"),
    "unknown_kid": (lambda: make_jwt(kid="ins_unknown"), "token signing key is unknown"),
    "no_kid": (lambda: make_jwt(kid=None), "token signing key is unknown"),
    "key_not_in_jwks": (lambda: make_jwt(key=FOREIGN_KEY), "token signature is invalid"),
    "tampered_payload": (tampered_payload, "token signature is invalid"),
    "tampered_signature": (tampered_signature, "token signature is invalid"),
    "expired": (lambda: make_jwt(exp=now() - 60), "token has expired"),
    "nbf_in_future": (lambda: make_jwt(nbf=now() + 60), "token is not valid yet"),
    "iat_far_in_future": (lambda: make_jwt(iat=now() + 3600), "token is not valid yet"),
    "wrong_iss": (lambda: make_jwt(iss="https://evil.example"), "token issuer is not trusted"),
    "missing_iss": (lambda: make_jwt(iss=None), "token lacks the iss claim"),
    "missing_jti": (lambda: make_jwt(jti=None), "token lacks the jti claim"),
    "missing_exp": (lambda: make_jwt(exp=None), "token lacks the exp claim"),
    "sub_not_a_machine": (lambda: make_jwt(sub="user_2abc"), "token subject is not a machine"),
    "wrong_cat": (lambda: make_jwt(cat="cl_SessionToken"), "token is not an M2M token"),
    "receiver_not_in_aud_or_scopes": (
        lambda: make_jwt(aud=[OTHER_ID], scopes=OTHER_ID),
        "token is not meant for this receiver",
    ),
    "no_audience_at_all": (lambda: make_jwt(aud=None, scopes=None), "token names no audience"),
    "malformed_aud": (lambda: make_jwt(aud=42), "token aud claim is malformed"),
    "oversize": (lambda: make_jwt(padding="x" * 9000), "token is too long"),
    "not_a_token_shape": (lambda: "hello-world", "token format is not recognised"),
    "opaque_prefix_with_garbage": (lambda: "mt_abc.def~", "token format is not recognised"),
    "header_not_json": (lambda: "e3.e30.e30", "token is malformed"),
}


@pytest.mark.parametrize("forge,description", FORGED.values(), ids=FORGED.keys())
def test_forged_jwt_is_rejected_with_exact_answer(client, fake_issuer, forge, description):
    response = client.post("/receive", headers=bearer(forge()))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == invalid(description)
    assert response.json == {"error": "invalid_token", "error_description": description}
    assert fake_issuer.verify_calls == []  # a JWT or a shapeless token never reaches the issuer


MALFORMED = "the Authorization header is malformed"
GARBAGE_HEADERS = {
    "bearer_without_token": (["Bearer"], MALFORMED),
    "bearer_with_two_parts": (["Bearer abc def"], MALFORMED),
    "bearer_with_non_token_characters": (['Bearer ab"c'], MALFORMED),
    "bearer_with_latin1_garbage": (["Bearer \xe9\xff"], MALFORMED),
    "two_authorization_headers": (["Bearer abc", "Bearer def"], MALFORMED),
}


@pytest.mark.parametrize(
    "headers,description", GARBAGE_HEADERS.values(), ids=GARBAGE_HEADERS.keys()
)
def test_garbage_authorization_header_is_400_invalid_request(client, headers, description):
    response = client.post("/receive", headers=[("Authorization", h) for h in headers])
    assert response.status_code == 400
    assert response.headers["WWW-Authenticate"] == (
        f'{REALM}, error="invalid_request", error_description="{description}"'
    )
    assert response.json == {"error": "invalid_request", "error_description": description}


def test_other_auth_scheme_counts_as_no_credentials(client):
    response = client.post("/receive", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == REALM


def test_missing_credentials_get_401_with_bare_challenge(client):
    response = client.post("/receive", json={"message": "hi"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == REALM
    assert response.json == {"error": None, "error_description": "a bearer token is required"}


def test_token_in_header_and_query_is_invalid_request(client):
    response = client.post("/receive?access_token=abc", headers=bearer(make_jwt()))
    assert response.status_code == 400
    assert 'error="invalid_request"' in response.headers["WWW-Authenticate"]


def test_token_in_header_and_form_body_is_invalid_request(client, fake_issuer):
    response = client.post(
        "/receive", data={"access_token": OPAQUE_FORM}, headers=bearer(make_jwt())
    )
    assert response.status_code == 400
    assert response.headers["WWW-Authenticate"] == (
        f'{REALM}, error="invalid_request", error_description="send the token in one place only"'
    )
    assert OPAQUE_FORM not in response.get_data(as_text=True)
    assert fake_issuer.verify_calls == []


def test_access_token_in_a_json_body_is_just_data(client):
    response = client.post(
        "/receive", json={"message": "hi", "access_token": "x"}, headers=bearer(make_jwt())
    )
    assert (response.status_code, response.json["messageReceived"]) == (200, "hi")


@pytest.mark.parametrize("place", ["query", "form"])
def test_token_only_in_query_or_form_counts_as_no_credentials(client, fake_issuer, place):
    """RFC 6750 section 3.1: an unsupported method gets the bare challenge, no error code."""
    if place == "query":
        response = client.post(f"/receive?access_token={OPAQUE_FORM}")
    else:
        response = client.post("/receive", data={"access_token": OPAQUE_FORM})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == REALM
    assert OPAQUE_FORM not in response.get_data(as_text=True)
    assert fake_issuer.verify_calls == []


def test_healthz_is_open(client):
    assert client.get("/healthz").json == {"status": "ok"}


# Accepted JWTs


def test_valid_jwt_is_accepted_and_answered_like_clerks_example(client, fake_issuer):
    response = client.post("/receive", json={"message": "Hello"}, headers=bearer(make_jwt()))
    assert response.status_code == 200
    body = response.json
    assert body["messageReceived"] == "Hello"
    assert body["from"] == CALLER_ID
    assert body["token"]["format"] == "jwt"
    assert body["token"]["id"] == "mt_" + "a" * 32
    assert body["token"]["claims"] == {"role": "demo"}
    assert body["token"]["scopes"] == [RECEIVER_ID]
    assert body["token"]["expiration"] % 1000 == 0 and body["token"]["expiration"] > time.time()
    assert fake_issuer.verify_calls == []


@pytest.mark.parametrize(
    "audience", [{"aud": None}, {"scopes": None}, {"aud": RECEIVER_ID, "scopes": None}]
)
def test_receiver_named_in_aud_or_scopes_alone_is_enough(client, audience):
    token = make_jwt(**audience)
    response = client.post("/receive", headers=bearer(token))
    assert response.status_code == 200


@pytest.mark.parametrize(
    "token",
    [
        "hello",
        "mt_",
        "a.b",
        "a.b.c.d",
        "mt_x.y",
        "Zm9v",
        "mt_" + "a" * 126,
        "mt_" + "f" * 8000,
        "mt_abc+def",
        "mt_abc/def",
        "mt_abc=",
        "MT_" + "f" * 64,
    ],
)
def test_token_of_neither_shape_is_rejected_without_any_network_call(client, fake_issuer, token):
    response = client.post("/receive", headers=bearer(token))
    assert response.headers["WWW-Authenticate"] == invalid("token format is not recognised")
    assert (fake_issuer.verify_calls, fake_issuer.jwks_fetches) == ([], 0)


@pytest.mark.parametrize("cache_seconds,decodes", [("60", 1), ("0", 3)])
def test_verified_jwts_are_remembered_only_when_the_jwt_cache_is_on(
    make_client, monkeypatch, cache_seconds, decodes
):
    client = make_client(M2M_JWT_CACHE_SECONDS=cache_seconds)
    calls = []
    real_decode = jwt.decode_complete
    monkeypatch.setattr(
        jwt, "decode_complete", lambda *a, **k: calls.append(1) or real_decode(*a, **k)
    )
    token = make_jwt()
    for _ in range(3):
        assert client.post("/receive", headers=bearer(token)).status_code == 200
    assert len(calls) == decodes


def test_remembered_jwt_still_meets_the_allowlist(make_client):
    client = make_client(M2M_ALLOWED_CALLERS=OTHER_ID)
    token = make_jwt()
    assert [client.post("/receive", headers=bearer(token)).status_code for _ in range(2)] == [
        403,
        403,
    ]


def test_jwks_is_fetched_once_for_many_jwts(make_client, fake_issuer):
    client = make_client(M2M_JWT_CACHE_SECONDS="0")
    for _ in range(5):
        assert client.post("/receive", headers=bearer(make_jwt())).status_code == 200
    assert fake_issuer.jwks_fetches == 1


def test_random_kids_cause_at_most_one_jwks_fetch_per_cooldown(client, fake_issuer):
    for i in range(20):
        token = make_jwt(kid=f"ins_random{i}")
        assert client.post("/receive", headers=bearer(token)).status_code == 401
    assert fake_issuer.jwks_fetches == 1


def test_jwks_unreachable_before_first_fetch_gives_503(client, fake_issuer):
    fake_issuer.jwks_status = 500
    response = client.post("/receive", headers=bearer(make_jwt()))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"


def test_a_key_set_over_the_size_limit_is_not_read_and_fails_closed(client, fake_issuer):
    fake_issuer.jwks = {"keys": fake_issuer.jwks["keys"], "padding": "x" * MAX_DOCUMENT_BYTES}
    response = client.post("/receive", headers=bearer(make_jwt()))
    assert (response.status_code, response.json["error"]) == (503, "temporarily_unavailable")


def test_static_pem_key_verifies_without_any_network(make_client, fake_issuer):
    fake_issuer.jwks_status = 500
    client = make_client(CLERK_JWT_KEY=PUBLIC_PEM.replace("\n", "\\n"))
    response = client.post("/receive", headers={"Authorization": f"Bearer {make_jwt(kid=None)}"})
    assert response.status_code == 200
    forged = make_jwt(key=FOREIGN_KEY)
    response = client.post("/receive", headers=bearer(forged))
    assert response.headers["WWW-Authenticate"] == invalid("token signature is invalid")
    assert fake_issuer.jwks_fetches == 0


def test_custom_issuer_is_enforced(make_client):
    client = make_client(CLERK_JWT_ISSUER="https://clerk.example.com")
    token = make_jwt(iss="https://clerk.example.com")
    assert client.post("/receive", headers=bearer(token)).status_code == 200
    response = client.post("/receive", headers=bearer(make_jwt()))
    assert response.headers["WWW-Authenticate"] == invalid("token issuer is not trusted")


def test_leeway_tolerates_small_clock_skew_only(make_client):
    token = make_jwt(exp=int(time.time()) - 2)
    lenient, strict = make_client(), make_client({"leeway_seconds": 0})
    assert lenient.post("/receive", headers=bearer(token)).status_code == 200
    assert strict.post("/receive", headers=bearer(token)).status_code == 401


def test_caller_outside_allowlist_gets_403_insufficient_scope(make_client):
    client = make_client(M2M_ALLOWED_CALLERS=OTHER_ID)
    response = client.post("/receive", headers=bearer(make_jwt()))
    assert response.status_code == 403
    assert response.headers["WWW-Authenticate"] == (
        f'{REALM}, error="insufficient_scope", '
        'error_description="calling machine is not allowed here"'
    )
    assert response.json["error"] == "insufficient_scope"


def test_audience_optional_mode_still_requires_an_allowed_caller(make_client):
    client = make_client(M2M_JWT_AUDIENCE_REQUIRED="false", M2M_ALLOWED_CALLERS=CALLER_ID)
    token = make_jwt(aud=None, scopes=None)
    assert client.post("/receive", headers=bearer(token)).status_code == 200
    outsider = make_jwt(aud=None, scopes=None, sub=OTHER_ID)
    assert client.post("/receive", headers=bearer(outsider)).status_code == 403
    elsewhere = make_jwt(aud=[OTHER_ID], scopes=None)
    response = client.post("/receive", headers=bearer(elsewhere))
    assert response.headers["WWW-Authenticate"] == invalid("token is not meant for this receiver")


def test_decorator_options_narrow_one_route(make_client):
    client = make_client()
    app = client.application

    @app.post("/admin")
    @receiver_app.require_m2m(allowed_callers={OTHER_ID})
    def admin():
        return {"ok": True}

    @app.post("/bare")
    @receiver_app.require_m2m
    def bare():
        return {"caller": receiver_app.auth.current_token().machine_id}

    headers = {"Authorization": f"Bearer {make_jwt()}"}
    assert client.post("/admin", headers=headers).status_code == 403
    assert client.post("/bare", headers=headers).json == {"caller": CALLER_ID}


def test_verified_token_is_a_typed_record_on_flask_g(make_client):
    client = make_client()
    app = client.application
    seen: list[Any] = []

    @app.post("/peek")
    @receiver_app.require_m2m
    def peek():
        from flask import g

        seen.append(g.m2m_token)
        return {}

    client.post("/peek", headers=bearer(make_jwt()))
    (token,) = seen
    assert isinstance(token, receiver_app.VerifiedToken)
    assert (token.machine_id, token.format, token.scopes) == (CALLER_ID, "jwt", (RECEIVER_ID,))


def test_body_that_is_not_a_message_is_rejected_after_auth(client):
    headers = {"Authorization": f"Bearer {make_jwt()}"}
    assert client.post("/receive", json=[1, 2], headers=headers).status_code == 400
    assert client.post("/receive", json="hi", headers=headers).status_code == 400
    assert client.post("/receive", json={"message": 5}, headers=headers).status_code == 400
    assert client.post("/receive", headers=headers).json["messageReceived"] is None


@pytest.mark.parametrize(
    "data,content_type",
    [("{bad", "application/json"), ("", "application/json; x"), ("hello", "text/plain")],
    ids=["broken_json", "blank_with_json_type", "not_json"],
)
def test_body_that_is_not_json_is_400_not_an_empty_message(client, data, content_type):
    token = make_jwt()
    response = client.post(
        "/receive", data=data or " ", content_type=content_type, headers=bearer(token)
    )
    assert response.status_code == 400
    assert response.json == {
        "error": "invalid_request",
        "error_description": 'send {"message": "<text>"} as JSON',
    }
    assert token not in response.get_data(as_text=True)


# Opaque tokens

OPAQUE = "mt_" + "f" * 32


def test_opaque_token_is_verified_by_the_issuer_with_the_receivers_key(client, fake_issuer):
    fake_issuer.add_opaque(OPAQUE)
    response = client.post("/receive", json={"message": "hi"}, headers=bearer(OPAQUE))
    assert response.status_code == 200
    assert response.json["from"] == CALLER_ID
    assert response.json["token"]["format"] == "opaque"
    assert response.json["token"]["claims"] == {"role": "demo"}
    (call,) = fake_issuer.verify_calls
    assert call["auth"] == f"Bearer {RECEIVER_KEY}"
    assert call["body"] == {"token": OPAQUE}


def test_opaque_token_of_the_longest_accepted_length_still_reaches_the_issuer(client, fake_issuer):
    longest = "mt_" + "b" * 125  # 128 characters
    fake_issuer.add_opaque(longest)
    assert client.post("/receive", headers=bearer(longest)).status_code == 200
    assert len(fake_issuer.verify_calls) == 1


def test_opaque_verifications_reuse_one_keep_alive_connection(client, fake_issuer):
    fake_issuer.add_opaque(OPAQUE)
    for _ in range(3):
        assert client.post("/receive", headers=bearer(OPAQUE)).status_code == 200
    assert len({call["client"] for call in fake_issuer.verify_calls}) == 1


def test_opaque_token_unknown_to_issuer_is_invalid_token(client):
    response = client.post("/receive", headers=bearer(OPAQUE))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == invalid("token is invalid, expired or revoked")


@pytest.mark.parametrize(
    "fields,description",
    [
        ({"scopes": [OTHER_ID]}, "token is not meant for this receiver"),
        ({"revoked": True}, "token is invalid, expired or revoked"),
        ({"expiration": int(time.time() * 1000) - 1000}, "token has expired"),
    ],
    ids=["not_in_scopes", "revoked", "expired"],
)
def test_opaque_token_object_is_rechecked(client, fake_issuer, fields, description):
    fake_issuer.add_opaque(OPAQUE, **fields)
    response = client.post("/receive", headers=bearer(OPAQUE))
    assert response.headers["WWW-Authenticate"] == invalid(description)


def test_receivers_own_key_rejected_is_503_and_a_config_error_in_the_log(
    client, fake_issuer, caplog
):
    fake_issuer.verify_status = 401
    with caplog.at_level(logging.INFO):
        response = client.post("/receive", headers=bearer(OPAQUE))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "WWW-Authenticate" not in response.headers
    assert any(
        r.levelno == logging.ERROR and "CLERK_MACHINE_SECRET_KEY" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize("status", [500, 502, 503])
def test_issuer_5xx_fails_closed_with_503(client, fake_issuer, status):
    fake_issuer.verify_status = status
    response = client.post("/receive", headers=bearer(OPAQUE))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json["error"] == "temporarily_unavailable"


@pytest.mark.parametrize("status", [429, 503])
def test_issuer_rate_limit_or_outage_passes_its_retry_after_on(client, fake_issuer, status):
    fake_issuer.verify_status = status
    fake_issuer.verify_headers = {"Retry-After": "7"}
    response = client.post("/receive", headers=bearer(OPAQUE))
    assert (response.status_code, response.headers["Retry-After"]) == (503, "7")


def test_issuer_answer_that_is_not_a_token_object_gives_503(client, fake_issuer):
    fake_issuer.verify_body = b'{"unexpected": true}'
    assert client.post("/receive", headers=bearer(OPAQUE)).status_code == 503


@pytest.mark.parametrize(
    "body",
    [b'{"padding": "' + b"x" * MAX_ANSWER_BYTES + b'"}', b"[" * 100_000 + b"]" * 100_000],
    ids=["over-the-size-limit", "nested-too-deeply"],
)
def test_issuer_answer_too_large_or_too_deep_is_not_read_and_gives_503(client, fake_issuer, body):
    fake_issuer.verify_body = body
    response = client.post("/receive", headers=bearer(OPAQUE))
    assert (response.status_code, response.json["error"]) == (503, "temporarily_unavailable")


@pytest.mark.parametrize("claims_value", [[1, 2], "role=admin", 7, True])
def test_opaque_token_whose_claims_are_not_an_object_is_rejected(client, fake_issuer, claims_value):
    """The issuer takes any JSON as claims; VerifiedToken.claims is always a dict."""
    fake_issuer.add_opaque(OPAQUE, claims=claims_value)
    response = client.post("/receive", headers=bearer(OPAQUE))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == invalid("token claims are not a JSON object")


@pytest.mark.parametrize("claims_value", [None, {}])
def test_issuer_token_object_without_claims_gives_empty_claims(client, fake_issuer, claims_value):
    fake_issuer.add_opaque(OPAQUE, claims=claims_value)
    response = client.post("/receive", headers=bearer(OPAQUE))
    assert (response.status_code, response.json["token"]["claims"]) == (200, {})


def test_slow_issuer_times_out_into_503(make_client, fake_issuer):
    client = make_client({"issuer_timeout_seconds": 0.2})
    fake_issuer.add_opaque(OPAQUE)
    fake_issuer.verify_delay = 1.0
    started = time.monotonic()
    response = client.post("/receive", headers=bearer(OPAQUE))
    assert response.status_code == 503
    assert time.monotonic() - started < 0.9


def test_unreachable_issuer_gives_503(make_client):
    client = make_client(CLERK_API_URL=f"http://127.0.0.1:{free_port()}")
    response = client.post("/receive", headers=bearer(OPAQUE))
    assert response.status_code == 503
    assert response.json["error_description"] == "token issuer is unreachable"


def test_cache_serves_a_verified_opaque_token_without_asking_again(make_client, fake_issuer):
    client = make_client(M2M_VERIFY_CACHE_SECONDS="60")
    fake_issuer.add_opaque(OPAQUE)
    assert client.post("/receive", headers=bearer(OPAQUE)).status_code == 200
    fake_issuer.tokens.clear()  # revoked at the issuer: the documented cache trade-off
    assert client.post("/receive", headers=bearer(OPAQUE)).status_code == 200
    assert len(fake_issuer.verify_calls) == 1


def test_cache_keeps_no_failed_verification(make_client, fake_issuer):
    client = make_client(M2M_VERIFY_CACHE_SECONDS="60")
    assert client.post("/receive", headers=bearer(OPAQUE)).status_code == 401
    fake_issuer.add_opaque(OPAQUE)
    assert client.post("/receive", headers=bearer(OPAQUE)).status_code == 200
    assert len(fake_issuer.verify_calls) == 2


def test_without_cache_every_request_asks_the_issuer(client, fake_issuer):
    fake_issuer.add_opaque(OPAQUE)
    client.post("/receive", headers=bearer(OPAQUE))
    fake_issuer.tokens.clear()
    assert client.post("/receive", headers=bearer(OPAQUE)).status_code == 401


def test_tokens_never_appear_in_logs_or_answers(make_client, fake_issuer, caplog):
    client = make_client({"issuer_timeout_seconds": 0.2})
    tokens = [OPAQUE, make_jwt(exp=int(time.time()) - 60), tampered_signature(), "mt_" + "9" * 40]
    with caplog.at_level(logging.DEBUG):
        for status in (None, 401, 500):
            fake_issuer.verify_status = status
            for token in tokens:
                response = client.post("/receive", headers=bearer(token))
                assert token not in response.get_data(as_text=True)
                assert token not in response.headers.get("WWW-Authenticate", "")
    assert caplog.records  # the rejections were logged
    for token in tokens:
        assert token not in caplog.text
    assert RECEIVER_KEY not in caplog.text


@pytest.mark.parametrize(
    "header,expected",
    [
        ("7", "7"),
        ("86400", "60"),
        ("0", "1"),
        ("soon", "5"),
        ("\u00b2", "5"),
        ("Wed, 21 Oct 2015 07:28:00 GMT", "5"),
    ],
)
def test_issuer_retry_after_is_capped_and_garbage_means_the_default(
    client, fake_issuer, header, expected
):
    fake_issuer.verify_status = 429
    fake_issuer.verify_headers = {"Retry-After": header}
    response = client.post("/receive", headers=bearer(OPAQUE))
    assert (response.status_code, response.headers["Retry-After"]) == (503, expected)


# Errors outside the protected view: JSON, never Flask's HTML


@pytest.mark.parametrize(
    "method,path,status,error,allow",
    [
        ("GET", "/receive", 405, "method_not_allowed", "POST"),
        ("POST", "/healthz", 405, "method_not_allowed", "GET"),
        ("GET", "/nowhere", 404, "not_found", None),
    ],
)
def test_unknown_route_or_method_answers_json(client, method, path, status, error, allow):
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert response.json["error"] == error
    assert allow is None or allow in response.headers["Allow"]


def test_body_over_64_kib_is_413_json(client):
    token = make_jwt()
    body = json.dumps({"message": "x" * (64 * 1024)})
    response = client.post(
        "/receive", data=body, content_type="application/json", headers=bearer(token)
    )
    assert response.status_code == 413
    assert response.json["error"] == "request_entity_too_large"
    assert token not in response.get_data(as_text=True)


def test_unhandled_exception_is_500_json_without_traceback(make_client):
    client = make_client()
    app = client.application
    app.testing = False  # let Flask turn the exception into a 500 as in production

    @app.post("/boom")
    @receiver_app.require_m2m
    def boom():
        raise RuntimeError("internal detail that must not leak")

    response = client.post("/boom", headers=bearer(make_jwt()))
    assert response.status_code == 500
    assert response.json == {
        "error": "internal_server_error",
        "error_description": "Internal Server Error",
    }
    assert "internal detail" not in response.get_data(as_text=True)


def test_jwt_memo_is_bounded_and_keeps_only_token_hashes(fake_issuer):
    from receiver_app.verifier import M2MVerifier

    verifier = M2MVerifier(fake_issuer.url, RECEIVER_KEY, RECEIVER_ID, cache_max_entries=3)
    tokens = [make_jwt(jti=f"mt_{i:032x}") for i in range(5)]
    for token in tokens:
        assert verifier.verify(token).machine_id == CALLER_ID
    memo = verifier._jwt_memo
    assert len(memo) == 3
    assert all(token.encode()[:40] not in key for key in memo._entries for token in tokens)
    assert memo.get(tokens[0]) is None and memo.get(tokens[-1]) is not None
