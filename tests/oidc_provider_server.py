"""panva's oidc-provider (npm, pinned in tests/oidc_provider/package.json) as a real process on
a free loopback port, for the end-to-end tests against an OAuth server nobody here wrote.

Install it with `npm ci --prefix tests/oidc_provider` (`.ci/run` does). Without Node or the
package the tests skip, or fail when `M2M_REQUIRE_OIDC_PROVIDER=1` (set by CI).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from xprocess import ProcessStarter

from tests.harness import REPO_ROOT, free_port

PROVIDER_DIR = REPO_ROOT / "tests" / "oidc_provider"
SERVER_SCRIPT = PROVIDER_DIR / "server.mjs"
PACKAGE = PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json"
REQUIRE_VARIABLE = "M2M_REQUIRE_OIDC_PROVIDER"


def missing_reason() -> str | None:
    """Why oidc-provider cannot run here, or None when Node and the package are installed."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not PACKAGE.exists():
        return "oidc-provider is not installed (npm ci --prefix tests/oidc_provider)"
    return None


def require_or_skip(environ: Mapping[str, str] = os.environ) -> None:
    """Skip the calling module when oidc-provider cannot run, or fail it under CI's switch."""
    why = missing_reason()
    if why is None:
        return
    if environ.get(REQUIRE_VARIABLE, "").strip() == "1":
        pytest.fail(f"{REQUIRE_VARIABLE}=1 but {why}", pytrace=False)
    pytest.skip(f"oidc-provider tests skipped: {why}", allow_module_level=True)


@dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str


@dataclass
class RunningProvider:
    xprocess: object
    name: str
    port: int

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        info = self.xprocess.getinfo(self.name)
        if info.isrunning():
            info.terminate(timeout=10)


def start_provider(
    xprocess,
    workdir: Path,
    clients: list[Client],
    *,
    opaque_clients: tuple[str, ...] = (),
    token_ttl_seconds: Mapping[str, int] | None = None,
    scope: str = "messages:write",
) -> RunningProvider:
    """Start oidc-provider with these clients (client_credentials only), a fresh RS256 key,
    resource indicators (JWT access tokens, opaque for `opaque_clients`), introspection and
    revocation; return once its discovery document answers."""
    port = free_port()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(RSAAlgorithm.to_jwk(key)), "kid": "e2e-1", "use": "sig", "alg": "RS256"}
    settings = {
        "port": port,
        "jwks": {"keys": [jwk]},
        "clients": [vars(c) for c in clients],
        "opaque_clients": list(opaque_clients),
        "token_ttl_seconds": dict(token_ttl_seconds or {}),
        "scope": scope,
    }
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "oidc-provider.json"
    config_path.write_text(json.dumps(settings))
    config_path.chmod(0o600)  # it holds a private key and client secrets
    discovery = f"http://127.0.0.1:{port}/.well-known/openid-configuration"

    class Starter(ProcessStarter):
        args = ["node", str(SERVER_SCRIPT), str(config_path)]
        env = {"PATH": os.environ.get("PATH", ""), "NODE_ENV": "development"}
        timeout = 30
        terminate_on_interrupt = True

        def startup_check(self) -> bool:
            try:
                return requests.get(discovery, timeout=1).status_code == 200
            except requests.RequestException:
                return False

    name = f"oidc-provider-{port}"
    xprocess.ensure(name, Starter, restart=True)
    return RunningProvider(xprocess, name, port)
