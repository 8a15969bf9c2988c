"""Example legacy app behind the gateway, shaped like WhaleFall (Flask + Flask-Login).

It has no login form and no password table of its own any more: the gateway owns
sessions and tells the app who the user is through signed X-Auth-* headers, which
gateway_auth.py checks. /logout is served by the gateway, not by this app.

Run locally:  GATEWAY_IDENTITY_SECRET=... gunicorn -b 127.0.0.1:5001 'app:create_app()'
"""
from functools import wraps

from flask import Flask, abort, jsonify, render_template
from flask_login import LoginManager, current_user, login_required

import gateway_auth

# Stand-in for WhaleFall's managed database instances.
ITEMS = [
    {"id": 1, "name": "orders-primary", "db_type": "postgresql", "host": "10.0.1.10", "port": 5432},
    {"id": 2, "name": "orders-replica", "db_type": "postgresql", "host": "10.0.1.11", "port": 5432},
    {"id": 3, "name": "billing", "db_type": "mysql", "host": "10.0.2.20", "port": 3306},
    {"id": 4, "name": "reporting", "db_type": "sqlserver", "host": "10.0.3.30", "port": 1433},
]


def admin_required(view):
    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        # The gateway authenticates; authorisation by role stays the app's job.
        if "admin" not in current_user.roles:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def create_app(identity_secret=None, max_skew=None):
    app = Flask(__name__)
    login_manager = LoginManager(app)
    # Identity is re-established from the headers on every request, so Flask's own
    # session cookie never carries a user and session protection has nothing to guard.
    login_manager.session_protection = None
    gateway_auth.init_app(app, login_manager, secret=identity_secret, max_skew=max_skew)

    @app.get("/health")
    def health():
        return "ok", 200, {"Content-Type": "text/plain"}

    @app.get("/")
    @login_required
    def dashboard():
        return render_template("dashboard.html", items=ITEMS)

    @app.get("/admin")
    @admin_required
    def admin():
        return render_template("admin.html", items=ITEMS)

    @app.get("/api/me")
    @login_required
    def api_me():
        return jsonify(id=current_user.id, username=current_user.username, roles=current_user.roles)

    @app.get("/api/items")
    @login_required
    def api_items():
        return jsonify(ITEMS)

    return app


if __name__ == "__main__":
    create_app().run(host="127.0.0.1", port=5001)
