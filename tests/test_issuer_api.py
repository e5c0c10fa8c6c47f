"""The mock issuer's HTTP API through Flask's test client: every route, success and errors."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from mock_issuer import db, tokens
from tests.fakes import advance_clock
from tests.issuer_calls import assert_clerk_error, bearer, mint, new_machine, verify
from tests.seed import CALLER, OUTSIDER, RECEIVER, SK, TEST_SECRET_KEY, make_issuer_app


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[Flask]:
    yield make_issuer_app(tmp_path_factory.mktemp("issuer-api"))
    db.close_thread_connections()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


TOKEN_KEYS = {
    "object",
    "id",
    "subject",
    "claims",
    "scopes",
    "revoked",
    "revocation_reason",
    "expired",
    "expiration",
    "last_used_at",
    "created_at",
    "updated_at",
}


# ---- creating tokens ----


@pytest.mark.parametrize("path", ["/v1/m2m_tokens", "/m2m_tokens"])
def test_create_opaque_token_answers_201_with_the_full_token_object(client, path):
    resp = client.post(
        path, json={"seconds_until_expiration": 60.0}, headers=bearer(CALLER.secret_key)
    )
    assert resp.status_code == 201
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json
    assert set(body) == TOKEN_KEYS | {"token"}
    assert body["object"] == "machine_to_machine_token"
    assert body["id"].startswith("mt_") and len(body["id"]) == 35
    assert body["token"].startswith("mt_") and len(body["token"]) == 3 + 64
    assert body["subject"] == CALLER.id
    assert body["scopes"] == [RECEIVER.id]
    assert body["revoked"] is False and body["expired"] is False
    assert body["last_used_at"] is None
    assert body["expiration"] - body["created_at"] == 60_000


def test_create_without_body_uses_the_machine_default_ttl(client):
    resp = client.post("/v1/m2m_tokens", headers=bearer(CALLER.secret_key))
    assert resp.status_code == 201
    assert resp.json["expiration"] - resp.json["created_at"] == 3600 * 1000


def test_create_with_null_expiration_uses_the_machine_default_ttl(client):
    body = mint(client, seconds_until_expiration=None, claims=None)
    assert body["expiration"] - body["created_at"] == 3600 * 1000


def test_create_requires_a_machine_key_not_the_instance_key(client):
    resp = client.post("/v1/m2m_tokens", json={}, headers=SK)
    assert_clerk_error(resp, 401, "machine_secret_key_invalid")


def test_create_with_unknown_machine_key_is_401(client):
    resp = client.post("/v1/m2m_tokens", json={}, headers=bearer("ak_" + "f" * 32))
    assert_clerk_error(resp, 401, "machine_secret_key_invalid")


def test_scopes_are_a_snapshot_at_creation(client):
    sender = new_machine(client, "snapshot-sender", scoped_machines=[RECEIVER.id])
    token = mint(client, sender["secret_key"])
    resp = client.delete(f"/v1/machines/{sender['id']}/scopes/{RECEIVER.id}", headers=SK)
    assert resp.status_code == 200
    assert verify(client, token["token"]).status_code == 200
    assert mint(client, sender["secret_key"])["scopes"] == []


@pytest.mark.parametrize("seconds", [-5, 0.0001, 0.5, 0.999])
@pytest.mark.parametrize("token_format", ["opaque", "jwt"])
def test_negative_or_sub_second_lifetime_is_422_naming_the_field(client, seconds, token_format):
    resp = client.post(
        "/v1/m2m_tokens",
        json={"seconds_until_expiration": seconds, "token_format": token_format},
        headers=bearer(CALLER.secret_key),
    )
    err = assert_clerk_error(resp, 422, "form_param_value_invalid")
    assert err["meta"]["param_name"] == "seconds_until_expiration"


def test_one_second_token_verifies_when_minted(client):
    for token_format in ("opaque", "jwt"):
        token = mint(client, seconds_until_expiration=1.0, token_format=token_format)
        assert token["expired"] is False
        assert verify(client, token["token"]).status_code == 200


@pytest.mark.parametrize("token_format", ["opaque", "jwt"])
def test_claims_over_4_kib_are_422_naming_claims(client, token_format):
    resp = client.post(
        "/v1/m2m_tokens",
        json={"token_format": token_format, "claims": {"blob": "x" * 7000}},
        headers=bearer(CALLER.secret_key),
    )
    err = assert_clerk_error(resp, 422, "form_param_value_invalid")
    assert err["meta"]["param_name"] == "claims"


def test_largest_claims_accepted_still_give_a_jwt_we_verify(client):
    blob = "x" * (tokens.MAX_CLAIMS_BYTES - len('{"blob":""}'))
    token = mint(client, token_format="jwt", claims={"blob": blob})
    assert len(token["token"]) <= tokens.MAX_TOKEN_LENGTH
    assert verify(client, token["token"]).json["claims"] == {"blob": blob}


def test_jwt_that_would_exceed_8_kib_through_its_scopes_is_422_not_minted(client):
    targets = [new_machine(client, f"fan-out-{i}")["id"] for i in range(120)]
    sender = new_machine(client, "fan-out", scoped_machines=targets)
    resp = client.post(
        "/v1/m2m_tokens", json={"token_format": "jwt"}, headers=bearer(sender["secret_key"])
    )
    err = assert_clerk_error(resp, 422, "form_param_value_invalid")
    assert err["meta"]["param_name"] == "token_format"
    assert len(mint(client, sender["secret_key"])["scopes"]) == 120  # opaque has no such limit


def test_claims_are_returned_and_kept(client):
    token = mint(client, claims={"role": "reporter", "n": [1, 2]})
    assert token["claims"] == {"role": "reporter", "n": [1, 2]}
    assert verify(client, token["token"]).json["claims"] == {"role": "reporter", "n": [1, 2]}


# ---- min_remaining_ttl_seconds reuse ----


def test_min_remaining_ttl_returns_the_same_live_token(client):
    machine = new_machine(client, "reuser", scoped_machines=[RECEIVER.id])
    first = mint(
        client, machine["secret_key"], seconds_until_expiration=600, min_remaining_ttl_seconds=60
    )
    second = mint(
        client, machine["secret_key"], seconds_until_expiration=600, min_remaining_ttl_seconds=60
    )
    assert second["id"] == first["id"] and second["token"] == first["token"]


def test_min_remaining_ttl_mints_when_claims_differ_or_lifetime_too_short(client):
    machine = new_machine(client, "reuser2", scoped_machines=[RECEIVER.id])
    key = machine["secret_key"]
    first = mint(client, key, seconds_until_expiration=100, min_remaining_ttl_seconds=10)
    other_claims = mint(
        client, key, seconds_until_expiration=100, min_remaining_ttl_seconds=10, claims={"a": 1}
    )
    assert other_claims["id"] != first["id"]
    needs_more = mint(client, key, seconds_until_expiration=1000, min_remaining_ttl_seconds=500)
    assert needs_more["id"] != first["id"]


def test_min_remaining_ttl_skips_revoked_tokens(client):
    machine = new_machine(client, "reuser3", scoped_machines=[RECEIVER.id])
    key = machine["secret_key"]
    first = mint(client, key, min_remaining_ttl_seconds=10)
    client.post(f"/v1/m2m_tokens/{first['id']}/revoke", json={}, headers=SK)
    assert mint(client, key, min_remaining_ttl_seconds=10)["id"] != first["id"]


def test_opaque_tokens_are_stored_as_a_hash_and_an_encrypted_copy_never_in_clear(app, client):
    machine = new_machine(client, "hash-and-copy", scoped_machines=[RECEIVER.id])
    key = machine["secret_key"]
    plain = mint(client, key)
    reusable = mint(client, key, min_remaining_ttl_seconds=10)
    assert reusable["id"] == plain["id"]  # like Clerk: reused though minted without it
    other = mint(client, key, claims={"a": 1})
    conn = db.connect(app.extensions["settings"].mock_issuer_db)
    rows = {
        row["id"]: row
        for row in conn.execute(
            "SELECT id, token_hash, wrapped FROM m2m_tokens WHERE subject = ?", (machine["id"],)
        )
    }
    assert set(rows) == {plain["id"], other["id"]}
    assert all(row["wrapped"] is not None for row in rows.values())
    stored = " ".join(str(value) for row in rows.values() for value in tuple(row))
    assert plain["token"] not in stored and other["token"] not in stored


def _database_alone_unwrap(db_path: str, token_id: str) -> str | None:
    """What someone holding only the database file (and this source) can try: derive the
    wrapping key from the machine key stored next to the copy."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    wrapped, ak_key = conn.execute(
        "SELECT t.wrapped, m.secret_key FROM m2m_tokens t JOIN machines m ON m.id = t.subject"
        " WHERE t.id = ?",
        (token_id,),
    ).fetchone()
    conn.close()
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"mock_issuer token reuse")
    try:
        plain = AESGCM(hkdf.derive(ak_key.encode())).decrypt(
            wrapped[:12], wrapped[12:], token_id.encode()
        )
    except InvalidTag:
        return None
    return plain.decode()


