#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: the steady figure on a shared box
# (the same binary and inputs give the same count whatever else the machine is doing).
#
#   bash benches/callgrind.sh
#
# Rows, each wrk -t1 -c8 for DURATION against one process under callgrind, with one thread:
#   nginx           nginx plain proxy (one worker), in front of U
#   bare pingora    benches/bare_proxy.rs, 1 thread
#   gateway public  a path in [access] public
#   gateway session a valid session cookie, validation cache on
# U is a second nginx answering `return 200 "ok\n"`, not measured. The counters are zeroed
# after a warm-up and dumped after the run, so start-up is not counted; user-space
# instructions only (the kernel's share is the same for all rows: 2 reads + 2 writes).
#
# Optional environment: DURATION=20s (per row, under callgrind's ~50x slowdown), KEEP_TMP=1.
# Needs: valgrind, nginx, wrk, redis-server, curl, cargo.
set -euo pipefail

DURATION="${DURATION:-20s}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TMP="$(mktemp -d /tmp/callgrind-bench.XXXXXX)"
PIDS=()
log() { printf '[callgrind.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ "${KEEP_TMP:-}" == 1 ]] && log "kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT

for tool in valgrind callgrind_control nginx wrk redis-server curl cargo; do
    command -v "$tool" >/dev/null || die "missing $tool"
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # URL SECONDS
    for _ in $(seq 1 $(($2 * 10))); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$1 did not answer in $2 s"
}

(cd "$ROOT" && cargo build -q --release --bin gateway --example bare_proxy)
TARGET="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
GATEWAY="$TARGET/release/gateway"
BARE="$TARGET/release/examples/bare_proxy"

U_PORT=$(free_port); N_PORT=$(free_port); B_PORT=$(free_port); G_PORT=$(free_port)
A_PORT=$(free_port); R_PORT=$(free_port)

