"""Hosts with their own addresses on one machine: Linux network namespaces joined by a bridge,
for proving a distributed load test (master, workers and target on different hosts) without
sending a packet anywhere else.

A "hub" namespace holds the bridge; every host namespace gets one end of a veth pair plugged into
it and an address on 10.213.0.0/24 that exists only inside these namespaces (the machine's own
namespace gets no address, route or link). `Lab` removes every namespace it created, and with
them their links, also when something fails. Needs root and iproute2's `ip`.

`python -m loadtest.netns serve-stack HOST` runs the throwaway stack bound to HOST (used inside a
namespace by the test): it prints the load test's environment as one JSON line on stdout (keys
go through the pipe, never the command line) and stops the stack when stdin closes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.213.0"
PREFIX_LEN = 24
IP_TIMEOUT_S = 10


class NetnsUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, no `ip`, or the kernel refuses)."""


def unavailable_reason() -> str | None:
    """Why this machine cannot run the namespace test, or None when it can (as far as we know
    before trying: the kernel may still refuse, which `Lab` reports as NetnsUnavailable)."""
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=check
    )


@dataclass
class Lab:
    """Named hosts, each a namespace with one address on a shared bridge."""

    hosts: list[str]
    prefix: str = field(default_factory=lambda: f"m2mlt{secrets.token_hex(3)}")
    created: list[str] = field(default_factory=list)

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def address(self, host: str) -> str:
        return f"{SUBNET}.{self.hosts.index(host) + 1}"

    def exec_prefix(self, host: str) -> list[str]:
        """Prefix a command with this to run it inside `host`'s namespace."""
        return ["ip", "netns", "exec", self.namespace(host)]

    def _add_namespace(self, name: str) -> None:
        result = ip("netns", "add", name, check=False)
        if result.returncode != 0:
            raise NetnsUnavailable(f"`ip netns add` failed: {result.stderr.strip()}")
        self.created.append(name)

    def create(self) -> Lab:
        hub = f"{self.prefix}-hub"
        self._add_namespace(hub)
        ip("-n", hub, "link", "add", "br0", "type", "bridge")
        ip("-n", hub, "link", "set", "br0", "up")
        for index, host in enumerate(self.hosts, start=1):
            ns = self.namespace(host)
            self._add_namespace(ns)
            port = f"port{index}"
            ip("-n", hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("-n", hub, "link", "set", port, "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{self.address(host)}/{PREFIX_LEN}", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        return self

    def remove(self) -> list[str]:
        """Kill what still runs in our namespaces, delete them (their veths and the bridge go
        with them); returns the names that could not be deleted."""
        left = []
        for name in reversed(self.created):
            pids = ip("netns", "pids", name, check=False).stdout.split()
            for pid in pids:  # only processes inside a namespace this lab created
                subprocess.run(["kill", "-9", pid], capture_output=True, timeout=IP_TIMEOUT_S)
            if ip("netns", "del", name, check=False).returncode != 0:
                left.append(name)
        self.created = left
        return left

    def __enter__(self) -> Lab:
        try:
            return self.create()
        except BaseException:
            self.remove()
            raise

    def __exit__(self, *_exc) -> None:
        self.remove()


def existing_namespaces(prefix: str) -> list[str]:
    """Namespaces whose name starts with `prefix` (a lab's leftovers, if any)."""
    listing = ip("netns", "list", check=False).stdout.splitlines()
    return [line.split()[0] for line in listing if line.startswith(prefix)]


def serve_stack(host: str, workers: int = 2) -> int:
    """Run the stack bound to `host` until stdin closes; print its load-test env first."""
    from loadtest.stack import Stack  # imported here: `ip netns` helpers need no web stack

    with (
        tempfile.TemporaryDirectory(prefix="m2m-netns-stack-") as tmp,
        Stack(Path(tmp), workers=workers, host=host) as stack,
    ):
        print(json.dumps(stack.locust_env()), flush=True)
        sys.stdin.read()  # the test closes our stdin (or dies) to stop the stack
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve-stack":
        sys.exit(serve_stack(sys.argv[2]))
    sys.exit("usage: python -m loadtest.netns serve-stack HOST")