def test_reusable_token_copy_cannot_be_decrypted_from_the_database_alone(app, client):
    machine = new_machine(client, "wrapped-copy", scoped_machines=[RECEIVER.id])
    token = mint(client, machine["secret_key"], min_remaining_ttl_seconds=10)
    db_path = app.extensions["settings"].mock_issuer_db
    assert _database_alone_unwrap(db_path, token["id"]) is None
    wrapped = (
        db.connect(db_path)
        .execute("SELECT wrapped FROM m2m_tokens WHERE id = ?", (token["id"],))
        .fetchone()[0]
    )
    assert (
        tokens._unwrap(machine["secret_key"], "sk_test_" + "0" * 32, token["id"], wrapped) is None
    )
    assert (
        tokens._unwrap(machine["secret_key"], TEST_SECRET_KEY, token["id"], wrapped)
        == (token["token"])
    )


def test_changing_the_instance_secret_key_ends_reuse_of_earlier_tokens(tmp_path):
    first_app = make_issuer_app(tmp_path)
    first = mint(first_app.test_client(), min_remaining_ttl_seconds=10)
    other_key = "sk_test_" + "7" * 32
    second_app = make_issuer_app(tmp_path, CLERK_SECRET_KEY=other_key)  # the same database
    resp = second_app.test_client().post(
        "/v1/m2m_tokens", json={"min_remaining_ttl_seconds": 10}, headers=bearer(CALLER.secret_key)
    )
    assert resp.status_code == 201 and resp.json["id"] != first["id"]  # minted anew
    assert verify(first_app.test_client(), first["token"]).status_code == 200  # still valid


