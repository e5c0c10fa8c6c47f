"""HTTPS for the load test: certificates are always verified, against the system's trust store
or a private CA bundle (`--ca-bundle` / LOADTEST_CA_BUNDLE) for a staging service."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path


def check_ca_bundle(path: str) -> None:
    """Refuse a CA bundle that cannot be read or holds no certificate, before any request."""
    if not path:
        return
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--ca-bundle {path!r} is not a readable PEM CA bundle: {exc}") from None


def context_factory(ca_bundle: str = "") -> Callable[[], ssl.SSLContext]:
    """What FastHttpUser calls for each connection pool: a verifying context (hostname and
    chain), trusting `ca_bundle` instead of the system store when it is given. Under Locust,
    `ssl` is gevent's (monkey-patched), so the context is cooperative."""
    cafile = str(Path(ca_bundle)) if ca_bundle else None

    def factory() -> ssl.SSLContext:
        return ssl.create_default_context(cafile=cafile)

    return factory


def requests_verify(ca_bundle: str = "") -> bool | str:
    """The `verify=` argument for requests: the bundle's path, or True (the system store)."""
    return ca_bundle or True
