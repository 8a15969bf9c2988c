"""The app must only believe identity headers that carry a valid gateway assertion, and only them.

The HMAC is computed here independently of gateway_auth.py, from the format written in
its docstring, so a drift between the two shows up as a failing test.
Run: pytest docker/app
"""
import hashlib
import hmac
import logging
import re
import time
from urllib.parse import quote

import pytest
from flask import Flask
from flask_login import LoginManager, UserMixin, current_user

import gateway_auth
from app import USERS, create_app

SECRET = "test-identity-secret-0123456789abcdef"
ALICE = {"X-Auth-User-Id": "1", "X-Auth-User": "alice", "X-Auth-Roles": "admin"}
BOB = {"X-Auth-User-Id": "2", "X-Auth-User": "bob", "X-Auth-Roles": "user"}
CAROL = {"X-Auth-User-Id": "4", "X-Auth-User": "carol", "X-Auth-Roles": "user"}
NOBODY = {}  # what the gateway sends for a request it forwards without a session


def assertion(method, target, identity, t=None, secret=SECRET):
    t = int(time.time()) if t is None else t
    parts = ["v1", str(t), method, target,
             identity.get("X-Auth-User-Id", ""), identity.get("X-Auth-User", ""), identity.get("X-Auth-Roles", "")]
    sig = hmac.new(secret.encode(), "\n".join(parts).encode(), hashlib.sha256).hexdigest()
    return f"v1;t={t};sig={sig}"


def signed(identity, method="GET", target="/", **kw):
    return {**identity, "X-Auth-Assertion": assertion(method, target, identity, **kw)}


def set_cookies(response, name):
    return [h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "=")]


def login_directly(client, username, password, remember=False, next_url=None):
    """The app's own form login (CSRF included), forwarded as the gateway would: no identity."""
    page = client.get("/auth/login", headers=signed(NOBODY, target="/auth/login"))
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]
    target = "/auth/login" + (f"?next={quote(next_url, safe='')}" if next_url else "")
    form = {"csrf_token": token, "username": username, "password": password}
    if remember:
        form["remember"] = "on"
    return client.post(target, data=form, headers=signed(NOBODY, "POST", target))


def csrf_token(client):
    return client.get("/api/v1/auth/csrf-token").get_json()["data"]["csrf_token"]


@pytest.fixture
def app(monkeypatch):
    monkeypatch.setenv("APP_CORS_ORIGINS", "https://ui.example.com, https://other.example.com")
    return create_app(identity_secret=SECRET, max_skew=60)


@pytest.fixture
def client(app):
    return app.test_client()


# --- the gateway's user, as the app's own User --------------------------------------------------

def test_valid_assertion_gives_the_apps_own_user(client):
    r = client.get("/", headers=signed(ALICE))
    assert r.status_code == 200
    assert "Signed in as <strong>alice</strong>" in r.text
    assert '<span class="role">admin</span>' in r.text
    assert 'href="/admin"' in r.text
    logout = re.search(r'<form class="logout-form" method="post" action="/auth/logout">(.*?)</form>', r.text, re.S)
    assert logout, "logout is a POST form, as in WhaleFall"
    assert 'name="csrf_token"' in logout[1] and '<button type="submit" class="logout">Log out</button>' in logout[1]

    r = client.get("/", headers=signed(BOB))
    assert "Signed in as <strong>bob</strong>" in r.text and '<span class="role">user</span>' in r.text
    assert 'href="/admin"' not in r.text

    r = client.get("/api/v1/auth/me", headers=signed(ALICE, target="/api/v1/auth/me"))
    assert r.get_json() == {"success": True, "data": {
        "id": 1, "username": "alice", "role": "admin", "is_admin": True, "is_active": True,
        "created_at": USERS[1].created_at.isoformat()}}
    r = client.get("/api/me", headers=signed(BOB, target="/api/me"))
    assert r.get_json() == {"id": "2", "username": "bob", "role": "user", "is_admin": False, "roles": ["user"]}


def test_role_comes_from_the_app_not_the_roles_header(client):
    # The gateway names the user; what that user may do is the app's own table's business.
    bob_claiming_admin = {**BOB, "X-Auth-Roles": "admin,user"}
    assert client.get("/admin", headers=signed(bob_claiming_admin, target="/admin")).status_code == 403
    r = client.get("/api/me", headers=signed(bob_claiming_admin, target="/api/me"))
    assert r.get_json()["role"] == "user" and r.get_json()["is_admin"] is False


def test_admin_page_is_for_admins_only(client):
    assert client.get("/admin", headers=signed(BOB, target="/admin")).status_code == 403
    r = client.get("/admin", headers=signed(ALICE, target="/admin"))
    assert r.status_code == 200 and "Administration" in r.text


