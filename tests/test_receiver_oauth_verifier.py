"""Unit tests of receiver_app/oauth_verifier.py against a fake OpenID issuer served in a thread:
the RFC 9068 checks on forged JWT access tokens, RFC 7662 introspection, discovery, and the
allowlist and scope checks, through the app's `@require_m2m` answers too."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import urlsplit, urlunsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, jsonify, request
from jwt.algorithms import RSAAlgorithm
from requests.adapters import HTTPAdapter

from receiver_app import create_app
from receiver_app.oauth_verifier import OAuthVerifier
from receiver_app.verifier import CallerNotAllowedError, InvalidTokenError, IssuerUnavailableError
from tests.threaded_server import serve_in_thread, stop

AUDIENCE = "https://receiver.example/api"
RECEIVER_CLIENT = ("receiver", "receiver-secret")
OPAQUE_TOKEN = "opaque-token-value-0123456789"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeIssuer:
    """OpenID metadata, a JWKS with one RS256 key (kid k1), and an introspection endpoint
    answering `introspection` (or `introspection_status`) to the receiver's credentials."""

    def __init__(self) -> None:
        self.metadata_issuer: str | None = None
        self.metadata_changes: dict = {}  # metadata fields replaced by these
        self.padding: dict[str, int] = {}  # route -> characters of filler added to its answer
        self.raw_introspection: str | None = None  # answered as it is, with status 200
        self.introspection: dict = {}
        self.introspection_status = 200
        self.introspection_auth: list[str] = []
        self.discoveries = 0
        self._server = serve_in_thread(self._app())
        self.issuer = f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        stop(self._server)

    def _app(self) -> Flask:
        app = Flask("fake_openid_issuer")

        @app.get("/.well-known/openid-configuration")
        def metadata():
            self.discoveries += 1
            metadata = {
                "issuer": self.metadata_issuer or self.issuer,
                "jwks_uri": f"{self.issuer}/jwks",
                "introspection_endpoint": f"{self.issuer}/introspect",
                **self.metadata_changes,
            }
            return self._padded("metadata", metadata)

        @app.get("/jwks")
        def jwks():
            public = json.loads(RSAAlgorithm.to_jwk(KEY.public_key()))
            keys = [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]
            return self._padded("jwks", {"keys": keys})

        @app.post("/introspect")
        def introspect():
            self.introspection_auth.append(request.headers.get("Authorization", ""))
            if request.form.get("token") != OPAQUE_TOKEN:
                return jsonify(active=False)
            if self.raw_introspection is not None:
                return self.raw_introspection, 200, {"Content-Type": "application/json"}
            return self._padded("introspection", self.introspection), self.introspection_status

        return app

    def _padded(self, route: str, answer: dict):
        filler = self.padding.get(route)
        return jsonify({**answer, "padding": "x" * filler} if filler else answer)


@pytest.fixture(scope="module")
def issuer():
    running = FakeIssuer()
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def reset(issuer):
    issuer.metadata_issuer = None
    issuer.metadata_changes = {}
    issuer.padding = {}
    issuer.raw_introspection = None
    issuer.introspection_status = 200
    issuer.introspection = {
        "active": True,
        "client_id": "svc-caller",
        "aud": AUDIENCE,
        "iss": issuer.issuer,
        "exp": int(time.time()) + 300,
        "scope": "messages:write",
    }


def make_verifier(issuer: FakeIssuer, **kwargs) -> OAuthVerifier:
    kwargs.setdefault("client_id", RECEIVER_CLIENT[0])
    kwargs.setdefault("client_secret", RECEIVER_CLIENT[1])
    return OAuthVerifier(issuer.issuer, AUDIENCE, jwt_cache_seconds=0, **kwargs)


