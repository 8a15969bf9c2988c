#!/usr/bin/env python3
"""Login storm (standard library only), for benches/load.sh.

--clients threads each log in with the JSON login (POST LOGIN_PATH, {"username", "password"})
back to back over one keep-alive connection, for --duration seconds: every attempt is a real
password check (argon2 in the bench). Every answer must be 200; the session cookies are not
kept (each login is a new session in Redis).

Prints one line on stdout: "LOGINS FAILED LOGINS_PER_S P50_MS P99_MS"; the first failure, if
any, on stderr. Exits 1 if any login failed.
"""
import argparse
import http.client
import json
import sys
import threading
import time


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def client(host, port, path, body, deadline, out, errors):
    conn = None
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    while time.monotonic() < deadline:
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=30)
            t0 = time.monotonic()
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            elapsed = time.monotonic() - t0
            if resp.status != 200:
                errors.append(f"HTTP {resp.status}")
            else:
                out.append(elapsed)
            if resp.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            errors.append(f"{type(e).__name__}: {e}")
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, help="HOST:PORT of the gateway")
    ap.add_argument("--path", default="/login")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, required=True, help="seconds")
    args = ap.parse_args()

    host, _, port = args.target.rpartition(":")
    body = json.dumps({"username": args.user, "password": args.password})
    deadline = time.monotonic() + args.duration
    latencies, errors = [], []
    threads = [
        threading.Thread(target=client, args=(host, int(port), args.path, body, deadline, latencies, errors))
        for _ in range(args.clients)
    ]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    latencies.sort()
    print(len(latencies), len(errors), f"{len(latencies) / wall:.1f}",
          f"{percentile(latencies, 0.50) * 1000:.1f}", f"{percentile(latencies, 0.99) * 1000:.1f}")
    if errors:
        print(f"login_storm.py: {len(errors)} failed logins, first: {errors[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
