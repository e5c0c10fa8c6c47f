"""Where the load test aims and with which keys: refusals come before any traffic.

Locust options (`--issuer-url`, ...) carry the targets; the machine and instance keys come only
from environment variables so they never show in a process list or in Locust's web UI. A target
off this machine's loopback needs one explicit acknowledgement (`--allow-remote` or
`LOADTEST_ALLOW_REMOTE=1`); there are no caps on users or run time: a user's run is their choice.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

ALLOW_REMOTE_HINT = (
    "add --allow-remote (or LOADTEST_ALLOW_REMOTE=1, or `allow-remote = true` in the config "
    "file) to load-test it, only if you are allowed to put load on it"
)


class TargetRefused(ValueError):
    """A target URL that this load test will not send traffic to."""


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
    its type is the default's (str or float; a bool default makes a flag, set by `1`/`true`)."""

    flag: str
    env_var: str
    default: str | float | bool
    help: str

    def add_to(self, parser) -> None:
        if isinstance(self.default, bool):
            parser.add_argument(
                self.flag,
                action="store_true",
                env_var=self.env_var,
                default=self.default,
                help=self.help,
            )
            return
        parser.add_argument(
            self.flag,
            type=type(self.default),
            env_var=self.env_var,
            default=self.default,
            help=self.help,
        )


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


def check_targets(urls: dict[str, str], allow_remote: bool = False) -> None:
    """Refuse a malformed target, and a target off this machine's loopback unless acknowledged."""
    for option, url in urls.items():
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TargetRefused(f"{option}={url!r} is not an http(s) URL")
        if not allow_remote and not is_loopback_url(url):
            raise TargetRefused(
                f"{option}={url!r} is not a loopback address (127.0.0.0/8, [::1], localhost); "
                + ALLOW_REMOTE_HINT
            )


def describe_targets(urls: dict[str, str]) -> str:
    """One line naming every resolved target and whether it is local or remote."""
    return "loadtest: targets: " + ", ".join(
        f"{option}={url} ({'loopback' if is_loopback_url(url) else 'REMOTE'})"
        for option, url in urls.items()
    )
