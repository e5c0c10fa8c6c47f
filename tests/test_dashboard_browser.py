"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against a real
issuer process: sign in, create machines and a scope, use tokens through the API, see them in
the charts and totals, revoke one from the page and check the API agrees.

Screenshots go to test-artifacts/dashboard/. Never downloads a browser: when no Chromium is
installed the module is skipped with a message saying how to get one, or fails when
`M2M_REQUIRE_BROWSER=1` (CI). Playwright itself is pinned in requirements.txt, so a failing
import is an error, never a skip.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright import sync_api

from tests.browser_requirement import no_browser
from tests.harness import REPO_ROOT, RunningApp, free_port, start_app
from tests.seed import TEST_SECRET_KEY, issuer_env

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

ARTIFACTS = REPO_ROOT / "test-artifacts" / "dashboard"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT = 10


def find_chromium() -> tuple[str | None, str]:
    """CHROMIUM_PATH if set, else a chromium on PATH, else Debian's /usr/bin/chromium; with the
    reason to give when none is usable."""
    explicit = os.environ.get("CHROMIUM_PATH")
    found = [shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium"]
    candidates = [explicit] if explicit else found
    for path in candidates:
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path, ""
    if explicit:
        return None, f"CHROMIUM_PATH={explicit!r} is not an executable file"
    return None, (
        "no Chromium found (install Debian's `chromium` package, or set CHROMIUM_PATH "
        "to a Chromium binary)"
    )


CHROMIUM, WHY_NOT = find_chromium()
if CHROMIUM is None:
    no_browser(WHY_NOT)  # a skip, or a failure under M2M_REQUIRE_BROWSER=1


@pytest.fixture(scope="module")
def issuer_proc(xprocess, tmp_path_factory) -> Iterator[RunningApp]:
    """One issuer with a fresh database for this module, so the totals are exactly ours; under
    gunicorn with two workers, so the session cookie and the counters must hold across them."""
    port = free_port()
    env = issuer_env(
        tmp_path_factory.mktemp("dashboard-browser"), MOCK_ISSUER_URL=f"http://127.0.0.1:{port}"
    )
    running = start_app(xprocess, "mock_issuer", env, port=port, server="gunicorn", workers=2)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def api(issuer: RunningApp, method: str, path: str, key: str, **kwargs) -> requests.Response:
    return requests.request(
        method,
        issuer.url + path,
        headers={"Authorization": f"Bearer {key}"},
        timeout=TIMEOUT,
        **kwargs,
    )


def create_machine_on_page(page, name: str) -> tuple[str, str]:
    """Fill the create form; return (machine id, secret key shown once after creating)."""
    page.get_by_role("navigation", name="Dashboard").get_by_role("link", name="Machines").click()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Default token TTL (seconds)").fill("600")
    page.get_by_role("button", name="Create machine").click()
    secret = page.locator("#secret-value").inner_text()
    machine_id = re.search(r"mch_\w{27}", page.locator("main").inner_text()).group(0)
    return machine_id, secret


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_dashboard_end_to_end_in_chromium(issuer_proc: RunningApp, browser) -> None:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT * 1000)

    # Anonymous visitors land on the sign-in page; a wrong key is refused without echoing it.
    page.goto(f"{issuer_proc.url}/dashboard/")
    assert page.url.startswith(f"{issuer_proc.url}/dashboard/sign-in")
    shot(page, "01-sign-in")
    page.get_by_label("Instance secret key").fill("sk_test_wrong")
    page.get_by_role("button", name="Sign in").click()
    assert "not this issuer's instance secret key" in page.locator("#sign-in-error").inner_text()
    assert "sk_test_wrong" not in page.content()

    # Sign in by keyboard only: Tab to the field, type, Enter.
    page.locator("body").focus()
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "secret_key":
            break
    assert page.evaluate("document.activeElement.id") == "secret_key"
    page.keyboard.type(TEST_SECRET_KEY)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/dashboard/usage.*"))

    # Two machines created on the page; caller may send to receiver.
    caller_id, caller_key = create_machine_on_page(page, "browser-caller")
    shot(page, "02-machine-created")
    receiver_id, receiver_key = create_machine_on_page(page, "browser-receiver")
    page.goto(f"{issuer_proc.url}/dashboard/machines/{caller_id}")
    page.get_by_label("Allow sending to").select_option(receiver_id)
    page.get_by_role("button", name="Add scope").click()
    assert "may now send to browser-receiver" in page.locator(".flash.ok").inner_text()
    assert "browser-receiver" in page.locator("#scopes").inner_text()

    # Tokens minted and verified through the API with the keys the page showed.
    opaque = [
        api(issuer_proc, "POST", "/v1/m2m_tokens", caller_key, json={}).json() for _ in range(3)
    ]
    jwt = api(issuer_proc, "POST", "/v1/m2m_tokens", caller_key, json={"token_format": "jwt"})
    assert jwt.status_code == 201 and all(t["token"].startswith("mt_") for t in opaque)
    for token in (opaque[0]["token"], opaque[1]["token"], jwt.json()["token"]):
        ok = api(issuer_proc, "POST", "/m2m_tokens/verify", receiver_key, json={"token": token})
        assert ok.status_code == 200
    bad = {"token": "mt_" + "0" * 64}
    assert api(issuer_proc, "POST", "/m2m_tokens/verify", receiver_key, json=bad).status_code == 404

    # The usage page shows them: totals, chart layers and the per-machine table.
    page.goto(f"{issuer_proc.url}/dashboard/usage?range=hour")
    assert page.locator("#total-creations").inner_text() == "4"
    assert page.locator("#total-verifications").inner_text() == "3"
    assert page.locator("#total-failed").inner_text() == "1"
    creations_desc = page.locator("#creations desc").text_content()
    assert "Total 4: opaque 3, jwt 1." in creations_desc
    verify_desc = page.locator("#verifications desc").text_content()
    assert "opaque ok 2, jwt ok 1, failed 1" in verify_desc
    assert page.locator("#creations rect title").count() >= 1
    machine_row = page.locator("#by-machine tr", has_text="browser-caller").inner_text()
    assert re.split(r"\s+", machine_row.strip())[1:] == ["4", "3", "0"]
    shot(page, "03-usage-desktop")
    # Every worker's /metrics agrees: the counters come from the database, not process memory.
    for _ in range(4):
        scrape = requests.get(f"{issuer_proc.url}/metrics", timeout=TIMEOUT).text
        assert 'mock_issuer_token_creations_total{format="opaque"} 3.0' in scrape
        assert (
            'mock_issuer_token_verifications_total{format="opaque",outcome="failed"} 1.0' in scrape
        )
    page.get_by_role("link", name="Machine", exact=True).click()
    assert "browser-caller 4" in page.locator("#creations desc").text_content()
    shot(page, "04-usage-by-machine-desktop")

    # Revoke one opaque token from the machine page; the API agrees at once.
    page.goto(f"{issuer_proc.url}/dashboard/machines/{caller_id}")
    row = page.locator(f"#token-{opaque[0]['id']}")
    assert "active" in row.inner_text()
    row.get_by_role("button", name=f"Revoke token {opaque[0]['id']}").click()
    assert f"Token {opaque[0]['id']} revoked." in page.locator(".flash.ok").inner_text()
    assert page.locator(f"#token-{opaque[0]['id']}").count() == 0  # only active ones listed
    shot(page, "05-token-revoked")
    again = api(
        issuer_proc, "POST", "/m2m_tokens/verify", receiver_key, json={"token": opaque[0]["token"]}
    )
    assert again.status_code == 404
    listed = api(
        issuer_proc,
        "GET",
        "/v1/m2m_tokens",
        TEST_SECRET_KEY,
        params={"subject": caller_id, "revoked": "true"},
    ).json()
    states = {t["id"]: (t["revoked"], t["revocation_reason"]) for t in listed["m2m_tokens"]}
    assert states[opaque[0]["id"]] == (True, "Revoked from the dashboard")
    assert states[opaque[1]["id"]] == (False, None)
    page.get_by_role("link", name="Include revoked and expired").click()
    assert "revoked" in page.locator(f"#token-{opaque[0]['id']}").inner_text()

    # Phone width: same session, no sideways scrolling on the main pages.
    phone = browser.new_context(viewport=PHONE, storage_state=context.storage_state())
    phone_page = phone.new_page()
    for name, path in [
        ("06-usage-phone", "/dashboard/usage?range=hour"),
        ("07-machines-phone", "/dashboard/machines"),
        ("08-machine-phone", f"/dashboard/machines/{caller_id}"),
    ]:
        phone_page.goto(issuer_proc.url + path)
        shot(phone_page, name)
        if name == "06-usage-phone":
            phone_page.locator("#verifications").screenshot(
                path=str(ARTIFACTS / "06b-chart-phone.png")
            )
        assert no_horizontal_scroll(phone_page), f"{path} scrolls sideways at phone width"
    phone.close()

    # Sign out: the cookie no longer opens the dashboard.
    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{issuer_proc.url}/dashboard/usage")
    assert "/dashboard/sign-in" in page.url
    context.close()
