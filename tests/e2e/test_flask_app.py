"""The gateway in front of the real example app (docker/app under gunicorn), over real HTTP.

Every request that reaches a protected view passes the app's check of the gateway's signed
X-Auth-Assertion, so these tests also prove that identity.rs and gateway_auth.py agree on
the format (method, raw path and query, UTF-8 header bytes).
"""
import hashlib
import hmac
import re
import socket
import time
from urllib.parse import urlsplit

import pytest
import requests

from conftest import COOKIE, HTML, IDENTITY_SECRET, USERS

CSRF = re.compile(r'<input type="hidden" name="csrf_token" value="([^"]+)">')


def page(client, url, headers=None, **kw):
    """A page navigation, as a browser would ask for it."""
    return client.get(url, headers={"Accept": HTML, **(headers or {})}, allow_redirects=False,
                      timeout=10, **kw)


def csrf_token(html):
    m = CSRF.search(html)
    assert m, f"no csrf_token field in:\n{html[:500]}"
    return m.group(1)


# --- logging in -----------------------------------------------------------------------------


def test_json_login_then_dashboard(gateway):
    client = requests.Session()
    r = client.post(gateway.url + "/auth/login", json={"username": "alice", "password": USERS["alice"].password},
                    timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["user"]["username"] == "alice"
    assert r.json()["user"]["id"] == "1"
    assert len(client.cookies[COOKIE]) == 86

    r = page(client, gateway.url + "/")
    assert r.status_code == 200, r.text[:500]
    assert "Signed in as <strong>alice</strong>" in r.text
    assert '<span class="role">admin</span>' in r.text
    assert 'action="/auth/logout"' in r.text


def test_form_login_returns_to_the_page_asked_for(gateway):
    client = requests.Session()
    r = page(client, gateway.url + "/admin?tab=1")
    assert r.status_code == 302
    assert r.headers["Location"] == "/auth/login?next=%2Fadmin%3Ftab%3D1"

    r = page(client, gateway.url + r.headers["Location"])
    assert r.status_code == 200
    assert 'name="next" value="/admin?tab=1"' in r.text
    token = csrf_token(r.text)
    r = client.post(gateway.url + "/auth/login", allow_redirects=False, timeout=10, data={
        "username": "alice", "password": USERS["alice"].password,
        "csrf_token": token, "next": "/admin?tab=1"})
    assert r.status_code == 303, r.text[:500]
    assert r.headers["Location"] == "/admin?tab=1"
    cookie = r.cookies.get(COOKIE)
    assert cookie and len(cookie) == 86

    r = page(client, gateway.url + r.headers["Location"])
    assert r.status_code == 200
    assert "<h1>Administration</h1>" in r.text
    r = page(client, gateway.url + "/")
    assert "Signed in as <strong>alice</strong>" in r.text


def test_wrong_password_is_refused(gateway):
    client = requests.Session()
    token = csrf_token(page(client, gateway.url + "/auth/login").text)
    r = client.post(gateway.url + "/auth/login", allow_redirects=False, timeout=10, data={
        "username": "alice", "password": "not-her-password", "csrf_token": token, "next": "/"})
    assert r.status_code == 401
    assert "Invalid username or password" in r.text
    assert COOKIE not in client.cookies
    r = client.post(gateway.url + "/auth/login", json={"username": "bob", "password": "nope"}, timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "invalid_credentials"


# --- authorisation stays the app's job ------------------------------------------------------


def test_admin_page_is_for_admins_only(gateway, login):
    bob = login("bob")
    r = page(bob, gateway.url + "/admin")
    assert r.status_code == 403, r.text[:500]
    assert "Forbidden" in r.text  # Flask's abort(403), not a gateway page
    assert "Administration" not in r.text
    r = page(bob, gateway.url + "/")
    assert r.status_code == 200 and "Signed in as <strong>bob</strong>" in r.text
    assert 'href="/admin"' not in r.text

    alice = login("alice")
    r = page(alice, gateway.url + "/admin")
    assert r.status_code == 200
    assert "<h1>Administration</h1>" in r.text


def test_api_me_with_the_session(gateway, login):
    for name in ("alice", "bob"):
        client = login(name)
        r = client.get(gateway.url + "/api/me", timeout=10)
        assert r.status_code == 200, r.text
        user = USERS[name]
        assert r.json() == {"id": user.id, "username": user.username, "role": user.roles[0],
                            "is_admin": name == "alice", "roles": user.roles}


def test_api_without_session_is_401_json(gateway):
    r = requests.get(gateway.url + "/api/me", timeout=10)
    assert r.status_code == 401
    assert r.json()["error"] == "unauthenticated"


def test_query_strings_and_encoded_paths_are_signed_as_sent(gateway, login):
    alice = login("alice")
    r = alice.get(gateway.url + "/api/items?page=2&q=a%20b", timeout=10)
    assert r.status_code == 200 and len(r.json()) == 4
    r = alice.get(gateway.url + "/api/%6De", timeout=10)  # the app decodes it to /api/me
    assert r.status_code == 200 and r.json()["username"] == "alice"
    # The method is signed too: a POST reaches the app's router (405), not its 403.
    r = alice.post(gateway.url + "/api/me", timeout=10)
    assert r.status_code == 405


def test_utf8_username_reaches_the_app(gateway, login):
    client = login("jürgen")
    r = client.get(gateway.url + "/api/me", timeout=10)
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
    assert r.json()["username"] == "jürgen"


# --- public paths, logout -------------------------------------------------------------------


def test_static_files_need_no_session(gateway):
    r = requests.get(gateway.url + "/static/app.css", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/css")
    assert ".navbar" in r.text


def test_logout_then_dashboard_redirects_to_login(gateway, login):
    client = login("alice")
    old_cookie = client.cookies[COOKIE]
    r = page(client, gateway.url + "/logout")
    assert r.status_code == 200
    assert "Signed in as <strong>alice</strong>" in r.text
    r = client.post(gateway.url + "/logout", data={"csrf_token": csrf_token(r.text)},
                    allow_redirects=False, timeout=10)
    assert r.status_code == 303
    assert r.headers["Location"] == "/auth/login"
    assert COOKIE not in client.cookies, "the session cookie was not expired"

    r = page(client, gateway.url + "/")
    assert r.status_code == 302
    assert r.headers["Location"] == "/auth/login?next=%2F"
    # The old cookie is dead server-side too, not only forgotten by this client.
    r = page(requests.Session(), gateway.url + "/", cookies={COOKIE: old_cookie})
    assert r.status_code == 302 and r.headers["Location"].startswith("/auth/login")


# --- the app refuses anyone who goes around the gateway -------------------------------------

ALICE_HEADERS = {"X-Auth-User": "alice", "X-Auth-User-Id": "1", "X-Auth-Roles": "admin"}


def sign(secret, t, method, target, headers):
    msg = "\n".join(["v1", str(t), method, target, headers["X-Auth-User-Id"],
                     headers["X-Auth-User"], headers["X-Auth-Roles"]])
    return hmac.new(secret.encode(), msg.encode(), hashlib.sha256).hexdigest()


def test_direct_request_without_assertion_is_refused(gateway):
    for path in ("/", "/admin", "/api/me"):
        r = requests.get(gateway.app_url + path, headers=ALICE_HEADERS, timeout=10)
        assert r.status_code == 403, (path, r.status_code, r.text[:200])
        assert "did not come through the gateway" in r.text


def test_direct_request_with_forged_assertion_is_refused(gateway):
    now = int(time.time())
    forged = {
        "garbage": "yes please",
        "random signature": f"v1;t={now};sig={'ab' * 32}",
        "wrong key": f"v1;t={now};sig={sign('not-the-secret-0123456789abcdef', now, 'GET', '/api/me', ALICE_HEADERS)}",
        "other path": f"v1;t={now};sig={sign(IDENTITY_SECRET, now, 'GET', '/', ALICE_HEADERS)}",
        "expired": f"v1;t={now - 3600};sig={sign(IDENTITY_SECRET, now - 3600, 'GET', '/api/me', ALICE_HEADERS)}",
    }
    for what, value in forged.items():
        r = requests.get(gateway.app_url + "/api/me", headers={**ALICE_HEADERS, "X-Auth-Assertion": value},
                         timeout=10)
        assert r.status_code == 403, (what, r.status_code, r.text[:200])
    # Control: the key really is the one the app uses, so the refusals above are meaningful.
    good = f"v1;t={now};sig={sign(IDENTITY_SECRET, now, 'GET', '/api/me', ALICE_HEADERS)}"
    r = requests.get(gateway.app_url + "/api/me", headers={**ALICE_HEADERS, "X-Auth-Assertion": good}, timeout=10)
    assert r.status_code == 200 and r.json()["username"] == "alice"


def test_client_identity_headers_do_not_survive_the_gateway(gateway, login):
    bob = login("bob")
    spoof = {"X-Auth-User": "alice", "X-Auth-User-Id": "1", "X-Auth-Roles": "admin,user",
             "X_Auth_Roles": "admin", "X-Auth-Assertion": "v1;t=0;sig=" + "0" * 64}
    r = bob.get(gateway.url + "/api/me", headers=spoof, timeout=10)
    assert r.status_code == 200
    assert r.json() == {"id": "2", "username": "bob", "role": "user", "is_admin": False, "roles": ["user"]}
    r = page(bob, gateway.url + "/admin", headers=spoof)
    assert r.status_code == 403


def raw_request(gateway, request_line, cookie=None):
    """Sends one request verbatim (requests would normalise the target) and returns the status."""
    host = urlsplit(gateway.url).netloc
    hostname, port = host.split(":")
    cookie_line = f"Cookie: {COOKIE}={cookie}\r\n" if cookie else ""
    with socket.create_connection((hostname, int(port)), timeout=10) as s:
        s.sendall(f"{request_line}\r\nHost: {host}\r\n{cookie_line}"
                  "Accept: application/json\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_absolute_form_request_target(gateway, login):
    """RFC 9112 3.2.2: a server MUST accept the absolute form of the request target."""
    cookie = login("alice").cookies[COOKIE]
    assert raw_request(gateway, "GET /api/me HTTP/1.1", cookie) == 200
    status = raw_request(gateway, f"GET {gateway.url}/api/me HTTP/1.1", cookie)
    assert status == 200, f"absolute-form target: {status}"


def test_dot_segments_under_a_public_prefix_reach_nothing_protected(gateway):
    """`/static/../admin` must not pass as public: the gateway refuses dot segments outright
    (400), so the app never has to decide what such a path means."""
    for target in ("/static/../admin", "/static/%2e%2e/admin", "/static/..%2fapi/me",
                   "/static/./../api/me", "/static/../static/../"):
        status = raw_request(gateway, f"GET {target} HTTP/1.1")
        assert status == 400, (target, status)
