"""Unit tests of caller_app/token_client.py against a fake issuer (and receiver) we control.

`FakeServer` (tests/fakes.py) is a tiny Flask app served by werkzeug on 127.0.0.1 in a thread:
it mints tokens, counts creations, and answers scripted statuses, Retry-After headers and delays
on demand.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from caller_app.token_client import (
    IssuerRequestRejected,
    IssuerUnavailable,
    M2MTokenClient,
    MachineSecretKeyRejected,
    RetryPolicy,
)
from tests.fakes import MACHINE_KEY, FakeClock, FakeServer
from tests.harness import free_port


@pytest.fixture
def fake():
    server = FakeServer().start()
    yield server
    server.stop()


def make_client(fake: FakeServer, **kwargs) -> M2MTokenClient:
    """A client for the fake issuer whose sleeps are recorded, not slept."""
    sleeps: list[float] = []
    kwargs.setdefault("sleep", sleeps.append)
    kwargs.setdefault("timeout", 2.0)
    client = M2MTokenClient(fake.url, MACHINE_KEY, **kwargs)
    client.sleeps = sleeps  # type: ignore[attr-defined]
    return client


# -- creating and reusing -----------------------------------------------------------------------


def test_creates_token_with_machine_key_format_and_ttl(fake):
    client = make_client(fake, token_format="jwt", ttl_seconds=120)
    token = client.get_token()
    assert fake.create_auth == [f"Bearer {MACHINE_KEY}"]
    assert fake.create_bodies == [{"token_format": "jwt", "seconds_until_expiration": 120}]
    assert token.format == "jwt"
    assert fake.minted[token.token] == token.id


def test_without_ttl_the_machine_default_is_used(fake):
    make_client(fake, ttl_seconds=None).get_token()
    assert fake.create_bodies == [{"token_format": "opaque"}]


def test_fifty_calls_reuse_one_token(fake):
    client = make_client(fake, ttl_seconds=300)
    tokens = {client.get_token().id for _ in range(50)}
    assert len(tokens) == 1
    assert fake.creations == 1


def test_token_is_refreshed_at_expiration_minus_margin(fake):
    clock = FakeClock()
    client = make_client(fake, ttl_seconds=60, refresh_margin_seconds=10, monotonic=clock)
    first = client.get_token()
    clock.advance(49.5)  # 0.5 s before expiration - margin: still reused
    assert client.get_token().id == first.id
    clock.advance(1.0)
    second = client.get_token()
    assert second.id != first.id
    assert fake.creations == 2


def test_lifetime_comes_from_the_issuers_expiration_not_the_requested_ttl(fake):
    fake.expiration_cap = 20  # the issuer grants 20 s although 600 s were asked for
    clock = FakeClock()
    client = make_client(fake, ttl_seconds=600, refresh_margin_seconds=5, monotonic=clock)
    first = client.get_token()
    clock.advance(14)
    assert client.get_token().id == first.id
    clock.advance(2)  # 16 s > 20 - 5
    assert client.get_token().id != first.id


def test_clock_skew_only_makes_the_client_refresh_earlier(fake):
    """Our wall clock 100 s behind the issuer would add 100 s of life; created_at caps it."""
    clock = FakeClock()
    client = make_client(
        fake,
        ttl_seconds=60,
        refresh_margin_seconds=10,
        monotonic=clock,
        wall_clock=lambda: time.time() - 100,
    )
    first = client.get_token()
    clock.advance(51)
    assert client.get_token().id != first.id


def test_token_living_less_than_the_margin_is_used_once_not_cached(fake):
    fake.expiration_cap = 5
    client = make_client(fake, ttl_seconds=60, refresh_margin_seconds=10)
    assert client.get_token().id != client.get_token().id
    assert fake.creations == 2


def test_formats_are_cached_separately(fake):
    client = make_client(fake)
    opaque, jwt = client.get_token("opaque"), client.get_token("jwt")
    assert (opaque.format, jwt.format) == ("opaque", "jwt")
    assert client.get_token("opaque").id == opaque.id
    assert client.get_token("jwt").id == jwt.id
    assert fake.creations == 2


def test_slow_creation_of_one_format_does_not_block_the_other(fake):
    fake.jwt_gate = threading.Event()
    client = make_client(fake)
    with ThreadPoolExecutor(1) as pool:
        pending_jwt = pool.submit(client.get_token, "jwt")
        assert _wait_until(lambda: fake.creations == 1)  # jwt creation is in flight, blocked
        opaque = client.get_token("opaque")  # would hang if the lock were held over HTTP
        assert not pending_jwt.done()
        fake.jwt_gate.set()
        assert pending_jwt.result(5).format == "jwt"
    assert opaque.format == "opaque"


@pytest.mark.parametrize(
    "overrides",
    [
        {"expiration": "99999999999999"},
        {"created_at": "1700000000000"},
        {"expiration": True},
        {"expiration": 10**400},
        {"token": ""},
        {"token": 12345},
        {"token": "mt_abc\r\nX-Injected: 1"},
        {"id": None},
    ],
)
def test_malformed_token_object_is_issuer_unavailable_naming_no_value(fake, overrides):
    fake.token_overrides = overrides
    client = make_client(fake)
    with pytest.raises(IssuerUnavailable, match="unexpected token object") as caught:
        client.get_token()
    assert fake.creations == 1  # not retried: the issuer may have minted a token already
    assert "99999" not in str(caught.value) and "mt_abc" not in str(caught.value)


def test_non_finite_expiration_is_rejected(fake):
    fake.token_overrides = {"expiration": float("nan")}  # JSON NaN, which Python's json reads
    with pytest.raises(IssuerUnavailable, match="unexpected token object"):
        make_client(fake).get_token()


def test_null_expiration_means_use_once(fake):
    fake.token_overrides = {"expiration": None}
    client = make_client(fake)
    first = client.get_token()
    assert client.get_token().id != first.id


# -- single flight ------------------------------------------------------------------------------


def test_concurrent_requests_on_a_cold_cache_make_exactly_one_creation(fake):
    fake.issuer_delay = 0.2
    client = make_client(fake)
    with ThreadPoolExecutor(20) as pool:
        ids = set(pool.map(lambda _: client.get_token().id, range(20)))
    assert len(ids) == 1
    assert fake.creations == 1


def test_concurrent_requests_on_a_stale_cache_make_exactly_one_creation(fake):
    clock = FakeClock()
    client = make_client(fake, ttl_seconds=60, refresh_margin_seconds=10, monotonic=clock)
    stale = client.get_token()
    clock.advance(55)
    fake.issuer_delay = 0.2
    with ThreadPoolExecutor(20) as pool:
        ids = set(pool.map(lambda _: client.get_token().id, range(20)))
    assert len(ids) == 1 and stale.id not in ids
    assert fake.creations == 2


def test_waiters_share_the_leaders_failure_instead_of_retrying_each(fake):
    fake.issuer_delay = 0.3
    fake.issuer_script.extend([(503, {})] * 3)
    client = make_client(fake, retry=RetryPolicy(max_attempts=3))

    def attempt(_):
        try:
            client.get_token()
        except IssuerUnavailable:
            return "unavailable"
        return "ok"

    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(attempt, range(10)))
    # One flight made the 3 attempts (0.9 s) and all ten threads shared its outcome,
    # instead of ten flights of three attempts each.
    assert outcomes == ["unavailable"] * 10
    assert fake.creations == 3


# -- retries ------------------------------------------------------------------------------------


def test_429_is_retried_after_the_issuers_retry_after(fake):
    fake.issuer_script.append((429, {"Retry-After": "2"}))
    client = make_client(fake)
    client.get_token()
    assert client.sleeps == [2.0]
    assert fake.creations == 2


def test_retry_after_zero_does_not_skip_the_backoff(fake):
    """Retry-After is a floor on the jittered backoff, never a way to retry at once."""
    fake.issuer_script.extend([(429, {"Retry-After": "0"})] * 3)
    policy = RetryPolicy(max_attempts=4, backoff_base=0.2, backoff_cap=2.0)
    client = make_client(fake, retry=policy)
    client.get_token()
    assert fake.creations == 4
    assert len(client.sleeps) == 3
    for attempt, delay in enumerate(client.sleeps):
        assert 0 < delay <= 0.2 * 2**attempt


def test_retry_after_is_capped(fake):
    fake.issuer_script.append((429, {"Retry-After": "120"}))
    client = make_client(fake, retry=RetryPolicy(retry_after_cap=3.0))
    client.get_token()
    assert client.sleeps == [3.0]


def test_5xx_is_retried_with_jittered_exponential_backoff(fake):
    fake.issuer_script.extend([(503, {}), (500, {}), (502, {})])
    policy = RetryPolicy(max_attempts=4, backoff_base=0.2, backoff_cap=0.5)
    client = make_client(fake, retry=policy)
    client.get_token()
    assert fake.creations == 4
    assert len(client.sleeps) == 3
    for attempt, delay in enumerate(client.sleeps):
        assert 0 <= delay <= min(0.5, 0.2 * 2**attempt)


def test_gives_up_after_max_attempts_with_issuer_unavailable(fake):
    fake.issuer_script.extend([(503, {"Retry-After": "1"})] * 10)
    client = make_client(fake, retry=RetryPolicy(max_attempts=3))
    with pytest.raises(IssuerUnavailable, match="503") as caught:
        client.get_token()
    assert fake.creations == 3
    assert caught.value.retry_after == 1.0


def test_stops_retrying_when_the_time_budget_would_be_exceeded(fake):
    fake.issuer_script.extend([(429, {"Retry-After": "5"})] * 5)
    client = make_client(fake, retry=RetryPolicy(max_total_seconds=3, retry_after_cap=10))
    with pytest.raises(IssuerUnavailable) as caught:
        client.get_token()
    assert fake.creations == 1 and client.sleeps == []
    assert caught.value.retry_after == 5.0


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_other_4xx_are_never_retried(fake, status):
    fake.issuer_script.append((status, {}))
    client = make_client(fake)
    with pytest.raises(IssuerRequestRejected) as caught:
        client.get_token()
    assert fake.creations == 1
    assert caught.value.status == status and caught.value.code == f"code_{status}"


def test_rejected_machine_key_names_the_setting_but_never_the_key(fake):
    fake.issuer_script.append((401, {}))
    client = make_client(fake)
    with pytest.raises(MachineSecretKeyRejected) as caught:
        client.get_token()
    assert fake.creations == 1
    assert "CLERK_MACHINE_SECRET_KEY" in str(caught.value)
    assert MACHINE_KEY not in str(caught.value) and MACHINE_KEY not in repr(client)


class CountingSession(requests.Session):
    """A real Session that counts the requests it was asked to send."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def request(self, *args, **kwargs) -> requests.Response:
        self.attempts += 1
        return super().request(*args, **kwargs)


