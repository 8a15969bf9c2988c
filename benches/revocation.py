#!/usr/bin/env python3
"""Revocation latency between two gateway instances that share Redis (standard library only).

    python3 benches/revocation.py --x http://127.0.0.1:PORT_X --y http://127.0.0.1:PORT_Y \
        --y-admin http://127.0.0.1:ADMIN_Y --user bench --password ... [--rounds 20]

Each round:
  1. logs in on gateway X (JSON POST /login) and keeps the session cookie;
  2. sends GET <path> with that cookie to gateway Y until Y's admin /metrics shows
     gateway_session_cache_total{result="hit"} going up, i.e. Y now answers it from its
     validation cache (and checks that Y answered 200);
  3. logs out on X (JSON POST /logout, body {}, with the cookie);
  4. from the moment the logout's response has been read, probes Y with the cookie in a
     tight loop (one keep-alive connection) until Y answers 401.
The latency of a round is the time from the end of step 3 to the 401's arrival.

Prints the per-round samples on stderr and, on stdout, one line:
    <rounds> <worst_ms> <median_ms> <best_ms> <probes_answered_200_after_logout>
Exits 1 if a round fails (e.g. Y still accepts the session after --timeout seconds).
"""

import argparse
import http.client
import json
import re
import statistics
import sys
import time
import urllib.parse

HIT_LINE = re.compile(r'^gateway_session_cache_total\{result="hit"\}\s+(\S+)\s*$', re.M)


class Fail(Exception):
    pass


class Client:
    """One keep-alive HTTP/1.1 connection to a base URL, reopened if the server closes it."""

    def __init__(self, base, timeout):
        u = urllib.parse.urlsplit(base)
        self.host, self.port, self.timeout = u.hostname, u.port or 80, timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self.close()
                return resp, data
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def login(x, user, password, cookie_name):
    body = json.dumps({"username": user, "password": password})
    resp, data = x.request("POST", "/login", body, {"Content-Type": "application/json"})
    if resp.status != 200:
        raise Fail(f"login on X returned {resp.status}: {data[:200]!r}")
    for header in resp.headers.get_all("Set-Cookie") or []:
        m = re.match(rf"\s*{re.escape(cookie_name)}=([^;]*)", header)
        if m and m.group(1):
            return f"{cookie_name}={m.group(1)}"
    raise Fail(f"no {cookie_name} cookie in the login response")


def cache_hits(admin):
    resp, data = admin.request("GET", "/metrics")
    if resp.status != 200:
        raise Fail(f"Y's admin /metrics returned {resp.status}")
    m = HIT_LINE.search(data.decode("utf-8", "replace"))
    if not m:
        raise Fail('no gateway_session_cache_total{result="hit"} line in Y\'s /metrics')
    return float(m.group(1))


def wait_cached(y, admin, path, cookie, timeout):
    """Requests on Y until Y's cache-hit counter goes up (Y answered from its cache)."""
    before = cache_hits(admin)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp, _ = y.request("GET", path, headers={"Cookie": cookie})
        if resp.status != 200:
            raise Fail(f"Y answered {resp.status} to a live session (expected 200)")
        if cache_hits(admin) > before:
            return
        time.sleep(0.005)
    raise Fail(f"Y's cache-hit counter did not go up within {timeout}s (cache not live?)")


def logout(x, cookie):
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "Cookie": cookie,
    }
    resp, data = x.request("POST", "/logout", "{}", headers)
    if resp.status != 200:
        raise Fail(f"logout on X returned {resp.status}: {data[:200]!r}")
    if json.loads(data).get("ended") != 1:
        raise Fail(f"logout on X ended no session: {data[:200]!r}")


def until_refused(y, path, cookie, timeout):
    """Probes Y from now until it answers 401. Returns (ms elapsed, probes answered 200)."""
    start = time.monotonic_ns()
    deadline = start + int(timeout * 1e9)
    accepted = 0
    while True:
        resp, _ = y.request("GET", path, headers={"Cookie": cookie})
        now = time.monotonic_ns()
        if resp.status == 401:
            return (now - start) / 1e6, accepted
        if resp.status != 200:
            raise Fail(f"Y answered {resp.status} while the session was being revoked")
        accepted += 1
        if now > deadline:
            raise Fail(f"Y still accepted the revoked session after {timeout}s ({accepted} probes)")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--x", required=True, help="base URL of gateway X (login + logout)")
    p.add_argument("--y", required=True, help="base URL of gateway Y (probed)")
    p.add_argument("--y-admin", required=True, help="base URL of Y's admin listener")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--cookie-name", default="gateway_session")
    p.add_argument("--path", default="/bench", help="authenticated path probed on Y")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per wait")
    a = p.parse_args()

    x, y, admin = Client(a.x, a.timeout), Client(a.y, a.timeout), Client(a.y_admin, a.timeout)
    samples, accepted_total = [], 0
    try:
        for i in range(1, a.rounds + 1):
            cookie = login(x, a.user, a.password, a.cookie_name)
            wait_cached(y, admin, a.path, cookie, a.timeout)
            logout(x, cookie)
            ms, accepted = until_refused(y, a.path, cookie, a.timeout)
            samples.append(ms)
            accepted_total += accepted
            print(f"round {i:2d}: {ms:8.3f} ms ({accepted} probes answered 200 first)", file=sys.stderr)
    except Fail as e:
        print(f"revocation.py: round {len(samples) + 1}: {e}", file=sys.stderr)
        return 1
    print(f"{len(samples)} {max(samples):.3f} {statistics.median(samples):.3f} "
          f"{min(samples):.3f} {accepted_total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
