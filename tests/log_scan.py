"""Secrets put where servers log them, and the scan of process logs for secrets: the log tests
of both providers (`test_faults_apps.py`, `test_oauth_mock_issuer_e2e.py`) use them."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable

import requests

from tests.harness import RunningApp

TIMEOUT = 15  # seconds, per request (the machine is shared and slow at times)
OPAQUE_SECRET = re.compile(r"mt_[0-9a-f]{64}")
JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
KEY_SHAPE = re.compile(r"\b(?:sk|ak)_(?:test_|live_)?[A-Za-z0-9]{16,}")


def misplaced_secrets(app: RunningApp, secrets: Iterable[str]) -> None:
    """Send each secret where no app wants one but every server logs: in a query string, as a
    path, in the Referer, and in a request line the server refuses as malformed."""
    for secret in secrets:
        paths = [
            f"/receive?access_token={secret}",
            f"/send?key={secret}&format=jwt",
            f"/{secret}",
            f"/m2m_tokens/{secret}/revoke",
            f"/dashboard/x/{secret}",
        ]
        referer = {"Referer": f"{app.url}/?t={secret}"}
        for path in paths:
            requests.get(f"{app.url}{path}", headers=referer, timeout=TIMEOUT)
        with socket.create_connection(("127.0.0.1", app.port), timeout=TIMEOUT) as raw:
            raw.sendall(f"GET /?access_token={secret} HTTP/1.1 junk\r\n\r\n".encode())
            raw.recv(4096)


def assert_no_log_holds_a_secret(apps: Iterable[RunningApp], secrets: Iterable[str]) -> None:
    """Every app wrote a log, and none holds one of `secrets` or anything shaped like an
    opaque token secret, a JWT or an `sk_`/`ak_` key (which catches tokens the test never saw)."""
    secrets = set(secrets)
    for app in apps:
        log = app.log_text()
        assert log, f"{app.name} wrote no log"
        for secret in secrets:
            assert secret not in log, f"{app.name} logged a secret"
        for pattern in (OPAQUE_SECRET, JWT_SHAPE, KEY_SHAPE):
            found = pattern.search(log)
            assert found is None, f"{app.name} logged something shaped like a secret"