def test_unreachable_issuer_is_retried_then_reported():
    session, sleeps = CountingSession(), []
    client = M2MTokenClient(
        f"http://127.0.0.1:{free_port()}",
        MACHINE_KEY,
        timeout=1,
        retry=RetryPolicy(max_attempts=3),
        session=session,
        sleep=sleeps.append,
    )
    with pytest.raises(IssuerUnavailable, match="unreachable"):
        client.get_token()
    assert session.attempts == 3  # every attempt was made, with a backoff between two
    assert len(sleeps) == 2 and all(0 <= s <= RetryPolicy().backoff_cap for s in sleeps)


def test_issuer_timeout_is_bounded_and_reported(fake):
    fake.issuer_delay = 1.0
    client = make_client(fake, timeout=0.2, retry=RetryPolicy(max_attempts=2))
    with pytest.raises(IssuerUnavailable, match="unreachable"):
        client.get_token()
    assert len(client.sleeps) == 1


@pytest.mark.parametrize(("ttl", "margin"), [(30, 30), (None, -1), (None, float("nan"))])
def test_margin_not_smaller_than_ttl_or_not_finite_fails_fast(ttl, margin):
    with pytest.raises(ValueError, match="refresh margin"):
        M2MTokenClient(
            "http://127.0.0.1:1", MACHINE_KEY, ttl_seconds=ttl, refresh_margin_seconds=margin
        )


