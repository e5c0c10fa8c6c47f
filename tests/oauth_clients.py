"""The clients the OAuth tests play: Authlib against the mock issuer (endpoints found through
its RFC 8414 metadata, the client a seeded machine, as a user's code would build it), and a
sender of one bearer token to a receiver's `/receive`."""

from __future__ import annotations

import requests
from authlib.integrations.flask_client import OAuth
from authlib.integrations.requests_client import OAuth2Session
from flask import Flask

from tests.seed import SeedMachine

TIMEOUT = 10  # seconds, every request these clients send


def discovered_client(issuer_url: str, machine: SeedMachine, auth_method: str):
    """An Authlib client that finds every endpoint through the issuer's metadata document
    (`server_metadata_url`), the way a Flask app registers a provider."""
    oauth = OAuth(Flask("authlib-client"))
    return oauth.register(
        "mock_issuer",
        client_id=machine.id,
        client_secret=machine.secret_key,
        server_metadata_url=f"{issuer_url}/.well-known/oauth-authorization-server",
        client_kwargs={"token_endpoint_auth_method": auth_method, "default_timeout": TIMEOUT},
    )


def session(machine: SeedMachine, auth_method: str = "client_secret_basic") -> OAuth2Session:
    """A plain Authlib session authenticating as `machine` (introspection, revocation)."""
    return OAuth2Session(
        machine.id,
        machine.secret_key,
        token_endpoint_auth_method=auth_method,
        default_timeout=TIMEOUT,
    )


def send_token(receiver_url: str, token: str) -> requests.Response:
    """POST a message to the receiver with `token` as the bearer token."""
    return requests.post(
        f"{receiver_url}/receive",
        json={"message": "hello"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=TIMEOUT,
    )
