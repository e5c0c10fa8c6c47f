"""The current app's database connection (for blueprints, CLI commands and later pages)."""

from __future__ import annotations

import sqlite3

from flask import current_app

from . import db


def get_conn() -> sqlite3.Connection:
    """This thread's connection to the app's database (opened once per thread)."""
    return db.connect(current_app.config["MOCK_ISSUER_DB"])
