"""The gate's verdict in Locust's web UI: a "Gate" tab (Locust's extendedTabs mechanism) that
shows the verdict of the last stopped run, and `GET /gate` as JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Callable

from flask import jsonify, request

from loadtest.gate import Verdict

TAB_KEY = "loadtest-gate"
NOT_JUDGED = "not judged yet: the gate judges a run when it stops"


def verdict_rows(verdict: Verdict | None) -> list[dict[str, str]]:
    """The tab's table: the verdict, then one row per breach."""
    if verdict is None:
        return [{"verdict": "-", "detail": NOT_JUDGED}]
    rows = [{"verdict": "PASS" if verdict.passed else "FAIL", "detail": verdict.summary}]
    rows += [{"verdict": "breach", "detail": breach} for breach in verdict.breaches]
    return rows


def install(web_ui, current: Callable[[], Verdict | None]) -> None:
    """Add the Gate tab and `/gate` to a running web UI; `current()` is the latest verdict."""
    web_ui.template_args["extendedTabs"] = [{"title": "Gate", "key": TAB_KEY}]
    web_ui.template_args["extendedTables"] = [
        {
            "key": TAB_KEY,
            "structure": [
                {"key": "verdict", "title": "Verdict"},
                {"key": "detail", "title": "Detail"},
            ],
        }
    ]

    @web_ui.app.after_request
    def add_gate_to_stats(response):
        """The UI polls /stats/requests; its extendedStats feed the Gate tab."""
        if request.path != "/stats/requests" or not response.is_json:
            return response
        body = response.get_json()
        body["extendedStats"] = [{"key": TAB_KEY, "data": verdict_rows(current())}]
        response.set_data(json.dumps(body))
        return response

    @web_ui.app.route("/gate")
    def gate():
        verdict = current()
        if verdict is None:
            return jsonify(judged=False, line=NOT_JUDGED)
        return jsonify(judged=True, passed=verdict.passed, line=verdict.line())
