#!/usr/bin/env python3
"""HTTP-level mutation fuzzing of a live gateway (Python 3.11 standard library only).

    python3 benches/http_fuzz.py [--requests 100000] [--seed 20261130] [--concurrency 32]
                                 [--gateway-bin target/release/gateway] [--keep]
    python3 benches/http_fuzz.py --seed S --show I      # print the bytes of request I
    python3 benches/http_fuzz.py --seed S --replay I    # start a stack and send request I

It starts, on free loopback ports in a temporary directory: a private redis-server, an upstream
application (this script in ``--upstream`` mode: it answers every request 200 and checks what
the gateway forwarded), and the gateway binary with a config that has public paths, a JSON and a
form login, an app logout path, identity assertions and no login throttling. It logs a user in,
then sends N requests over raw TCP sockets, C at a time, one connection each. Request I is made
from a random generator seeded with (seed, I) alone, so any single request can be rebuilt: a
valid request from a seed corpus (JSON, API and form logins, authenticated GET/POST with the
session cookie, chunked uploads, public GET/HEAD, the login page, logout, the session list, CORS
preflights, WebSocket upgrades, HTTP/1.0) changed by one to four mutations: methods, targets
(dot segments, encodings, absolute form, overlong), versions, header names (``X-Auth-*``
spellings, case, ``_``) and values, cookies (tampered, forged, duplicated, quoted), bodies, and
framing (Content-Length lists, duplicates, signs, overflow; Transfer-Encoding variants and
chunk-size tricks; both at once), bare LF and CR line ends, obs-fold, NUL bytes, overlong lines,
truncation and pipelining.

The run passes when
  * no response is a 5xx: the upstream always answers and Redis is up, so any 500, 502, 503,
    504 or other 5xx is the gateway's own failure;
  * no 3xx leads off the site (a Location that is not a same-site path);
  * the upstream saw nothing it must never see: an unauthenticated request for a protected path,
    a client's own X-Auth-* header, an identity the gateway did not issue, the gateway's session
    cookies or the legacy remember_token, a request with both Content-Length and
    Transfer-Encoding or with two lengths, or bytes that are not HTTP;
  * the gateway's log has no "panic" and the process is still running;
  * afterwards the admin /healthz answers 200 and a real login plus an authenticated request
    work.

It prints the seed, the duration, the status histogram and, for every failure, the request index
and the command that shows its bytes. Exit status 0 = passed, 1 = failed, 2 = could not start.
"""

import argparse
import asyncio
import collections
import dataclasses
import hashlib
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_SEED = 20261130
SESSION_COOKIE = "gateway_session"
NONCE_COOKIE = "gateway_session_csrf"
# Who is who: `fuzz` is the user the login seeds sign in (its sessions churn); the `keeperN`
# sessions are what the authenticated seeds carry (several users, so that a mutated
# "log out everywhere" ends one of them, not all); `victim` sessions are what logouts end.
FUZZ_USER, FUZZ_PASSWORD, FUZZ_ID = "fuzz", "fuzz-password", "1"
VICTIM, VICTIM_PASSWORD, VICTIM_ID = "victim", "victim-password", "3"
KEEPERS = [(f"keeper{i}", f"keeper{i}-password", str(10 + i)) for i in range(4)]
USERS = [(FUZZ_USER, FUZZ_ID, FUZZ_PASSWORD), (VICTIM, VICTIM_ID, VICTIM_PASSWORD)] + [
    (name, uid, password) for name, password, uid in KEEPERS]
PUBLIC = ["/static/", "/favicon.ico", "/api/v1/health"]
APP_LOGOUT = "/auth/logout"
IDENTITY_HEADERS = {"x-auth-user", "x-auth-user-id", "x-auth-roles", "x-auth-assertion"}
HIDDEN_COOKIES = {SESSION_COOKIE, NONCE_COOKIE, "remember_token"}
VICTIMS = 12
# Every this many requests: keeper sessions a mutation ended are signed in again, and two
# fresh victim sessions replace old ones, so that the seeds keep reaching live sessions.
REFRESH_EVERY = 250
# Answer time for one request; a request still unanswered after FIRST_WAIT gets its write side
# closed, so a server waiting for a body that will never come answers or hangs up.
FIRST_WAIT, TOTAL_WAIT = 1.5, 6.0


# ------------------------------------------------------------------------------------------
# The upstream application
# ------------------------------------------------------------------------------------------


def percent_decode(text):
    return urllib.parse.unquote_to_bytes(text).decode("utf-8", "replace")


def app_view(path):
    """The path as an app router sees it: decoded once, backslashes as slashes, dots resolved."""
    decoded = percent_decode(path).replace("\\", "/")
    out = []
    parts = decoded.split("/")
    for i, segment in enumerate(parts):
        last = i == len(parts) - 1
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/".join(out)


def is_public(path):
    """The config's rule on segment boundaries (see README, `access.public`)."""
    for prefix in PUBLIC:
        if prefix.endswith("/"):
            if path.startswith(prefix):
                return True
        elif path == prefix or (
            "." not in prefix.rsplit("/", 1)[-1] and path.startswith(prefix + "/")
        ):
            return True
    return False


class UpstreamStats:
    def __init__(self):
        self.requests = 0
        self.authenticated = 0
        self.parse_errors = 0
        self.violations = collections.Counter()
        self.examples = []

    def violation(self, kind, head):
        self.violations[kind] += 1
        if len(self.examples) < 20:
            self.examples.append({"kind": kind, "head": head[:600].decode("latin-1")})

    def as_json(self):
        return {
            "requests": self.requests,
            "authenticated": self.authenticated,
            "parse_errors": self.parse_errors,
            "violations": dict(self.violations),
            "examples": self.examples,
        }


async def read_chunked(reader):
    total = 0
    while True:
        line = await reader.readuntil(b"\n")
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\n")).strip():
                pass
            return total
        await reader.readexactly(size)
        total += size
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("chunk without CRLF")


