"""The app must only believe identity headers that carry a valid gateway assertion.

The HMAC is computed here independently of gateway_auth.py, from the format written in
its docstring, so a drift between the two shows up as a failing test.
Run: pytest docker/app
"""
import hashlib
import hmac
import time

import pytest

from app import create_app

SECRET = "test-identity-secret-0123456789abcdef"
ALICE = {"X-Auth-User-Id": "1", "X-Auth-User": "alice", "X-Auth-Roles": "admin,user"}
BOB = {"X-Auth-User-Id": "2", "X-Auth-User": "bob", "X-Auth-Roles": "user"}


def assertion(method, target, identity, t=None, secret=SECRET):
    t = int(time.time()) if t is None else t
    parts = ["v1", str(t), method, target,
             identity.get("X-Auth-User-Id", ""), identity.get("X-Auth-User", ""), identity.get("X-Auth-Roles", "")]
    sig = hmac.new(secret.encode(), "\n".join(parts).encode(), hashlib.sha256).hexdigest()
    return f"v1;t={t};sig={sig}"


def signed(identity, method="GET", target="/", **kw):
    return {**identity, "X-Auth-Assertion": assertion(method, target, identity, **kw)}


@pytest.fixture
def client():
    return create_app(identity_secret=SECRET, max_skew=60).test_client()


def test_valid_assertion_accepted(client):
    r = client.get("/", headers=signed(ALICE))
    assert r.status_code == 200
    assert b"Signed in as <strong>alice</strong>" in r.data
    assert b'href="/logout"' in r.data
    r = client.get("/api/me", headers=signed(ALICE, target="/api/me"))
    assert r.get_json() == {"id": "1", "username": "alice", "roles": ["admin", "user"]}


def test_query_string_and_encoded_path_are_signed_raw(client):
    r = client.get("/api/items?page=2&q=a%20b", headers=signed(ALICE, target="/api/items?page=2&q=a%20b"))
    assert r.status_code == 200 and len(r.get_json()) == 4
    # A bare "?" has an empty query, which the format signs as no query at all.
    assert client.get("/api/items?", headers=signed(ALICE, target="/api/items")).status_code == 200
    r = client.get("/api/%6De", headers=signed(ALICE, target="/api/me"))
    assert r.status_code == 403, "the signature covers the raw path, not the decoded one"
    assert client.get("/api/%6De", headers=signed(ALICE, target="/api/%6De")).status_code == 200


def test_utf8_username_is_signed_as_bytes(client):
    # WSGI servers hand header bytes over as Latin-1 strings; emulate that wire form.
    wire = {**ALICE, "X-Auth-User": "jürgen 鲸".encode().decode("latin-1")}
    r = client.get("/api/me", headers={**wire, "X-Auth-Assertion": assertion("GET", "/api/me", {
        **ALICE, "X-Auth-User": "jürgen 鲸"})})
    assert r.status_code == 200 and r.get_json()["username"] == "jürgen 鲸"


@pytest.mark.parametrize("case", ["missing", "forged", "wrong_secret", "stale", "future",
                                  "wrong_path", "wrong_method", "tampered_roles", "malformed"])
def test_bad_assertion_refused(client, case):
    now = int(time.time())
    headers = {
        "missing": dict(BOB),
        "forged": {**BOB, "X-Auth-Assertion": f"v1;t={now};sig={'0' * 64}"},
        "wrong_secret": signed(BOB, secret="not-the-secret"),
        "stale": signed(BOB, t=now - 61),
        "future": signed(BOB, t=now + 61),
        "wrong_path": signed(BOB, target="/api/items"),
        "wrong_method": signed(BOB, method="POST"),
        "tampered_roles": {**signed(BOB), "X-Auth-Roles": "admin,user"},
        "malformed": {**BOB, "X-Auth-Assertion": signed(BOB)["X-Auth-Assertion"].upper()},
    }[case]
    r = client.get("/", headers=headers)
    assert r.status_code == 403
    assert r.data == b"request did not come through the gateway\n"
    assert r.mimetype == "text/plain"


def test_admin_page_is_for_admins_only(client):
    assert client.get("/admin", headers=signed(BOB, target="/admin")).status_code == 403
    r = client.get("/admin", headers=signed(ALICE, target="/admin"))
    assert r.status_code == 200 and b"Administration" in r.data


def test_valid_assertion_without_user_is_unauthorized(client):
    assert client.get("/api/me", headers=signed({}, target="/api/me")).status_code == 401


def test_health_and_static_need_no_assertion(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.data == b"ok"
    assert client.get("/static/app.css").status_code == 200
    # Exempt entries without a trailing "/" are exact paths, not prefixes.
    assert client.get("/healthz").status_code == 403
