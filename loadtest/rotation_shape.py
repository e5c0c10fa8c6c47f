"""A load shape with a ramp, a spike, and a signing-key rotation at the issuer in the middle.

Use it next to the locustfile (the shape runs on the master only):

    locust -f loadtest/locustfile.py,loadtest/rotation_shape.py -t 60s -u 20 ...

`-t` sets the whole run's length and `-u` the spike's peak; phases scale with them. The gate then
also requires that the rotation succeeded, that JWTs from both keys were verified, and that not
one JWT verification failed.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent
from locust import LoadTestShape, events
from locust.stats import RequestStats

from loadtest.issuer_client import IssuerClient, IssuerError
from loadtest.rotation_plan import check_both_keys_verified, check_no_jwt_failures, planned_users
from loadtest.settings import Keys, Option
from loadtest.tls import requests_verify

logger = logging.getLogger("loadtest")

DEFAULT_RUN_TIME_S = 60
DEFAULT_PEAK_USERS = 20


OPTIONS = (
    Option(
        "--rotate-path",
        "LOADTEST_ROTATE_PATH",
        "/v1/jwks/rotate",
        "Issuer route (instance key) that rotates the JWT signing key",
    ),
    Option(
        "--rotate-at",
        "LOADTEST_ROTATE_AT",
        0.5,
        "When to rotate, as a fraction of the run time (0..1)",
    ),
)


@events.init_command_line_parser.add_listener
def add_options(parser) -> None:
    for option in OPTIONS:
        option.add_to(parser)


@dataclass
class Rotation:
    at_s: float
    error: str | None = None


class RampSpikeRotateShape(LoadTestShape):
    """Ramp (0-25 %), hold, spike to `-u` users (40-60 %), settle; rotate at `--rotate-at`."""

    use_common_options = True  # -t and -u bound the shape

    def __init__(self) -> None:
        super().__init__()
        self.rotation: Rotation | None = None

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options
        run_time = options.run_time or DEFAULT_RUN_TIME_S
        peak = options.num_users or DEFAULT_PEAK_USERS
        elapsed = self.get_run_time()
        if elapsed >= run_time:
            return None
        if self.rotation is None and elapsed >= options.rotate_at * run_time:
            self.rotation = Rotation(at_s=elapsed)
            gevent.spawn(self.rotate, options)
        return planned_users(elapsed / run_time, peak), float(peak)

    def rotate(self, options) -> None:
        """Rotate the issuer's signing key once, recorded as a request so the report shows it."""
        environment = self.runner.environment
        started = time.perf_counter()
        error: Exception | None = None
        try:
            key = Keys.from_env().instance_secret_key
            if not key:
                raise IssuerError("CLERK_SECRET_KEY (the instance key) is not set")
            issuer = IssuerClient(options.issuer_url, verify=requests_verify(options.ca_bundle))
            issuer.rotate_signing_key(key, options.rotate_path)
            logger.info("loadtest: signing key rotated at %.1f s", self.rotation.at_s)
        except IssuerError as exc:
            error = exc
            self.rotation.error = str(exc)
        environment.events.request.fire(
            request_type="POST",
            name=f"{options.rotate_path} (signing key rotation)",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=error,
            context={},
        )

    def gate_checks(self) -> list:
        """Extra gate checks for this shape (the locustfile's gate calls them at the end)."""
        return [self.check_rotated, check_no_jwt_failures, check_both_keys_verified]

    def check_rotated(self, _stats: RequestStats) -> str | None:
        if self.rotation is None:
            return "the signing-key rotation never ran (run too short?)"
        if self.rotation.error:
            return f"the signing-key rotation failed: {self.rotation.error}"
        return None