def check_forwarded(stats, method, target, headers, head):
    """Everything the gateway promises about a request it let through."""
    names = [n for n, _ in headers]
    values = collections.defaultdict(list)
    for n, v in headers:
        values[n].append(v)
    for n in set(names):
        folded = n.replace("_", "-")
        if folded.startswith("x-auth-") and n not in IDENTITY_HEADERS:
            stats.violation("client_identity_header_forwarded", head)
        if n in IDENTITY_HEADERS and len(values[n]) > 1:
            stats.violation("identity_header_repeated", head)
    user = values.get("x-auth-user", [None])[0]
    if user is not None:
        stats.authenticated += 1
        expected = {name.encode(): uid.encode() for name, uid, _ in USERS}
        if expected.get(user) != values.get("x-auth-user-id", [None])[0]:
            stats.violation("identity_not_issued_by_the_gateway", head)
        if "x-auth-assertion" not in values:
            stats.violation("identity_without_assertion", head)
    elif any(n in values for n in ("x-auth-user-id", "x-auth-roles", "x-auth-assertion")):
        stats.violation("partial_identity", head)
    path = target.split(b"?", 1)[0].decode("latin-1")
    preflight = method == b"OPTIONS" and "access-control-request-method" in values
    if user is None and not preflight and not is_public(app_view(path)):
        stats.violation("unauthenticated_request_for_protected_path", head)
    if user is None and not preflight and not is_public(path):
        stats.violation("unauthenticated_request_for_protected_path_raw", head)
    for cookie_header in values.get("cookie", []):
        for pair in cookie_header.split(b";"):
            name = pair.split(b"=", 1)[0].strip().decode("latin-1")
            if name in HIDDEN_COOKIES:
                stats.violation("hidden_cookie_forwarded", head)
    if "transfer-encoding" in values and "content-length" in values:
        stats.violation("content_length_and_transfer_encoding_forwarded", head)
    if len(values.get("content-length", [])) > 1:
        stats.violation("two_content_lengths_forwarded", head)
    if not target.startswith(b"/") and target != b"*":
        stats.violation("target_not_origin_form", head)


async def upstream_connection(reader, writer, stats):
    try:
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 120)
            except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                return
            except asyncio.LimitOverrunError:
                stats.parse_errors += 1
                return
            lines = head[:-4].split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
                stats.parse_errors += 1
                stats.violation("not_http_forwarded", head)
                return
            method, target, version = parts
            headers = []
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                if not sep or not name or name != name.strip():
                    stats.parse_errors += 1
                    stats.violation("malformed_header_forwarded", head)
                    return
                headers.append((name.decode("latin-1").lower(), value.strip()))
            stats.requests += 1
            check_forwarded(stats, method, target, headers, head)
            values = dict(headers)
            if values.get("expect", b"").lower() == b"100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            try:
                if "transfer-encoding" in values:
                    await asyncio.wait_for(read_chunked(reader), 30)
                elif "content-length" in values:
                    await asyncio.wait_for(
                        reader.readexactly(int(values["content-length"])), 30
                    )
            except (ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError,
                    ConnectionError):
                return
            body = json.dumps({
                "path": target.decode("latin-1")[:200],
                "user": values.get("x-auth-user", b"").decode("latin-1"),
            }).encode()
            close = values.get("connection", b"").lower() == b"close" or version == b"HTTP/1.0"
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + b"content-length: " + str(len(body)).encode() + b"\r\n"
                + (b"connection: close\r\n" if close else b"")
                + b"\r\n" + (b"" if method == b"HEAD" else body)
            )
            await writer.drain()
            if close:
                return
    finally:
        writer.close()


async def control_connection(reader, writer, stats):
    try:
        await reader.readuntil(b"\r\n\r\n")
        body = json.dumps(stats.as_json()).encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                     + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def serve_upstream(port, control_port):
    stats = UpstreamStats()
    app = await asyncio.start_server(
        lambda r, w: upstream_connection(r, w, stats), "127.0.0.1", port, limit=1 << 20,
        backlog=1024)
    control = await asyncio.start_server(
        lambda r, w: control_connection(r, w, stats), "127.0.0.1", control_port)
    async with app, control:
        await asyncio.gather(app.serve_forever(), control.serve_forever())


# ------------------------------------------------------------------------------------------
# The stack
# ------------------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def werkzeug_hash(password):
    """A real Werkzeug pbkdf2 hash at 1000 iterations: logins cost next to nothing."""
    salt = "fuzzsalt"
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 1000)
    return f"pbkdf2:sha256:1000${salt}${digest.hex()}"


def http_get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.read()