def access_token(issuer: FakeIssuer, *, key=KEY, headers=None, algorithm="RS256", **claims):
    """An RFC 9068 access token; keyword claims override (None removes one)."""
    now = int(time.time())
    payload = {
        "iss": issuer.issuer,
        "sub": "svc-caller",
        "client_id": "svc-caller",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "jti": "jti-1",
        "scope": "messages:write",
        "tenant": "blue",
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    header = {"typ": "at+jwt", "kid": "k1", **(headers or {})}
    header = {k: v for k, v in header.items() if v is not None}
    return jwt.encode(payload, key, algorithm=algorithm, headers=header)


# -- JWT access tokens --------------------------------------------------------------------------


def test_a_good_jwt_access_token_is_accepted_with_the_client_as_caller(issuer):
    verified = make_verifier(issuer).verify(access_token(issuer, sub="someone-else"))
    assert verified.machine_id == "svc-caller" and verified.format == "jwt"
    assert verified.id == "jti-1" and verified.scopes == ("messages:write",)
    assert verified.claims == {"tenant": "blue"}


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT"])
def test_rfc9068_types_are_accepted(issuer, typ):
    make_verifier(issuer).verify(access_token(issuer, headers={"typ": typ}))


def test_audience_may_be_a_list_containing_this_resource(issuer):
    make_verifier(issuer).verify(access_token(issuer, aud=["https://other", AUDIENCE]))


def test_without_client_id_the_caller_is_azp_then_sub(issuer):
    token = access_token(issuer, client_id=None, azp="auth0-client")
    assert make_verifier(issuer).verify(token).machine_id == "auth0-client"
    token = access_token(issuer, client_id=None)
    assert make_verifier(issuer).verify(token).machine_id == "svc-caller"


def forged(issuer: FakeIssuer, case: str) -> str:
    """A token that must be refused, one defect each."""
    past = int(time.time()) - 3600
    cases = {
        "typ JWT": lambda: access_token(issuer, headers={"typ": "JWT"}),
        "no typ": lambda: access_token(issuer, headers={"typ": None}),
        "id token typ": lambda: access_token(issuer, headers={"typ": "id_token+jwt"}),
        "wrong iss": lambda: access_token(issuer, iss="https://evil.example"),
        "iss with slash": lambda: access_token(issuer, iss=issuer.issuer + "/"),
        "wrong aud": lambda: access_token(issuer, aud="https://other.example"),
        "no aud": lambda: access_token(issuer, aud=None),
        "expired": lambda: access_token(issuer, iat=past - 60, exp=past),
        "not yet valid": lambda: access_token(issuer, nbf=int(time.time()) + 3600),
        "no exp": lambda: access_token(issuer, exp=None),
        "string exp": lambda: access_token(issuer, exp="9999999999"),
        "no iat": lambda: access_token(issuer, iat=None),
        "alg none": lambda: access_token(issuer, key=None, algorithm="none"),
        "HS256": lambda: access_token(
            issuer, key="a-shared-secret-of-32-bytes-xxxx", algorithm="HS256"
        ),
        "unknown kid": lambda: access_token(issuer, headers={"kid": "k2"}),
        "no kid": lambda: access_token(issuer, headers={"kid": None}),
        "other key": lambda: access_token(issuer, key=OTHER_KEY),
        "no client": lambda: access_token(issuer, client_id=None, sub=None),
        "tampered": lambda: _tamper(access_token(issuer)),
    }
    return cases[case]()


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["client_id"] = "svc-admin"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged_payload}.{signature}"


FORGERIES = [
    "typ JWT",
    "no typ",
    "id token typ",
    "wrong iss",
    "iss with slash",
    "wrong aud",
    "no aud",
    "expired",
    "not yet valid",
    "no exp",
    "string exp",
    "no iat",
    "alg none",
    "HS256",
    "unknown kid",
    "no kid",
    "other key",
    "no client",
    "tampered",
]


@pytest.mark.parametrize("case", FORGERIES)
def test_forged_jwt_access_tokens_are_refused(issuer, case):
    with pytest.raises(InvalidTokenError):
        make_verifier(issuer).verify(forged(issuer, case))


