"""Locust load test for M2M token verification: issuer, receiver and caller, with a pass/fail gate.

User classes (run any subset by naming them on the command line):
  IssueTokensUser   mints opaque and JWT tokens at the issuer
  OpaqueVerifyUser  presents a prepared opaque token to the receiver
  JwtVerifyUser     presents the JWT prepared at start and a JWT re-minted every few seconds
  ChainUser         drives the caller's GET /send (token reuse + verification end to end)
  NegativeUser      garbage, expired, revoked and out-of-scope tokens: success = the 401

Targets and thresholds are Locust options (also env vars / config file keys); keys are env
vars only. A target off loopback needs --allow-remote; HTTPS is always verified (--ca-bundle for a
private CA). The gate judges the run when it stops: exit code of a headless run, and the "Gate"
tab of the web UI. See loadtest/README.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Locust imports this file by path; make the `loadtest` package importable from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent
from dotenv import load_dotenv
from locust import FastHttpUser, between, events, task
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from loadtest import gate, server_metrics, tls, webui
from loadtest.issuer_client import IssuerClient, IssuerError
from loadtest.settings import Keys, Option, TargetRefused, check_targets, describe_targets
from loadtest.tokens import FreshJwt, PreparedTokens, key_id

logger = logging.getLogger("loadtest")

ISSUE_TTL_S = 60  # tokens minted by IssueTokensUser are thrown away; keep them short-lived


@dataclass
class RunState:
    """What one Locust process prepared for its users (each worker prepares its own)."""

    keys: Keys | None = None
    issuer: IssuerClient | None = None
    thresholds: gate.Thresholds | None = None
    tokens: PreparedTokens | None = None
    fresh_jwt: FreshJwt | None = None
    verdict: gate.Verdict | None = None  # the last stopped run's, shown in the web UI
    receiver_at_start: server_metrics.Buckets | None = None  # the receiver's /metrics histogram


STATE = RunState()


# ---- options, targets and the gate ---------------------------------------------------------


OPTIONS = (
    Option(
        "--issuer-url",
        "LOADTEST_ISSUER_URL",
        "http://127.0.0.1:8780",
        "Base URL of the mock issuer",
    ),
    Option(
        "--receiver-url",
        "LOADTEST_RECEIVER_URL",
        "http://127.0.0.1:8782",
        "Base URL of the receiver",
    ),
    Option(
        "--caller-url", "LOADTEST_CALLER_URL", "http://127.0.0.1:8781", "Base URL of the caller"
    ),
    Option(
        "--allow-remote",
        "LOADTEST_ALLOW_REMOTE",
        False,
        "Acknowledge targets off this machine's loopback (you may load them)",
    ),
    Option(
        "--ca-bundle",
        "LOADTEST_CA_BUNDLE",
        "",
        "PEM CA bundle to verify HTTPS targets with (default: the system's trust store)",
    ),
    Option(
        "--max-fail-ratio",
        "LOADTEST_MAX_FAIL_RATIO",
        0.0,
        "Gate: highest failure ratio (0..1) allowed for any request name",
    ),
    Option(
        "--p95-ms",
        "LOADTEST_P95_MS",
        1000.0,
        "Gate: highest p95 latency (ms) allowed for any request name",
    ),
    Option(
        "--fail-ratio-by-name",
        "LOADTEST_FAIL_RATIO_BY_NAME",
        "",
        "Gate overrides: 'PATTERN=RATIO;PATTERN=RATIO' (fnmatch on the request name)",
    ),
    Option(
        "--p95-ms-by-name",
        "LOADTEST_P95_MS_BY_NAME",
        "",
        "Gate overrides: 'PATTERN=MS;PATTERN=MS', e.g. '/send (*=1500'",
    ),
    Option(
        "--expired-grace-s",
        "LOADTEST_EXPIRED_GRACE_S",
        6.0,
        "Wait this long past a 1 s token's expiry (the receiver's clock leeway) before "
        "presenting it as an expired token",
    ),
    Option(
        "--jwt-refresh-s",
        "LOADTEST_JWT_REFRESH_S",
        2.0,
        "JwtVerifyUser re-mints its fresh JWT this often (seconds)",
    ),
)


@events.init_command_line_parser.add_listener
def add_options(parser) -> None:
    """Targets and thresholds: `--issuer-url` or LOADTEST_ISSUER_URL or `issuer-url =` in a
    config file (`--config loadtest/locust.conf`)."""
    if os.environ.get("M2M_SKIP_DOTENV") != "1":
        load_dotenv(Path(__file__).resolve().parent / ".env", override=False)
    # A master listens for its workers, and the web UI for browsers, on loopback rather than on
    # every interface (Locust's defaults); across machines, give --master-bind-host explicitly.
    parser.set_defaults(master_bind_host="127.0.0.1", web_host="127.0.0.1")
    for option in OPTIONS:
        option.add_to(parser)


@events.init.add_listener
def aim_users(environment, **_kwargs) -> None:
    """Print the resolved targets, then point each user class at its service, after refusing
    targets this run must not hit (exit 2, one line on stderr, before any request)."""
    options = environment.parsed_options
    if options is None:  # Locust used as a library: the caller sets hosts itself
        return
    try:
        if environment.host:
            raise TargetRefused(
                "--host would send every user to one service; use --issuer-url, "
                "--receiver-url and --caller-url instead"
            )
        targets = {
            "issuer-url": options.issuer_url,
            "receiver-url": options.receiver_url,
            "caller-url": options.caller_url,
        }
        print(describe_targets(targets), flush=True)
        check_targets(targets, allow_remote=options.allow_remote)
        tls.check_ca_bundle(options.ca_bundle)
        STATE.thresholds = thresholds_from(options)
        STATE.keys = Keys.from_env()
        if not STATE.keys.caller_secret_key:
            raise TargetRefused("LOADTEST_CALLER_SECRET_KEY (the caller's ak_ key) is not set")
    except (TargetRefused, ValueError) as exc:
        sys.stderr.write(f"loadtest: {exc}\n")
        sys.stderr.flush()
        if isinstance(environment.runner, MasterRunner) and options.processes:
            stop_forked_workers(environment.runner, options.processes)
        sys.exit(2)
    STATE.issuer = IssuerClient(options.issuer_url, verify=tls.requests_verify(options.ca_bundle))
    ServiceUser.ssl_context_factory = staticmethod(tls.context_factory(options.ca_bundle))
    if environment.web_ui:
        webui.install(environment.web_ui, lambda: STATE.verdict)
    IssueTokensUser.host = options.issuer_url
    for user_class in (OpaqueVerifyUser, JwtVerifyUser, NegativeUser):
        user_class.host = options.receiver_url
    ChainUser.host = options.caller_url


def stop_forked_workers(runner: MasterRunner, expected: int, timeout_s: float = 10) -> None:
    """Before a refusing master exits, let its `--processes` workers connect and tell them to quit:
    Locust's parent does not stop them then, and they would retry connecting for 5 minutes."""
    deadline = time.monotonic() + timeout_s
    while len(runner.clients.ready) < expected and time.monotonic() < deadline:
        gevent.sleep(0.1)
    runner.quit()


