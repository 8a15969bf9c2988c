#!/usr/bin/env bash
# Redis memory per session, measured: a private redis-server, a gateway in front of nothing
# (no request is proxied), N logins of one user, then MEMORY USAGE of each kind of key and
# used_memory before and after.
#
#   bash benches/redis_memory.sh            # N=500 sessions
#   SESSIONS=2000 bash benches/redis_memory.sh
#
# Needs: cargo, redis-server, redis-cli, curl, python3. Everything runs on free loopback ports
# and is stopped on exit.
set -euo pipefail

SESSIONS="${SESSIONS:-500}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/gateway-mem.XXXXXX")"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1 200); do if eval "$1" >/dev/null 2>&1; then return 0; fi; sleep 0.05; done; echo "timed out: $1" >&2; exit 1; }

(cd "$ROOT" && cargo build --release --bin gateway >&2)
GATEWAY="$ROOT/target/release/gateway"

REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" \
    >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
wait_for "redis-cli -p $REDIS_PORT ping | grep -q PONG"
R() { redis-cli -p "$REDIS_PORT" "$@"; }

HASH="$(printf %s 'mem-password' | "$GATEWAY" hash-password)"
cat >"$TMP/users.toml" <<EOF
[[users]]
username = "mem"
id = "4242"
password_hash = "$HASH"
roles = ["user"]
EOF
LISTEN="$(free_port)"
ADMIN="$(free_port)"
cat >"$TMP/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$LISTEN"
admin_listen = "127.0.0.1:$ADMIN"
[upstream]
servers = ["127.0.0.1:9"]
[redis]
url = "redis://127.0.0.1:$REDIS_PORT/0"
key_prefix = "mem:"
[session]
secret = "$(head -c 32 /dev/urandom | base64)"
cookie_secure = false
[login]
users_file = "users.toml"
max_failures_per_ip = 0
[audit]
sink = "off"
EOF
RUST_LOG=warn "$GATEWAY" run --config "$TMP/gateway.toml" >"$TMP/gateway.log" 2>&1 &
PIDS+=($!)
wait_for "curl -fsS http://127.0.0.1:$ADMIN/readyz" || { cat "$TMP/gateway.log" >&2; exit 1; }

before="$(R info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')"
ua="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
for _ in $(seq 1 "$SESSIONS"); do
    curl -fsS -o /dev/null -A "$ua" -H 'content-type: application/json' -H 'accept: application/json' \
        -d '{"username":"mem","password":"mem-password"}' "http://127.0.0.1:$LISTEN/login"
done
after="$(R info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')"

one_session="mem:session:$(R zrange mem:sessions 0 0)"
session_bytes="$(R memory usage "$one_session" samples 0)"
user_index_bytes="$(R memory usage 'mem:user:4242:sessions' samples 0)"
all_index_bytes="$(R memory usage 'mem:sessions' samples 0)"
audit_bytes="$(R memory usage 'mem:audit' samples 0 || echo 0)"
count="$(R zcard 'mem:sessions')"
python3 - "$SESSIONS" "$count" "$session_bytes" "$user_index_bytes" "$all_index_bytes" \
    "$audit_bytes" "$before" "$after" <<'EOF'
import sys
n, count, session, user_index, all_index, audit, before, after = map(int, sys.argv[1:])
print(f"# Redis memory per session ({n} logins, {count} live sessions of one user)\n")
print("| what | bytes | per session |")
print("|---|---:|---:|")
print(f"| one `session:{{handle}}` record (MEMORY USAGE) | {session} | {session} |")
print(f"| `user:{{id}}:sessions` index | {user_index} | {user_index / count:.0f} |")
print(f"| `sessions` index (everyone) | {all_index} | {all_index / count:.0f} |")
print(f"| `audit` stream (login_success events) | {audit} | {audit / count:.0f} |")
print(f"| used_memory after - before | {after - before} | {(after - before) / count:.0f} |")
EOF
