"""End-to-end fixtures: the real pieces, each on a free port, started once per test session.

- a private ``redis-server`` (no persistence, temporary directory),
- the example Flask app (docker/app) under gunicorn, with GATEWAY_IDENTITY_SECRET set,
- the gateway binary ``target/debug/gateway`` (``cargo build --bin gateway`` first; it is
  incremental, so this is quick when nothing changed) with a generated config and users file
  whose password hashes come from ``gateway hash-password``.

Readiness is established by polling, never by a fixed sleep. Logs of every process live in
the session's temporary directory; a failing test gets the tail of the gateway's and the
app's logs attached to its report.
"""
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "docker" / "app"
TARGET_DIR = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
if not TARGET_DIR.is_absolute():
    TARGET_DIR = ROOT / TARGET_DIR

READY_TIMEOUT = 30.0  # seconds; generous for a loaded 2-core machine
SESSION_SECRET = "e2e-session-secret-0123456789abcdef0123456789"
IDENTITY_SECRET = "e2e-identity-secret-0123456789abcdef012345678"
COOKIE = "gateway_session"
APP_COOKIE = "whalefall_session"
APP_SECRET_KEY = "e2e-app-secret-key-0123456789abcdef"
CORS_ORIGIN = "https://console.example"


@dataclass
class User:
    username: str
    password: str
    id: str
    roles: list


# The example app's own users (docker/app/app.py): same ids, so the app's user_loader finds the
# user the gateway signed in, and the same passwords, so its own login can mint legacy cookies.
USERS = {
    "alice": User("alice", "alice-demo", "1", ["admin"]),
    "bob": User("bob", "bob-demo", "2", ["user"]),
    # Non-ASCII names travel as UTF-8 header bytes; gateway_auth.py is written for them.
    "jürgen": User("jürgen", "jürgen-demo", "3", ["user"]),
}

_handed_out = set()


def free_port():
    """A port that was free a moment ago and that this run has not used yet."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_until(check, what, proc=None, log=None, timeout=READY_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (OSError, requests.RequestException):
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting\n{tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout}s\n{tail(log)}")
        time.sleep(0.05)


def tail(path, lines=40):
    if path is None or not pathlib.Path(path).exists():
        return ""
    text = pathlib.Path(path).read_text(errors="replace").splitlines()
    return f"--- {path} (last {lines} lines) ---\n" + "\n".join(text[-lines:])


def stop(proc, timeout=10):
    """SIGTERM, then SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def redis_ping(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


def http_ok(url):
    return requests.get(url, timeout=2).status_code == 200


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def gateway_binary():
    """``cargo build --bin gateway`` (incremental), then the debug binary's path."""
    cargo = shutil.which("cargo") or str(pathlib.Path.home() / ".cargo" / "bin" / "cargo")
    build = subprocess.run([cargo, "build", "--bin", "gateway"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if build.returncode != 0:
        pytest.fail(f"cargo build --bin gateway failed:\n{build.stdout[-6000:]}", pytrace=False)
    binary = TARGET_DIR / "debug" / "gateway"
    assert binary.is_file(), f"{binary} missing after cargo build"
    return binary


@pytest.fixture(scope="session")
def redis_port(workdir):
    directory = workdir / "redis"
    directory.mkdir()
    log = directory / "redis.log"
    for _attempt in range(5):
        port = free_port()
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory), "--logfile", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: redis_ping(port), "redis-server", proc, log)
        except RuntimeError:
            stop(proc)
            continue  # most likely the port was taken in the meantime
        yield port
        stop(proc)
        return
    pytest.fail(f"could not start redis-server\n{tail(log)}", pytrace=False)


@pytest.fixture(scope="session")
def app_url(workdir):
    """The example app under gunicorn, reachable directly (as an attacker would try)."""
    log = workdir / "app.log"
    port = free_port()
    env = {**os.environ, "GATEWAY_IDENTITY_SECRET": IDENTITY_SECRET, "PYTHONDONTWRITEBYTECODE": "1",
           "APP_SECRET_KEY": APP_SECRET_KEY, "APP_CORS_ORIGINS": CORS_ORIGIN}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "--access-logfile", "-", "app:create_app()"],
            cwd=APP_DIR, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(url + "/api/v1/health/basic"), "gunicorn (example app)", proc, log)
    except RuntimeError as e:
        stop(proc)
        pytest.fail(str(e), pytrace=False)
    yield url
    stop(proc)


