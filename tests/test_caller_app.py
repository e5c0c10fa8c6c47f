"""Unit tests of the caller app (routes, error answers, configuration) with Flask's test client
and the fake issuer/receiver of tests/test_caller_token_client.py; no real processes."""

from __future__ import annotations

import pytest

import caller_app
from caller_app import create_app
from caller_app.config import ENV_VARS, ConfigError, load_settings
from caller_app.www_authenticate import parse_bearer_challenge
from tests.fakes import MACHINE_KEY, FakeServer
from tests.harness import free_port


@pytest.fixture
def fake():
    server = FakeServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_dotenv(monkeypatch):
    """Neither a developer's caller_app/.env nor their exported settings may leak in."""
    monkeypatch.setenv("M2M_SKIP_DOTENV", "1")
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def app_config(fake: FakeServer, **overrides) -> dict:
    config = {
        "CLERK_API_URL": fake.url,
        "CLERK_MACHINE_SECRET_KEY": MACHINE_KEY,
        "RECEIVER_URL": fake.url,
        "M2M_ISSUER_MAX_ATTEMPTS": "2",
        "M2M_ISSUER_RETRY_BUDGET_SECONDS": "0.5",
        "M2M_HTTP_TIMEOUT_SECONDS": "2",
    }
    config.update(overrides)
    return config


@pytest.fixture
def client(fake):
    return create_app(app_config(fake)).test_client()


