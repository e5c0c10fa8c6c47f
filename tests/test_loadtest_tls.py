"""HTTPS targets: certificates are verified by default, and a private CA bundle makes a staging
service's certificate trusted, for the issuer client (requests) and for the Locust users
(FastHttpUser) alike. The HTTPS server is a small one in this process, on 127.0.0.1, with a
certificate for 127.0.0.1 signed by a CA made for the test."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import secrets
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from loadtest import tls
from loadtest.issuer_client import IssuerClient, IssuerError
from loadtest.stack import REPO_ROOT, clean_env

pytestmark = [pytest.mark.load]


@dataclass(frozen=True)
class Pki:
    ca_pem: Path
    cert_pem: Path
    key_pem: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(folder: Path) -> Pki:
    """A CA and a server certificate for IP 127.0.0.1 that it signed."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test CA"))
        .issuer_name(_name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    pki.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


class FakeServices(BaseHTTPRequestHandler):
    """Answers what the load test's setup and OpaqueVerifyUser ask: mint, revoke, receive."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/v1/m2m_tokens":
            token = "mt_" + secrets.token_hex(32)
            self.answer(201, {"token": token, "id": token, "expiration": None})
        elif self.path.endswith("/revoke") or self.path == "/receive":
            self.answer(200, {})
        else:
            self.answer(404, {})

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args) -> None:
        pass


def serve(server: ThreadingHTTPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        scheme = "https" if isinstance(server.socket, ssl.SSLSocket) else "http"
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def https_url(pki) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeServices)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_pem, pki.key_pem)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    yield from serve(server)


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    yield from serve(ThreadingHTTPServer(("127.0.0.1", 0), FakeServices))


def test_the_issuer_client_refuses_an_untrusted_certificate_by_default(https_url):
    with pytest.raises(IssuerError, match="SSLError"):
        IssuerClient(https_url, timeout_s=5).mint("ak_unused", "opaque")


def test_the_issuer_client_trusts_a_private_ca_bundle(https_url, pki):
    client = IssuerClient(https_url, timeout_s=5, verify=tls.requests_verify(str(pki.ca_pem)))
    assert client.mint("ak_unused", "opaque").token.startswith("mt_")


def test_the_user_context_verifies_the_chain_against_the_bundle_only(https_url, pki):
    port = int(https_url.rpartition(":")[2])
    trusted = http.client.HTTPSConnection(
        "127.0.0.1", port, timeout=5, context=tls.context_factory(str(pki.ca_pem))()
    )
    trusted.request("POST", "/receive", body=b"{}")
    assert trusted.getresponse().status == 200
    system_store = http.client.HTTPSConnection(
        "127.0.0.1", port, timeout=5, context=tls.context_factory()()
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        system_store.request("POST", "/receive", body=b"{}")


def test_an_unreadable_ca_bundle_is_refused(tmp_path):
    not_pem = tmp_path / "bundle.pem"
    not_pem.write_text("not a certificate")
    with pytest.raises(ValueError, match="not a readable PEM CA bundle"):
        tls.check_ca_bundle(str(not_pem))


def run_https_load(http_url: str, https_url: str, *extra: str) -> subprocess.CompletedProcess:
    """OpaqueVerifyUser against the HTTPS receiver, its tokens minted at the HTTP issuer."""
    env = {
        **clean_env(),
        "LOADTEST_ISSUER_URL": http_url,
        "LOADTEST_RECEIVER_URL": https_url,
        "LOADTEST_CALLER_URL": http_url,
        "LOADTEST_CALLER_SECRET_KEY": "ak_unused",
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            "loadtest/locustfile.py",
            "OpaqueVerifyUser",
            "--headless",
            "-u",
            "1",
            "-t",
            "3s",
            *extra,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_locust_users_fail_on_an_untrusted_certificate_and_pass_with_the_bundle(
    http_url, https_url, pki
):
    untrusted = run_https_load(http_url, https_url)
    trusted = run_https_load(http_url, https_url, "--ca-bundle", str(pki.ca_pem))

    assert untrusted.returncode == 1, untrusted.stdout[-2000:]
    assert "LOADTEST FAIL: POST /receive (opaque) failure ratio 100.00%" in untrusted.stdout
    summary = untrusted.stdout + untrusted.stderr  # Locust prints its error report on stderr
    assert "no HTTP answer: " in summary and "CERTIFICATE_VERIFY_FAILED" in summary, summary[-3000:]
    assert trusted.returncode == 0, trusted.stdout[-2000:] + trusted.stderr[-2000:]
    assert "LOADTEST PASS: " in trusted.stdout