def hash_password(binary, password):
    out = subprocess.run([str(binary), "hash-password"], input=password + "\n",
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def toml_str(value):
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Gateway:
    url: str
    admin_url: str
    app_url: str
    redis_port: int
    config: pathlib.Path
    log: pathlib.Path
    audit_log: pathlib.Path
    users: dict = field(default_factory=lambda: USERS)


@pytest.fixture(scope="session")
def gateway(workdir, gateway_binary, redis_port, app_url):
    directory = workdir / "gateway"
    directory.mkdir()
    users = directory / "users.toml"
    users.write_text("".join(
        f"[[users]]\nusername = {toml_str(u.username)}\nid = {toml_str(u.id)}\n"
        f"password_hash = {toml_str(hash_password(gateway_binary, u.password))}\n"
        f"roles = [{', '.join(toml_str(r) for r in u.roles)}]\n\n"
        for u in USERS.values()), encoding="utf-8")
    port, admin_port = free_port(), free_port()
    config = directory / "gateway.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
threads = 2
grace_period = "1s"
shutdown_timeout = "1s"

[redis]
url = "redis://127.0.0.1:{redis_port}/0"
key_prefix = "e2e:"
timeout = "500ms"
connect_timeout = "1s"

[upstream]
servers = ["{app_url.removeprefix('http://')}"]
connect_timeout = "2s"
read_timeout = "30s"
health_check_interval = "1s"
app_session_cookie = "{APP_COOKIE}"

[session]
cookie_name = "{COOKIE}"
secret_env = "E2E_GATEWAY_SESSION_SECRET"
idle_timeout = "30m"
absolute_timeout = "8h"
cookie_secure = false

[login]
path = "/auth/login"
api_path = "/api/v1/auth/login"
app_logout_paths = ["/auth/logout", "/api/v1/auth/logout"]
logout_path = "/logout"
users_file = "users.toml"

[access]
public = ["/static/", "/favicon.ico", "/api/v1/health/", "/api/v1/auth/csrf-token"]

[identity]
signing_secret_env = "E2E_GATEWAY_IDENTITY_SECRET"
""")
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info"),
           "E2E_GATEWAY_SESSION_SECRET": SESSION_SECRET,
           "E2E_GATEWAY_IDENTITY_SECRET": IDENTITY_SECRET}
    check = subprocess.run([str(gateway_binary), "check-config", "--config", str(config)],
                           env=env, capture_output=True, text=True)
    assert check.returncode == 0, f"generated config rejected:\n{check.stderr}"

    log, audit_log = directory / "gateway.log", directory / "audit.log"
    with open(log, "ab") as err, open(audit_log, "ab") as out:
        proc = subprocess.Popen([str(gateway_binary), "run", "--config", str(config)], env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    gw = Gateway(url=f"http://127.0.0.1:{port}", admin_url=f"http://127.0.0.1:{admin_port}",
                 app_url=app_url, redis_port=redis_port, config=config, log=log,
                 audit_log=audit_log)
    try:
        wait_until(lambda: http_ok(gw.admin_url + "/readyz") and http_ok(gw.url + "/_gateway/health"),
                   "gateway", proc, log)
        # Proxying needs the upstream marked healthy; /static/ is public, so this checks it.
        wait_until(lambda: http_ok(gw.url + "/static/app.css"), "gateway -> app", proc, log)
    except RuntimeError as e:
        stop(proc)
        pytest.fail(str(e), pytrace=False)
    yield gw
    stop(proc)


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------

HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture
def login(gateway):
    """``login("alice")`` -> a requests.Session holding a fresh gateway session (JSON login)."""
    clients = []

    def _login(username):
        user = gateway.users[username]
        client = requests.Session()
        clients.append(client)
        r = client.post(gateway.url + "/api/v1/auth/login",
                        json={"username": user.username, "password": user.password}, timeout=10)
        assert r.status_code == 200, f"login as {username}: {r.status_code} {r.text[:300]}"
        assert client.cookies.get(COOKIE), "no session cookie after login"
        return client

    yield _login
    for c in clients:
        c.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        gw = item.funcargs.get("gateway")
        if gw is not None:
            report.sections.append(("gateway log", tail(gw.log, 60)))
            report.sections.append(("app log", tail(gw.config.parent.parent / "app.log", 30)))