nginx_conf() { # NAME SERVER_BLOCK
    mkdir -p "$TMP/nginx-$1"
    cat >"$TMP/nginx-$1.conf" <<EOF
worker_processes 1;
pid $TMP/nginx-$1.pid;
error_log $TMP/nginx-$1-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx-$1/b; proxy_temp_path $TMP/nginx-$1/p;
    fastcgi_temp_path $TMP/nginx-$1/f; uwsgi_temp_path $TMP/nginx-$1/u; scgi_temp_path $TMP/nginx-$1/s;
    keepalive_requests 10000000;
    $2
}
EOF
}
nginx_conf u "server { listen 127.0.0.1:$U_PORT; location / { return 200 \"ok\\n\"; } }"
nginx_conf n "upstream u { server 127.0.0.1:$U_PORT; keepalive 64; }
    server { listen 127.0.0.1:$N_PORT; location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
# One process, no master: stopping its PID stops it all (a master stopped from under a
# `timeout` or a signalled shell could leave its worker behind, holding the port).
nginx -p "$TMP" -c "$TMP/nginx-u.conf" -g 'daemon off; master_process off;' 2>/dev/null & PIDS+=($!)
wait_http "http://127.0.0.1:$U_PORT/" 10
redis-server --port "$R_PORT" --save '' --appendonly no >/dev/null & PIDS+=($!)

HASH="$(printf %s bench-password | "$GATEWAY" hash-password)"
cat >"$TMP/users.toml" <<EOF
[[users]]
username = "bench"
id = "1"
password_hash = '$HASH'
roles = ["user"]
EOF
cat >"$TMP/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$G_PORT"
admin_listen = "127.0.0.1:$A_PORT"
threads = 1
drain_delay = "0s"
grace_period = "1s"
shutdown_timeout = "1s"
[upstream]
servers = ["127.0.0.1:$U_PORT"]
[redis]
url = "redis://127.0.0.1:$R_PORT/0"
timeout = "5s"
[session]
secret = "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
cookie_secure = false
idle_timeout = "8h"
[login]
users_file = "users.toml"
[access]
public = ["/public"]
[log]
level = "warn"
EOF

# measure NAME PID URL [COOKIE]: zero the counters after a warm-up, run wrk, dump, divide.
ROWS=()
measure() {
    local name="$1" pid="$2" url="$3" header=()
    [[ -n "${4:-}" ]] && header=(-H "Cookie: gateway_session=$4")
    wrk -t1 -c8 -d3s "${header[@]}" "$url" >/dev/null
    callgrind_control -z "$pid" >/dev/null
    local out requests
    out="$(wrk -t1 -c8 -d"$DURATION" "${header[@]}" "$url")"
    grep -q "Non-2xx" <<<"$out" && die "$name: non-2xx answers: $out"
    requests="$(awk '/requests in/ {print $1}' <<<"$out")"
    # An idle process takes the dump request only when it next runs: wake it with one request.
    local before file ir
    before="$(ls "$TMP" | grep -c "^callgrind.out.$pid." || true)"
    callgrind_control -d "$pid" >/dev/null &
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "${header[@]}" "$url" || true
        (( $(ls "$TMP" | grep -c "^callgrind.out.$pid." || true) > before )) && break
        sleep 0.2
    done
    wait $! 2>/dev/null || true
    file="$(ls -t "$TMP"/callgrind.out."$pid".* | head -n 1)"
    sleep 0.5 # the dump is written out in full before the next request is taken
    ir="$(awk '/^(summary|totals):/ {print $2; exit}' "$file")"
    [[ -n "$ir" ]] || die "$name: no instruction count in $file"
    ROWS+=("$(printf '| %s | %s | %s |' "$name" "$requests" "$((ir / requests))")")
    log "$name: $requests requests, $((ir / requests)) instructions each"
}
under_callgrind() { exec valgrind --tool=callgrind --callgrind-out-file="$TMP/callgrind.out.%p" "$@"; }

nginx_conf_args=(-p "$TMP" -c "$TMP/nginx-n.conf" -g 'daemon off; master_process off;')
under_callgrind nginx "${nginx_conf_args[@]}" 2>"$TMP/nginx-n.vg" & PIDS+=($!)
NPID=$!
wait_http "http://127.0.0.1:$N_PORT/" 60
measure "nginx plain proxy" "$NPID" "http://127.0.0.1:$N_PORT/bench"

under_callgrind "$BARE" "127.0.0.1:$B_PORT" "127.0.0.1:$U_PORT" 1 2>"$TMP/bare.vg" & PIDS+=($!)
BPID=$!
wait_http "http://127.0.0.1:$B_PORT/" 60
measure "bare pingora" "$BPID" "http://127.0.0.1:$B_PORT/bench"

under_callgrind "$GATEWAY" run --config "$TMP/gateway.toml" 2>"$TMP/gateway.vg" & PIDS+=($!)
GPID=$!
wait_http "http://127.0.0.1:$A_PORT/readyz" 120
COOKIE="$(curl -fsS -D - -o /dev/null -H 'Content-Type: application/json' \
    --data '{"username":"bench","password":"bench-password"}' \
    "http://127.0.0.1:$G_PORT/login" | sed -n 's/^[Ss]et-[Cc]ookie: gateway_session=\([^;]*\).*/\1/p' | head -n 1)"
[[ -n "$COOKIE" ]] || die "login failed"
measure "gateway public" "$GPID" "http://127.0.0.1:$G_PORT/public"
measure "gateway session" "$GPID" "http://127.0.0.1:$G_PORT/bench" "$COOKIE"
# The cache's proof of liveness is a ping answered within 100 ms every 25 ms: under callgrind's
# slowdown it may lapse, and then the session row is the cache-off path. Say which it was.
CACHE="$(curl -fsS "http://127.0.0.1:$A_PORT/metrics" | grep '^gateway_session_cache_total' | tr '\n' ' ')"
log "validation cache during the session row: $CACHE"

printf '\n| row | requests | instructions per request |\n|---|---:|---:|\n'
printf '%s\n' "${ROWS[@]}"
printf '\nvalidation cache: %s\n' "$CACHE"