def test_healthz_answers_ok(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_send_posts_the_message_with_a_bearer_token_and_reports_it(client, fake):
    answer = client.get("/send")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["receiver"]["messageReceived"] == "Hello from the caller"
    assert body["token"]["format"] == "opaque"
    assert body["token"]["id"] == body["receiver"]["token_id"]
    secret, sent = fake.received[0]
    assert sent == {"message": "Hello from the caller"}
    assert fake.minted[secret] == body["token"]["id"]
    assert secret not in answer.get_data(as_text=True)  # the token secret is never echoed


def test_format_query_overrides_the_default_format(client, fake):
    body = client.get("/send?format=jwt").get_json()
    assert body["token"]["format"] == "jwt"
    assert fake.create_bodies[-1]["token_format"] == "jwt"


def test_unknown_format_is_a_400(client, fake):
    answer = client.get("/send?format=paseto")
    assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_format"
    assert fake.creations == 0


def test_sends_reuse_one_token(client, fake):
    for _ in range(10):
        assert client.get("/send").status_code == 200
    assert fake.creations == 1


def test_configured_ttl_is_requested(fake):
    client = create_app(app_config(fake, M2M_TOKEN_TTL_SECONDS="90")).test_client()
    client.get("/send")
    assert fake.create_bodies == [{"token_format": "opaque", "seconds_until_expiration": 90}]


def test_issuer_down_is_a_503_naming_the_issuer_with_retry_after(fake):
    config = app_config(fake, CLERK_API_URL=f"http://127.0.0.1:{free_port()}")
    answer = create_app(config).test_client().get("/send")
    assert answer.status_code == 503
    body = answer.get_json()
    assert body["error"] == "issuer_unavailable" and body["dependency"] == "issuer"
    assert int(answer.headers["Retry-After"]) >= 1


def test_issuer_retry_after_is_passed_on(client, fake):
    fake.issuer_script.extend([(429, {"Retry-After": "7"})] * 2)
    answer = client.get("/send")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "7"


@pytest.mark.parametrize(("issuer_says", "caller_says"), [("0", "1"), ("3600", "60")])
def test_issuer_retry_after_is_bounded(client, fake, issuer_says, caller_says):
    fake.issuer_script.extend([(429, {"Retry-After": issuer_says})] * 2)
    answer = client.get("/send")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == caller_says


def test_issuer_201_with_a_malformed_token_object_is_a_json_503(client, fake):
    fake.token_overrides = {"expiration": "99999999999999"}
    answer = client.get("/send")
    assert answer.status_code == 503 and answer.is_json
    body = answer.get_json()
    assert body["error"] == "issuer_unavailable" and body["dependency"] == "issuer"
    assert "unexpected token object (bad expiration)" in body["message"]
    assert fake.received == []  # nothing was sent to the receiver


def test_rejected_machine_key_is_reported_without_the_key(client, fake):
    fake.issuer_script.append((401, {}))
    answer = client.get("/send")
    assert answer.status_code == 502
    body = answer.get_json()
    assert body["error"] == "machine_secret_key_rejected" and body["dependency"] == "issuer"
    assert "CLERK_MACHINE_SECRET_KEY" in body["message"]
    assert MACHINE_KEY not in answer.get_data(as_text=True)


def test_issuer_refusing_the_request_is_a_502_with_its_code(client, fake):
    fake.issuer_script.append((400, {}))
    body = client.get("/send").get_json()
    assert body["error"] == "issuer_rejected_request"
    assert (body["issuer_status"], body["issuer_code"]) == (400, "code_400")


def test_receiver_down_is_a_502_naming_the_receiver(fake):
    config = app_config(fake, RECEIVER_URL=f"http://127.0.0.1:{free_port()}")
    answer = create_app(config).test_client().get("/send")
    assert answer.status_code == 502
    body = answer.get_json()
    assert body["error"] == "receiver_unreachable" and body["dependency"] == "receiver"
    assert "is unreachable (ConnectionError)" in body["message"]


def test_receiver_url_credentials_never_reach_the_answer_or_the_log(fake, caplog):
    config = app_config(fake, RECEIVER_URL=f"http://user:s3cr3t@127.0.0.1:{free_port()}")
    answer = create_app(config).test_client().get("/send")
    assert answer.status_code == 502
    assert "the receiver at http://127.0.0.1:" in answer.get_json()["message"]
    assert "s3cr3t" not in answer.get_data(as_text=True) and "s3cr3t" not in caplog.text
    assert "receiver_unreachable" in caplog.text  # the error was logged, without the password


def test_receiver_timing_out_is_a_502_naming_the_receiver_and_the_timeout(fake):
    fake.receiver_delay = 1.0
    config = app_config(fake, M2M_HTTP_TIMEOUT_SECONDS="0.2")
    answer = create_app(config).test_client().get("/send")
    assert answer.status_code == 502
    body = answer.get_json()
    assert body["error"] == "receiver_unreachable" and body["dependency"] == "receiver"
    assert "timed out (ReadTimeout)" in body["message"]
    assert len(fake.received) == 1  # not retried


def test_receiver_5xx_is_a_502_naming_the_receiver(client, fake):
    fake.receiver_script.append((500, {}))
    body = client.get("/send").get_json()
    assert (body["error"], body["receiver_status"]) == ("receiver_error", 500)
    assert len(fake.received) == 1  # a 5xx is not retried: the POST may have had effects


def test_receiver_5xx_description_is_passed_on(client, fake):
    fake.receiver_script.append((502, {}))
    body = client.get("/send").get_json()
    assert body["receiver_status"] == 502 and body["receiver_error_description"] == "scripted"
    assert body["message"].endswith(": scripted")


UNAVAILABLE = {"error": "temporarily_unavailable", "error_description": "token issuer failed"}


def test_receiver_503_is_a_503_naming_the_receiver_with_its_retry_after(client, fake):
    fake.receiver_script.append((503, {"Retry-After": "12"}, UNAVAILABLE))
    answer = client.get("/send")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "12"
    body = answer.get_json()
    assert body["error"] == "receiver_unavailable" and body["dependency"] == "receiver"
    assert body["receiver_status"] == 503
    assert body["receiver_error_description"] == "token issuer failed"
    assert "token issuer failed" in body["message"]
    assert len(fake.received) == 1  # not retried


@pytest.mark.parametrize(
    ("receiver_says", "caller_says"),
    [
        (None, "5"),
        ("soon", "5"),
        ("0", "1"),
        ("3600", "60"),
        ("Wed, 21 Oct 2099 07:28:00 GMT", "60"),
    ],
)
def test_receiver_retry_after_is_bounded_with_a_default(client, fake, receiver_says, caller_says):
    headers = {"Retry-After": receiver_says} if receiver_says is not None else {}
    fake.receiver_script.append((503, headers, UNAVAILABLE))
    answer = client.get("/send")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == caller_says


def test_revoked_token_recovers_through_the_retry_on_401(client, fake):
    first = client.get("/send").get_json()["token"]["id"]
    revoked = next(secret for secret, token_id in fake.minted.items() if token_id == first)
    fake.rejected.add(revoked)
    answer = client.get("/send")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["retried_after_401"] is True and body["token"]["id"] != first


def test_receiver_401_after_the_retry_passes_on_its_challenge(client, fake):
    challenge = 'Bearer realm="receiver", error="invalid_token", error_description="not in scope"'
    fake.receiver_script.extend([(401, {"WWW-Authenticate": challenge})] * 2)
    answer = client.get("/send")
    assert answer.status_code == 502
    body = answer.get_json()
    assert body["error"] == "receiver_rejected_token" and body["receiver_status"] == 401
    assert body["receiver_error"] == "invalid_token"
    assert body["receiver_error_description"] == "not in scope"
    assert "not in scope" in body["message"] and body["retried_after_401"] is True


def test_receiver_403_is_not_retried_and_is_reported(client, fake):
    challenge = 'Bearer error="insufficient_scope"'
    fake.receiver_script.append((403, {"WWW-Authenticate": challenge}))
    body = client.get("/send").get_json()
    assert (body["receiver_status"], body["receiver_error"]) == (403, "insufficient_scope")
    assert len(fake.received) == 1


def test_unknown_route_is_a_json_404(client):
    answer = client.get("/nope")
    assert answer.status_code == 404 and answer.is_json
    assert answer.get_json()["error"] == "not_found"
    assert answer.get_json()["dependency"] is None


def test_wrong_method_is_a_json_405_with_allow(client, fake):
    answer = client.post("/send")
    assert answer.status_code == 405 and answer.is_json
    assert answer.get_json()["error"] == "method_not_allowed"
    assert "GET" in answer.headers["Allow"]
    assert fake.creations == 0


def test_unexpected_failure_is_a_json_500_without_details(fake):
    app = create_app(app_config(fake))  # not app.testing: that would re-raise instead

    def broken(*args, **kwargs):
        raise RuntimeError("internal detail")

    app.extensions["m2m_token_client"].request = broken
    answer = app.test_client().get("/send")
    assert answer.status_code == 500 and answer.is_json
    assert answer.get_json()["error"] == "internal_error"
    text = answer.get_data(as_text=True)
    assert "internal detail" not in text and "Traceback" not in text


# -- configuration ------------------------------------------------------------------------------


VALID_ENV = {
    "CLERK_API_URL": "http://127.0.0.1:8780",
    "CLERK_MACHINE_SECRET_KEY": MACHINE_KEY,
    "RECEIVER_URL": "http://127.0.0.1:8782/",
}


def test_settings_defaults():
    settings = load_settings(VALID_ENV)
    assert settings.m2m_token_format == "opaque"
    assert settings.receiver_url == "http://127.0.0.1:8782"
    assert settings.m2m_refresh_margin_seconds < settings.m2m_token_ttl_seconds
    assert MACHINE_KEY not in repr(settings)


def test_clerk_api_url_defaults_to_the_real_clerk():
    env = {k: v for k, v in VALID_ENV.items() if k != "CLERK_API_URL"}
    assert load_settings(env).clerk_api_url == "https://api.clerk.com"


def test_empty_ttl_means_the_machines_default():
    assert load_settings({**VALID_ENV, "M2M_TOKEN_TTL_SECONDS": ""}).m2m_token_ttl_seconds is None


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"CLERK_MACHINE_SECRET_KEY": ""}, "CLERK_MACHINE_SECRET_KEY is not set"),
        ({"CLERK_MACHINE_SECRET_KEY": "sk_test_abc"}, "starts with ak_"),
        ({"RECEIVER_URL": ""}, "RECEIVER_URL is not set"),
        ({"RECEIVER_URL": "127.0.0.1:8782"}, "RECEIVER_URL must be an http"),
        ({"M2M_TOKEN_FORMAT": "paseto"}, "M2M_TOKEN_FORMAT"),
        ({"M2M_TOKEN_TTL_SECONDS": "abc"}, "M2M_TOKEN_TTL_SECONDS must be a whole number"),
        ({"M2M_TOKEN_TTL_SECONDS": "0"}, "M2M_TOKEN_TTL_SECONDS must be between"),
        ({"M2M_TOKEN_TTL_SECONDS": "30", "M2M_REFRESH_MARGIN_SECONDS": "30"}, "smaller than"),
        ({"M2M_REFRESH_MARGIN_SECONDS": "-1"}, "M2M_REFRESH_MARGIN_SECONDS"),
        ({"M2M_HTTP_TIMEOUT_SECONDS": "0"}, "M2M_HTTP_TIMEOUT_SECONDS"),
        # non-finite numbers: no effective timeout, no retry budget, a margin that never ends
        ({"M2M_HTTP_TIMEOUT_SECONDS": "inf"}, "M2M_HTTP_TIMEOUT_SECONDS must be a finite"),
        ({"M2M_ISSUER_RETRY_BUDGET_SECONDS": "nan"}, "M2M_ISSUER_RETRY_BUDGET_SECONDS must be a"),
        ({"M2M_REFRESH_MARGIN_SECONDS": "nan"}, "M2M_REFRESH_MARGIN_SECONDS must be a finite"),
        ({"M2M_TOKEN_TTL_SECONDS": "", "M2M_REFRESH_MARGIN_SECONDS": "nan"}, "MARGIN_SECONDS"),
        # out of range
        ({"M2M_HTTP_TIMEOUT_SECONDS": "0.05"}, "M2M_HTTP_TIMEOUT_SECONDS must be between 0.1"),
        ({"M2M_HTTP_TIMEOUT_SECONDS": "61"}, "M2M_HTTP_TIMEOUT_SECONDS must be between 0.1"),
        ({"M2M_ISSUER_MAX_ATTEMPTS": "0"}, "M2M_ISSUER_MAX_ATTEMPTS must be between 1 and 10"),
        ({"M2M_ISSUER_MAX_ATTEMPTS": "11"}, "M2M_ISSUER_MAX_ATTEMPTS must be between 1 and 10"),
        ({"M2M_ISSUER_MAX_ATTEMPTS": "2.5"}, "M2M_ISSUER_MAX_ATTEMPTS must be a whole number"),
        ({"M2M_ISSUER_RETRY_BUDGET_SECONDS": "121"}, "RETRY_BUDGET_SECONDS must be between 0"),
        ({"M2M_ISSUER_RETRY_BUDGET_SECONDS": "-1"}, "RETRY_BUDGET_SECONDS must be between 0"),
        # URLs without a host, or that /receive cannot be appended to
        ({"RECEIVER_URL": "http://"}, "RECEIVER_URL must name a host"),
        ({"CLERK_API_URL": "https://:443"}, "CLERK_API_URL must name a host"),
        ({"RECEIVER_URL": "http://127.0.0.1:99999"}, "RECEIVER_URL has an invalid port"),
        ({"RECEIVER_URL": "http://127.0.0.1:8782/?a=1"}, "RECEIVER_URL must not have a query"),
        ({"M2M_TOKEN_FORMAT": "JWT "}, "M2M_TOKEN_FORMAT must be opaque or jwt"),
    ],
)
def test_bad_settings_fail_fast_naming_the_variable(override, named):
    with pytest.raises(ConfigError, match=named):
        load_settings({**VALID_ENV, **override})