def thresholds_from(options) -> gate.Thresholds:
    return gate.Thresholds(
        max_fail_ratio=options.max_fail_ratio,
        p95_ms=options.p95_ms,
        fail_ratio_by_name=gate.parse_limits(options.fail_ratio_by_name, "--fail-ratio-by-name"),
        p95_ms_by_name=gate.parse_limits(options.p95_ms_by_name, "--p95-ms-by-name"),
    )


def judge(environment) -> gate.Verdict:
    """Judge the run (the master's merged stats in distributed mode) and print the verdict."""
    shape = environment.shape_class
    checks = shape.gate_checks() if hasattr(shape, "gate_checks") else []
    if hasattr(shape, "judge"):  # the capacity finder judges by its steps
        STATE.verdict = shape.judge(environment.stats)
    else:
        STATE.verdict = gate.evaluate(environment.stats, STATE.thresholds, checks)
    report_server_latency(environment)
    print(STATE.verdict.line(), flush=True)
    logger.info("%s", STATE.verdict.line())  # the web UI's Logs tab
    return STATE.verdict


@events.test_start.add_listener
def scrape_receiver_at_start(environment, **_kwargs) -> None:
    """The receiver's latency histogram before the run, so the report shows this run's part."""
    if judges(environment):
        options = environment.parsed_options
        verify = tls.requests_verify(options.ca_bundle)
        STATE.receiver_at_start = server_metrics.scrape(options.receiver_url, verify)


