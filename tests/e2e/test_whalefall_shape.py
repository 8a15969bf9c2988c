"""The gateway as a drop-in in front of an app with WhaleFall's auth surface (docker/app under
gunicorn): Flask-WTF CSRF in the app's own `whalefall_session` cookie, remember-me cookies, a
`User` model with `role` and `is_admin()`, a logging hook that reads `current_user` first, the
app's own logout form and logout API, a JSON login API, a health API and CORS.

The gateway runs with the settings of the README's "In front of WhaleFall" section
(conftest.py): login at /auth/login, JSON login at /api/v1/auth/login, the app's two logout
paths, the app's session cookie declared, remember_token stripped.
"""
import hashlib
import hmac
import re
import subprocess
import sys
import time
from urllib.parse import urlsplit

import requests

from conftest import APP_COOKIE, APP_DIR, COOKIE, CORS_ORIGIN, HTML, IDENTITY_SECRET, USERS

APP_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def page(client, url, **kw):
    return client.get(url, headers={"Accept": HTML}, allow_redirects=False, timeout=10, **kw)


def app_csrf_token(client, gateway):
    """The app's own CSRF token, as WhaleFall's console fetches it before its first POST."""
    r = client.get(gateway.url + "/api/v1/auth/csrf-token", timeout=10)
    assert r.status_code == 200, r.text[:300]
    return r.json()["data"]["csrf_token"]


