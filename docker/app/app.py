"""Example legacy app behind the gateway: a stand-in for the auth surface of WhaleFall.

Like WhaleFall it is Flask + Flask-Login + Flask-WTF CSRFProtect, with a `whalefall_session`
cookie, 7-day `remember_token` cookies, its own login form and JSON login API, and a User
model with a role. Behind the gateway none of that decides who the user is: gateway_auth.py
loads the user named by the gateway's signed X-Auth-* headers through the app's own
user_loader, and ignores (and clears) the app's old login cookies. The app's /auth/login
still works when called directly with a gateway assertion; the tests use it to mint such
"legacy" cookies.

Run locally:  GATEWAY_IDENTITY_SECRET=... gunicorn -b 127.0.0.1:5001 'app:create_app()'
"""
import logging
import os
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

from flask import Flask, abort, flash, g, jsonify, redirect, render_template, request, url_for
from flask_login import (LoginManager, UserMixin, current_user, login_required, login_url, login_user,
                         logout_user)
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf
from werkzeug.security import check_password_hash, generate_password_hash

import gateway_auth

# Stand-in for WhaleFall's managed database instances.
ITEMS = [
    {"id": 1, "name": "orders-primary", "db_type": "postgresql", "host": "10.0.1.10", "port": 5432},
    {"id": 2, "name": "orders-replica", "db_type": "postgresql", "host": "10.0.1.11", "port": 5432},
    {"id": 3, "name": "billing", "db_type": "mysql", "host": "10.0.2.20", "port": 3306},
    {"id": 4, "name": "reporting", "db_type": "sqlserver", "host": "10.0.3.30", "port": 1433},
]


class User(UserMixin):
    # A plain attribute, so it can be False; UserMixin's is_active is an always-True property.
    is_active = True

    def __init__(self, id, username, role, password, is_active=True,
                 created_at=datetime(2024, 1, 15, 9, 30, tzinfo=timezone.utc)):
        self.id, self.username, self.role = id, username, role
        self.is_active, self.created_at = is_active, created_at
        # Few iterations: demo users are hashed at import, and these passwords are public anyway.
        self.password_hash = generate_password_hash(password, method="pbkdf2:sha256:1000")

    def check_password(self, password):
        return check_password_hash(self.password_hash, password)

    def is_admin(self):
        return self.role == "admin"

    def to_dict(self):
        return {"id": self.id, "username": self.username, "role": self.role, "is_admin": self.is_admin(),
                "is_active": self.is_active, "created_at": self.created_at.isoformat()}


# The app's user table, keyed by id. Demo passwords are "<username>-demo".
USERS = {u.id: u for u in [
    User(1, "alice", "admin", "alice-demo"),
    User(2, "bob", "user", "bob-demo"),
    User(3, "jürgen", "user", "jürgen-demo"),
    User(4, "carol", "user", "carol-demo", is_active=False),
]}


def find_user(username):
    return next((u for u in USERS.values() if u.username == username), None)