def report_server_latency(environment) -> None:
    """When the receiver's /metrics answers: its verification latency next to Locust's, printed
    and written next to the CSV reports (`<csv prefix>_server_latency.md`)."""
    options = environment.parsed_options
    after = server_metrics.scrape(options.receiver_url, tls.requests_verify(options.ca_bundle))
    if after is None:
        print("loadtest: the receiver's /metrics is not reachable: no server-side view", flush=True)
        return
    entries = list(environment.stats.entries.values())
    table = server_metrics.rows(server_metrics.since(STATE.receiver_at_start, after), entries)
    text = server_metrics.markdown(table)
    print(
        "loadtest: verification latency, client side (Locust) and server side (receiver "
        "/metrics, bucket upper bounds):\n" + text,
        flush=True,
    )
    if options.csv_prefix:
        Path(f"{options.csv_prefix}_server_latency.md").write_text(text + "\n")


@events.test_stop.add_listener
def judge_stopped_ui_run(environment, **_kwargs) -> None:
    """In the web UI a stopped run is judged at once (the process keeps running)."""
    if judges(environment) and not environment.parsed_options.headless:
        judge(environment)


@events.quitting.add_listener
def apply_gate(environment, **_kwargs) -> None:
    """Judge a headless run once when it ends and make the verdict its exit code; a web UI
    session exits with its last stopped run's verdict."""
    if not judges(environment):
        return
    headless = environment.parsed_options.headless
    verdict = judge(environment) if headless or STATE.verdict is None else STATE.verdict
    environment.process_exit_code = verdict.exit_code


def judges(environment) -> bool:
    """Only the master (or a single local process) judges, once its options were accepted."""
    return not isinstance(environment.runner, WorkerRunner) and STATE.thresholds is not None


# ---- tokens, prepared once per process -------------------------------------------------------


def report(environment, name: str, started: float, error: Exception | None = None) -> None:
    """Record a setup call in the stats, so a failed preparation fails the gate visibly."""
    environment.events.request.fire(
        request_type=gate.SETUP_METHOD,
        name=name,
        response_time=(time.perf_counter() - started) * 1000,
        response_length=0,
        exception=error,
        context={},
    )


@events.test_start.add_listener
def prepare_tokens(environment, **_kwargs) -> None:
    """Mint the tokens the verification users present, once per process that runs users."""
    if isinstance(environment.runner, MasterRunner) or STATE.issuer is None or STATE.keys is None:
        return
    options = environment.parsed_options
    issuer, keys = STATE.issuer, STATE.keys
    started = time.perf_counter()
    try:
        STATE.tokens = PreparedTokens.prepare(
            issuer, keys.caller_secret_key, keys.outsider_secret_key, options.expired_grace_s
        )
    except IssuerError as exc:
        report(environment, "prepare tokens", started, exc)
        logger.error("loadtest: could not prepare tokens at the issuer: %s; stopping", exc)
        gevent.spawn(environment.runner.quit)
        return
    report(environment, "prepare tokens", started)
    if not keys.outsider_secret_key:
        logger.warning("loadtest: LOADTEST_OUTSIDER_SECRET_KEY unset: no out-of-scope traffic")

    def mint_fresh_jwt() -> str | None:
        began = time.perf_counter()
        try:
            token = issuer.mint(keys.caller_secret_key, "jwt", ISSUE_TTL_S).token
        except IssuerError as exc:
            report(environment, "mint fresh jwt", began, exc)
            return None
        report(environment, "mint fresh jwt", began)
        return token

    STATE.fresh_jwt = FreshJwt(mint=mint_fresh_jwt, refresh_s=options.jwt_refresh_s)


def prepared() -> PreparedTokens:
    if STATE.tokens is None:
        raise StopUser()  # preparation failed and was reported; nothing to present
    return STATE.tokens


# ---- response checks ---------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def expect_status(response, status: int) -> None:
    """Success only on `status`; the failure names the status and Clerk error code, no body."""
    if response.status_code == status:
        response.success()
        return
    if not response.status_code:
        response.failure(connection_failure(response))
        return
    code = ""
    with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
        code = str(response.json()["errors"][0]["code"])
    response.failure(f"expected HTTP {status}, got {response.status_code} {code}".rstrip())


def connection_failure(response) -> str:
    """Why no HTTP answer came (refused, timeout, certificate not trusted): the error's type and
    message (never the request's headers), so a TLS problem is named in the report."""
    error = getattr(response, "error", None)
    return f"no HTTP answer: {type(error).__name__}: {error}" if error else "no HTTP answer"