def wait_until(check, what, proc, log, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: exited with {proc.returncode}\n{tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout}s\n{tail(log)}")
        time.sleep(0.05)


def tail(path, lines=30):
    try:
        text = pathlib.Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


@dataclasses.dataclass
class Stack:
    dir: pathlib.Path
    host: str
    port: int
    admin_port: int
    control_port: int
    log: pathlib.Path
    procs: list

    def stop(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def upstream_stats(self):
        return json.loads(http_get(f"http://127.0.0.1:{self.control_port}/")[1])


def start_stack(binary, workdir):
    binary = pathlib.Path(binary).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        redis_port, up_port, control_port = free_port(), free_port(), free_port()
        port, admin_port = free_port(), free_port()
        redis_log = workdir / "redis.log"
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir), "--logfile", str(redis_log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        procs.append(redis)
        up_log = workdir / "upstream.log"
        with open(up_log, "ab") as out:
            upstream = subprocess.Popen(
                [sys.executable, str(pathlib.Path(__file__).resolve()), "--upstream",
                 str(up_port), str(control_port)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        procs.append(upstream)

        def redis_up():
            with socket.create_connection(("127.0.0.1", redis_port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")

        wait_until(redis_up, "redis-server", redis, redis_log)
        wait_until(lambda: http_get(f"http://127.0.0.1:{control_port}/")[0] == 200,
                   "upstream", upstream, up_log)

        users = workdir / "users.toml"
        users.write_text("".join(
            f'[[users]]\nusername = "{name}"\nid = "{uid}"\n'
            f'password_hash = "{werkzeug_hash(password)}"\nroles = ["user"]\n\n'
            for name, uid, password in USERS))
        config = workdir / "gateway.toml"
        config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
threads = 2
drain_delay = "0s"
grace_period = "1s"
shutdown_timeout = "1s"

[upstream]
servers = ["127.0.0.1:{up_port}"]
connect_timeout = "2s"
read_timeout = "30s"
health_check_interval = "1s"
app_session_cookie = "whalefall_session"

[redis]
url = "redis://127.0.0.1:{redis_port}/0"
key_prefix = "fuzz:"
timeout = "2s"
connect_timeout = "2s"

[session]
cookie_name = "{SESSION_COOKIE}"
secret = "http-fuzz-session-secret-0123456789abcdef-0123"
cookie_secure = false
max_per_user = 20

[login]
path = "/login"
logout_path = "/logout"
api_path = "/api/v1/auth/login"
app_logout_paths = ["{APP_LOGOUT}"]
users_file = "users.toml"
max_failures_per_user = 0
max_failures_per_ip = 0

[access]
public = {json.dumps(PUBLIC)}

[identity]
signing_secret = "http-fuzz-identity-secret-0123456789abcdef-0123"

[admin]
token = "http-fuzz-admin-token-0123456789"

[audit]
sink = "stdout"
""")
        log = workdir / "gateway.log"
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
        env["RUST_LOG"] = os.environ.get("FUZZ_GATEWAY_LOG", "warn")
        env["RUST_BACKTRACE"] = "1"
        with open(log, "ab") as out:
            gateway = subprocess.Popen([str(binary), "run", "--config", str(config)],
                                       cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=subprocess.STDOUT)
        procs.append(gateway)
        wait_until(lambda: http_get(f"http://127.0.0.1:{admin_port}/healthz")[0] == 200,
                   "gateway admin /healthz", gateway, log)
        # Proxying needs the upstream marked healthy: a public path checks it.
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/static/ready")[0] == 200,
                   "gateway -> upstream", gateway, log)
        return Stack(workdir, f"127.0.0.1:{port}", port, admin_port, control_port, log, procs)
    except BaseException:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        raise


# ------------------------------------------------------------------------------------------
# A small raw HTTP client
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Response:
    status: object  # an int, or "closed" / "timeout" / "reset" / "garbage"
    headers: list = dataclasses.field(default_factory=list)
    body: bytes = b""
    after_eof: bool = False  # answered only once the client had closed its write side

    def header(self, name):
        return next((v for n, v in self.headers if n == name), None)


def parse_head(head):
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None, []
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower().decode("latin-1"), value.strip()))
    return int(parts[1]), headers


async def read_response(reader, head_request):
    """One response (after any 1xx), or a string saying why there is none."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            return Response("closed" if not e.partial else "garbage")
        except asyncio.LimitOverrunError:
            return Response("garbage")
        status, headers = parse_head(head[:-4])
        if status is None:
            return Response("garbage")
        if 100 <= status < 200 and status != 101:
            continue
        resp = Response(status, headers)
        if head_request or status in (101, 204, 304):
            return resp
        try:
            length = resp.header("content-length")
            if resp.header("transfer-encoding") is not None:
                resp.body = b"(chunked)"
                await read_chunked(reader)
            elif length is not None:
                resp.body = await reader.readexactly(int(length))
            else:
                resp.body = await reader.read()
        except (ValueError, asyncio.IncompleteReadError):
            resp.body = b"(truncated)"
        return resp


async def exchange(host, port, data, timeout=TOTAL_WAIT):
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=1 << 20), timeout)
    except (OSError, asyncio.TimeoutError):
        return Response("connect_failed")
    head_request = data.startswith(b"HEAD ")
    task = asyncio.ensure_future(read_response(reader, head_request))
    try:
        writer.write(data)
        try:
            # A server that refuses a huge request may stop reading it: stop writing then.
            await asyncio.wait_for(writer.drain(), FIRST_WAIT)
        except asyncio.TimeoutError:
            pass
        done, _ = await asyncio.wait({task}, timeout=FIRST_WAIT)
        if not done:
            # The server may be waiting for bytes this request will never send.
            try:
                writer.write_eof()
            except OSError:
                pass
            done, _ = await asyncio.wait({task}, timeout=timeout - FIRST_WAIT)
            if done:
                task.result().after_eof = True
        if not done:
            return Response("timeout")
        return task.result()
    except OSError:
        # Reset or broken pipe: an answer may still have arrived before it.
        if task.done() and not task.cancelled() and task.exception() is None:
            return task.result()
        return Response("reset")
    finally:
        if not task.done():
            task.cancel()
        writer.close()


def cookie_of(resp, name):
    for n, v in resp.headers:
        if n == "set-cookie":
            pair = v.split(b";", 1)[0]
            key, _, value = pair.partition(b"=")
            if key.strip() == name.encode() and value:
                return value.decode("latin-1")
    return None


async def json_login(host, port, user, password, path="/login"):
    body = json.dumps({"username": user, "password": password}).encode()
    data = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body
    resp = await exchange("127.0.0.1", port, data)
    return resp, cookie_of(resp, SESSION_COOKIE)


@dataclasses.dataclass
class Context:
    """What the seed corpus fills in: the host and the cookies of real sessions and forms."""
    host: str
    keepers: list
    victims: list
    nonce: str
    csrf: str


async def make_context(stack):
    port = stack.port
    logins = await asyncio.gather(*(json_login(stack.host, port, name, password)
                                     for name, password, _ in KEEPERS))
    keepers = [cookie for _, cookie in logins]
    if None in keepers:
        resp = next(resp for resp, cookie in logins if cookie is None)
        raise RuntimeError(f"keeper login failed: {resp.status} {resp.body[:200]!r}")
    logins = await asyncio.gather(*(json_login(stack.host, port, VICTIM, VICTIM_PASSWORD)
                                     for _ in range(VICTIMS)))
    victims = [cookie for _, cookie in logins]
    if None in victims:
        raise RuntimeError("a victim login failed")
    page = await exchange("127.0.0.1", port, (
        f"GET /login HTTP/1.1\r\nHost: {stack.host}\r\nAccept: text/html\r\n"
        f"Connection: close\r\n\r\n").encode())
    nonce = cookie_of(page, NONCE_COOKIE)
    marker = b'name="csrf_token" value="'
    start = page.body.find(marker)
    if nonce is None or start < 0:
        raise RuntimeError(f"login page without a form token: {page.status}")
    start += len(marker)
    csrf = page.body[start:page.body.index(b'"', start)].decode()
    return Context(stack.host, keepers, victims, nonce, csrf)


# ------------------------------------------------------------------------------------------
# Seeds and mutations
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Request:
    seed: str
    method: bytes
    target: bytes
    version: bytes
    headers: list  # [name bytes, value bytes]
    body: bytes = b""
    framed: bool = False  # a mutation set the framing headers itself

    def header_index(self, name):
        name = name.lower()
        return next((i for i, (n, _) in enumerate(self.headers) if n.lower() == name), None)

    def set_header(self, name, value):
        i = self.header_index(name)
        if i is None:
            self.headers.append([name, value])
        else:
            self.headers[i][1] = value

    def drop_header(self, name):
        self.headers = [h for h in self.headers if h[0].lower() != name.lower()]

    def render(self):
        if not self.framed:
            self.drop_header(b"content-length")
            if self.body or self.method in (b"POST", b"PUT", b"PATCH"):
                self.headers.append([b"Content-Length", str(len(self.body)).encode()])
        head = self.method + b" " + self.target + b" " + self.version + b"\r\n"
        head += b"".join(n + b": " + v + b"\r\n" for n, v in self.headers)
        return head + b"\r\n" + self.body


def seed_corpus(ctx, rng):
    host = ctx.host.encode()
    keeper = f"{SESSION_COOKIE}={rng.choice(ctx.keepers)}".encode()
    victim = f"{SESSION_COOKIE}={rng.choice(ctx.victims)}".encode()
    login_json = json.dumps({"username": FUZZ_USER, "password": FUZZ_PASSWORD}).encode()
    form = urllib.parse.urlencode({
        "username": FUZZ_USER, "password": FUZZ_PASSWORD, "csrf_token": ctx.csrf,
        "next": "/reports?tab=1"}).encode()
    html = b"text/html,application/xhtml+xml,*/*;q=0.8"

    def req(name, method, target, headers, body=b"", version=b"HTTP/1.1"):
        return Request(name, method, target, version,
                       [[b"Host", host]] + [[n, v] for n, v in headers], body)

    return [
        req("json_login", b"POST", b"/login",
            [(b"Content-Type", b"application/json"), (b"Accept", b"application/json")],
            login_json),
        req("api_login", b"POST", b"/api/v1/auth/login",
            [(b"Content-Type", b"application/json")], login_json),
        req("form_login", b"POST", b"/login",
            [(b"Content-Type", b"application/x-www-form-urlencoded"), (b"Accept", html),
             (b"Origin", b"http://" + host), (b"Cookie", f"{NONCE_COOKIE}={ctx.nonce}".encode())],
            form),
        req("auth_get", b"GET", b"/app/reports?x=1&y=%2F",
            [(b"Accept", html), (b"Cookie", b"theme=dark; " + keeper + b"; whalefall_session=abc")]),
        req("auth_post", b"POST", b"/app/items",
            [(b"Content-Type", b"application/json"), (b"Cookie", keeper)], b'{"name":"x"}'),
        req("auth_chunked", b"POST", b"/app/upload",
            [(b"Transfer-Encoding", b"chunked"), (b"Cookie", keeper)],
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        req("public_get", b"GET", b"/static/app.css", [(b"Accept", b"text/css")]),
        req("public_head", b"HEAD", b"/favicon.ico", []),
        req("login_page", b"GET", b"/login?next=%2Freports", [(b"Accept", html)]),
        req("unauth_page", b"GET", b"/admin/users", [(b"Accept", html)]),
        req("logout", b"POST", b"/logout",
            [(b"Content-Type", b"application/json"), (b"Accept", b"application/json"),
             (b"Cookie", victim)], b"{}"),
        req("app_logout", b"POST", APP_LOGOUT.encode(),
            [(b"Origin", b"http://" + host), (b"Content-Type", b"application/x-www-form-urlencoded"),
             (b"Cookie", victim)], b"csrf=app-token"),
        req("sessions_page", b"GET", b"/_gateway/sessions", [(b"Accept", html), (b"Cookie", keeper)]),
        req("preflight", b"OPTIONS", b"/api/v1/items",
            [(b"Origin", b"https://console.example"), (b"Access-Control-Request-Method", b"POST")]),
        req("health", b"GET", b"/_gateway/health", []),
        req("websocket", b"GET", b"/ws",
            [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
             (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="), (b"Sec-WebSocket-Version", b"13"),
             (b"Cookie", keeper)]),
        Request("http10", b"GET", b"/static/old", b"HTTP/1.0", [[b"User-Agent", b"old/1.0"]]),
    ]


METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS", b"TRACE",
           b"CONNECT", b"PRI", b"get", b"G ET", b"", b"GET\x00", b"M" * 300, b"\xc3\xa9",
           b"PROPFIND", b"QUERY"]
TARGETS = [
    b"/static/../admin", b"/static/%2e%2e/admin", b"/static/%2E%2e%2fadmin", b"/static/..;/admin",
    b"/static\\..\\admin", b"/static/.%2e/admin", b"/static/..%3b/admin", b"/favicon.icoadmin",
    b"/favicon.ico/admin", b"/staticadmin", b"/static", b"/static/", b"/api/v1/health/../x",
    b"/api/v1/healthz", b"/api/v1/health/deep", b"//evil.example/", b"/\\evil.example",
    b"*", b"http://evil.example/app/x", b"http://127.0.0.1/static/x", b"https://x/login",
    b"/login?next=//evil.example", b"/login?next=%2F%5Cevil.example", b"/login?next=https:%2F%2Fx",
    b"/login?next=/%09/evil", b"/login?next=%0d%0aSet-Cookie:x=1", b"/logout?scope=all",
    b"/_gateway/sessions?x=1", b"/_gateway/health/", b"/LOGIN", b"/login/", b"/login;x",
    b"/%6cogin", b"/app/%00", b"/app/%ff%fe", b"/app/\xc3\xa9", b"/app/\xff", b"/a b",
    b"/app/x#frag", b"/?" + b"a=1&" * 200, b"/" + b"a" * 9000, b"/" + b"x/" * 3000,
    b"", b"/auth/logout", b"/auth/logout/", b"/ws", b"/%2e/", b"/.", b"/..",
]
HEADER_NAMES = [
    b"X-Auth-User", b"x-auth-user", b"X_Auth_User", b"X-AUTH-ROLES", b"x_auth-user-id",
    b"X-Auth-Assertion", b"x-auth-", b"X-Auth", b"X-Authorization", b"Host", b"Content-Length",
    b"Transfer-Encoding", b"Connection", b"Upgrade", b"Expect", b"Cookie", b"Origin", b"Referer",
    b"Accept", b"Content-Type", b"X-Forwarded-For", b"X-Forwarded-Host", b"X-Forwarded-Proto",
    b"Forwarded", b"Authorization", b"Range", b"Accept-Language", b"User-Agent", b"TE",
    b"Keep-Alive", b"Proxy-Connection", b"Access-Control-Request-Method", b"X-Real-IP",
    b"Content-Encoding", b"If-None-Match", b"Trailer", b"X-Empty",
]
HEADER_VALUES = [
    b"admin", b"1", b"0", b"", b" ", b"keeper", b"alice", b"admin,user", b"close", b"keep-alive",
    b"upgrade", b"Upgrade, x-auth-user", b"x-auth-user", b"websocket", b"100-continue",
    b"chunked", b"gzip", b"application/json", b"application/x-www-form-urlencoded",
    b"multipart/form-data; boundary=x", b"text/html", b"*/*", b"https://evil.example", b"null",
    b"http://127.0.0.1", b"1.2.3.4", b"127.0.0.1, 10.0.0.1", b"for=1.2.3.4;proto=https",
    b"zh-CN,zh;q=0.9", b"en;q=x", b"bytes=0-1", b"Bearer x", b"trailers", b"\xc3\xa9\xe4\xbd\xa0",
    b"\xff\xfe", b"a\x00b", b"a\x7fb", b"v1;t=1;sig=00", b"x" * 9000, b"y" * 70000,
]
CL_VALUES = [b"5, 5", b"5,5", b"0, 0", b"+5", b"-1", b"0x10", b" 5", b"5 ", b"", b"1e3",
             b"99999999999999999999", b"18446744073709551616", b"00000000000000000005", b"5.0",
             b"\xef\xbc\x95"]
TE_VALUES = [b"chunked", b"Chunked", b"CHUNKED", b" chunked", b"chunked ", b"chunked, identity",
             b"identity, chunked", b"chunked, chunked", b"gzip, chunked", b"xchunked", b"identity",
             b"chunked;x=1", b"\tchunked", b"chunked\x00", b""]
CHUNK_BODIES = [
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5;ext=1\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
    b"ffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
    b"-1\r\nx\r\n0\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"5\nhello\n0\n\n",
    b"5\r\nhelloXX\r\n0\r\n\r\n",
    b"3\r\nabc",
    b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n",
    b" 5\r\nhello\r\n0\r\n\r\n",
    b"5 \r\nhello\r\n0\r\n\r\n",
]
BODIES = [b"", b"{}", b"[]", b"null", b'{"username":1,"password":[]}', b'{"username":"fuzz"}',
          b'{"username":"fuzz","password":"fuzz-password","next":"//evil.example"}',
          b"username=fuzz&password=fuzz-password&next=%2F%2Fevil", b"\xff\xfe\x00",
          b"a=" + b"b" * 70000, b'{"username":"' + b"u" * 5000 + b'","password":"x"}',
          b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"]


def cookie_value(ctx, rng, main):
    """Cookie header variants around the session cookie value `main`."""
    keeper = main
    flipped = keeper[:40] + ("A" if keeper[40] != "A" else "B") + keeper[41:]
    return rng.choice([
        f"{SESSION_COOKIE}={flipped}", f"{SESSION_COOKIE}=\"{keeper}\"",
        f"{SESSION_COOKIE}={rng.choice(ctx.victims)}", f"{SESSION_COOKIE}={'A' * 86}",
        f"{SESSION_COOKIE}=", f"{SESSION_COOKIE}=junk; {SESSION_COOKIE}={keeper}",
        "; ".join(f"{SESSION_COOKIE}=junk{i}" for i in range(8)) + f"; {SESSION_COOKIE}={keeper}",
        f"{SESSION_COOKIE.upper()}={keeper}", f" {SESSION_COOKIE} = {keeper} ",
        f"{NONCE_COOKIE}={ctx.nonce}", f"remember_token=1|abc; {SESSION_COOKIE}={keeper}",
        "; ".join(f"c{i}=v{i}" for i in range(300)), f"{SESSION_COOKIE}={keeper}{keeper}",
        "=x; ;;", f"{SESSION_COOKIE}={keeper[:-1]}",
    ]).encode()


def mutate_text(rng, data):
    """Insert, delete or replace a few bytes."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        i = rng.randint(0, len(data))
        op = rng.randrange(3)
        special = rng.choice(b"/\\%.;:?#@ \t\x00\r\n\"'=&+-_~\x7f\xff")
        if op == 0 or not data:
            data.insert(i, special)
        elif op == 1:
            del data[min(i, len(data) - 1)]
        else:
            data[min(i, len(data) - 1)] = special
    return bytes(data)


ALL_OPS = [
    "method", "target", "target", "target_bytes", "version", "add_header", "add_header",
    "add_header", "drop_header", "dup_header", "header_case", "header_value", "cookie", "cookie",
    "body", "content_length", "content_length", "transfer_encoding", "transfer_encoding",
    "both_lengths", "spoof", "spoof", "many_headers", "overlong", "host",
]
# Mutations after which a request usually still parses and gets past the framing checks, so
# that it reaches the session check, the gateway's own routes and the app.
MILD_OPS = ["add_header", "header_case", "cookie", "cookie", "spoof", "spoof", "body",
            "dup_header", "header_value"]


def mutate(req, ctx, rng, ops=ALL_OPS):
    """One structured mutation of `req`, in place; returns its name."""
    op = rng.choice(ops)
    if op == "method":
        req.method = rng.choice(METHODS)
    elif op == "target":
        req.target = rng.choice(TARGETS)
    elif op == "target_bytes":
        req.target = mutate_text(rng, req.target)
    elif op == "version":
        req.version = rng.choice([b"HTTP/1.0", b"HTTP/1.1", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9",
                                  b"http/1.1", b"HTTP/1.1 ", b"HTTP/1", b"HTTP/11", b"", b"XYZ"])
    elif op == "add_header":
        req.headers.append([rng.choice(HEADER_NAMES), rng.choice(HEADER_VALUES)])
    elif op == "drop_header" and req.headers:
        req.headers.pop(rng.randrange(len(req.headers)))
    elif op == "dup_header" and req.headers:
        h = rng.choice(req.headers)
        req.headers.insert(rng.randrange(len(req.headers) + 1), list(h))
    elif op == "header_case" and req.headers:
        h = rng.choice(req.headers)
        h[0] = bytes(c ^ 0x20 if rng.random() < 0.5 and chr(c).isalpha() else c for c in h[0])
        if rng.random() < 0.3:
            h[0] = h[0].replace(b"-", b"_")
    elif op == "header_value" and req.headers:
        h = rng.choice(req.headers)
        h[1] = rng.choice(HEADER_VALUES) if rng.random() < 0.6 else mutate_text(rng, h[1])
    elif op == "cookie":
        # A logout carrying the keeper's cookie would end the session every authenticated
        # seed uses: logouts get variants of a victim's cookie instead.
        logout = req.seed in ("logout", "app_logout")
        value = cookie_value(ctx, rng, rng.choice(ctx.victims if logout else ctx.keepers))
        if rng.random() < 0.3:
            req.headers.append([b"Cookie", value])
        else:
            req.set_header(b"Cookie", value)
    elif op == "body":
        req.body = rng.choice(BODIES) if rng.random() < 0.6 else mutate_text(rng, req.body)
    elif op == "content_length":
        req.framed = True
        req.drop_header(b"content-length")
        choice = rng.randrange(4)
        if choice == 0:
            req.headers.append([b"Content-Length", rng.choice(CL_VALUES)])
        elif choice == 1:
            n = str(len(req.body)).encode()
            req.headers += [[b"Content-Length", n], [b"Content-Length", n]]
        elif choice == 2:
            req.headers += [[b"Content-Length", str(len(req.body)).encode()],
                            [b"content-length", str(len(req.body) + 1).encode()]]
        else:
            delta = rng.choice([-3, -1, 1, 7])
            req.headers.append([b"Content-Length", str(max(0, len(req.body) + delta)).encode()])
    elif op == "transfer_encoding":
        req.framed = True
        req.drop_header(b"content-length")
        req.drop_header(b"transfer-encoding")
        req.headers.append([b"Transfer-Encoding", rng.choice(TE_VALUES)])
        req.body = rng.choice(CHUNK_BODIES)
    elif op == "both_lengths":
        req.framed = True
        req.drop_header(b"content-length")
        req.body = rng.choice(CHUNK_BODIES)
        req.headers += [[b"Transfer-Encoding", rng.choice(TE_VALUES)],
                        [b"Content-Length", rng.choice([b"0", b"4", str(len(req.body)).encode()])]]
    elif op == "spoof":
        name = rng.choice([b"X-Auth-User", b"X_Auth_User", b"x-auth-user-id", b"X-AUTH-ROLES",
                           b"x_auth_roles", b"X-Auth-Assertion", b"X-Auth-Anything", b"x-Auth_user"])
        req.headers.append([name, rng.choice([b"admin", b"keeper", b"0", b"admin,user"])])
    elif op == "many_headers":
        req.headers += [[b"X-Filler-" + str(i).encode(), b"v"] for i in range(rng.choice([50, 150, 400]))]
    elif op == "overlong":
        where = rng.randrange(3)
        size = rng.choice([8 * 1024, 33 * 1024, 70 * 1024, 200 * 1024])
        if where == 0:
            req.target = b"/app/" + b"a" * size
        elif where == 1:
            req.headers.append([b"X-Long", b"b" * size])
        else:
            req.headers.append([b"Cookie", b"c=" + b"d" * size])
    elif op == "host":
        choice = rng.randrange(4)
        if choice == 0:
            req.drop_header(b"host")
        elif choice == 1:
            req.headers.append([b"Host", b"evil.example"])
        elif choice == 2:
            req.set_header(b"Host", rng.choice([b"", b"evil.example", b"a b", b"127.0.0.1:1"]))
        else:
            req.set_header(b"Host", ctx.host.encode() + b"\x00")
    return op


def mutate_raw(data, rng):
    """A mutation of the rendered bytes; returns (data, name)."""
    head_end = data.find(b"\r\n\r\n")
    op = rng.choice(["bare_lf", "one_lf", "cr_only", "flip", "obs_fold", "no_colon",
                     "space_colon", "nul", "truncate", "pipeline", "leading_crlf"])
    if op == "bare_lf":
        return data.replace(b"\r\n", b"\n"), op
    if op == "one_lf" and head_end > 0:
        i = data.find(b"\r\n", rng.randint(0, head_end))
        return (data[:i] + b"\n" + data[i + 2:] if i >= 0 else data), op
    if op == "cr_only" and head_end > 0:
        i = data.find(b"\r\n", rng.randint(0, head_end))
        return (data[:i] + b"\r" + data[i + 2:] if i >= 0 else data), op
    if op == "flip" and data:
        i = rng.randrange(max(1, head_end if head_end > 0 else len(data)))
        return data[:i] + bytes([rng.randrange(256)]) + data[i + 1:], op
    if op == "obs_fold" and head_end > 0:
        i = data.find(b"\r\n")
        return data[:i + 2] + b"X-Folded: a\r\n b\r\n" + data[i + 2:], op
    if op == "no_colon" and head_end > 0:
        i = data.find(b"\r\n")
        return data[:i + 2] + b"NoColonHere\r\n" + data[i + 2:], op
    if op == "space_colon" and head_end > 0:
        i = data.find(b"\r\n")
        return data[:i + 2] + b"X-Auth-User : admin\r\n" + data[i + 2:], op
    if op == "nul" and data:
        i = rng.randrange(len(data))
        return data[:i] + b"\x00" + data[i:], op
    if op == "truncate" and data:
        return data[:rng.randrange(len(data))], op
    if op == "pipeline":
        extra = b"GET /static/pipelined HTTP/1.1\r\nHost: x\r\n\r\n"
        return data + extra, op
    if op == "leading_crlf":
        return b"\r\n" + data, op
    return data, op


def build(ctx, seed, index):
    """Request `index` of the run with `seed`: its bytes, seed name and mutation names."""
    rng = random.Random(f"{seed}:{index}")
    req = rng.choice(seed_corpus(ctx, rng))
    ops = []
    if rng.random() < 0.04:
        return req.render(), req.seed, ["none"]
    mild = rng.random() < 0.35
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4])):
        ops.append(mutate(req, ctx, rng, MILD_OPS if mild else ALL_OPS))
    data = req.render()
    if not mild and rng.random() < 0.25:
        data, op = mutate_raw(data, rng)
        ops.append("raw:" + op)
    return data, req.seed, ops


# ------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    seed: int
    requests: int
    seconds: float = 0.0
    statuses: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    by_seed: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(collections.Counter))
    failures: list = dataclasses.field(default_factory=list)
    failure_count: int = 0
    upstream: dict = dataclasses.field(default_factory=dict)
    panics: list = dataclasses.field(default_factory=list)
    checks: list = dataclasses.field(default_factory=list)
    keeper_relogins: int = 0
    victim_logins: int = 0
    after_eof: int = 0
    latencies: list = dataclasses.field(default_factory=list)

    @property
    def passed(self):
        return (self.failure_count == 0 and not self.panics
                and not self.upstream.get("violations")
                and all(ok for _, ok in self.checks))

    def report(self):
        lines = [
            f"http_fuzz: seed={self.seed} requests={self.requests} "
            f"seconds={self.seconds:.1f} rate={self.requests / max(self.seconds, 1e-9):.0f}/s",
            "status histogram:",
        ]
        for status, n in sorted(self.statuses.items(), key=lambda kv: str(kv[0])):
            lines.append(f"  {status!s:>14}  {n:>8}")
        lines.append("by seed request (status: count):")
        for name in sorted(self.by_seed):
            counts = ", ".join(f"{s}: {n}" for s, n in
                               sorted(self.by_seed[name].items(), key=lambda kv: str(kv[0])))
            lines.append(f"  {name:<14} {counts}")
        up = self.upstream
        lines.append(f"upstream: {up.get('requests', 0)} requests reached the app "
                     f"({up.get('authenticated', 0)} with an identity), "
                     f"violations: {up.get('violations') or 'none'}")
        for example in up.get("examples", [])[:5]:
            lines.append(f"  {example['kind']}: {example['head'][:300]!r}")
        if self.latencies:
            ordered = sorted(self.latencies)
            pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000
            lines.append(f"latency ms: p50 {pick(0.5):.1f}, p99 {pick(0.99):.1f}, "
                         f"max {ordered[-1] * 1000:.0f}; answered only after the client closed "
                         f"its write side (incomplete requests): {self.after_eof}")
        lines.append(f"keeper sessions signed in again: {self.keeper_relogins}, "
                     f"fresh victim sessions: {self.victim_logins}")
        lines.append(f"gateway log lines with 'panic': {len(self.panics)}")
        lines += [f"  {line}" for line in self.panics[:10]]
        for name, ok in self.checks:
            lines.append(f"after the run: {name}: {'ok' if ok else 'FAILED'}")
        lines.append(f"failures: {self.failure_count}")
        for f in self.failures[:20]:
            lines.append(f"  #{f['index']} {f['why']} (seed request {f['seed']}, {f['ops']}): "
                         f"show with: python3 benches/http_fuzz.py --seed {self.seed} "
                         f"--show {f['index']}")
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def judge(resp):
    """Why a response is a failure, or None."""
    status = resp.status
    if isinstance(status, int):
        if status >= 500:
            return f"status {status}"
        if 300 <= status < 400:
            location = resp.header("location")
            if location is not None:
                text = location.decode("latin-1")
                if not text.startswith("/") or text.startswith("//") or text.startswith("/\\"):
                    return f"redirect off the site: {text!r}"
                joined = urllib.parse.urlsplit(urllib.parse.urljoin("http://gw.example/", text))
                if joined.netloc != "gw.example":
                    return f"redirect off the site: {text!r}"
    return None


async def refresh_sessions(stack, ctx, result, round_no):
    """Mutated requests end sessions (a POST to /logout with a keeper's cookie, say): sign the
    keepers in again and replace two victims, so that the seeds keep testing live sessions."""
    for i, (name, password, _) in enumerate(KEEPERS):
        data = (f"GET /app/keeper-check HTTP/1.1\r\nHost: {ctx.host}\r\n"
                f"Cookie: {SESSION_COOKIE}={ctx.keepers[i]}\r\nConnection: close\r\n\r\n"
                ).encode()
        resp = await exchange("127.0.0.1", stack.port, data)
        if resp.status == 401:
            _, cookie = await json_login(stack.host, stack.port, name, password)
            if cookie:
                ctx.keepers[i] = cookie
                result.keeper_relogins += 1
    for k in range(2):
        _, cookie = await json_login(stack.host, stack.port, VICTIM, VICTIM_PASSWORD)
        if cookie:
            ctx.victims[(2 * round_no + k) % len(ctx.victims)] = cookie
            result.victim_logins += 1


async def campaign(stack, seed, requests, concurrency, progress):
    ctx = await make_context(stack)
    result = Result(seed, requests)
    next_index = 0
    started = time.monotonic()

    async def worker():
        nonlocal next_index
        while next_index < requests:
            index = next_index
            next_index += 1
            if index % REFRESH_EVERY == REFRESH_EVERY - 1:
                await refresh_sessions(stack, ctx, result, index // REFRESH_EVERY)
            data, seed_name, ops = build(ctx, seed, index)
            sent = time.monotonic()
            resp = await exchange("127.0.0.1", stack.port, data)
            result.latencies.append(time.monotonic() - sent)
            result.after_eof += resp.after_eof
            result.statuses[resp.status] += 1
            result.by_seed[seed_name][resp.status] += 1
            why = judge(resp)
            if why:
                result.failure_count += 1
                if len(result.failures) < 200:
                    result.failures.append({"index": index, "why": why, "seed": seed_name,
                                            "ops": ",".join(ops)})
            if progress and index % 10000 == 9999:
                rate = (index + 1) / (time.monotonic() - started)
                print(f"http_fuzz: {index + 1}/{requests} sent, {rate:.0f}/s, "
                      f"{result.failure_count} failures", file=sys.stderr, flush=True)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.monotonic() - started
    return result, ctx


async def after_checks(stack, result):
    """The gateway must be healthy and still do its job."""
    gateway = stack.procs[-1]
    result.checks.append(("gateway process still running", gateway.poll() is None))
    try:
        healthy = http_get(f"http://127.0.0.1:{stack.admin_port}/healthz")[0] == 200
    except OSError:
        healthy = False
    result.checks.append(("admin /healthz answers 200", healthy))
    name, password, _ = KEEPERS[0]
    resp, cookie = await json_login(stack.host, stack.port, name, password)
    result.checks.append(("a real login answers 200 with a session cookie",
                          resp.status == 200 and cookie is not None))
    if cookie:
        data = (f"GET /app/after-fuzz HTTP/1.1\r\nHost: {stack.host}\r\n"
                f"Cookie: {SESSION_COOKIE}={cookie}\r\nConnection: close\r\n\r\n").encode()
        resp = await exchange("127.0.0.1", stack.port, data)
        try:
            user = json.loads(resp.body).get("user")
        except ValueError:
            user = None
        result.checks.append(("an authenticated request reaches the app as that user",
                              resp.status == 200 and user == name))


def scan_log(path):
    lines = []
    with open(path, "rb") as f:
        for line in f:
            if b"panic" in line.lower():
                lines.append(line.decode("utf-8", "replace").rstrip())
    return lines


def run(binary, requests=100_000, seed=DEFAULT_SEED, concurrency=32, workdir=None,
        progress=False):
    """Starts a stack in `workdir` (a new temporary directory if None), runs the campaign,
    checks the gateway afterwards, stops everything and returns the Result."""
    own_dir = workdir is None
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="gateway-http-fuzz.")) if own_dir else workdir
    stack = start_stack(binary, workdir)
    passed = False
    try:
        async def main():
            result, _ = await campaign(stack, seed, requests, concurrency, progress)
            await after_checks(stack, result)
            return result

        result = asyncio.run(main())
        result.upstream = stack.upstream_stats()
        stack.stop()
        # Only now: a panic while shutting down counts too.
        result.panics = scan_log(stack.log)
        passed = result.passed
        return result
    finally:
        stack.stop()
        if own_dir:
            if os.environ.get("KEEP_TMP") != "1" and passed:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                print(f"http_fuzz: logs and config kept in {workdir}", file=sys.stderr)


def show(seed, index):
    """The bytes of request `index`, with placeholder cookies (a replay fills in real ones)."""
    ctx = Context("127.0.0.1:8080", ["K" * 86] * len(KEEPERS), ["V" * 86] * VICTIMS, "NONCE",
                  "CSRF")
    data, seed_name, ops = build(ctx, seed, index)
    print(f"# request {index} of seed {seed}: from {seed_name}, mutations {ops}")
    print(repr(data))


async def replay(stack, seed, index):
    ctx = await make_context(stack)
    data, seed_name, ops = build(ctx, seed, index)
    print(f"# request {index} of seed {seed}: from {seed_name}, mutations {ops}")
    print(repr(data[:2000]))
    resp = await exchange("127.0.0.1", stack.port, data)
    print(f"# response: {resp.status}")
    for n, v in resp.headers:
        print(f"{n}: {v.decode('latin-1')}")
    print(repr(resp.body[:2000]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=int(os.environ.get("FUZZ_HTTP_REQUESTS",
                                                                           100_000)))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_HTTP_SEED",
                                                                       DEFAULT_SEED)))
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--gateway-bin", default=str(ROOT / "target" / "release" / "gateway"))
    parser.add_argument("--show", type=int, metavar="I", help="print request I and exit")
    parser.add_argument("--replay", type=int, metavar="I", help="start a stack, send request I")
    parser.add_argument("--upstream", nargs=2, type=int, metavar=("PORT", "CONTROL_PORT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        asyncio.run(serve_upstream(*args.upstream))
        return 0
    if args.show is not None:
        show(args.seed, args.show)
        return 0
    binary = pathlib.Path(args.gateway_bin).resolve()
    if not binary.is_file():
        print(f"http_fuzz: no gateway binary at {binary} (cargo build --release --bin gateway)",
              file=sys.stderr)
        return 2
    if args.replay is not None:
        workdir = pathlib.Path(tempfile.mkdtemp(prefix="gateway-http-fuzz-replay."))
        stack = start_stack(binary, workdir)
        try:
            asyncio.run(replay(stack, args.seed, args.replay))
        finally:
            stack.stop()
            print(f"# gateway log: {stack.log}")
        return 0
    print(f"http_fuzz: seed={args.seed} requests={args.requests} "
          f"concurrency={args.concurrency} gateway={binary}", flush=True)
    try:
        result = run(binary, args.requests, args.seed, args.concurrency, progress=True)
    except RuntimeError as e:
        print(f"http_fuzz: could not start the stack: {e}", file=sys.stderr)
        return 2
    print(result.report(), flush=True)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