def test_reuse_lookup_reads_the_partial_index_not_every_token_of_the_machine(app):
    plan = " ".join(
        row[3]
        for row in db.connect(app.extensions["settings"].mock_issuer_db).execute(
            "EXPLAIN QUERY PLAN SELECT * FROM m2m_tokens WHERE subject = ? AND revoked = 0"
            " AND expiration > ? AND claims = ? AND scopes = ? AND wrapped IS NOT NULL"
            " ORDER BY expiration DESC LIMIT 5",
            (CALLER.id, 0, "null", "[]"),
        )
    )
    assert "USING INDEX m2m_tokens_reusable" in plan
    assert "subject=? AND claims=? AND scopes=? AND expiration>?" in plan


def test_min_remaining_ttl_not_less_than_lifetime_is_400(client):
    resp = client.post(
        "/v1/m2m_tokens",
        json={"seconds_until_expiration": 60, "min_remaining_ttl_seconds": 60},
        headers=bearer(CALLER.secret_key),
    )
    err = assert_clerk_error(resp, 400, "form_param_value_invalid")
    assert err["meta"]["param_name"] == "min_remaining_ttl_seconds"


def test_min_remaining_ttl_with_jwt_format_is_400(client):
    resp = client.post(
        "/v1/m2m_tokens",
        json={"token_format": "jwt", "min_remaining_ttl_seconds": 1},
        headers=bearer(CALLER.secret_key),
    )
    assert_clerk_error(resp, 400, "form_param_value_invalid")


# ---- verifying ----


@pytest.mark.parametrize("field", ["token", "secret"])
def test_receiver_in_scope_verifies_and_last_used_at_is_stamped(client, field):
    token = mint(client)
    resp = verify(client, token["token"], field=field)
    assert resp.status_code == 200
    assert set(resp.json) == TOKEN_KEYS
    assert resp.json["id"] == token["id"]
    assert resp.json["last_used_at"] >= token["created_at"]


def test_verify_works_on_both_prefixes(client):
    token = mint(client)
    for path in ("/m2m_tokens/verify", "/v1/m2m_tokens/verify"):
        resp = client.post(
            path, json={"token": token["token"]}, headers=bearer(RECEIVER.secret_key)
        )
        assert resp.status_code == 200


