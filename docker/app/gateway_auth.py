"""Trust the authentication gateway's identity headers in a Flask-Login app.

Copy this file into your app and call ``init_app(app, login_manager)``. Every request
outside ``exempt`` must carry the assertion the gateway adds:
    X-Auth-Assertion: v1;t=<unix seconds>;sig=<lowercase hex HMAC-SHA256>
keyed with GATEWAY_IDENTITY_SECRET over these seven fields joined by "\\n" (no spaces):
    v1, t, METHOD, path ("?" + raw query appended only if non-empty), X-Auth-User-Id,
    X-Auth-User, X-Auth-Roles  (header values as sent, UTF-8; absent header = empty)
Without it, anyone who can reach the app directly could claim to be any user.
"""
import hashlib, hmac, os, re, time
from urllib.parse import quote
from flask import Response, g, request
from flask_login import UserMixin

_ASSERTION = re.compile(r"v1;t=(\d{1,12});sig=([0-9a-f]{64})")


class GatewayUser(UserMixin):
    def __init__(self, id, username, roles):
        self.id, self.username, self.roles = id, username, roles


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


def verify(secret, max_skew):
    m = _ASSERTION.fullmatch(request.headers.get("X-Auth-Assertion", ""))
    if not m or abs(time.time() - int(m[1])) > max_skew:
        return False
    msg = b"\n".join([b"v1", m[1].encode(), request.method.encode(), _target(), _wire("HTTP_X_AUTH_USER_ID"),
                      _wire("HTTP_X_AUTH_USER"), _wire("HTTP_X_AUTH_ROLES")])
    return hmac.compare_digest(hmac.new(secret, msg, hashlib.sha256).hexdigest(), m[2])


def init_app(app, login_manager, exempt=("/health", "/static/", "/favicon.ico"), secret=None, max_skew=None):
    """``exempt`` entries ending in "/" are prefixes, the others exact paths."""
    secret = (secret or os.environ["GATEWAY_IDENTITY_SECRET"]).encode()
    max_skew = int(os.environ.get("GATEWAY_ASSERTION_MAX_SKEW", "60")) if max_skew is None else max_skew

    @app.before_request
    def _require_gateway():
        g.gateway_verified = False  # exempt paths get no identity at all
        p = request.path
        if any(p == e or (e.endswith("/") and p.startswith(e)) for e in exempt):
            return None
        if not verify(secret, max_skew):
            return Response("request did not come through the gateway\n", 403, mimetype="text/plain")
        g.gateway_verified = True

    @login_manager.request_loader
    def _load_user(_request):
        uid, name, roles = (_wire(k).decode("utf-8", "replace") for k in
                            ("HTTP_X_AUTH_USER_ID", "HTTP_X_AUTH_USER", "HTTP_X_AUTH_ROLES"))
        if not (g.get("gateway_verified") and uid and name):
            return None
        return GatewayUser(uid, name, [r.strip() for r in roles.split(",") if r.strip()])