def test_secret_key_value_never_appears_in_config_errors():
    with pytest.raises(ConfigError) as caught:
        load_settings({**VALID_ENV, "CLERK_MACHINE_SECRET_KEY": "sk_live_secretvalue"})
    assert "secretvalue" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://user:s3cr3t@127.0.0.1:8782",  # not http(s)
        "http://user:s3cr3t@",  # no host
        "http://user:s3cr3t@127.0.0.1:99999",  # bad port
        "http://user:s3cr3t@127.0.0.1:8782/?a=1",  # a query
    ],
)
@pytest.mark.parametrize("name", ["CLERK_API_URL", "RECEIVER_URL"])
def test_url_errors_name_the_variable_but_never_repeat_the_url(name, url):
    """A URL may carry credentials (user:password@): the error says which and what is wrong."""
    with pytest.raises(ConfigError) as caught:
        load_settings({**VALID_ENV, name: url})
    assert str(caught.value).startswith(name)
    assert "s3cr3t" not in str(caught.value) and "user" not in str(caught.value)


def test_zero_given_to_create_app_is_a_value_not_unset(fake):
    config = app_config(fake, M2M_REFRESH_MARGIN_SECONDS=0, M2M_ISSUER_RETRY_BUDGET_SECONDS=0)
    app = create_app(config)
    settings, client = app.extensions["settings"], app.extensions["m2m_token_client"]
    assert settings.m2m_refresh_margin_seconds == 0 and client.refresh_margin == 0
    assert settings.m2m_issuer_retry_budget_seconds == 0 and client.retry.max_total_seconds == 0