# -- presenting the token and the retry on 401 --------------------------------------------------


def test_request_sends_the_bearer_token(fake):
    client = make_client(fake)
    result = client.request("POST", f"{fake.url}/receive", json={"message": "hi"})
    assert result.response.status_code == 200
    assert fake.received == [(result.token.token, {"message": "hi"})]
    assert not result.retried_after_401


def test_401_drops_the_token_and_retries_once_with_a_fresh_one(fake):
    client = make_client(fake)
    revoked = client.get_token()
    fake.rejected.add(revoked.token)
    result = client.request("POST", f"{fake.url}/receive", json={"message": "hi"})
    assert result.response.status_code == 200 and result.retried_after_401
    assert result.token.id != revoked.id
    assert [secret for secret, _ in fake.received] == [revoked.token, result.token.token]
    assert client.get_token().id == result.token.id  # the fresh token is cached


def test_second_401_is_returned_without_a_third_attempt(fake):
    fake.receiver_script.extend([(401, {}), (401, {})])
    client = make_client(fake)
    result = client.request("POST", f"{fake.url}/receive", json={"message": "hi"})
    assert result.response.status_code == 401 and result.retried_after_401
    assert len(fake.received) == 2 and fake.creations == 2


def test_concurrent_401s_for_the_same_token_cause_one_new_creation(fake):
    client = make_client(fake)
    revoked = client.get_token()
    fake.rejected.add(revoked.token)
    fake.issuer_delay = 0.1
    with ThreadPoolExecutor(10) as pool:
        results = list(
            pool.map(lambda _: client.request("POST", f"{fake.url}/receive", json={}), range(10))
        )
    assert all(r.response.status_code == 200 for r in results)
    assert fake.creations == 2


def test_receiver_network_errors_propagate_as_requests_exceptions(fake):
    client = make_client(fake)
    with pytest.raises(requests.ConnectionError):
        client.request("POST", f"http://127.0.0.1:{free_port()}/receive", json={})


def _wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False