def expect_invalid_token(response) -> None:
    """Success only on RFC 6750's answer to a bad token: 401 with error="invalid_token"."""
    challenge = response.headers.get("WWW-Authenticate", "") if response.headers else ""
    if response.status_code == 401 and 'error="invalid_token"' in challenge:
        response.success()
    elif response.status_code == 401:
        response.failure('401 without WWW-Authenticate: Bearer error="invalid_token"')
    elif not response.status_code:
        response.failure(connection_failure(response))
    else:
        response.failure(f"expected HTTP 401 invalid_token, got {response.status_code}")


class ServiceUser(FastHttpUser):
    """Shared settings: bounded timeouts, short think time."""

    abstract = True
    insecure = False  # HTTPS certificates are verified (FastHttpUser's default is not to)
    network_timeout = 10.0
    connection_timeout = 5.0
    wait_time = between(0.05, 0.25)

    def receive(self, token: str, name: str, check=None) -> None:
        with self.client.post(
            "/receive",
            json={"message": "Hello from the load test"},
            headers=bearer(token),
            name=name,
            catch_response=True,
        ) as response:
            (check or (lambda r: expect_status(r, 200)))(response)


# ---- user classes --------------------------------------------------------------------------------


class IssueTokensUser(ServiceUser):
    """Token creation at the issuer with the caller's machine key, both formats."""

    def issue(self, token_format: str) -> None:
        with self.client.post(
            "/v1/m2m_tokens",
            json={"token_format": token_format, "seconds_until_expiration": ISSUE_TTL_S},
            headers=bearer(STATE.keys.caller_secret_key),
            name=f"/v1/m2m_tokens ({token_format})",
            catch_response=True,
        ) as response:
            expect_status(response, 201)

    @task
    def issue_opaque(self) -> None:
        self.issue("opaque")

    @task
    def issue_jwt(self) -> None:
        self.issue("jwt")


class OpaqueVerifyUser(ServiceUser):
    """Opaque token verification at the receiver (the receiver asks the issuer, or its cache)."""

    @task
    def present_opaque(self) -> None:
        self.receive(prepared().opaque, "/receive (opaque)")


class JwtVerifyUser(ServiceUser):
    """Local JWT verification at the receiver, labelled by signing key: the token minted at start
    keeps being presented after a key rotation, next to fresh tokens signed by the new key."""

    @task
    def present_start_jwt(self) -> None:
        token = prepared().jwt
        self.receive(token, f"/receive (jwt start kid={key_id(token)})")

    @task
    def present_fresh_jwt(self) -> None:
        prepared()
        token = STATE.fresh_jwt.current() if STATE.fresh_jwt else None
        if token:
            self.receive(token, f"/receive (jwt fresh kid={key_id(token)})")


class ChainUser(ServiceUser):
    """The full chain: caller /send obtains (or reuses) a token and posts to the receiver."""

    @task
    def send_opaque(self) -> None:
        self.send("opaque")

    @task
    def send_jwt(self) -> None:
        self.send("jwt")

    def send(self, token_format: str) -> None:
        with self.client.get(
            f"/send?format={token_format}", name=f"/send ({token_format})", catch_response=True
        ) as response:
            expect_status(response, 200)


class NegativeUser(ServiceUser):
    """Tokens that must be refused; a request succeeds only when the receiver answers 401."""

    @task
    def present_garbage(self) -> None:
        garbage = secrets.choice(
            [
                "garbage-" + secrets.token_urlsafe(24),  # not a token format at all
                "mt_" + secrets.token_hex(16),  # well-formed opaque id the issuer never minted
                "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0." + secrets.token_urlsafe(32),  # forged JWT
            ]
        )
        self.receive(garbage, "/receive 401 (garbage)", expect_invalid_token)

    @task
    def present_expired(self) -> None:
        tokens = prepared()
        if not tokens.expired_ready():
            return  # the 1 s tokens are not past expiry + leeway yet
        self.receive(tokens.expired_opaque, "/receive 401 (expired opaque)", expect_invalid_token)
        self.receive(tokens.expired_jwt, "/receive 401 (expired jwt)", expect_invalid_token)

    @task
    def present_revoked(self) -> None:
        tokens = prepared()
        self.receive(tokens.revoked_opaque, "/receive 401 (revoked opaque)", expect_invalid_token)

    @task
    def present_out_of_scope(self) -> None:
        tokens = prepared()
        if tokens.outsider_opaque and tokens.outsider_jwt:
            self.receive(
                tokens.outsider_opaque, "/receive 401 (out-of-scope opaque)", expect_invalid_token
            )
            self.receive(
                tokens.outsider_jwt, "/receive 401 (out-of-scope jwt)", expect_invalid_token
            )