def test_instance_key_verifies_any_token_without_scope_check(client):
    token = mint(client, OUTSIDER.secret_key)
    assert token["scopes"] == []
    resp = verify(client, token["token"], key=TEST_SECRET_KEY)
    assert resp.status_code == 200
    assert (resp.json["id"], resp.json["subject"]) == (token["id"], OUTSIDER.id)


def test_machine_outside_the_scopes_gets_404(client):
    token = mint(client)
    assert_clerk_error(
        verify(client, token["token"], key=OUTSIDER.secret_key), 404, "resource_not_found"
    )
    assert_clerk_error(
        verify(client, token["token"], key=CALLER.secret_key), 404, "resource_not_found"
    )


def test_unknown_token_is_404_even_to_the_instance_key(client):
    for key in (RECEIVER.secret_key, TEST_SECRET_KEY):
        assert_clerk_error(verify(client, "mt_" + "0" * 64, key), 404, "resource_not_found")
        assert_clerk_error(verify(client, "garbage", key), 404, "resource_not_found")


def test_expired_token_is_rejected_with_404(client, monkeypatch):
    token = mint(client, seconds_until_expiration=1)
    advance_clock(monkeypatch, 1.01)
    for key in (RECEIVER.secret_key, TEST_SECRET_KEY):
        assert_clerk_error(verify(client, token["token"], key), 404, "resource_not_found")


def test_revoked_token_is_rejected_with_404(client):
    token = mint(client)
    resp = client.post(
        f"/m2m_tokens/{token['id']}/revoke", json={"revocation_reason": "leaked"}, headers=SK
    )
    assert resp.status_code == 200
    assert resp.json["revoked"] is True and resp.json["revocation_reason"] == "leaked"
    assert_clerk_error(verify(client, token["token"]), 404, "resource_not_found")


def test_verify_requires_a_valid_key(client):
    token = mint(client)
    resp = client.post("/m2m_tokens/verify", json={"token": token["token"]})
    assert_clerk_error(resp, 401, "authorization_header_format_invalid")
    resp = client.post(
        "/m2m_tokens/verify", json={"token": token["token"]}, headers=bearer("sk_test_wrong")
    )
    assert_clerk_error(resp, 401, "clerk_key_invalid")


def test_verify_body_errors_name_the_problem(client):
    headers = bearer(RECEIVER.secret_key)
    assert_clerk_error(
        client.post("/m2m_tokens/verify", json={}, headers=headers), 422, "form_param_missing"
    )
    resp = client.post("/m2m_tokens/verify", json={"token": 5}, headers=headers)
    assert (
        assert_clerk_error(resp, 422, "form_param_value_invalid")["meta"]["param_name"] == "token"
    )
    resp = client.post("/m2m_tokens/verify", json={"token": "a", "secret": "a"}, headers=headers)
    assert_clerk_error(resp, 400, "form_param_value_invalid")


# ---- listing and revoking ----


def test_list_is_newest_first_with_paging_and_floats(client, monkeypatch):
    machine = new_machine(client, "lister", scoped_machines=[RECEIVER.id])
    ids = []
    for _ in range(3):  # a millisecond apart: in one millisecond the random id breaks the tie
        advance_clock(monkeypatch, 0.001)
        ids.append(mint(client, machine["secret_key"])["id"])
    resp = client.get(
        f"/v1/m2m_tokens?subject={machine['id']}&limit=2.0&offset=0.0&revoked=false&expired=false",
        headers=SK,
    )
    assert resp.status_code == 200
    assert resp.json["total_count"] == 3
    assert [t["id"] for t in resp.json["m2m_tokens"]] == ids[::-1][:2]
    assert all("token" not in t for t in resp.json["m2m_tokens"])
    resp = client.get(
        f"/m2m_tokens?subject={machine['id']}&limit=2&offset=2",
        headers=bearer(machine["secret_key"]),
    )
    assert [t["id"] for t in resp.json["m2m_tokens"]] == [ids[0]]


def test_list_filters_revoked_and_expired_unless_asked(client, monkeypatch):
    machine = new_machine(client, "filterer")
    key = machine["secret_key"]
    live = mint(client, key)["id"]
    revoked = mint(client, key)["id"]
    client.post(f"/v1/m2m_tokens/{revoked}/revoke", json={}, headers=bearer(key))
    expired = mint(client, key, seconds_until_expiration=1)["id"]
    mint(client, key, token_format="jwt")
    advance_clock(monkeypatch, 1.01)

    def listed(query: str) -> set[str]:
        resp = client.get(f"/v1/m2m_tokens?subject={machine['id']}{query}", headers=SK)
        return {t["id"] for t in resp.json["m2m_tokens"]}

    assert listed("") == {live}
    assert listed("&revoked=true") == {live, revoked}
    assert listed("&expired=true") == {live, expired}
    assert listed("&revoked=true&expired=true") == {live, revoked, expired}


