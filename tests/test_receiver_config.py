"""receiver_app configuration: unsafe or incomplete settings stop the app with a clear message."""

from __future__ import annotations

import pytest

import receiver_app
from receiver_app.config import ENV_VARS, ConfigError

VALID = {
    "CLERK_API_URL": "http://127.0.0.1:8780/",
    "CLERK_MACHINE_SECRET_KEY": "ak_configtest" + "5" * 32,
    "CLERK_MACHINE_ID": "mch_configreceiver0000000000000",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("M2M_SKIP_DOTENV", "1")


def settings(app):
    return app.extensions["settings"]


def test_defaults_follow_the_api_url():
    app = receiver_app.create_app(VALID)
    verifier = app.extensions["m2m_verifier"]
    assert settings(app).clerk_api_url == "http://127.0.0.1:8780"
    assert verifier.jwks_url == "http://127.0.0.1:8780/.well-known/jwks.json"
    assert verifier.jwt_issuer == "http://127.0.0.1:8780"
    assert (verifier.leeway_seconds, verifier.allowed_callers) == (5, None)
    assert settings(app).m2m_verify_cache_seconds == 0
    assert verifier.audience_required is True


def test_settings_come_from_the_environment(monkeypatch):
    for name, value in VALID.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("M2M_ALLOWED_CALLERS", " mch_a1 , mch_b2 ")
    monkeypatch.setenv("M2M_VERIFY_CACHE_SECONDS", "30")
    config = settings(receiver_app.create_app())
    assert config.m2m_allowed_callers == frozenset({"mch_a1", "mch_b2"})
    assert config.m2m_verify_cache_seconds == 30


def test_dotenv_is_read_unless_skipped(monkeypatch):
    monkeypatch.setattr(
        receiver_app, "dotenv_values", lambda path: {**VALID, "M2M_VERIFY_CACHE_SECONDS": "9"}
    )
    monkeypatch.setenv("M2M_SKIP_DOTENV", "0")
    assert settings(receiver_app.create_app()).m2m_verify_cache_seconds == 9
    monkeypatch.setenv("M2M_SKIP_DOTENV", "1")
    with pytest.raises(ConfigError, match="CLERK_API_URL is not set"):
        receiver_app.create_app()


@pytest.mark.parametrize(
    "override,message",
    [
        ({"CLERK_API_URL": ""}, "CLERK_API_URL is not set"),
        ({"CLERK_API_URL": "127.0.0.1:8780"}, "CLERK_API_URL must be an http"),
        ({"CLERK_MACHINE_SECRET_KEY": ""}, "CLERK_MACHINE_SECRET_KEY is not set"),
        ({"CLERK_MACHINE_SECRET_KEY": "sk_test_instance"}, "receiver machine's own key"),
        ({"CLERK_MACHINE_ID": "user_1"}, "CLERK_MACHINE_ID must be"),
        ({"M2M_JWT_AUDIENCE_REQUIRED": "false"}, "needs M2M_ALLOWED_CALLERS"),
        ({"M2M_JWT_AUDIENCE_REQUIRED": "maybe"}, "must be true or false"),
        ({"M2M_VERIFY_CACHE_SECONDS": "soon"}, "must be a number"),
        ({"M2M_VERIFY_CACHE_SECONDS": "-1"}, "0 or more"),
        ({"M2M_VERIFY_CACHE_SECONDS": "inf"}, "M2M_VERIFY_CACHE_SECONDS must be a finite"),
        ({"M2M_JWT_CACHE_SECONDS": "nan"}, "M2M_JWT_CACHE_SECONDS must be a finite"),
        ({"M2M_JWT_CACHE_SECONDS": "Infinity"}, "M2M_JWT_CACHE_SECONDS must be a finite"),
        ({"M2M_JWT_CACHE_SECONDS": float("nan")}, "M2M_JWT_CACHE_SECONDS must be a finite"),
        ({"M2M_JWT_CACHE_SECONDS": True}, "M2M_JWT_CACHE_SECONDS must be a number"),
        ({"CLERK_API_URL": "http://x y"}, "CLERK_API_URL must be an http"),
        ({"CLERK_API_URL": "http://"}, "CLERK_API_URL must be an http"),
        ({"CLERK_API_URL": "https:///v1"}, "CLERK_API_URL must be an http"),
        ({"CLERK_API_URL": "ftp://127.0.0.1"}, "CLERK_API_URL must be an http"),
        ({"CLERK_API_URL": "http://127.0.0.1:port"}, "CLERK_API_URL must be an http"),
        ({"CLERK_JWKS_URL": "/.well-known/jwks.json"}, "CLERK_JWKS_URL must be an http"),
        ({"CLERK_JWKS_URL": "http://a\tb/jwks"}, "CLERK_JWKS_URL must be an http"),
        ({"M2M_ALLOWED_CALLERS": ",,,"}, "M2M_ALLOWED_CALLERS has an empty entry"),
        ({"M2M_ALLOWED_CALLERS": "mch_a1,,mch_b2"}, "M2M_ALLOWED_CALLERS has an empty entry"),
        ({"M2M_ALLOWED_CALLERS": "mch_ok,bob"}, "not machine ids"),
        ({"M2M_ALLOWED_CALLERS": "mch_"}, "not machine ids"),
        ({"M2M_ALLOWED_CALLERS": "MCH_abc"}, "not machine ids"),
        ({"CLERK_MACHINE_ID": "mch_"}, "CLERK_MACHINE_ID must be"),
        ({"CLERK_MACHINE_ID": "mch_a-b"}, "CLERK_MACHINE_ID must be"),
        ({"CLERK_JWT_KEY": "-----BEGIN PUBLIC KEY-----\nnope"}, "CLERK_JWT_KEY must be"),
    ],
)
def test_unsafe_configuration_refuses_to_start(override, message):
    with pytest.raises(ConfigError, match=message):
        receiver_app.create_app({**VALID, **override})


@pytest.mark.parametrize(
    "override",
    [
        {"CLERK_API_URL": "https://user:p4ss w0rd@api.example.com"},
        {"M2M_ALLOWED_CALLERS": "mch_ok,ak_p4ssw0rd"},
    ],
)
def test_config_errors_never_repeat_the_value(override):
    with pytest.raises(ConfigError) as excinfo:
        receiver_app.create_app({**VALID, **override})
    assert "p4ss" not in str(excinfo.value)


def test_config_error_never_repeats_the_secret_key():
    secret = "sk_live_do_not_print_me"
    with pytest.raises(ConfigError) as excinfo:
        receiver_app.create_app({**VALID, "CLERK_MACHINE_SECRET_KEY": secret})
    assert secret not in str(excinfo.value)


def test_audience_optional_with_an_allowlist_starts():
    app = receiver_app.create_app(
        {**VALID, "M2M_JWT_AUDIENCE_REQUIRED": "false", "M2M_ALLOWED_CALLERS": "mch_caller1"}
    )
    assert settings(app).m2m_jwt_audience_required is False


@pytest.mark.parametrize(
    "override,attribute,expected",
    [
        ({"M2M_JWT_CACHE_SECONDS": 0}, "m2m_jwt_cache_seconds", 0),
        ({"M2M_VERIFY_CACHE_SECONDS": 0.0}, "m2m_verify_cache_seconds", 0),
        (
            {"M2M_JWT_AUDIENCE_REQUIRED": False, "M2M_ALLOWED_CALLERS": "mch_caller1"},
            "m2m_jwt_audience_required",
            False,
        ),
        ({"M2M_JWT_AUDIENCE_REQUIRED": True}, "m2m_jwt_audience_required", True),
        ({"M2M_VERIFY_CACHE_SECONDS": 2}, "m2m_verify_cache_seconds", 2),
    ],
)
def test_zero_and_false_given_to_create_app_are_values_not_unset(override, attribute, expected):
    config = settings(receiver_app.create_app({**VALID, **override}))
    assert getattr(config, attribute) == expected


def test_blank_or_none_given_to_create_app_means_the_default():
    config = settings(
        receiver_app.create_app(
            {**VALID, "M2M_VERIFY_CACHE_SECONDS": None, "M2M_JWT_CACHE_SECONDS": " "}
        )
    )
    assert (config.m2m_verify_cache_seconds, config.m2m_jwt_cache_seconds) == (0, 60)


def test_settings_repr_hides_the_secret_key():
    config = settings(receiver_app.create_app(VALID))
    assert VALID["CLERK_MACHINE_SECRET_KEY"] not in repr(config)
