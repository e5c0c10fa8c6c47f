"""The one-command demo (scripts/run_demo.py) run as a subprocess on free ports: it makes both
calls, exits 0 with --once, stops everything on Ctrl-C, and says clearly when a port is busy."""

from __future__ import annotations

import importlib.util
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

from m2m_harness.launcher import base_env, free_port, port_is_free
from tests.harness import REPO_ROOT

pytestmark = pytest.mark.e2e

DEMO = REPO_ROOT / "scripts" / "run_demo.py"


def demo_command(tmp_path, *extra: str) -> tuple[list[str], dict[str, int]]:
    ports = {"issuer": free_port(), "caller": free_port(), "receiver": free_port()}
    port_args = [f"--{name}-port={port}" for name, port in ports.items()]
    db = str(tmp_path / "demo.db")
    return [sys.executable, str(DEMO), "--issuer-db", db, *port_args, *extra], ports


def started_pids(output: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"started (\w+) on \S+ \(pid (\d+)\)", output)}


def assert_nothing_left(pids: dict[str, int], ports: dict[str, int], extra_pids=()) -> None:
    assert set(pids) == {"issuer", "receiver", "caller"}
    for pid in [*pids.values(), *extra_pids]:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert all(port_is_free(port) for port in ports.values())


@pytest.mark.parametrize(
    ("provider", "token_route"), [("clerk", "POST /m2m_tokens"), ("oauth", "POST /oauth/token")]
)
def test_demo_once_makes_one_call_per_format_and_exits_0(tmp_path, provider, token_route):
    args, ports = demo_command(tmp_path, "--once", f"--provider={provider}")
    done = subprocess.run(
        args, env=base_env(), capture_output=True, text=True, timeout=90, cwd=tmp_path
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    caller = f"http://127.0.0.1:{ports['caller']}"
    assert f"GET {caller}/send?format=opaque -> 200" in out
    assert f"GET {caller}/send?format=jwt -> 200" in out
    assert '"messageReceived": "Hello from the caller"' in out
    assert f"issuer     http://127.0.0.1:{ports['issuer']}" in out
    assert f"receiver   http://127.0.0.1:{ports['receiver']}/receive" in out
    assert re.search(rf"^issuer   \| .*{token_route}", out, re.MULTILINE)  # prefixed logs
    assert re.search(r"^receiver \| .*POST /receive", out, re.MULTILINE)
    assert "\x1b[" not in out  # no colour codes when the output is not a terminal
    assert "==> stopped issuer, receiver, caller" in out
    assert_nothing_left(started_pids(out), ports)


def test_demo_stops_all_three_on_ctrl_c_leaving_no_process(tmp_path):
    args, ports = demo_command(tmp_path, "--server", "gunicorn")
    demo = subprocess.Popen(
        args,
        env=base_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in demo.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "Press Ctrl-C" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(60), "".join(lines)
        pids = started_pids("".join(lines))
        workers = [c.pid for pid in pids.values() for c in psutil.Process(pid).children()]
        assert workers  # gunicorn forked workers: they must go too
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=30) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
    reader.join(5)
    out = "".join(lines)
    assert "Ctrl-C: stopping all three" in out and "==> stopped" in out
    assert out.count("-> 200") == 2
    assert_nothing_left(pids, ports, workers)


def test_demo_refuses_a_busy_port_with_a_clear_message(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args, _ = demo_command(tmp_path, "--once", f"--caller-port={port}")
        started = time.monotonic()
        done = subprocess.run(args, env=base_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert f"port {port} (caller) is already in use" in done.stdout
    assert "--caller-port" in done.stdout
    assert "started" not in done.stdout  # refused before starting anything
    assert time.monotonic() - started < 20


def test_demo_configures_apps_from_their_env_files_with_the_chosen_ports(monkeypatch):
    spec = importlib.util.spec_from_file_location("run_demo", DEMO)
    run_demo = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_demo", run_demo)  # dataclasses look the module up
    spec.loader.exec_module(run_demo)  # type: ignore[union-attr]
    ports = {"issuer": 1111, "caller": 2222, "receiver": 3333}
    assert run_demo._retarget("http://127.0.0.1:8780/v1", ports) == "http://127.0.0.1:1111/v1"
    assert run_demo._retarget("http://localhost:8782", ports) == "http://127.0.0.1:3333"
    assert run_demo._retarget("ak_demo8780", ports) == "ak_demo8780"
    monkeypatch.setenv("CLERK_MACHINE_SECRET_KEY", "ak_exportedbythedeveloper")
    monkeypatch.setenv("M2M_SKIP_DOTENV", "1")  # .env.example even if a developer has a .env
    env = run_demo.app_env("caller", ports, None)
    assert env["CLERK_API_URL"] == "http://127.0.0.1:1111"
    assert env["RECEIVER_URL"] == "http://127.0.0.1:3333"
    assert env["M2M_SKIP_DOTENV"] == "1"
    assert env["CLERK_MACHINE_SECRET_KEY"].startswith("ak_democaller")  # not the exported one
    assert run_demo.app_env("issuer", ports, "/tmp/x.db")["MOCK_ISSUER_DB"] == "/tmp/x.db"
    envs = {name: run_demo.app_env(name, ports, None) for name in ("issuer", "caller", "receiver")}
    run_demo.use_oauth(envs)  # --provider oauth: the same machines as OAuth clients
    assert envs["caller"]["OAUTH_CLIENT_ID"] == "mch_democaller00000000000000000"
    assert envs["caller"]["OAUTH_CLIENT_SECRET"] == env["CLERK_MACHINE_SECRET_KEY"]
    receiver = envs["receiver"]
    receiver_id = receiver["CLERK_MACHINE_ID"]
    assert envs["caller"]["OAUTH_AUDIENCE"] == receiver["OAUTH_AUDIENCE"] == receiver_id
    assert receiver["OAUTH_CLIENT_ID"] == receiver_id
    assert receiver["OAUTH_CLIENT_SECRET"] == receiver["CLERK_MACHINE_SECRET_KEY"]
    for app in ("caller", "receiver"):
        assert envs[app]["M2M_PROVIDER"] == "oauth"
        assert envs[app]["OAUTH_ISSUER_URL"] == "http://127.0.0.1:1111"