def test_machine_may_list_and_revoke_only_its_own_tokens(client):
    token = mint(client)
    resp = client.get(f"/v1/m2m_tokens?subject={CALLER.id}", headers=bearer(OUTSIDER.secret_key))
    err = assert_clerk_error(resp, 404, "resource_not_found")
    assert err["long_message"] == "The subject machine was not found"
    resp = client.post(
        f"/v1/m2m_tokens/{token['id']}/revoke", json={}, headers=bearer(OUTSIDER.secret_key)
    )
    assert_clerk_error(resp, 404, "resource_not_found")
    assert verify(client, token["token"]).json["revoked"] is False  # the refusal changed nothing
    resp = client.post(
        f"/v1/m2m_tokens/{token['id']}/revoke", json={}, headers=bearer(CALLER.secret_key)
    )
    assert resp.status_code == 200 and resp.json["revoked"] is True


def test_list_parameter_errors(client):
    for query in ("", "?subject="):
        resp = client.get(f"/v1/m2m_tokens{query}", headers=SK)
        assert assert_clerk_error(resp, 422, "form_param_missing")["meta"] == {
            "param_name": "subject"
        }
    for query, param in [
        (f"subject={CALLER.id}&limit=0", "limit"),
        (f"subject={CALLER.id}&limit=101", "limit"),
        (f"subject={CALLER.id}&limit=2.5", "limit"),
        (f"subject={CALLER.id}&offset=-1", "offset"),
        (f"subject={CALLER.id}&revoked=maybe", "revoked"),
        ("subject=nope", "subject"),
    ]:
        resp = client.get(f"/v1/m2m_tokens?{query}", headers=SK)
        assert (
            assert_clerk_error(resp, 422, "form_param_value_invalid")["meta"]["param_name"] == param
        )
    resp = client.get("/v1/m2m_tokens?subject=mch_" + "x" * 27, headers=SK)
    assert_clerk_error(resp, 404, "machine_not_found")


def test_revoke_errors(client):
    assert_clerk_error(
        client.post("/v1/m2m_tokens/mt_nope/revoke", json={}, headers=SK), 404, "resource_not_found"
    )
    unknown = "mt_" + "a" * 32
    assert_clerk_error(
        client.post(f"/v1/m2m_tokens/{unknown}/revoke", json={}, headers=SK),
        404,
        "resource_not_found",
    )
    jwt_token = mint(client, token_format="jwt")
    resp = client.post(f"/v1/m2m_tokens/{jwt_token['id']}/revoke", json={}, headers=SK)
    assert_clerk_error(resp, 400, "jwt_token_not_revocable")
    opaque = mint(client)
    resp = client.post(
        f"/v1/m2m_tokens/{opaque['id']}/revoke", json={"revocation_reason": 5}, headers=SK
    )
    assert_clerk_error(resp, 422, "form_param_value_invalid")
    resp = client.post(f"/v1/m2m_tokens/{opaque['id']}/revoke", json={"why": "x"}, headers=SK)
    assert_clerk_error(resp, 400, "request_body_invalid")


def test_revoke_without_body_and_twice_is_fine(client):
    token = mint(client)
    assert client.post(f"/m2m_tokens/{token['id']}/revoke", headers=SK).status_code == 200
    again = client.post(
        f"/m2m_tokens/{token['id']}/revoke", json={"revocation_reason": None}, headers=SK
    )
    assert again.status_code == 200 and again.json["revoked"] is True


# ---- machines ----