def test_signed_request_without_user_is_anonymous(client):
    r = client.get("/api/v1/auth/me", headers=signed(NOBODY, target="/api/v1/auth/me"))
    assert r.status_code == 401 and r.get_json() == {"success": False, "error": "unauthenticated"}
    r = client.get("/admin", headers=signed(NOBODY, target="/admin"))
    assert r.status_code == 302 and r.headers["Location"] == "/auth/login?next=%2Fadmin"
    # An id the app does not know is no user either.
    ghost = {"X-Auth-User-Id": "99", "X-Auth-User": "ghost", "X-Auth-Roles": "admin"}
    assert client.get("/api/me", headers=signed(ghost, target="/api/me")).status_code == 401


def test_inactive_user_is_anonymous(client):
    r = client.get("/api/v1/auth/me", headers=signed(CAROL, target="/api/v1/auth/me"))
    assert r.status_code == 401 and r.get_json() == {"success": False, "error": "unauthenticated"}
    assert client.get("/", headers=signed(CAROL)).status_code == 302


# --- the assertion ------------------------------------------------------------------------------

def test_query_string_and_encoded_path_are_signed_raw(client):
    r = client.get("/api/items?page=2&q=a%20b", headers=signed(ALICE, target="/api/items?page=2&q=a%20b"))
    assert r.status_code == 200 and len(r.get_json()) == 4
    # A bare "?" has an empty query, which the format signs as no query at all.
    assert client.get("/api/items?", headers=signed(ALICE, target="/api/items")).status_code == 200
    r = client.get("/api/%6De", headers=signed(ALICE, target="/api/me"))
    assert r.status_code == 403, "the signature covers the raw path, not the decoded one"
    assert client.get("/api/%6De", headers=signed(ALICE, target="/api/%6De")).status_code == 200


def test_utf8_username_is_signed_as_bytes(client):
    jurgen = {"X-Auth-User-Id": "3", "X-Auth-User": "jürgen", "X-Auth-Roles": "user"}
    # WSGI servers hand header bytes over as Latin-1 strings; emulate that wire form.
    wire = {**jurgen, "X-Auth-User": "jürgen".encode().decode("latin-1"),
            "X-Auth-Assertion": assertion("GET", "/api/me", jurgen)}
    r = client.get("/api/me", headers=wire)
    assert r.status_code == 200 and r.get_json()["username"] == "jürgen"


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


def test_gateway_check_runs_before_csrf(client):
    # A forged POST is the gateway's refusal, not a CSRF error that would reveal the app's hooks ran.
    r = client.post("/api/v1/notes", json={"text": "hi"}, headers=BOB)
    assert r.status_code == 403 and r.data == b"request did not come through the gateway\n"


# --- exempt paths and CORS ------------------------------------------------------------------

def test_exempt_paths_need_no_assertion(client):
    r = client.get("/api/v1/health/basic")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}
    r = client.get("/api/v1/auth/csrf-token")
    assert r.status_code == 200 and r.get_json()["success"] is True and r.get_json()["data"]["csrf_token"]
    assert client.get("/static/app.css").status_code == 200
    # Entries without a trailing "/" are exact paths, and nothing else is exempt.
    for path in ("/api/v1/health", "/api/v1/auth/csrf-tokens", "/api/v1/auth/me", "/health"):
        assert client.get(path).status_code == 403, path


def test_identity_headers_on_exempt_paths_are_not_believed(client, caplog):
    caplog.set_level(logging.INFO, logger="app")
    assert client.get("/api/v1/health/basic", headers=ALICE).status_code == 200
    assert "GET /api/v1/health/basic user=-" in caplog.messages


