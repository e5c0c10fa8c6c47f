"""Where the load test aims, with which keys, and how big a run may be: refusals come before any
traffic.

Locust options (`--issuer-url`, ...) carry the targets; the machine and instance keys come only
from environment variables so they never show in a process list or in Locust's web UI.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

# Every run is bounded: a run time is required, and neither it nor the user count may exceed these.
MAX_RUN_TIME_S = 30 * 60
MAX_USERS = 200


class TargetRefused(ValueError):
    """A target URL that this load test will not send traffic to."""


class RunRefused(ValueError):
    """A run this load test will not start: unbounded in time or users, or the web UI."""


@dataclass(frozen=True)
class Keys:
    """The secrets the users need: the caller's machine key (required), the outsider's
    (optional: without it, no out-of-scope traffic) and the instance key; "" when unset."""

    caller_secret_key: str
    outsider_secret_key: str
    instance_secret_key: str

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Keys:
        env = os.environ if environ is None else environ
        return cls(
            caller_secret_key=env.get("LOADTEST_CALLER_SECRET_KEY", ""),
            outsider_secret_key=env.get("LOADTEST_OUTSIDER_SECRET_KEY", ""),
            instance_secret_key=env.get("CLERK_SECRET_KEY", ""),
        )


@dataclass(frozen=True)
class Option:
    """A Locust command-line option that is also an environment variable and a config file key;
    its type is the default's (str or float)."""

    flag: str
    env_var: str
    default: str | float
    help: str

    def add_to(self, parser) -> None:
        parser.add_argument(
            self.flag,
            type=type(self.default),
            env_var=self.env_var,
            default=self.default,
            help=self.help,
        )


def check_run_bounds(*, headless: bool, run_time_s: int | None, users: int | None) -> None:
    """Refuse a run that is not bounded in time and users (the master's or a local run's options).

    The web UI is refused too: it lets anyone type any user count and runs until stopped.
    """
    if not headless:
        raise RunRefused(
            "the web UI is not allowed (it has no run time and takes any user count); "
            "run with --headless and -t"
        )
    if not run_time_s:
        raise RunRefused(
            f"no run time: give -t/--run-time (at most {MAX_RUN_TIME_S // 60} min), so the "
            "run is bounded"
        )
    if run_time_s > MAX_RUN_TIME_S:
        raise RunRefused(
            f"run time {run_time_s} s is above the cap of {MAX_RUN_TIME_S} s "
            f"({MAX_RUN_TIME_S // 60} min)"
        )
    if users is not None and users > MAX_USERS:
        raise RunRefused(f"{users} users is above the cap of {MAX_USERS}")


def loopback_addresses(host: str) -> bool:
    """True when `host` is a loopback address literal (127.0.0.0/8, ::1), or `localhost` and every
    address it resolves to is loopback. Any other name is refused unresolved: DNS may change."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host.lower().rstrip(".") != "localhost":
        return False
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    addresses = {info[4][0].split("%")[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def is_loopback_url(url: str) -> bool:
    return loopback_addresses(urlsplit(url).hostname or "")


def check_targets(urls: dict[str, str]) -> None:
    """Refuse a malformed target and any target that is not on this machine's loopback."""
    for option, url in urls.items():
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TargetRefused(f"{option}={url!r} is not an http(s) URL")
        if not is_loopback_url(url):
            raise TargetRefused(
                f"{option}={url!r} is not a loopback address; load tests send traffic only to "
                "127.0.0.0/8, [::1] or localhost (run your service locally, or reach it through "
                "a port-forward on 127.0.0.1)"
            )