def test_machine_crud(client):
    target = new_machine(client, "crud-target")
    created = new_machine(client, "crud", scoped_machines=[target["id"]], default_token_ttl=120)
    assert created["object"] == "machine" and created["id"].startswith("mch_")
    assert len(created["id"]) == 31
    assert created["secret_key"].startswith("ak_")
    assert created["instance_id"].startswith("ins_")
    assert created["default_token_ttl"] == 120
    assert [m["id"] for m in created["scoped_machines"]] == [target["id"]]
    assert "scoped_machines" not in created["scoped_machines"][0]

    got = client.get(f"/v1/machines/{created['id']}", headers=SK)
    assert got.status_code == 200 and "secret_key" not in got.json
    assert got.json["name"] == "crud"

    patched = client.patch(
        f"/v1/machines/{created['id']}", json={"name": "crud2", "default_token_ttl": 60}, headers=SK
    )
    assert patched.status_code == 200
    assert patched.json["name"] == "crud2" and patched.json["default_token_ttl"] == 60

    token = mint(client, created["secret_key"])
    assert token["expiration"] - token["created_at"] == 60_000

    deleted = client.delete(f"/v1/machines/{created['id']}", headers=SK)
    assert deleted.status_code == 200
    assert deleted.json == {"object": "machine", "id": created["id"], "deleted": True}
    assert_clerk_error(
        client.get(f"/v1/machines/{created['id']}", headers=SK), 404, "machine_not_found"
    )
    assert_clerk_error(
        verify(client, token["token"], key=TEST_SECRET_KEY), 404, "resource_not_found"
    )
    resp = client.post("/v1/m2m_tokens", json={}, headers=bearer(created["secret_key"]))
    assert_clerk_error(resp, 401, "machine_secret_key_invalid")


def test_machine_list_paging_query_and_order(client):
    a = new_machine(client, "zz-list-a")
    b = new_machine(client, "zz-list-b")
    resp = client.get("/v1/machines?query=zz-list&order_by=name&limit=1.0&offset=0.0", headers=SK)
    assert resp.status_code == 200
    assert resp.json["total_count"] == 2
    assert [m["id"] for m in resp.json["data"]] == [a["id"]]
    resp = client.get("/v1/machines?query=zz-list&order_by=-name", headers=SK)
    assert [m["id"] for m in resp.json["data"]] == [b["id"], a["id"]]
    resp = client.get("/v1/machines?order_by=color", headers=SK)
    assert_clerk_error(resp, 422, "form_param_value_invalid")


@pytest.mark.parametrize("value", ["", 0, False, [], {}, "JWT", None])
def test_token_format_other_than_opaque_jwt_or_null_is_422_naming_it(client, value):
    resp = client.post(
        "/v1/m2m_tokens", json={"token_format": value}, headers=bearer(CALLER.secret_key)
    )
    if value is None:  # null means the default, as absent does
        assert resp.status_code == 201 and resp.json["token"].startswith("mt_")
        return
    err = assert_clerk_error(resp, 422, "form_param_value_invalid")
    assert err["meta"]["param_name"] == "token_format"


@pytest.mark.parametrize("value", [{}, 0, False, "", [5], [None], None, []])
def test_scoped_machines_must_be_a_list_of_ids_or_null(client, value):
    resp = client.post(
        "/v1/machines", json={"name": "scoped-type", "scoped_machines": value}, headers=SK
    )
    if value is None or value == []:
        assert resp.status_code == 200 and resp.json["scoped_machines"] == []
        return
    err = assert_clerk_error(resp, 422, "form_param_value_invalid")
    assert err["meta"]["param_name"] == "scoped_machines"


def test_machine_routes_require_the_instance_key(client):
    for method, path in [
        ("get", "/v1/machines"),
        ("get", f"/v1/machines/{CALLER.id}"),
        ("get", f"/v1/machines/{CALLER.id}/secret_key"),
        ("get", "/v1/jwks"),
        ("get", "/v1/usage"),
    ]:
        resp = getattr(client, method)(path, headers=bearer(CALLER.secret_key))
        assert_clerk_error(resp, 401, "clerk_key_invalid")
        resp = getattr(client, method)(path)
        assert_clerk_error(resp, 401, "authorization_header_format_invalid")


def test_machine_input_errors_name_the_field(client):
    cases = [
        ({"name": ""}, 422, "name"),
        ({"name": 5}, 422, "name"),
        ({}, 422, "name"),
        ({"name": "x", "default_token_ttl": 0}, 422, "default_token_ttl"),
        ({"name": "x", "default_token_ttl": 315360001}, 422, "default_token_ttl"),
        ({"name": "x", "default_token_ttl": "60"}, 422, "default_token_ttl"),
        ({"name": "x", "scoped_machines": "mch_x"}, 422, "scoped_machines"),
        ({"name": "x", "colour": "red"}, 400, "colour"),
    ]
    for body, status, param in cases:
        resp = client.post("/v1/machines", json=body, headers=SK)
        assert resp.status_code == status, (body, resp.json)
        assert resp.json["errors"][0]["meta"]["param_name"] == param
    resp = client.post(
        "/v1/machines", json={"name": "x", "scoped_machines": ["mch_" + "q" * 27]}, headers=SK
    )
    assert_clerk_error(resp, 404, "machine_not_found")


