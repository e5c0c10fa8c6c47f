"""The mock issuer a test talks to: a process this session started, one already running
elsewhere, or an in-process Flask app; each with its URL, instance key and a client."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .issuer_client import IssuerClient
from .launcher import AppProcess, free_port, local_url

IN_PROCESS_URL = "http://127.0.0.1:8799"  # the `iss` of in-process issuers (nothing listens)


def new_secret_key() -> str:
    """A fresh instance secret key, so no two test issuers share one."""
    return f"sk_test_{secrets.token_hex(20)}"


@dataclass
class TestIssuer:
    """An issuer under test. `process` is set only when this session started it, which is
    what lets `stop()` and `start()` take it down and bring it back on the same port."""

    __test__ = False  # a helper class, not a test class

    url: str
    secret_key: str = field(repr=False)
    client: IssuerClient = field(repr=False)
    process: AppProcess | None = field(default=None, repr=False)

    @property
    def jwks_url(self) -> str:
        """The public JWKS (no key needed), which the receiver reads by default."""
        return f"{self.url}/.well-known/jwks.json"

    @property
    def owned(self) -> bool:
        return self.process is not None

    @property
    def running(self) -> bool:
        return self.process is None or self.process.running

    def stop(self) -> None:
        """Stop the process (connections are refused until `start`)."""
        if self.process is None:
            raise RuntimeError("this issuer was not started by the test session: cannot stop it")
        self.process.stop()

    def start(self) -> None:
        """Start the stopped process again on the same port and database."""
        if self.process is not None and not self.process.running:
            self.process.start().wait_healthy()


def start_issuer(workdir: Path, server: str = "flask", **env: str) -> TestIssuer:
    """A real issuer process on a free loopback port with its own database in `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    secret_key = new_secret_key()
    settings = {
        "CLERK_SECRET_KEY": secret_key,
        "MOCK_ISSUER_URL": local_url(port),
        "MOCK_ISSUER_DB": str(workdir / "issuer.db"),
        **env,
    }
    process = AppProcess(
        "mock_issuer", settings, port=port, server=server, log_path=workdir / "issuer.log"
    )
    process.start().wait_healthy()
    return TestIssuer(process.url, secret_key, IssuerClient(process.url, secret_key), process)


def connect_issuer(url: str, secret_key: str) -> TestIssuer:
    """An issuer someone else runs (`--m2m-issuer-url`); checked with one JWKS call."""
    client = IssuerClient(url, secret_key)
    client.jwks()  # fails now, clearly, if the URL or the key is wrong
    return TestIssuer(client.url, secret_key, client)


def in_process_settings(workdir: Path) -> dict[str, Any]:
    """Settings for `mock_issuer.create_app`: its own database, no seed, no faults."""
    workdir.mkdir(parents=True, exist_ok=True)
    return {
        "CLERK_SECRET_KEY": new_secret_key(),
        "MOCK_ISSUER_URL": IN_PROCESS_URL,
        "MOCK_ISSUER_DB": str(workdir / "issuer.db"),
        "MOCK_ISSUER_SEED": "",
        "MOCK_ISSUER_FAULTS": "",
        "MOCK_ISSUER_RATE_LIMIT": "",
        "TESTING": True,
    }


def for_app(app: Any) -> TestIssuer:
    """A TestIssuer for an in-process issuer app (calls go through its test client)."""
    client = IssuerClient.for_app(app)
    return TestIssuer(client.url, client.secret_key, client)
