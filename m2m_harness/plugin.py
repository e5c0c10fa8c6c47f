"""pytest plugin (entry point `m2m`): a Clerk-compatible M2M issuer, machines and tokens as
fixtures, for testing your own services. See "Test your own service" in README.md.

Fixtures: `m2m_issuer` (session), `m2m_issuer_app` (in-process), `m2m_machines`,
`m2m_receiver`, `m2m_caller`, `m2m_token`, `m2m_bad_token` (+ `m2m_bad_token_kind`, which
parametrizes a test over every kind), `m2m_faults`, `m2m_env`.
`--m2m-issuer-url URL --m2m-issuer-secret-key sk_...` points them at a running issuer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from .bad_tokens import BAD_TOKEN_KINDS, BadTokenFactory
from .factories import Machine, MachineFactory, TokenFactory
from .fault_injection import IssuerFaults
from .issuer import TestIssuer, connect_issuer, in_process_settings, start_issuer


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("m2m", "M2M issuer fixtures (m2m_harness)")
    group.addoption(
        "--m2m-issuer-url",
        default=os.environ.get("M2M_TEST_ISSUER_URL"),
        help="use this running mock issuer instead of starting one (env M2M_TEST_ISSUER_URL)",
    )
    group.addoption(
        "--m2m-issuer-secret-key",
        default=os.environ.get("M2M_TEST_ISSUER_SECRET_KEY"),
        help="its instance secret key, sk_... (env M2M_TEST_ISSUER_SECRET_KEY)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that asks for `m2m_bad_token_kind` runs once per kind, each with its name as id."""
    if "m2m_bad_token_kind" in metafunc.fixturenames:
        metafunc.parametrize("m2m_bad_token_kind", BAD_TOKEN_KINDS)


@pytest.fixture(scope="session")
def m2m_issuer(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestIssuer]:
    """The issuer for this session: a real process on a free 127.0.0.1 port with a temporary
    database (about a second to start), or the one given by --m2m-issuer-url."""
    url = request.config.getoption("m2m_issuer_url")
    if url:
        secret_key = request.config.getoption("m2m_issuer_secret_key")
        if not secret_key:
            raise pytest.UsageError("--m2m-issuer-url needs --m2m-issuer-secret-key (sk_...)")
        yield connect_issuer(url, secret_key)
        return
    issuer = start_issuer(tmp_path_factory.mktemp("m2m-issuer"))
    yield issuer
    assert issuer.process is not None
    issuer.process.stop()


@pytest.fixture
def m2m_issuer_app(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An in-process mock issuer (a Flask app, no port) with its own database; drive it with
    `.test_client()`, or with the other fixtures by overriding `m2m_issuer` in a conftest:
    `m2m_issuer = pytest.fixture(lambda m2m_issuer_app: for_app(m2m_issuer_app))`."""
    from mock_issuer import create_app

    monkeypatch.setenv("M2M_SKIP_DOTENV", "1")  # a developer's mock_issuer/.env stays out
    return create_app(in_process_settings(tmp_path / "m2m-issuer-app"))


@pytest.fixture
def m2m_machines(m2m_issuer: TestIssuer) -> MachineFactory:
    """`m2m_machines(name, scoped_to=[...])` creates a machine (id, name, secret_key);
    `m2m_machines.scope(a, b)` lets a send to b."""
    return MachineFactory(m2m_issuer.client)


@pytest.fixture
def m2m_receiver(m2m_machines: MachineFactory) -> Machine:
    """A machine for the service under test (the audience tokens are minted for)."""
    return m2m_machines("receiver")


@pytest.fixture
def m2m_caller(m2m_machines: MachineFactory, m2m_receiver: Machine) -> Machine:
    """A machine allowed to call `m2m_receiver`."""
    return m2m_machines("caller", scoped_to=[m2m_receiver])


@pytest.fixture
def m2m_token(
    m2m_machines: MachineFactory, m2m_caller: Machine, m2m_receiver: Machine
) -> TokenFactory:
    """`m2m_token(format="opaque"|"jwt", lifetime=s, claims={...}, caller=, audience=)`: a real
    token (`.token`, `.headers`, `.id`); by default from m2m_caller for m2m_receiver."""
    return TokenFactory(m2m_machines, m2m_caller, m2m_receiver)


@pytest.fixture
def m2m_bad_token(
    m2m_machines: MachineFactory, m2m_caller: Machine, m2m_receiver: Machine
) -> BadTokenFactory:
    """`m2m_bad_token(kind)`: a token m2m_receiver must refuse (`.token`, `.headers`); kinds in
    `m2m_harness.bad_tokens.BAD_TOKEN_KINDS`."""
    return BadTokenFactory(m2m_machines, m2m_caller, m2m_receiver)


@pytest.fixture
def m2m_faults(m2m_issuer: TestIssuer) -> Iterator[IssuerFaults]:
    """`.down()`, `.slow(s)`, `.rate_limited()`, `.error(503)`: undone when the test ends."""
    faults = IssuerFaults(m2m_issuer)
    yield faults
    faults.clear()


class M2MEnv:
    """The settings an app under test needs to reach the test issuer, named as Clerk names
    them: `m2m_env(machine)` -> {"CLERK_API_URL": ..., "CLERK_MACHINE_SECRET_KEY": ...}."""

    def __init__(self, issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.issuer = issuer
        self._monkeypatch = monkeypatch

    def __call__(
        self, machine: Machine | None = None, *, instance_key: bool = False, **extra: str
    ) -> dict[str, str]:
        env = {
            "CLERK_API_URL": self.issuer.url,
            "CLERK_JWKS_URL": self.issuer.jwks_url,
            "CLERK_JWT_ISSUER": self.issuer.url,
        }
        if machine is not None:
            env["CLERK_MACHINE_SECRET_KEY"] = machine.secret_key
            env["CLERK_MACHINE_ID"] = machine.id
        if instance_key:
            env["CLERK_SECRET_KEY"] = self.issuer.secret_key
        return {**env, **extra}

    def setenv(self, machine: Machine | None = None, **options: Any) -> dict[str, str]:
        """The same, also set in os.environ for this test only."""
        env = self(machine, **options)
        for name, value in env.items():
            self._monkeypatch.setenv(name, value)
        return env


@pytest.fixture
def m2m_env(m2m_issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch) -> M2MEnv:
    """`m2m_env(m2m_receiver)`: CLERK_API_URL, CLERK_JWKS_URL, CLERK_JWT_ISSUER, and the
    machine's CLERK_MACHINE_SECRET_KEY / CLERK_MACHINE_ID (`instance_key=True` adds
    CLERK_SECRET_KEY); `m2m_env.setenv(...)` also sets them for this test."""
    return M2MEnv(m2m_issuer, monkeypatch)