def test_cors_preflight_reaches_the_app_without_assertion(client):
    preflight = {"Origin": "https://ui.example.com", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,x-csrftoken"}
    r = client.options("/api/v1/notes", headers=preflight)
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://ui.example.com"
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    assert r.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    assert r.headers["Access-Control-Allow-Headers"] == "Content-Type, X-CSRFToken"
    assert "Origin" in r.headers["Vary"]
    r = client.options("/api/v1/notes", headers={**preflight, "Origin": "https://evil.example"})
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
    # A plain OPTIONS is no preflight and needs the assertion like any other request.
    assert client.options("/api/v1/notes", headers={"Origin": "https://ui.example.com"}).status_code == 403


# --- CSRF -------------------------------------------------------------------------------------

def test_json_post_needs_the_csrf_token(client):
    token = csrf_token(client)
    r = client.post("/api/v1/notes", json={"text": "hello"},
                    headers={**signed(BOB, "POST", "/api/v1/notes"), "X-CSRFToken": token})
    assert r.status_code == 201
    assert r.get_json() == {"success": True, "data": {"text": "hello", "author": "bob", "author_role": "user"}}
    for bad in ({}, {"X-CSRFToken": token[:-2] + "xx"}):
        r = client.post("/api/v1/notes", json={"text": "hello"},
                        headers={**signed(BOB, "POST", "/api/v1/notes"), **bad})
        assert r.status_code == 400 and r.get_json() == {"success": False, "error": "csrf_failed"}


def test_api_logout_is_csrf_protected(client):
    headers = signed(BOB, "POST", "/api/v1/auth/logout")
    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 400
    r = client.post("/api/v1/auth/logout", headers={**headers, "X-CSRFToken": csrf_token(client)})
    assert r.status_code == 200 and r.get_json() == {"success": True, "message": "logged out"}


def test_every_page_sets_the_app_session_cookie_but_no_remember_cookie(client):
    r = client.get("/", headers=signed(BOB))
    assert set_cookies(r, "whalefall_session"), "csrf_token() on the page stores the token in the session"
    assert not set_cookies(r, "remember_token")


# --- legacy login cookies -----------------------------------------------------------------------

def test_the_apps_own_login_still_works_directly(client):
    r = login_directly(client, "alice", "wrong")
    assert r.status_code == 401 and "Invalid username or password." in r.text
    r = login_directly(client, "carol", "carol-demo")
    assert r.status_code == 401 and "This account is disabled." in r.text
    assert login_directly(client, "alice", "alice-demo", next_url="/admin").headers["Location"] == "/admin"
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        assert login_directly(client, "alice", "alice-demo", next_url=evil).headers["Location"] == "/"


def test_json_login(client):
    def post(body):
        return client.post("/api/v1/auth/login", json=body, headers=signed(NOBODY, "POST", "/api/v1/auth/login"))

    r = post({"username": "jürgen", "password": "jürgen-demo"})
    assert r.status_code == 200 and r.get_json()["data"]["user"]["username"] == "jürgen"
    assert post({"username": "bob", "password": "alice-demo"}).get_json() == {
        "success": False, "error": "invalid_credentials"}
    r = post({"username": "carol", "password": "carol-demo"})
    assert r.status_code == 401 and r.get_json()["error"] == "account_disabled"


def test_legacy_session_of_another_user_loses_and_is_cleared(client, caplog):
    assert login_directly(client, "alice", "alice-demo").status_code == 302
    with client.session_transaction() as s:
        assert s["_user_id"] == "1", "setup: the app's own login put alice in its session"
    assert client.get_cookie("remember_token") is None

    caplog.set_level(logging.INFO, logger="app")
    r = client.get("/api/v1/auth/me", headers=signed(BOB, target="/api/v1/auth/me"))
    assert r.get_json()["data"]["username"] == "bob"
    # The logging hook touches current_user before gateway_auth's hooks were registered.
    assert "GET /api/v1/auth/me user=bob" in caplog.messages
    assert set_cookies(r, "whalefall_session"), "the session is rewritten without the login keys"
    with client.session_transaction() as s:
        assert not {"_user_id", "_fresh", "_id"} & s.keys()
    # A signed request without identity is anonymous even though the session used to say alice.
    r = client.get("/api/v1/auth/me", headers=signed(NOBODY, target="/api/v1/auth/me"))
    assert r.status_code == 401


def test_legacy_remember_cookie_of_another_user_loses_and_is_deleted(client, caplog):
    login_directly(client, "alice", "alice-demo", remember=True)
    remember = client.get_cookie("remember_token")
    assert remember is not None and remember.value.startswith("1|"), "setup: alice's remember cookie"
    assert remember.expires.timestamp() - time.time() > 6.9 * 86400, "remember-me lasts 7 days"
    client.delete_cookie("whalefall_session")  # leave only the remember cookie to speak for alice

    caplog.set_level(logging.INFO, logger="app")
    r = client.get("/", headers=signed(BOB))
    assert "Signed in as <strong>bob</strong>" in r.text
    assert "GET / user=bob" in caplog.messages
    [deletion] = set_cookies(r, "remember_token")
    assert "Expires=Thu, 01 Jan 1970" in deletion and "Path=/" in deletion
    assert client.get_cookie("remember_token") is None
    # Once gone, ordinary responses stop mentioning it.
    assert not set_cookies(client.get("/", headers=signed(BOB)), "remember_token")


# --- integrating into other apps ------------------------------------------------------------

def tiny_app(register_loader=None, **init_kw):
    app = Flask("tiny")
    app.secret_key = "tiny"
    lm = LoginManager(app)
    gateway_auth.init_app(app, lm, secret=SECRET, max_skew=60, **init_kw)
    if register_loader:
        lm.user_loader(register_loader)  # after init_app, as apps often do

    @app.get("/who")
    def who():
        if not current_user.is_authenticated:
            return {"user": None}
        user = current_user._get_current_object()
        return {"type": type(user).__name__, "id": user.id, "username": user.username,
                "role": current_user.role, "is_admin": current_user.is_admin()}

    return app.test_client()


class Member(UserMixin):
    # Unlike UserMixin's, this model counts as authenticated even when deactivated, so only
    # gateway_auth's is_active check keeps a deactivated member out.
    is_authenticated = True

    def __init__(self, id, username, role="member", active=True):
        self.id, self.username, self.role, self.active = id, username, role, active

    @property
    def is_active(self):
        return self.active

    def is_admin(self):
        return False


def test_user_loader_registered_after_init_app_is_used():
    client = tiny_app(register_loader=lambda uid: Member(uid, f"member-{uid}"))
    r = client.get("/who", headers=signed(BOB, target="/who"))
    assert r.get_json() == {"type": "Member", "id": "2", "username": "member-2", "role": "member", "is_admin": False}


def test_load_user_argument_overrides_the_user_loader():
    client = tiny_app(register_loader=lambda uid: Member(uid, "from-user-loader"),
                      load_user=lambda uid: Member(uid, "from-argument", active=uid != "4"))
    assert client.get("/who", headers=signed(BOB, target="/who")).get_json()["username"] == "from-argument"
    assert client.get("/who", headers=signed(CAROL, target="/who")).get_json() == {"user": None}


def test_without_user_loader_the_gateway_user_is_used():
    client = tiny_app()
    who = {"X-Auth-User-Id": "7", "X-Auth-User": "jürgen 鲸", "X-Auth-Roles": "admin, user"}
    wire = {**who, "X-Auth-User": "jürgen 鲸".encode().decode("latin-1"),
            "X-Auth-Assertion": assertion("GET", "/who", who)}
    assert client.get("/who", headers=wire).get_json() == {
        "type": "GatewayUser", "id": "7", "username": "jürgen 鲸", "role": "admin", "is_admin": True}
    r = client.get("/who", headers=signed(BOB, target="/who"))
    assert r.get_json()["role"] == "user" and r.get_json()["is_admin"] is False
    assert client.get("/who", headers=signed(NOBODY, target="/who")).get_json() == {"user": None}
    assert client.get("/who", headers=BOB).status_code == 403


def test_a_message_flashed_on_the_way_to_login_does_not_linger(client):
    # The gateway serves /auth/login and never shows the app's flashes, so "logged out" would
    # otherwise greet the user on their first page after signing in again.
    page = client.get("/", headers=signed(BOB)).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
    r = client.post("/auth/logout", data={"csrf_token": token}, headers=signed(BOB, "POST", "/auth/logout"))
    assert r.status_code == 302 and r.location.endswith("/auth/login")
    with client.session_transaction() as session:
        assert "_flashes" not in session


def test_flashes_before_other_redirects_are_kept():
    app = Flask("flashy")
    app.secret_key = "flashy"
    lm = LoginManager(app)
    lm.login_view = "login"
    gateway_auth.init_app(app, lm, secret=SECRET, max_skew=60)

    @app.get("/login")
    def login():
        return "the gateway serves this"

    @app.get("/save/<where>")
    def save(where):
        from flask import flash, redirect, url_for
        flash("saved")
        return redirect(url_for("login") if where == "login" else "/elsewhere")

    client = app.test_client()
    client.get("/save/elsewhere", headers=signed({}, target="/save/elsewhere"))
    with client.session_transaction() as session:
        assert session.get("_flashes") == [("message", "saved")]
    client.get("/save/login", headers=signed({}, target="/save/login"))
    with client.session_transaction() as session:
        assert "_flashes" not in session


def test_during_a_key_rotation_both_keys_are_accepted():
    new = "new-identity-secret-fedcba9876543210"
    app = Flask("rotating")
    app.secret_key = "tiny"
    lm = LoginManager(app)
    gateway_auth.init_app(app, lm, secret=[new, SECRET], max_skew=60)

    @app.get("/who")
    def who():
        return {"user": current_user.get_id() if current_user.is_authenticated else None}

    client = app.test_client()
    for key in (SECRET, new):
        assert client.get("/who", headers=signed(BOB, target="/who", secret=key)).get_json() == {"user": "2"}
    assert client.get("/who", headers=signed(BOB, target="/who", secret="x" * 36)).status_code == 403


def test_previous_keys_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("GATEWAY_IDENTITY_SECRET", "current-key")
    monkeypatch.setenv("GATEWAY_IDENTITY_PREVIOUS_SECRETS", "old-one, old-two")
    assert gateway_auth._keys(None) == [b"current-key", b"old-one", b"old-two"]
    monkeypatch.delenv("GATEWAY_IDENTITY_PREVIOUS_SECRETS")
    assert gateway_auth._keys(None) == [b"current-key"]