def test_plain_jwt_types_pass_only_when_at_jwt_is_not_required(issuer):
    verifier = make_verifier(issuer, require_at_jwt=False)
    verifier.verify(forged(issuer, "typ JWT"))
    verifier.verify(forged(issuer, "no typ"))
    with pytest.raises(InvalidTokenError):
        verifier.verify(forged(issuer, "id token typ"))


def test_metadata_naming_another_issuer_means_no_token_can_be_checked(issuer):
    issuer.metadata_issuer = "https://evil.example"
    with pytest.raises(IssuerUnavailableError):
        make_verifier(issuer).verify(access_token(issuer))


def test_an_unreachable_issuer_is_503_and_discovery_waits_out_the_cooldown():
    down = FakeIssuer()
    down.stop()
    verifier = OAuthVerifier(down.issuer, AUDIENCE, jwks_cooldown_seconds=60)
    for _ in range(3):
        with pytest.raises(IssuerUnavailableError):
            verifier.verify(access_token(down))


def test_metadata_is_fetched_once(issuer):
    before = issuer.discoveries
    verifier = make_verifier(issuer)
    for _ in range(3):
        verifier.verify(access_token(issuer))
        verifier.verify(OPAQUE_TOKEN)
    assert issuer.discoveries - before == 1


# -- introspection ------------------------------------------------------------------------------


def test_an_active_opaque_token_is_accepted_through_introspection(issuer):
    verified = make_verifier(issuer).verify(OPAQUE_TOKEN)
    assert verified.format == "opaque" and verified.machine_id == "svc-caller"
    assert verified.id.startswith("sha256:") and OPAQUE_TOKEN not in verified.id
    expected = "Basic " + base64.b64encode(b"receiver:receiver-secret").decode()
    assert issuer.introspection_auth[-1] == expected


@pytest.mark.parametrize(
    "change",
    [
        {"active": False},
        {"aud": "https://other.example"},
        {"aud": None},
        {"iss": "https://evil.example"},
        {"exp": int(time.time()) - 10},
    ],
)
def test_introspection_answers_that_do_not_vouch_for_this_resource_are_401(issuer, change):
    changed = {**issuer.introspection, **change}
    issuer.introspection = {k: v for k, v in changed.items() if v is not None}
    with pytest.raises(InvalidTokenError):
        make_verifier(issuer).verify(OPAQUE_TOKEN)


@pytest.mark.parametrize("status", [401, 500])
def test_introspection_refusing_the_receiver_or_failing_is_503(issuer, status):
    issuer.introspection_status = status
    with pytest.raises(IssuerUnavailableError):
        make_verifier(issuer).verify(OPAQUE_TOKEN)


def test_without_receiver_credentials_an_opaque_token_is_refused_unasked(issuer):
    asked = len(issuer.introspection_auth)
    verifier = make_verifier(issuer, client_id=None, client_secret=None)
    with pytest.raises(InvalidTokenError):
        verifier.verify(OPAQUE_TOKEN)
    assert len(issuer.introspection_auth) == asked


def test_a_cached_introspection_is_reused(issuer):
    verifier = make_verifier(issuer, introspection_cache_seconds=60)
    asked = len(issuer.introspection_auth)
    assert verifier.verify(OPAQUE_TOKEN) == verifier.verify(OPAQUE_TOKEN)
    assert len(issuer.introspection_auth) == asked + 1


# -- allowlist and scopes -----------------------------------------------------------------------


@pytest.mark.parametrize("token_kind", ["jwt", "opaque"])
def test_allowlist_and_required_scopes_apply_to_both_kinds(issuer, token_kind):
    token = access_token(issuer) if token_kind == "jwt" else OPAQUE_TOKEN
    make_verifier(
        issuer, allowed_callers={"svc-caller"}, required_scopes={"messages:write"}
    ).verify(token)
    with pytest.raises(CallerNotAllowedError, match="not allowed"):
        make_verifier(issuer, allowed_callers={"svc-other"}).verify(token)
    with pytest.raises(CallerNotAllowedError, match="scope"):
        make_verifier(issuer, required_scopes={"messages:admin"}).verify(token)


