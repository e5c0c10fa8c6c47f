"""The server-log filter each app installs (`<app>/log_redaction.py`, one copy per app since
the app folders never import each other): the copies stay identical, and what it blanks."""

from __future__ import annotations

import logging

import pytest

from mock_issuer import log_redaction as issuer_copy
from tests.harness import REPO_ROOT

OPAQUE = "mt_" + "ab" * 32
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtY2hfeCJ9.c2lnbmF0dXJl"


def test_the_three_copies_are_identical():
    texts = {
        (REPO_ROOT / app / "log_redaction.py").read_text()
        for app in ("caller_app", "mock_issuer", "receiver_app")
    }
    assert len(texts) == 1


@pytest.mark.parametrize(
    ("line", "kept", "gone"),
    [
        (f'"GET /receive?access_token={OPAQUE} HTTP/1.1" 401 -', "GET /receive?", OPAQUE),
        (f'"GET /{JWT} HTTP/1.1" 404 -', '"GET /', "eyJ"),
        ('"GET /x/sk_test_abcdef0123456789 HTTP/1.1" 404 -', "/x/", "sk_test_"),
        ("code 400, message Bad request syntax ('GET /?t=ak_secret1 HTTP/1.1 x')", "400", "ak_"),
        ('"POST /m2m_tokens/mt_0123456789abcdef0123456789abcdef/revoke HTTP/1.1" 200', "mt_0", ""),
    ],
)
def test_query_strings_and_secret_shapes_are_blanked_token_ids_kept(line, kept, gone):
    redacted = issuer_copy.redact(line)
    assert kept in redacted
    assert not gone or gone not in redacted


def test_installing_twice_adds_one_filter_per_server_logger():
    issuer_copy.install()
    issuer_copy.install()
    for name in issuer_copy.SERVER_LOGGERS:
        filters = logging.getLogger(name).filters
        assert sum(isinstance(f, issuer_copy.RedactSecrets) for f in filters) == 1