def test_wrong_shaped_or_unknown_machine_ids_are_404(client):
    for path in [
        "/v1/machines/nope",
        "/v1/machines/mch_" + "z" * 27,
        "/v1/machines/nope/secret_key",
    ]:
        assert_clerk_error(client.get(path, headers=SK), 404, "machine_not_found")
    assert_clerk_error(client.delete("/v1/machines/nope", headers=SK), 404, "machine_not_found")


def test_secret_key_get_and_rotate_with_grace_period(client):
    machine = new_machine(client, "rotator", scoped_machines=[RECEIVER.id])
    old_key = machine["secret_key"]
    resp = client.get(f"/v1/machines/{machine['id']}/secret_key", headers=SK)
    assert resp.json == {"object": "machine_secret_key", "secret": old_key}

    resp = client.post(
        f"/v1/machines/{machine['id']}/secret_key/rotate",
        json={"previous_token_ttl": 60.0},
        headers=SK,
    )
    assert resp.status_code == 200
    new_key = resp.json["secret"]
    assert resp.json["object"] == "machine_secret_key" and new_key != old_key
    assert (
        client.get(f"/v1/machines/{machine['id']}/secret_key", headers=SK).json["secret"] == new_key
    )
    assert mint(client, old_key)["subject"] == machine["id"]  # still inside the grace period
    assert mint(client, new_key)["subject"] == machine["id"]

    resp = client.post(
        f"/v1/machines/{machine['id']}/secret_key/rotate",
        json={"previous_token_ttl": 0},
        headers=SK,
    )
    newest = resp.json["secret"]
    refused = client.post("/v1/m2m_tokens", json={}, headers=bearer(new_key))
    assert_clerk_error(refused, 401, "machine_secret_key_invalid")
    assert new_key not in refused.get_data(as_text=True)
    assert mint(client, newest)["subject"] == machine["id"]


def test_previous_key_stops_working_after_previous_token_ttl(client):
    machine = new_machine(client, "rotator2")
    old_key = machine["secret_key"]
    client.post(
        f"/v1/machines/{machine['id']}/secret_key/rotate",
        json={"previous_token_ttl": 1},
        headers=SK,
    )
    assert mint(client, old_key)["subject"] == machine["id"]
    time.sleep(1.05)
    assert_clerk_error(
        client.post("/v1/m2m_tokens", json={}, headers=bearer(old_key)),
        401,
        "machine_secret_key_invalid",
    )


def test_rotate_errors(client):
    path = f"/v1/machines/{OUTSIDER.id}/secret_key/rotate"
    cases = [
        ({}, "form_param_missing"),
        ({"previous_token_ttl": 28801}, "form_param_value_invalid"),
        ({"previous_token_ttl": -1}, "form_param_value_invalid"),
    ]
    for body, code in cases:
        assert_clerk_error(client.post(path, json=body, headers=SK), 422, code)
    resp = client.post(
        "/v1/machines/mch_" + "z" * 27 + "/secret_key/rotate",
        json={"previous_token_ttl": 0},
        headers=SK,
    )
    assert_clerk_error(resp, 404, "machine_not_found")