# -- the app ------------------------------------------------------------------------------------


def oauth_app(issuer: FakeIssuer, **extra: str):
    env = {
        "M2M_SKIP_DOTENV": "1",
        "M2M_PROVIDER": "oauth",
        "OAUTH_ISSUER_URL": issuer.issuer,
        "OAUTH_AUDIENCE": AUDIENCE,
        "OAUTH_CLIENT_ID": RECEIVER_CLIENT[0],
        "OAUTH_CLIENT_SECRET": RECEIVER_CLIENT[1],
        **extra,
    }
    return create_app(env).test_client()


def post(client, token: str):
    return client.post(
        "/receive", json={"message": "hi"}, headers={"Authorization": f"Bearer {token}"}
    )


def test_the_app_answers_as_before_for_oauth_tokens(issuer):
    client = oauth_app(issuer, M2M_ALLOWED_CALLERS="svc-caller")
    ok = post(client, access_token(issuer))
    assert ok.status_code == 200 and ok.json["from"] == "svc-caller"
    assert post(client, OPAQUE_TOKEN).json["token"]["format"] == "opaque"
    refused = post(client, forged(issuer, "wrong aud"))
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    other = post(oauth_app(issuer, M2M_ALLOWED_CALLERS="svc-other"), access_token(issuer))
    assert other.status_code == 403
    assert 'error="insufficient_scope"' in other.headers["WWW-Authenticate"]


def test_metrics_count_oauth_verifications_and_issuer_calls_with_bounded_labels(issuer):
    client = oauth_app(issuer)
    assert post(client, access_token(issuer)).status_code == 200
    assert post(client, OPAQUE_TOKEN).status_code == 200
    assert post(client, forged(issuer, "wrong aud")).status_code == 401
    text = client.get("/metrics").text
    assert 'receiver_verifications_total{format="jwt",outcome="ok"} 1.0' in text
    assert 'receiver_verifications_total{format="jwt",outcome="invalid_token"} 1.0' in text
    assert 'receiver_verifications_total{format="opaque",outcome="ok"} 1.0' in text
    for route in ("discovery", "jwks", "introspect"):
        assert f'route="{route}",status="2xx"' in text, route
    assert AUDIENCE not in text and "svc-caller" not in text


# -- hostile issuer answers ---------------------------------------------------------------------

MIB = 1 << 20


@pytest.mark.parametrize(
    ("route", "token_kind"),
    [("metadata", "jwt"), ("jwks", "jwt"), ("metadata", "opaque"), ("introspection", "opaque")],
)
def test_answers_over_the_size_limit_are_not_read_and_fail_closed(
    issuer, caplog, route, token_kind
):
    """1 MiB for metadata and key sets, 64 KiB for an introspection answer: a bigger answer is
    503 (IssuerUnavailableError) and a log line naming the limit, never the client secret."""
    issuer.padding = {route: 64 * 1024 if route == "introspection" else MIB}
    token = access_token(issuer) if token_kind == "jwt" else OPAQUE_TOKEN
    with pytest.raises(IssuerUnavailableError):
        make_verifier(issuer).verify(token)
    assert "larger than" in caplog.text
    assert RECEIVER_CLIENT[1] not in caplog.text


@pytest.mark.parametrize("route", ["metadata", "jwks", "introspection"])
def test_answers_under_the_size_limit_are_read(issuer, route):
    issuer.padding = {route: 60_000 if route == "introspection" else MIB - 10_000}
    make_verifier(issuer).verify(access_token(issuer))
    make_verifier(issuer).verify(OPAQUE_TOKEN)


def test_an_introspection_answer_nested_too_deeply_is_503_not_a_crash(issuer):
    depth = 30_000  # 60 kB: under the size limit, far past Python's recursion limit
    issuer.raw_introspection = '{"active": true, "x": ' + "[" * depth + "]" * depth + "}"
    with pytest.raises(IssuerUnavailableError):
        make_verifier(issuer).verify(OPAQUE_TOKEN)


