"""The mock issuer's README configuration table and .env.example list exactly the variables
its settings read."""

from __future__ import annotations

import re
from pathlib import Path

from mock_issuer.config import ENV_VARS

ISSUER_DIR = Path(__file__).resolve().parent.parent / "mock_issuer"


def readme_table_variables() -> list[str]:
    """The first column of the table under the README's `## Configuration` heading."""
    section = (ISSUER_DIR / "README.md").read_text().split("\n## Configuration\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    return re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", section, flags=re.MULTILINE)


def test_readme_configuration_table_lists_exactly_the_variables_the_issuer_reads():
    documented = readme_table_variables()
    assert len(documented) == len(set(documented))
    assert set(documented) == set(ENV_VARS)


def test_env_example_shows_every_variable_the_issuer_reads():
    example = (ISSUER_DIR / ".env.example").read_text()
    listed = set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    assert listed == set(ENV_VARS)
