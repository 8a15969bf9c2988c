"""Trust the authentication gateway's identity headers in a Flask-Login app.

Copy this file into your app and call ``init_app(app, login_manager)``. Every request
outside EXEMPT_PATHS must carry the assertion the gateway adds:
    X-Auth-Assertion: v1;t=<unix seconds>;sig=<lowercase hex HMAC-SHA256>
keyed with GATEWAY_IDENTITY_SECRET over these seven fields joined by "\\n" (no spaces):
    v1, t, METHOD, path ("?" + raw query appended only if non-empty), X-Auth-User-Id,
    X-Auth-User, X-Auth-Roles  (header values as sent, UTF-8; absent header = empty)
Without it, anyone who can reach the app directly could claim to be any user.

Rotating the key: put the new key in GATEWAY_IDENTITY_SECRET and the old one in
GATEWAY_IDENTITY_PREVIOUS_SECRETS (comma-separated) and restart the app; then give the gateway
the new signing_secret; once every gateway signs with it, drop the previous one here.

EXEMPT_PATHS is the one list of paths answered without an assertion ("/"-terminated entries
are prefixes, the others exact paths). List each of them in the gateway's ``[access] public``
as well: they exist for callers without a session, and the gateway lets those through only on
public paths, where it sends no identity and so no assertion. The exception is a path that is
only ever called directly, never through the gateway, such as the container health check.

Identity comes only from the gateway. Flask-Login's own loader tries the Flask session's
user id and the remember-me cookie before any request_loader, so a stale cookie of another
user would win; init_app replaces that loader instead, so it does not matter which hook
touches ``current_user`` first. Old login state in those cookies is ignored and cleared.
"""
import hashlib, hmac, os, re, time
from urllib.parse import quote, urlsplit
from flask import Response, g, request, session, url_for
from werkzeug.routing import BuildError
from flask_login import UserMixin

EXEMPT_PATHS = ("/api/v1/health/", "/static/", "/favicon.ico", "/api/v1/auth/csrf-token")

_ASSERTION = re.compile(r"v1;t=(\d{1,12});sig=([0-9a-f]{64})")
# What login_user() leaves in the Flask session.
_LOGIN_KEYS = ("_user_id", "_fresh", "_id", "_remember", "_remember_seconds")


class GatewayUser(UserMixin):
    """Only for apps without a user_loader: the user exactly as the gateway describes them."""

    def __init__(self, id, username, roles):
        self.id, self.username, self.roles = id, username, roles
        self.role = roles[0] if roles else "user"

    def is_admin(self):
        return "admin" in self.roles


def _wire(key):
    # WSGI hands bytes over as Latin-1 strings (PEP 3333); undo that to get exactly the
    # bytes the gateway signed, UTF-8 usernames included.
    return request.environ.get(key, "").encode("latin-1")


def _target():
    # Sign what went over the wire, not Flask's percent-decoded request.path.
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    path = raw.split("?", 1)[0] if raw else quote(request.script_root + request.path)
    query = request.environ.get("QUERY_STRING", "")
    return (path + "?" + query if query else path).encode("latin-1")


def verify(secrets, max_skew):
    """True if the request's assertion was made with one of ``secrets`` (bytes) in time."""
    m = _ASSERTION.fullmatch(request.headers.get("X-Auth-Assertion", ""))
    if not m or abs(time.time() - int(m[1])) > max_skew:
        return False
    msg = b"\n".join([b"v1", m[1].encode(), request.method.encode(), _target(), _wire("HTTP_X_AUTH_USER_ID"),
                      _wire("HTTP_X_AUTH_USER"), _wire("HTTP_X_AUTH_ROLES")])
    # Every key is tried (no early exit), so the time taken does not tell which one matched.
    matches = [hmac.compare_digest(hmac.new(s, msg, hashlib.sha256).hexdigest(), m[2]) for s in secrets]
    return any(matches)


def _keys(secret):
    """The accepted keys: ``secret`` (a str or a list of str, current first), or the
    environment's current key plus any previous ones of a rotation."""
    if secret is None:
        previous = re.split(r"[,\s]+", os.environ.get("GATEWAY_IDENTITY_PREVIOUS_SECRETS", "").strip())
        secret = [os.environ["GATEWAY_IDENTITY_SECRET"]] + [p for p in previous if p]
    elif isinstance(secret, str):
        secret = [secret]
    return [s.encode() for s in secret]


def init_app(app, login_manager, load_user=None, exempt=EXEMPT_PATHS, secret=None, max_skew=None):
    """``load_user(id_str)`` defaults to the app's own @login_manager.user_loader."""
    secrets = _keys(secret)
    max_skew = int(os.environ.get("GATEWAY_ASSERTION_MAX_SKEW", "60")) if max_skew is None else max_skew

    def verified():
        # Cached: the hook below and the first use of current_user both ask.
        if "_gateway_verified" not in g:
            g._gateway_verified = verify(secrets, max_skew)
        return g._gateway_verified

    def header(key):
        return _wire(key).decode("utf-8", "replace")

    def load_from_gateway():
        user, uid = None, header("HTTP_X_AUTH_USER_ID")
        if uid and verified():
            # Looked up now, not at init_app: apps often register their user_loader later.
            loader = load_user or login_manager._user_callback
            if loader:
                user = loader(uid)
            elif header("HTTP_X_AUTH_USER"):
                roles = [r.strip() for r in header("HTTP_X_AUTH_ROLES").split(",") if r.strip()]
                user = GatewayUser(uid, header("HTTP_X_AUTH_USER"), roles)
        if user is not None and not user.is_active:
            user = None  # deactivated in the app after the gateway session began
        login_manager._update_request_context_with_user(user)  # None -> anonymous

    # Flask-Login calls _load_user the first time anything touches current_user; this
    # instance attribute shadows the method that would read the session and remember cookie.
    login_manager._load_user = load_from_gateway

    def require_gateway():
        for key in _LOGIN_KEYS:
            session.pop(key, None)  # marks the session modified (cookie rewritten) only if present
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return None  # CORS preflights never carry credentials, so the gateway cannot sign them
        p = request.path
        if any(p == e or (e.endswith("/") and p.startswith(e)) for e in exempt):
            return None
        if not verified():
            return Response("request did not come through the gateway\n", 403, mimetype="text/plain")
        return None

    # First, so no other hook (CSRF, logging, the app's own) runs for a forged request.
    app.before_request_funcs.setdefault(None, []).insert(0, require_gateway)

    @app.after_request
    def forget_legacy_state(response):
        name = app.config.get("REMEMBER_COOKIE_NAME", "remember_token")
        if name in request.cookies:
            response.delete_cookie(name, domain=app.config.get("REMEMBER_COOKIE_DOMAIN"),
                                   path=app.config.get("REMEMBER_COOKIE_PATH", "/"))
        # The gateway serves the app's login page and never shows the app's flashed messages;
        # one flashed on the way there ("logged out", "please log in") would surface later.
        if response.status_code in (301, 302, 303, 307, 308) and "_flashes" in session:
            target = urlsplit(response.location or "").path
            if target and target == _login_path(login_manager):
                session.pop("_flashes", None)
        return response


def _login_path(login_manager):
    view = login_manager.login_view
    if not isinstance(view, str):
        return None
    try:
        return url_for(view)
    except BuildError:
        return None