def test_scopes_create_conflict_and_delete(client):
    a = new_machine(client, "scope-a")
    b = new_machine(client, "scope-b")
    resp = client.post(
        f"/v1/machines/{a['id']}/scopes", json={"to_machine_id": b["id"]}, headers=SK
    )
    assert resp.status_code == 200
    assert resp.json["object"] == "machine_scope"
    assert resp.json["from_machine_id"] == a["id"] and resp.json["to_machine_id"] == b["id"]
    assert isinstance(resp.json["created_at"], int)
    again = client.post(
        f"/v1/machines/{a['id']}/scopes", json={"to_machine_id": b["id"]}, headers=SK
    )
    assert_clerk_error(again, 409, "duplicate_record")
    assert mint(client, a["secret_key"])["scopes"] == [b["id"]]
    resp = client.delete(f"/v1/machines/{a['id']}/scopes/{b['id']}", headers=SK)
    assert resp.json == {
        "object": "machine_scope",
        "from_machine_id": a["id"],
        "to_machine_id": b["id"],
        "deleted": True,
    }
    assert_clerk_error(
        client.delete(f"/v1/machines/{a['id']}/scopes/{b['id']}", headers=SK),
        404,
        "resource_not_found",
    )
    resp = client.post(
        f"/v1/machines/{a['id']}/scopes", json={"to_machine_id": "mch_" + "u" * 27}, headers=SK
    )
    assert_clerk_error(resp, 404, "machine_not_found")
    resp = client.post(f"/v1/machines/{a['id']}/scopes", json={}, headers=SK)
    assert_clerk_error(resp, 422, "form_param_missing")


def test_a_machine_cannot_be_scoped_to_itself(client):
    a = new_machine(client, "scope-self")
    resp = client.post(
        f"/v1/machines/{a['id']}/scopes", json={"to_machine_id": a["id"]}, headers=SK
    )
    err = assert_clerk_error(resp, 422, "form_param_value_invalid")
    assert err["meta"]["param_name"] == "to_machine_id"
    got = client.get(f"/v1/machines/{a['id']}", headers=SK).json
    assert got["scoped_machines"] == [] and got["updated_at"] == a["updated_at"]


# ---- bad input in general ----


def test_bad_bodies_get_the_envelope_not_a_500(client):
    headers = {**bearer(CALLER.secret_key), "Content-Type": "application/json"}
    for raw, code in [
        (b"{not json", "request_body_invalid"),
        (b"[1, 2]", "request_body_invalid"),
        (b'{"seconds_until_expiration": NaN}', "request_body_invalid"),
        (b'{"token_format": "paper"}', "form_param_value_invalid"),
        (b'{"seconds_until_expiration": -5}', "form_param_value_invalid"),
        (b'{"seconds_until_expiration": 0}', "form_param_value_invalid"),
        (b'{"seconds_until_expiration": 1e12}', "form_param_value_invalid"),
        (b'{"seconds_until_expiration": "60"}', "form_param_value_invalid"),
        (b'{"seconds_until_expiration": true}', "form_param_value_invalid"),
        (b'{"min_remaining_ttl_seconds": 1.5}', "form_param_value_invalid"),
        (b'{"extra": 1}', "request_body_invalid"),
        (b"\xff\xfe", "request_body_invalid"),
    ]:
        resp = client.post("/v1/m2m_tokens", data=raw, headers=headers)
        status = {"request_body_invalid": 400, "form_param_value_invalid": 422}[code]
        assert resp.status_code == status, (raw, resp.status_code)
        assert resp.json["errors"][0]["code"] == code, (raw, resp.json)


def test_oversize_body_is_413_in_the_envelope(client):
    resp = client.post(
        "/v1/m2m_tokens",
        data=b'{"claims": "' + b"x" * 70_000 + b'"}',
        headers={**bearer(CALLER.secret_key), "Content-Type": "application/json"},
    )
    assert_clerk_error(resp, 413, "request_body_too_large")


def test_malformed_authorization_headers_are_401(client):
    for header in ["", "Basic abc", "Bearer", "Bearer  ", "Bearer a b", "bearer " + "x" * 600]:
        resp = client.get("/v1/machines", headers={"Authorization": header})
        assert_clerk_error(resp, 401, "authorization_header_format_invalid")


def test_unknown_route_and_wrong_method_use_the_envelope(client):
    assert_clerk_error(client.get("/v1/nothing-here", headers=SK), 404, "resource_not_found")
    resp = client.put("/v1/m2m_tokens", headers=SK)
    assert_clerk_error(resp, 405, "method_not_allowed")


def test_unexpected_exception_is_a_500_envelope_without_details(app, client, monkeypatch):
    from mock_issuer import machines

    def boom(*args, **kwargs):
        raise RuntimeError("secret internals sk_test_leak")

    monkeypatch.setattr(machines, "list_machines", boom)
    resp = client.get("/v1/machines", headers=SK)
    err = assert_clerk_error(resp, 500, "internal_clerk_error")
    assert "sk_test_leak" not in resp.get_data(as_text=True)
    assert "internals" not in err["long_message"]


def test_healthz(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.json == {"status": "ok"}
