"""The receiver's Prometheus `/metrics`: verifications by format and outcome, latency, issuer
calls, JWKS fetches and cache hits, added up over two gunicorn workers (multiprocess mode), with
bounded labels that never carry a token or a machine id."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from loadtest.issuer_client import IssuerClient
from loadtest.stack import Server, Stack

pytestmark = [pytest.mark.e2e]

ALLOWED_LABELS = {
    "format": {"jwt", "opaque", "other"},
    "outcome": {"ok", "invalid_token", "insufficient_scope", "unavailable"},
    "route": {"verify", "introspect", "jwks", "discovery", "other"},
    "status": {"1xx", "2xx", "3xx", "4xx", "5xx", "error"},
    "cache": {"jwt", "opaque"},
    "result": {"hit", "miss"},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("receiver-metrics"), workers=2) as running:
        yield running


def samples(url: str) -> tuple[str, dict[tuple[str, tuple], float]]:
    """The scrape's text and its samples keyed by (name, sorted labels)."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def present(url: str, token: str) -> int:
    response = requests.post(
        f"{url}/receive",
        json={"message": "m"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    return response.status_code


def test_verifications_latency_and_issuer_calls_add_up_over_both_workers(stack):
    issuer = IssuerClient(stack.servers["issuer"].url)
    opaque = issuer.mint(stack.seed.caller.secret_key, "opaque").token
    jwt = issuer.mint(stack.seed.caller.secret_key, "jwt").token
    receiver = stack.servers["receiver"].url

    statuses = [present(receiver, opaque) for _ in range(6)]
    statuses += [present(receiver, jwt) for _ in range(6)]
    statuses += [present(receiver, "not-a-token") for _ in range(3)]
    statuses += [present(receiver, "mt_" + "0" * 64)]  # well-formed, never minted

    assert statuses == [200] * 12 + [401] * 4
    text, found = samples(receiver)
    assert value(found, "receiver_verifications_total", format="opaque", outcome="ok") == 6
    assert value(found, "receiver_verifications_total", format="jwt", outcome="ok") == 6
    refused = "invalid_token"
    assert value(found, "receiver_verifications_total", format="other", outcome=refused) == 3
    assert value(found, "receiver_verifications_total", format="opaque", outcome=refused) == 1
    assert value(found, "receiver_verification_seconds_count", format="opaque") == 7
    assert value(found, "receiver_verification_seconds_count", format="jwt") == 6
    assert value(found, "receiver_verification_seconds_sum", format="opaque") > 0
    # 7 opaque verifications asked the issuer (200 six times, 404 once); JWKS fetched per worker.
    assert value(found, "receiver_issuer_requests_total", route="verify", status="2xx") == 6
    assert value(found, "receiver_issuer_requests_total", route="verify", status="4xx") == 1
    assert 1 <= value(found, "receiver_issuer_requests_total", route="jwks", status="2xx") <= 2
    assert opaque not in text and jwt.split(".")[1] not in text
    assert stack.seed.caller.id not in text and "POST" not in text


def test_every_label_value_comes_from_a_small_fixed_set(stack):
    present(stack.servers["receiver"].url, "x" * 9000)  # too long: still the "other" format
    _text, found = samples(stack.servers["receiver"].url)
    ours = [key for key in found if key[0].startswith("receiver_")]
    assert ours
    for _name, labels in ours:
        for label, label_value in labels:
            assert label == "le" or label_value in ALLOWED_LABELS[label], (label, label_value)


def test_cache_hits_and_misses_match_the_issuer_calls(stack):
    cached: Server = stack.receiver_server({"M2M_VERIFY_CACHE_SECONDS": "300"})
    stack.servers["cached-receiver"] = cached  # stopped with the stack
    cached.start()
    cached.wait_healthy()
    token = IssuerClient(stack.servers["issuer"].url).mint(stack.seed.caller.secret_key, "opaque")

    assert [present(cached.url, token.token) for _ in range(8)] == [200] * 8
    _text, found = samples(cached.url)
    hits = value(found, "receiver_verify_cache_total", cache="opaque", result="hit")
    misses = value(found, "receiver_verify_cache_total", cache="opaque", result="miss")
    assert hits + misses == 8 and 1 <= misses <= 2  # one miss per gunicorn worker at most
    assert value(found, "receiver_issuer_requests_total", route="verify", status="2xx") == misses
