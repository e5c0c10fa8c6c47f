"""A user's project as the plugin's README shows it: the example Flask service with receiver_app's
verifier copied in (tests/plugin_example), shared by the pytester and the pip-install tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.harness import REPO_ROOT

EXAMPLE = Path(__file__).parent / "plugin_example"
VERIFIER_FILES = ("verifier.py", "jwks.py", "verify_cache.py")  # receiver_app's reusable part


def make_user_project(path: Path, sabotage: tuple[str, str] | None = None) -> Path:
    """The example project with receiver_app's verifier copied in, as its README says to;
    `sabotage` (old, new) edits the copied verifier.py to take one check out."""
    shutil.copytree(EXAMPLE / "orders_service", path / "orders_service")
    shutil.copy(EXAMPLE / "test_orders.py", path / "test_orders.py")
    package = path / "orders_service" / "m2m"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in VERIFIER_FILES:
        shutil.copy(REPO_ROOT / "receiver_app" / name, package / name)
    if sabotage:
        verifier = package / "verifier.py"
        old, new = sabotage
        assert old in verifier.read_text(), "the sabotaged line is gone from verifier.py"
        verifier.write_text(verifier.read_text().replace(old, new))
    return path