def assert_signed_out(client, gateway, old_cookie):
    r = client.get(gateway.url + "/api/v1/auth/me", timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "unauthenticated", r.text[:300]
    # Dead on the server, not just forgotten by this client.
    r = requests.get(gateway.url + "/api/v1/auth/me", cookies={COOKIE: old_cookie}, timeout=10)
    assert r.status_code == 401, r.text[:300]


# --- the app's own user model --------------------------------------------------------------


def test_pages_and_apis_render_as_the_signed_in_user(gateway, login):
    alice = login("alice")
    r = alice.get(gateway.url + "/api/v1/auth/me", timeout=10)
    assert r.status_code == 200, r.text[:300]
    me = r.json()["data"]
    assert (me["id"], me["username"], me["role"], me["is_admin"], me["is_active"]) == \
        (1, "alice", "admin", True, True)
    assert me["created_at"].startswith("2024-01-15")
    r = page(alice, gateway.url + "/admin")
    assert r.status_code == 200 and "<h1>Administration</h1>" in r.text
    r = page(alice, gateway.url + "/")
    assert '<span class="role">admin</span>' in r.text
    assert 'href="/admin"' in r.text  # the navbar asks current_user.is_admin()

    bob = login("bob")
    me = bob.get(gateway.url + "/api/v1/auth/me", timeout=10).json()["data"]
    assert (me["username"], me["role"], me["is_admin"]) == ("bob", "user", False)
    r = page(bob, gateway.url + "/")
    assert r.status_code == 200 and '<span class="role">user</span>' in r.text
    assert 'href="/admin"' not in r.text
    assert page(bob, gateway.url + "/admin").status_code == 403


def test_the_user_stays_signed_in_across_pages_that_set_the_apps_cookie(gateway, login):
    client = login("alice")
    set_cookies = []
    for path in ("/", "/admin", "/", "/api/v1/auth/me", "/admin"):
        r = page(client, gateway.url + path)
        assert r.status_code == 200, (path, r.status_code, r.headers.get("Location"))
        set_cookies += r.raw.headers.getlist("Set-Cookie")
    # Pages render a CSRF token, so the app writes its own session cookie (the first page
    # creates it)...
    assert any(c.startswith(APP_COOKIE + "=") for c in set_cookies), set_cookies
    # ...which passes untouched, and the gateway's survives beside it.
    assert not any(c.startswith(COOKIE + "=") for c in set_cookies), set_cookies
    assert client.cookies.get(APP_COOKIE) and client.cookies.get(COOKIE)


def test_a_csrf_protected_json_post_with_the_apps_token_succeeds(gateway, login):
    client = login("bob")
    token = app_csrf_token(client, gateway)
    r = client.post(gateway.url + "/api/v1/notes", json={"text": "disk almost full"},
                    headers={"X-CSRFToken": token}, timeout=10)
    assert r.status_code == 201, r.text[:300]
    assert r.json()["data"] == {"text": "disk almost full", "author": "bob", "author_role": "user"}
    # The check is real: without the token the app refuses.
    r = client.post(gateway.url + "/api/v1/notes", json={"text": "x"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "csrf_failed"


# --- old cookies never decide who the user is -----------------------------------------------


def sign(method, target, t=None):
    """An assertion with no user, as the gateway would send on a public path."""
    t = int(time.time()) if t is None else t
    msg = "\n".join(["v1", str(t), method, target, "", "", ""])
    return f"v1;t={t};sig={hmac.new(IDENTITY_SECRET.encode(), msg.encode(), hashlib.sha256).hexdigest()}"


def legacy_cookies_of(gateway, username):
    """The cookies the app's own login (with "remember me") gave a user before the rollout.

    Minted by the app itself, called directly: a GET for its form and CSRF token, then the POST.
    """
    direct = requests.Session()
    r = direct.get(gateway.app_url + "/auth/login", headers={"X-Auth-Assertion": sign("GET", "/auth/login")},
                   timeout=10)
    assert r.status_code == 200, r.text[:300]
    token = re.search(r'name="csrf_token" value="([^"]+)"', r.text).group(1)
    user = USERS[username]
    r = direct.post(gateway.app_url + "/auth/login", allow_redirects=False, timeout=10,
                    headers={"X-Auth-Assertion": sign("POST", "/auth/login")},
                    data={"username": user.username, "password": user.password, "remember": "on",
                          "csrf_token": token})
    assert r.status_code == 302, r.text[:300]
    cookies = {name: direct.cookies[name] for name in (APP_COOKIE, "remember_token")}
    assert all(cookies.values()), cookies
    return cookies


def test_legacy_cookies_of_another_user_do_not_change_the_identity(gateway, login):
    legacy = legacy_cookies_of(gateway, "alice")
    bob = login("bob")
    host = urlsplit(gateway.url).hostname
    for name, value in legacy.items():
        bob.cookies.set(name, value, domain=host, path="/")

    r = bob.get(gateway.url + "/api/v1/auth/me", timeout=10)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["data"]["username"] == "bob"
    set_cookies = r.raw.headers.getlist("Set-Cookie")
    # Cleared: the remember cookie by the gateway (it never reaches the app), the login state in
    # the app's session cookie by the app (rewritten without it).
    assert any(c.startswith("remember_token=;") and "Max-Age=0" in c for c in set_cookies), set_cookies
    assert any(c.startswith(APP_COOKIE + "=") for c in set_cookies), set_cookies
    assert "remember_token" not in bob.cookies

    r = page(bob, gateway.url + "/admin")
    assert r.status_code == 403, "alice's old cookies must not make bob an admin"
    r = page(bob, gateway.url + "/")
    assert "Signed in as <strong>bob</strong>" in r.text


def test_legacy_cookies_alone_are_not_a_session(gateway):
    legacy = legacy_cookies_of(gateway, "alice")
    r = requests.get(gateway.url + "/api/v1/auth/me", cookies=legacy, timeout=10)
    assert r.status_code == 401


# --- the app's logout ends the gateway session ------------------------------------------------


def test_the_apps_logout_form_ends_the_gateway_session(gateway, login):
    client = login("alice")
    session_cookie = client.cookies[COOKIE]
    r = page(client, gateway.url + "/")
    form_token = re.search(r'name="csrf_token" value="([^"]+)"', r.text).group(1)
    # What the browser sends when the user clicks "Log out": same origin, the app's token.
    r = client.post(gateway.url + "/auth/logout", data={"csrf_token": form_token}, allow_redirects=False,
                    headers={"Origin": gateway.url, "Accept": HTML}, timeout=10)
    assert r.status_code == 302, r.text[:300]
    assert r.headers["Location"] == "/auth/login"  # the app's own answer
    assert COOKIE not in client.cookies, "the gateway cookie was not expired"
    assert_signed_out(client, gateway, session_cookie)
    r = page(client, gateway.url + "/")
    assert r.status_code == 302 and r.headers["Location"] == "/auth/login?next=%2F"


def test_the_apps_logout_api_ends_the_gateway_session(gateway, login):
    client = login("bob")
    session_cookie = client.cookies[COOKIE]
    token = app_csrf_token(client, gateway)
    r = client.post(gateway.url + "/api/v1/auth/logout", headers={"X-CSRFToken": token}, timeout=10)
    assert r.status_code == 200 and r.json() == {"success": True, "message": "logged out"}, r.text[:300]
    assert COOKIE not in client.cookies
    assert_signed_out(client, gateway, session_cookie)


# --- login at the app's API path, preflights, health ----------------------------------------


def test_json_login_at_the_api_path(gateway):
    client = requests.Session()
    r = client.post(gateway.url + "/api/v1/auth/login",
                    json={"username": "jürgen", "password": USERS["jürgen"].password}, timeout=10)
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert body["success"] is True
    assert body["data"]["user"]["username"] == "jürgen"
    assert client.cookies.get(COOKIE)
    me = client.get(gateway.url + "/api/v1/auth/me", timeout=10).json()["data"]
    assert me["username"] == "jürgen" and me["id"] == 3

    r = requests.post(gateway.url + "/api/v1/auth/login", json={"username": "bob", "password": "nope"},
                      timeout=10)
    assert r.status_code == 401 and r.json()["success"] is False


def test_a_cors_preflight_reaches_the_app(gateway):
    r = requests.options(gateway.url + "/api/v1/notes", timeout=10, headers={
        "Origin": CORS_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-csrftoken"})
    assert r.status_code == 200, r.text[:300]
    # Answered by the app's CORS handling, not by the gateway.
    assert r.headers["Access-Control-Allow-Origin"] == CORS_ORIGIN
    assert "x-csrftoken" in r.headers["Access-Control-Allow-Headers"].lower()


def test_the_container_health_check_works(gateway):
    """The Dockerfile's HEALTHCHECK command, run against the app as the container runs it."""
    dockerfile = (APP_DIR / "Dockerfile").read_text()
    command = re.search(r'CMD python -c "([^"]+)"', dockerfile.split("HEALTHCHECK", 1)[1]).group(1)
    port = gateway.app_url.rsplit(":", 1)[1]
    assert "127.0.0.1:5001" in command
    result = subprocess.run([sys.executable, "-c", command.replace("127.0.0.1:5001", f"127.0.0.1:{port}")],
                            capture_output=True, timeout=10)
    assert result.returncode == 0, result.stderr.decode()
    # The same endpoint is public at the gateway, for a load balancer or uptime probe.
    r = requests.get(gateway.url + "/api/v1/health/basic", timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
