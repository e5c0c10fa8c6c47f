"""Second hardening pass on the dashboard (issue 13): signing out ends every copy of the
session cookie, so does a new instance secret key, and wrong keys are throttled per client."""

from __future__ import annotations

import logging
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from mock_issuer.dashboard import throttle
from tests.fakes import advance_clock
from tests.seed import TEST_SECRET_KEY, make_issuer_app

COOKIE = "mock_issuer_dashboard"


def csrf(client: FlaskClient) -> str:
    page = client.get("/dashboard/sign-in")
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def sign_in(client: FlaskClient, key: str = TEST_SECRET_KEY):
    return client.post("/dashboard/sign-in", data={"secret_key": key, "csrf_token": csrf(client)})


def signed_in(client: FlaskClient) -> bool:
    return client.get("/dashboard/usage").status_code == 200


def copy_of_cookie(source: FlaskClient, app: Flask) -> FlaskClient:
    """Another client holding the same session cookie (a stolen or saved copy)."""
    cookie = source.get_cookie(COOKIE, path="/dashboard")
    assert cookie is not None
    other = app.test_client()
    other.set_cookie(COOKIE, cookie.value, path="/dashboard")
    return other


@pytest.fixture
def app(tmp_path) -> Flask:
    return make_issuer_app(tmp_path)


# ---- sign-out and key changes end sessions ----


def test_sign_out_ends_every_earlier_session_cookie(app):
    browser = app.test_client()
    assert sign_in(browser).status_code == 303
    saved = copy_of_cookie(browser, app)
    elsewhere = app.test_client()
    assert sign_in(elsewhere).status_code == 303
    assert signed_in(saved) and signed_in(elsewhere)

    page = browser.get("/dashboard/machines").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert browser.post("/dashboard/sign-out", data={"csrf_token": token}).status_code == 303

    assert not signed_in(browser)
    assert not signed_in(saved)  # the copy of the cookie no longer works
    assert not signed_in(elsewhere)  # nor does any session signed in before
    assert sign_in(saved).status_code == 303 and signed_in(saved)  # signing in again works


def test_a_new_instance_secret_key_ends_sessions_even_with_a_fixed_cookie_secret(tmp_path):
    fixed = {"MOCK_ISSUER_SESSION_SECRET": "a-fixed-cookie-signing-secret-0123456789"}
    before = make_issuer_app(tmp_path, **fixed)
    browser = before.test_client()
    assert sign_in(browser).status_code == 303
    cookie = browser.get_cookie(COOKIE, path="/dashboard").value

    same_key = make_issuer_app(tmp_path, **fixed).test_client()
    same_key.set_cookie(COOKIE, cookie, path="/dashboard")
    assert signed_in(same_key)  # a restart alone keeps sessions

    new_key = "sk_test_" + "9" * 40
    after = make_issuer_app(tmp_path, CLERK_SECRET_KEY=new_key, **fixed).test_client()
    after.set_cookie(COOKIE, cookie, path="/dashboard")
    assert not signed_in(after)
    assert sign_in(after, new_key).status_code == 303 and signed_in(after)


# ---- sign-in throttling ----

WRONG_KEY = "sk_test_" + "0" * 40


def attempt(client: FlaskClient, address: str, key: str = WRONG_KEY):
    """One sign-in POST from `address` (the client's IP as the server sees it)."""
    return client.post(
        "/dashboard/sign-in",
        data={"secret_key": key, "csrf_token": csrf(client)},
        environ_base={"REMOTE_ADDR": address},
    )


@pytest.fixture
def issuer_log(caplog):
    """Records of the issuer's logger (it propagates to the root logger, where caplog listens)."""
    caplog.set_level(logging.INFO, logger="mock_issuer")
    return caplog


def test_wrong_keys_are_throttled_per_client_with_retry_after(app):
    attacker, bystander = app.test_client(), app.test_client()
    for _ in range(throttle.MAX_FAILURES):
        assert attempt(attacker, "192.0.2.7").status_code == 401
    throttled = attempt(attacker, "192.0.2.7")
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= throttle.WINDOW_SECONDS
    assert attempt(attacker, "192.0.2.7", TEST_SECRET_KEY).status_code == 429  # no guess counts
    assert not signed_in(attacker)
    assert attempt(bystander, "192.0.2.8", TEST_SECRET_KEY).status_code == 303  # per client
    assert signed_in(bystander)


def test_a_throttled_period_is_logged_once(app, issuer_log):
    attacker = app.test_client()
    for _ in range(throttle.MAX_FAILURES + 40):
        attempt(attacker, "192.0.2.9")
    lines = [r.getMessage() for r in issuer_log.records if "192.0.2.9" in r.getMessage()]
    assert len([line for line in lines if "throttled" in line]) == 1
    assert len(lines) == throttle.MAX_FAILURES + 1


def test_the_throttle_lifts_when_its_period_ends(app, monkeypatch):
    client = app.test_client()
    for _ in range(throttle.MAX_FAILURES + 1):
        attempt(client, "192.0.2.10")
    assert attempt(client, "192.0.2.10", TEST_SECRET_KEY).status_code == 429
    advance_clock(monkeypatch, throttle.WINDOW_SECONDS + 0.001)
    assert attempt(client, "192.0.2.10", TEST_SECRET_KEY).status_code == 303
