"""The pytest plugin as a user meets it (pytester): a generated project, a Flask service
protected by a copy of receiver_app's verifier, and the plugin's fixtures with no conftest.
It passes when the service makes every check, and fails naming the bad token when one is
missing; the fixtures can also use an issuer that is already running."""

from __future__ import annotations

import pytest

from m2m_harness.bad_tokens import BAD_TOKEN_KINDS
from tests.harness import REPO_ROOT
from tests.user_project import EXAMPLE, make_user_project

PLUGIN = ("-p", "m2m_harness.plugin")
# With the signature check off PyJWT turns the claim checks off too, unless they are asked for.
NO_SIGNATURE_CHECK = (
    '"verify_signature": False, "verify_exp": True, "verify_nbf": True, "verify_iss": True'
)


def test_a_service_that_makes_every_check_passes_the_users_tests(pytester) -> None:
    make_user_project(pytester.path)
    result = pytester.runpytest(*PLUGIN, "-v")
    result.assert_outcomes(passed=2 + len(BAD_TOKEN_KINDS) + 1)
    for kind in BAD_TOKEN_KINDS:
        result.stdout.fnmatch_lines([f"*test_every_kind_of_bad_token_is_refused?{kind}? PASSED*"])


@pytest.mark.parametrize(
    ("sabotage", "accepted"),
    [
        (("issuer=self.jwt_issuer,", ""), ["wrong_issuer"]),
        (("leeway=self.leeway_seconds", "leeway=3600"), ["expired", "not_yet_valid"]),
        (
            ("if self.machine_id not in audience and self.machine_id not in scopes:", "if 0:"),
            ["wrong_audience"],
        ),
        (('"verify_aud": False}', f'"verify_aud": False, {NO_SIGNATURE_CHECK}}}'), ["tampered"]),
    ],
    ids=["no-issuer-check", "hour-long-leeway", "no-audience-check", "no-signature-check"],
)
def test_a_service_missing_a_check_fails_naming_each_token_it_accepted(
    pytester, sabotage, accepted
) -> None:
    make_user_project(pytester.path, sabotage)
    result = pytester.runpytest(*PLUGIN, "-k", "bad_token")
    result.assert_outcomes(passed=len(BAD_TOKEN_KINDS) - len(accepted), failed=len(accepted))
    for kind in accepted:
        result.stdout.fnmatch_lines(
            [f"FAILED test_orders.py::test_every_kind_of_bad_token_is_refused[[]{kind}[]]*"]
        )
        result.stdout.fnmatch_lines([f"*the service accepted a {kind} token*"])


def test_the_fixtures_use_a_running_issuer_given_on_the_command_line(
    pytester, m2m_issuer, m2m_machines
) -> None:
    pytester.makepyfile(
        f"""
        def test_uses_the_given_issuer(m2m_issuer, m2m_machines):
            assert m2m_issuer.url == {m2m_issuer.url!r} and not m2m_issuer.owned
            m2m_machines("made-by-the-inner-session")
        """
    )
    url, key = m2m_issuer.url, m2m_issuer.secret_key
    result = pytester.runpytest(
        *PLUGIN, f"--m2m-issuer-url={url}", f"--m2m-issuer-secret-key={key}"
    )
    result.assert_outcomes(passed=1)
    names = [m["name"] for m in m2m_issuer.client.call("GET", "/v1/machines?limit=100")["data"]]
    assert any(name.startswith("made-by-the-inner-session-") for name in names)


def test_an_issuer_url_without_its_secret_key_is_a_usage_error(pytester) -> None:
    pytester.makepyfile("def test_x(m2m_issuer): pass")
    result = pytester.runpytest(*PLUGIN, "--m2m-issuer-url=http://127.0.0.1:9")
    result.stdout.fnmatch_lines(["*--m2m-issuer-url needs --m2m-issuer-secret-key*"])
    assert result.ret != 0


def test_the_readme_shows_the_example_test_file_these_tests_run() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"```python\n{(EXAMPLE / 'test_orders.py').read_text()}```" in readme