def safe_next(target):
    """Only local paths: an open redirect would turn the login form into a phishing helper."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("dashboard")
    parts = urlsplit(target)
    return target if not (parts.scheme or parts.netloc) else url_for("dashboard")


def api_error(status, error):
    return jsonify(success=False, error=error), status


def create_app(identity_secret=None, max_skew=None):
    app = Flask(__name__)
    # The default is for local runs only; the container must set APP_SECRET_KEY, or anyone
    # could forge this app's session (and so its CSRF tokens).
    app.config["SECRET_KEY"] = os.environ.get("APP_SECRET_KEY", "dev-only-insecure-secret-key")
    app.config.update(
        SESSION_COOKIE_NAME="whalefall_session",
        REMEMBER_COOKIE_DURATION=timedelta(days=7),
        WTF_CSRF_TIME_LIMIT=None,  # tokens live as long as the session, as in WhaleFall
    )
    app.logger.setLevel(logging.INFO)
    cors_origins = {o.strip() for o in os.environ.get("APP_CORS_ORIGINS", "").split(",") if o.strip()}

    csrf = CSRFProtect(app)  # form field csrf_token, or the X-CSRFToken header for JSON
    login_manager = LoginManager(app)
    login_manager.login_view = "auth_login"

    @login_manager.user_loader
    def load_user(user_id):
        try:
            return USERS.get(int(user_id))
        except (TypeError, ValueError):
            return None

    @login_manager.unauthorized_handler
    def unauthorized():
        if request.path.startswith("/api/"):
            return api_error(401, "unauthenticated")
        return redirect(login_url(login_manager.login_view, next_url=request.url))

    @app.before_request
    def log_request():
        # Like WhaleFall's request logging: the first code to touch current_user, and it runs
        # before gateway_auth's hooks are even registered. This is the order that used to let a
        # stale session cookie decide the user; gateway_auth must win regardless.
        g.request_user = current_user if current_user.is_authenticated else None
        app.logger.info("%s %s user=%s", request.method, request.path,
                        g.request_user.username if g.request_user else "-")

    gateway_auth.init_app(app, login_manager, secret=identity_secret, max_skew=max_skew)

    @app.after_request
    def cors(response):
        origin = request.headers.get("Origin")
        if request.path.startswith("/api/") and origin in cors_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type, X-CSRFToken"
            response.vary.add("Origin")
        return response

    @app.errorhandler(CSRFError)
    def csrf_failed(e):
        if request.path.startswith("/api/"):
            return api_error(400, "csrf_failed")
        return e

    # --- pages -------------------------------------------------------------------------------

    @app.get("/")
    @login_required
    def dashboard():
        return render_template("dashboard.html", items=ITEMS)

    @app.get("/admin")
    @login_required
    def admin():
        # The gateway authenticates; authorisation by role stays the app's job.
        if not current_user.is_admin():
            abort(403)
        return render_template("admin.html", items=ITEMS)

    @app.route("/auth/login", methods=["GET", "POST"], endpoint="auth_login")
    def auth_login():
        error, status = None, 200
        if request.method == "POST":
            user = find_user(request.form.get("username", ""))
            if user is None or not user.check_password(request.form.get("password", "")):
                error, status = "Invalid username or password.", 401
            elif not login_user(user, remember=request.form.get("remember") == "on"):
                error, status = "This account is disabled.", 401  # login_user refuses inactive users
            else:
                return redirect(safe_next(request.args.get("next")))
        return render_template("login.html", error=error, next=request.args.get("next", "")), status

    @app.post("/auth/logout")
    @login_required
    def auth_logout():
        logout_user()
        flash("You have been logged out.")  # WhaleFall says so on its login page
        return redirect(url_for("auth_login"))

    # --- JSON API ----------------------------------------------------------------------------

    @app.post("/api/v1/auth/login")
    @csrf.exempt  # a JSON login has no session to bind a token to yet
    def api_login():
        body = request.get_json(silent=True) or {}
        user = find_user(str(body.get("username", "")))
        if user is None or not user.check_password(str(body.get("password", ""))):
            return api_error(401, "invalid_credentials")
        if not login_user(user, remember=bool(body.get("remember"))):
            return api_error(401, "account_disabled")
        return jsonify(success=True, data={"user": user.to_dict()})

    @app.post("/api/v1/auth/logout")
    @login_required
    def api_logout():
        logout_user()
        return jsonify(success=True, message="logged out")

    @app.get("/api/v1/auth/me")
    @login_required
    def api_auth_me():
        return jsonify(success=True, data=current_user.to_dict())

    @app.get("/api/v1/auth/csrf-token")
    def api_csrf_token():
        return jsonify(success=True, data={"csrf_token": generate_csrf()})

    @app.get("/api/v1/health/basic")
    def health_basic():
        return jsonify(status="ok")

    @app.post("/api/v1/notes")
    @login_required
    def api_notes():
        text = (request.get_json(silent=True) or {}).get("text")
        if not isinstance(text, str) or not text.strip():
            return api_error(400, "text_required")
        return jsonify(success=True, data={"text": text, "author": current_user.username,
                                           "author_role": current_user.role}), 201

    @app.get("/api/me")
    @login_required
    def api_me():
        return jsonify(id=str(current_user.id), username=current_user.username, role=current_user.role,
                       is_admin=current_user.is_admin(), roles=[current_user.role])

    @app.get("/api/items")
    @login_required
    def api_items():
        return jsonify(ITEMS)

    return app


if __name__ == "__main__":
    create_app().run(host="127.0.0.1", port=5001)
