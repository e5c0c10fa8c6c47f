"""The one process launcher (m2m_harness.launcher), and the tests' xprocess adapter over it
(tests/harness.py), with a tiny Flask app of the test's own: any `module:create_app()` starts, an
app that dies or never gets healthy fails fast and clearly with its log's last lines, and a stop
leaves no process of the group behind, even when the app ignores SIGTERM."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest
import requests

from m2m_harness.launcher import (
    AppProcess,
    LaunchError,
    base_env,
    free_port,
    port_is_free,
    server_command,
)
from tests.harness import RunningApp, start_app

pytestmark = pytest.mark.e2e

TINY_APP = """
import os
import signal
import sys

from flask import Flask


def create_app():
    print("tiny app starting", flush=True)
    if os.environ.get("TINY_CRASH"):
        sys.exit("tiny app refuses to start")
    if os.environ.get("TINY_IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz():
        return "ok", 503 if os.environ.get("TINY_UNHEALTHY") else 200

    @app.get("/env")
    def env():
        return {name: os.environ.get(name) for name in ("GREETING", "CLERK_SECRET_KEY")}

    return app
"""


@pytest.fixture
def tiny(tmp_path: Path):
    """AppProcess for the tiny app, importable from tmp_path; every one started is stopped."""
    (tmp_path / "tinyapp.py").write_text(TINY_APP)
    made: list[AppProcess] = []

    def _make(server: str = "flask", **env: str) -> AppProcess:
        app = AppProcess(
            "tinyapp:create_app()",
            env,
            server=server,
            cwd=tmp_path,
            log_path=tmp_path / f"tiny-{len(made)}.log",
        )
        made.append(app)
        return app

    yield _make
    for app in made:
        app.stop(grace=1)


def nothing_left(processes: list[psutil.Process]) -> bool:
    """Every process has exited (a zombie not yet reaped by init counts as exited)."""
    _gone, alive = psutil.wait_procs(processes, timeout=5)
    return all(exited(process) for process in alive)


def exited(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_started_app_answers_with_its_env_and_without_the_developers(tiny, monkeypatch):
    monkeypatch.setenv("CLERK_SECRET_KEY", "sk_test_exportedbythedeveloper")
    with tiny(GREETING="hello") as app:
        answer = requests.get(f"{app.url}/env", timeout=5).json()
        assert answer == {"GREETING": "hello", "CLERK_SECRET_KEY": None}
        assert "tiny app starting" in app.log_tail()
    assert not app.running


def test_an_app_that_never_gets_healthy_fails_within_the_timeout_showing_its_log(tiny):
    app = tiny(TINY_UNHEALTHY="1").start()
    started = time.monotonic()
    with pytest.raises(LaunchError) as failure:
        app.wait_healthy(timeout=2)
    assert time.monotonic() - started < 10
    message = str(failure.value)
    assert "tinyapp did not answer /healthz within 2 s" in message
    assert "tiny app starting" in message  # the log's last lines
    assert '" 503 -' in message  # werkzeug's line for the unhealthy answer


def test_an_app_that_exits_during_start_up_fails_at_once_with_the_reason(tiny):
    app = tiny(TINY_CRASH="1").start()
    started = time.monotonic()
    with pytest.raises(LaunchError, match="tinyapp exited during start-up") as failure:
        app.wait_healthy(timeout=60)
    assert time.monotonic() - started < 30  # not the whole timeout
    assert "tiny app refuses to start" in str(failure.value)


def test_stopping_gunicorn_leaves_neither_master_nor_workers_and_frees_the_port(tiny):
    app = tiny("gunicorn").start().wait_healthy()
    master = psutil.Process(app.pid)
    workers = master.children(recursive=True)
    assert len(workers) == 2
    app.stop()
    assert app.process.returncode == 0  # a graceful stop, not a kill
    assert nothing_left([master, *workers])
    assert port_is_free(app.port)


def test_an_app_ignoring_sigterm_is_killed_after_the_grace_period(tiny):
    app = tiny(TINY_IGNORE_TERM="1").start().wait_healthy()
    started = time.monotonic()
    app.stop(grace=1)
    assert app.process.returncode == -signal.SIGKILL
    assert 1 <= time.monotonic() - started < 10
    assert port_is_free(app.port)


def test_the_output_goes_line_by_line_to_a_callback_when_there_is_no_log_file(tmp_path):
    (tmp_path / "tinyapp.py").write_text(TINY_APP)
    lines: list[str] = []
    with AppProcess("tinyapp:create_app()", cwd=tmp_path, on_line=lines.append) as app:
        requests.get(f"{app.url}/healthz", timeout=5)
    assert "tiny app starting" in lines
    assert any("GET /healthz" in line for line in lines)
    assert "tiny app starting" in app.log_tail()


def test_a_package_name_means_its_create_app_under_either_server():
    flask = server_command("mock_issuer", 8000)
    assert flask[-7:] == [
        "mock_issuer:create_app()",
        "run",
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--no-reload",
    ]
    gunicorn = server_command("pkg.mod:make()", 8001, "gunicorn", workers=3)
    assert gunicorn[-1] == "pkg.mod:make()" and "--no-control-socket" in gunicorn
    assert gunicorn[gunicorn.index("--workers") + 1] == "3"
    with pytest.raises(ValueError, match="unknown server 'uwsgi'"):
        server_command("mock_issuer", 8000, "uwsgi")


def test_the_base_env_drops_app_settings_and_skips_dotenv(monkeypatch):
    for name in ("CLERK_API_URL", "M2M_TOKEN_FORMAT", "RECEIVER_URL", "FLASK_DEBUG"):
        monkeypatch.setenv(name, "from-the-developer")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    env = base_env()
    assert not {"CLERK_API_URL", "M2M_TOKEN_FORMAT", "RECEIVER_URL", "FLASK_DEBUG"} & set(env)
    assert env["M2M_SKIP_DOTENV"] == "1"
    assert env["PYTHONPATH"].endswith(":/somewhere")


def test_the_xprocess_harness_reports_an_app_that_exits_during_start_up(xprocess, tmp_path):
    (tmp_path / "tinyapp.py").write_text(TINY_APP)
    env = {"PYTHONPATH": str(tmp_path), "TINY_CRASH": "1"}
    with pytest.raises(LaunchError, match=r"tinyapp-\d+ exited during start-up") as failure:
        start_app(xprocess, "tinyapp", env)
    assert "tiny app refuses to start" in str(failure.value)


def test_the_xprocess_harness_gives_up_on_an_unhealthy_app_showing_its_log(xprocess, tmp_path):
    (tmp_path / "tinyapp.py").write_text(TINY_APP)
    env = {**base_env(), "PYTHONPATH": str(tmp_path), "TINY_UNHEALTHY": "1"}
    app = RunningApp(xprocess, "tinyapp", free_port(), env, startup_timeout=2)
    try:
        with pytest.raises(LaunchError, match="did not answer /healthz within 2 s") as failure:
            app.start()
        assert "tiny app starting" in str(failure.value)
        leader = psutil.Process(app.pid)
    finally:
        app.stop()
    assert nothing_left([leader])