def test_false_given_to_create_app_is_refused_naming_the_variable(fake):
    with pytest.raises(ConfigError, match="M2M_ISSUER_MAX_ATTEMPTS must be a whole number"):
        create_app(app_config(fake, M2M_ISSUER_MAX_ATTEMPTS=False))


def test_create_app_fails_fast_on_bad_settings(fake):
    with pytest.raises(ConfigError, match="smaller than"):
        create_app(app_config(fake, M2M_TOKEN_TTL_SECONDS="10", M2M_REFRESH_MARGIN_SECONDS="20"))


def test_dotenv_is_read_from_the_app_folder_and_the_environment_wins(fake, tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(
        f"CLERK_API_URL={fake.url}\nCLERK_MACHINE_SECRET_KEY={MACHINE_KEY}\n"
        f"RECEIVER_URL=http://127.0.0.1:1\nM2M_TOKEN_FORMAT=jwt\n"
    )
    monkeypatch.setattr(caller_app, "APP_DIR", tmp_path)
    monkeypatch.delenv("M2M_SKIP_DOTENV")
    monkeypatch.setenv("RECEIVER_URL", fake.url)
    settings = create_app().extensions["settings"]
    assert settings.m2m_token_format == "jwt"  # from .env
    assert settings.receiver_url == fake.url  # the environment wins over .env


def test_dotenv_is_skipped_when_m2m_skip_dotenv_is_set(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(f"CLERK_MACHINE_SECRET_KEY={MACHINE_KEY}\n")
    monkeypatch.setattr(caller_app, "APP_DIR", tmp_path)
    with pytest.raises(ConfigError, match="CLERK_MACHINE_SECRET_KEY is not set"):
        create_app()


# -- WWW-Authenticate ---------------------------------------------------------------------------


def test_bearer_challenge_is_parsed():
    header = 'Bearer realm="r", error="invalid_token", error_description="a \\"quoted\\", b"'
    assert parse_bearer_challenge(header) == {
        "realm": "r",
        "error": "invalid_token",
        "error_description": 'a "quoted", b',
    }


@pytest.mark.parametrize("header", ["", "Basic realm=x", "Bearer"])
def test_missing_or_foreign_challenge_parses_to_nothing(header):
    assert parse_bearer_challenge(header) == {}
