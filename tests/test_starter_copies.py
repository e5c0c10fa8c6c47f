"""The caller and the receiver are starter templates: a copy of either folder under another
name must work on its own, with no import reaching back to the original package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.harness import REPO_ROOT
from tests.seed import CALLER, RECEIVER

CONFIGS = {
    "caller_app": {
        "CLERK_API_URL": "http://127.0.0.1:1",
        "CLERK_MACHINE_SECRET_KEY": CALLER.secret_key,
        "RECEIVER_URL": "http://127.0.0.1:1",
    },
    "receiver_app": {
        "CLERK_API_URL": "http://127.0.0.1:1",
        "CLERK_MACHINE_SECRET_KEY": RECEIVER.secret_key,
        "CLERK_MACHINE_ID": RECEIVER.id,
    },
}
# Build the app, answer /healthz, and prove the original package was never imported.
SCRIPT = """
import sys, my_copy
app = my_copy.create_app(CONFIG)
assert app.test_client().get("/healthz").status_code == 200
leaked = sorted(m for m in sys.modules if m.split(".")[0] == ORIGINAL)
assert not leaked, leaked
print("ok")
"""


@pytest.mark.parametrize("app", sorted(CONFIGS))
def test_a_renamed_copy_of_the_app_folder_works_on_its_own(app, tmp_path):
    shutil.copytree(REPO_ROOT / app, tmp_path / "my_copy", ignore=shutil.ignore_patterns(".env"))
    script = f"CONFIG = {CONFIGS[app]!r}\nORIGINAL = {app!r}\n{SCRIPT}"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "M2M_SKIP_DOTENV": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