def test_an_oversized_introspection_answer_is_the_apps_503_temporarily_unavailable(issuer):
    issuer.padding = {"introspection": 64 * 1024}
    answer = post(oauth_app(issuer), OPAQUE_TOKEN)
    assert answer.status_code == 503 and "Retry-After" in answer.headers
    assert answer.json["error"] == "temporarily_unavailable"


class LoopbackTls(HTTPAdapter):
    """Sends every https:// request to the fake issuer over plain http: an https issuer (on
    any host name) without certificates, so the verifier's scheme rules can be tested."""

    def __init__(self, issuer: FakeIssuer) -> None:
        super().__init__()
        self.netloc = urlsplit(issuer.issuer).netloc

    def send(self, request, **kwargs):
        parts = urlsplit(request.url)
        request.url = urlunsplit(("http", self.netloc, parts.path, parts.query, ""))
        return super().send(request, **kwargs)


HTTPS_ISSUER = "https://issuer.example"


def https_verifier(issuer: FakeIssuer, **endpoints: str) -> OAuthVerifier:
    """A verifier of the https issuer HTTPS_ISSUER whose metadata names `endpoints`."""
    issuer.metadata_issuer = HTTPS_ISSUER
    issuer.introspection["iss"] = HTTPS_ISSUER
    issuer.metadata_changes = {
        "jwks_uri": f"{HTTPS_ISSUER}/jwks",
        "introspection_endpoint": f"{HTTPS_ISSUER}/introspect",
        **endpoints,
    }
    session = requests.Session()
    session.mount("https://", LoopbackTls(issuer))
    return OAuthVerifier(
        HTTPS_ISSUER,
        AUDIENCE,
        client_id=RECEIVER_CLIENT[0],
        client_secret=RECEIVER_CLIENT[1],
        session=session,
    )


@pytest.mark.parametrize(
    "endpoints",
    [
        {"jwks_uri": "{fake}/jwks"},
        {"introspection_endpoint": "{fake}/introspect"},
        {"jwks_uri": "file:///etc/passwd"},
        {"introspection_endpoint": "/introspect"},
        {"jwks_uri": ["https://issuer.example/jwks"]},
        {"introspection_endpoint": "https://[::1/introspect"},
    ],
)
def test_an_https_issuer_naming_a_weaker_endpoint_is_not_used(issuer, caplog, endpoints):
    """Plain http (`{fake}` is the fake issuer itself, reachable) would carry the receiver's
    client credentials to the introspection endpoint, or keys it would trust: the whole metadata
    is refused, nothing is called, and the log names the field."""
    named = {
        k: v.replace("{fake}", issuer.issuer) if isinstance(v, str) else v
        for k, v in endpoints.items()
    }
    verifier = https_verifier(issuer, **named)
    asked = len(issuer.introspection_auth)
    for token in (access_token(issuer, iss=HTTPS_ISSUER), OPAQUE_TOKEN):
        with pytest.raises(IssuerUnavailableError):
            verifier.verify(token)
    assert len(issuer.introspection_auth) == asked
    assert next(iter(endpoints)) in caplog.text


def test_an_https_issuers_endpoints_may_be_on_other_hosts_over_https(issuer):
    """As Entra and Okta publish them: metadata fetched over TLS from the issuer is trusted."""
    verifier = https_verifier(
        issuer,
        jwks_uri="https://keys.elsewhere.example/jwks",
        introspection_endpoint="https://api.elsewhere.example/introspect",
    )
    assert verifier.verify(access_token(issuer, iss=HTTPS_ISSUER)).format == "jwt"
    assert verifier.verify(OPAQUE_TOKEN).format == "opaque"


def test_an_http_issuers_endpoints_must_still_be_http_urls(issuer):
    """A local issuer without TLS (the demo's mock issuer) keeps its http endpoints (every test
    above), but no other scheme."""
    issuer.metadata_changes = {"jwks_uri": "ftp://127.0.0.1/jwks"}
    with pytest.raises(IssuerUnavailableError):
        make_verifier(issuer).verify(access_token(issuer))
