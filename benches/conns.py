#!/usr/bin/env python3
"""Memory per keep-alive connection (standard library only), for benches/load.sh.

Opens --count HTTP/1.1 keep-alive connections to one server, sends one GET on each, reads the
whole response (it must be a 2xx with a Content-Length body), and keeps every connection open
and idle. Reads the resident set size (VmRSS, /proc/PID/status) of --pids (summed) right before
opening and again once all are open and the server has had --settle seconds, checks that the
server closed none of them, then closes them all.

Prints one line on stdout: "RSS_BEFORE_KIB RSS_OPEN_KIB CONNECTIONS"; progress and errors on
stderr. Exits non-zero if a connection fails, gets a non-2xx answer, or is closed by the server.
Needs `ulimit -n` above --count.
"""
import argparse
import errno
import selectors
import socket
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
    return total


class Conn:
    __slots__ = ("sock", "state", "out", "buf", "need")

    def __init__(self, sock, request):
        self.sock = sock
        self.state = "connect"
        self.out = request
        self.buf = b""
        self.need = None  # total bytes of headers + body, once the headers are in


def response_done(conn):
    """True when the whole response is in; raises on a non-2xx status or no Content-Length."""
    if conn.need is None:
        end = conn.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = conn.buf[:end].decode("latin-1").split("\r\n")
        status = head[0].split(" ")
        if len(status) < 2 or not status[1].startswith("2"):
            raise RuntimeError(f"non-2xx answer: {head[0]!r}")
        length = None
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length is None:
            raise RuntimeError(f"answer without Content-Length: {head!r}")
        conn.need = end + 4 + length
    return len(conn.buf) >= conn.need


def open_all(host, port, request, count, in_flight, timeout):
    sel = selectors.DefaultSelector()
    done = []
    pending = 0
    started = 0
    deadline = time.monotonic() + timeout
    while len(done) < count:
        while started < count and pending < in_flight:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS):
                raise RuntimeError(f"connect #{started}: {errno.errorcode.get(err, err)}")
            c = Conn(s, request)
            sel.register(s, selectors.EVENT_WRITE, c)
            started += 1
            pending += 1
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(done)} of {count} connections ready after {timeout}s")
        for key, _ in sel.select(timeout=1.0):
            c = key.data
            if c.state == "connect":
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise RuntimeError(f"connect: {errno.errorcode.get(err, err)}")
                c.state = "send"
            if c.state == "send":
                n = c.sock.send(c.out)
                c.out = c.out[n:]
                if not c.out:
                    c.state = "recv"
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            data = c.sock.recv(65536)
            if not data:
                raise RuntimeError("server closed a connection before answering")
            c.buf += data
            if response_done(c):
                sel.unregister(c.sock)
                c.buf = b""
                done.append(c.sock)
                pending -= 1
                if len(done) % 2000 == 0:
                    print(f"  {len(done)} connections open", file=sys.stderr)
    sel.close()
    return done


def closed_by_server(socks):
    """Connections the server has closed (readable with EOF) or written to since."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed = sum(1 for _ in sel.select(timeout=0))
    sel.close()
    return closed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, help="HOST:PORT")
    ap.add_argument("--path", default="/")
    ap.add_argument("--header", action="append", default=[], help="extra request header, repeatable")
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--pids", required=True, help="space-separated PIDs whose RSS is summed")
    ap.add_argument("--in-flight", type=int, default=200, help="connections being set up at once")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds between the last answer and the RSS reading")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()

    host, _, port = args.target.rpartition(":")
    pids = [int(p) for p in args.pids.split()]
    lines = [f"GET {args.path} HTTP/1.1", f"Host: {args.target}", *args.header, "", ""]
    request = "\r\n".join(lines).encode("latin-1")

    before = rss_kib(pids)
    t0 = time.monotonic()
    socks = open_all(host, int(port), request, args.count, args.in_flight, args.timeout)
    print(f"  {len(socks)} keep-alive connections open in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    time.sleep(args.settle)
    after = rss_kib(pids)
    closed = closed_by_server(socks)
    for s in socks:
        s.close()
    if closed:
        print(f"the server closed or wrote to {closed} idle connections", file=sys.stderr)
        return 1
    print(before, after, len(socks))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, RuntimeError, ValueError) as e:
        print(f"conns.py: {e}", file=sys.stderr)
        sys.exit(1)
