#!/usr/bin/env bash
# Load benchmark for the authentication gateway.
#
#   bash benches/load.sh
#
# Optional environment:
#   DURATION=10s       measured wrk run per path
#   CONNECTIONS=64     wrk connections
#   THREADS=2          wrk threads
#   WARMUP=3s          un-measured wrk run before each measured one
#   NGINX_WORKERS      nginx worker_processes        (default: number of CPUs)
#   GATEWAY_THREADS    gateway [server] threads      (default: number of CPUs)
#   GATEWAY_LOG=warn   RUST_LOG for the gateway (nginx runs with access_log off)
#   REVOCATION_ROUNDS=20  rounds of the revocation-latency measurement
#   KEEP_TMP=1         keep the temp dir (configs, logs, raw wrk output); it is kept
#                      on failure unless KEEP_TMP=0
#
# Needs: cargo, nginx (nginx-light), wrk, redis-server, curl, python3, pgrep (procps)
#   (fresh Debian machine: apt-get install nginx-light wrk redis-server procps python3)
#
# It measures four paths with the same wrk settings, all on loopback:
#   (a) wrk -> U                        nginx `return 200 "ok\n"` (the upstream itself)
#   (b) wrk -> gateway -> U             with a valid session cookie, validation cache on (default)
#   (c) wrk -> N -> U                   nginx plain reverse proxy, no auth (keepalive-tuned)
#   (d) wrk -> gateway -> U             the same session on a second gateway with the cache off
#                                       (one Redis GET per request)
# U and N are two separate nginx processes, so each row's proxy CPU can be read on its own:
# for every row, the CPU time (utime+stime from /proc/PID/stat) the proxy used during the
# measured run, divided by the requests wrk completed (for (a) U's workers, for (c) N's).
# Then, with a third gateway (cache on, same Redis), the revocation latency: log in on the
# first gateway, let the third cache the session, log out on the first, and time how long the
# third still accepts the cookie (benches/revocation.py).
# It prints a markdown report (also written to benches/results/latest.md).
set -euo pipefail

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
WARMUP="${WARMUP:-3s}"
CPUS="$(nproc)"
NGINX_WORKERS="${NGINX_WORKERS:-$CPUS}"
GATEWAY_THREADS="${GATEWAY_THREADS:-$CPUS}"
GATEWAY_LOG="${GATEWAY_LOG:-warn}"
REVOCATION_ROUNDS="${REVOCATION_ROUNDS:-20}"
KEEP_TMP="${KEEP_TMP:-}"
BENCH_PATH="/bench"
BENCH_USER="bench"
BENCH_PASSWORD="bench-password"
COOKIE_NAME="gateway_session"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="$ROOT/benches/results"
NGINX_BIN="${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}"

log() { printf '[load.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in cargo curl wrk redis-server redis-cli "$NGINX_BIN" python3 pgrep getconf; do
    command -v "$tool" >/dev/null 2>&1 || die "missing '$tool' (apt-get install nginx-light wrk redis-server curl python3 procps)"
done
CLK_TCK="$(getconf CLK_TCK)"

# ---------------------------------------------------------------- temp dir + cleanup
TMP="$(mktemp -d "${TMPDIR:-/tmp}/gateway-bench.XXXXXX")"
# nginx workers drop privileges when started as root; let them traverse the dir.
chmod 711 "$TMP"
PIDS=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i pid
    # stop one by one in reverse start order (gateways, nginx N, nginx U, redis), so the
    # gateway never sees its upstream or Redis vanish while it drains
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid="${PIDS[$i]}"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    local failed=0
    [[ $rc -ne 0 && $rc -ne 130 && $rc -ne 143 ]] && failed=1
    if ((failed)); then
        for f in gateway.log gateway-nocache.log gateway-cache2.log revocation.log \
            nginx-u-error.log nginx-n-error.log redis.log; do
            if [[ -s "$TMP/$f" ]]; then
                log "---- last lines of $f ----"
                tail -n 30 "$TMP/$f" >&2 || true
            fi
        done
    fi
    if [[ "$KEEP_TMP" == 1 ]] || ((failed)) && [[ "$KEEP_TMP" != 0 ]]; then
        log "kept temp dir $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
USED_PORTS=" "
# A free loopback TCP port, below the Linux ephemeral range (32768+) so that the
# many outgoing connections made during the run cannot collide with it.
# usage: free_port VAR   (sets VAR; not in a subshell, so ports are never handed out twice)
free_port() {
    local p tries=0
    while ((tries++ < 1000)); do
        p=$((20000 + RANDOM % 12000))
        [[ "$USED_PORTS" == *" $p "* ]] && continue
        if [[ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]]; then
            USED_PORTS+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}

# wait_until DESCRIPTION TIMEOUT_SECONDS PID COMMAND...   (polls; fails early if PID died)
wait_until() {
    local what="$1" timeout="$2" pid="$3"
    shift 3
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || die "$what: process $pid exited"
        ((SECONDS < deadline)) || die "$what: not ready after ${timeout}s"
        sleep 0.05
    done
}

http_ok() { curl -fsS --max-time 2 -o /dev/null "$1"; }

# wrk output -> "rps p50_ms p99_ms non2xx socket_errors requests"
parse_wrk() {
    awk '
        function ms(v,   n) {
            n = v + 0
            if (v ~ /us$/) return n / 1000
            if (v ~ /ms$/) return n
            if (v ~ /m$/)  return n * 60000
            if (v ~ /s$/)  return n * 1000
            return n
        }
        $1 == "50%"              { p50 = ms($2) }
        $1 == "99%"              { p99 = ms($2) }
        /^Requests\/sec:/        { rps = $2 }
        /Non-2xx or 3xx/         { non2xx = $NF }
        /Socket errors:/         { gsub(/,/, ""); sockerr = $4 + $6 + $8 + $10 }
        $2 == "requests" && $3 == "in" { reqs = $1 }
        END {
            if (rps == "" || p50 == "" || p99 == "") exit 1
            printf "%s %.3f %.3f %d %d %d\n", rps, p50, p99, non2xx + 0, sockerr + 0, reqs + 0
        }' "$1"
}

# cpu_ticks PID...  -> utime+stime of these processes, summed, in clock ticks (CLK_TCK/s).
# /proc/PID/stat fields 14 and 15; the text after the last ")" starts at field 3,
# since field 2 (the command name, in parentheses) may contain spaces.
cpu_ticks() {
    local pid stat total=0
    local -a f
    for pid in "$@"; do
        stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || die "process $pid is gone (cpu_ticks)"
        read -r -a f <<<"${stat##*) }"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# nginx_workers MASTER_PID  -> the worker PIDs (children of the master), one line
nginx_workers() {
    local workers
    workers="$(pgrep -P "$1" | tr '\n' ' ')" || die "nginx $1 has no worker processes"
    echo "${workers% }"
}

# run_wrk NAME "PID..." URL [wrk args...]
#   -> raw output in $TMP/wrk-NAME.txt, and in $TMP/cpu-NAME.txt the clock ticks of CPU the
#      PIDs (the proxy under test) used during the measured run
# (calls BEFORE_MEASURE, if set, between the warm-up and the measured run)
BEFORE_MEASURE=""
run_wrk() {
    local name="$1" url="$3" ticks_before ticks_after
    local -a pids
    read -r -a pids <<<"$2"
    shift 3
    log "warm-up $name ($WARMUP): $url"
    wrk -t "$THREADS" -c "$CONNECTIONS" -d "$WARMUP" "$@" "$url" >"$TMP/wrk-$name-warmup.txt"
    if [[ -n "$BEFORE_MEASURE" ]]; then "$BEFORE_MEASURE"; fi
    log "measure $name ($DURATION), CPU of PIDs ${pids[*]}"
    ticks_before="$(cpu_ticks "${pids[@]}")"
    wrk --latency -t "$THREADS" -c "$CONNECTIONS" -d "$DURATION" "$@" "$url" >"$TMP/wrk-$name.txt"
    ticks_after="$(cpu_ticks "${pids[@]}")"
    echo $((ticks_after - ticks_before)) >"$TMP/cpu-$name.txt"
    sed 's/^/    /' "$TMP/wrk-$name.txt" >&2
    log "    CPU: $((ticks_after - ticks_before)) ticks (CLK_TCK=$CLK_TCK)"
}

# cpu_us_per_req NAME REQUESTS  -> CPU microseconds per completed request of run NAME
cpu_us_per_req() {
    awk -v t="$(cat "$TMP/cpu-$1.txt")" -v hz="$CLK_TCK" -v n="$2" \
        'BEGIN { if (n == 0) print "n/a"; else printf "%.1f", t * 1e6 / hz / n }'
}

# ---------------------------------------------------------------- build
log "building gateway (release)"
(cd "$ROOT" && cargo build --release --bin gateway)
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
GATEWAY="$TARGET_DIR/release/gateway"
[[ -x "$GATEWAY" ]] || die "no binary at $GATEWAY"

free_port REDIS_PORT
free_port U_PORT
free_port N_PORT
free_port GW_PORT
free_port ADMIN_PORT
free_port GW2_PORT
free_port ADMIN2_PORT
free_port GW3_PORT
free_port ADMIN3_PORT

# ---------------------------------------------------------------- redis
log "starting redis-server on 127.0.0.1:$REDIS_PORT"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$TMP" --logfile "$TMP/redis.log" --daemonize no &
REDIS_PID=$!
PIDS+=("$REDIS_PID")

# ---------------------------------------------------------------- nginx (U and N)
# Two nginx processes, U and N, so that the CPU each uses can be read separately.
# write_nginx_conf NAME SERVER_BLOCKS  -> $TMP/nginx-NAME.conf
write_nginx_conf() {
    local name="$1" servers="$2"
    mkdir -p "$TMP/nginx-$name"
    cat >"$TMP/nginx-$name.conf" <<EOF
# worker_processes = number of CPUs ($CPUS), i.e. the same parallelism as the
# gateway's threads; nginx's usual production setting ("auto").
worker_processes $NGINX_WORKERS;
pid $TMP/nginx-$name.pid;
error_log $TMP/nginx-$name-error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path $TMP/nginx-$name/client_body;
    proxy_temp_path       $TMP/nginx-$name/proxy;
    fastcgi_temp_path     $TMP/nginx-$name/fastcgi;
    uwsgi_temp_path       $TMP/nginx-$name/uwsgi;
    scgi_temp_path        $TMP/nginx-$name/scgi;

    # never close a client keep-alive connection mid-benchmark (default: 1000 requests)
    keepalive_requests 10000000;
    keepalive_timeout  120s;
$servers
}
EOF
}

# start_nginx NAME  -> starts nginx with $TMP/nginx-NAME.conf, PID in NGINX_<NAME>_PID
start_nginx() {
    local name="$1" args
    args=(-p "$TMP" -e "$TMP/nginx-$name-error.log" -c "$TMP/nginx-$name.conf" -g 'daemon off;')
    "$NGINX_BIN" -t -q "${args[@]}" || die "nginx $name config test failed"
    "$NGINX_BIN" "${args[@]}" &
    PIDS+=("$!")
    printf -v "NGINX_${name^^}_PID" '%s' "$!"
}

write_nginx_conf u "
    # (U) fast upstream
    server {
        listen 127.0.0.1:$U_PORT backlog=4096;
        location / {
            default_type text/plain;
            return 200 \"ok\\n\";
        }
    }"

write_nginx_conf n "
    upstream bench_u {
        server 127.0.0.1:$U_PORT;
        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout  120s;
    }

    # (N) plain reverse proxy to U, no auth
    server {
        listen 127.0.0.1:$N_PORT backlog=4096;
        location / {
            proxy_pass http://bench_u;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }
    }"

log "starting nginx: U on 127.0.0.1:$U_PORT, N on 127.0.0.1:$N_PORT ($NGINX_WORKERS workers each)"
start_nginx u
start_nginx n

redis_ping() { [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }
wait_until "redis" 20 "$REDIS_PID" redis_ping
wait_until "nginx U" 20 "$NGINX_U_PID" http_ok "http://127.0.0.1:$U_PORT$BENCH_PATH"
wait_until "nginx N" 20 "$NGINX_N_PID" http_ok "http://127.0.0.1:$N_PORT$BENCH_PATH"
[[ "$(curl -fsS "http://127.0.0.1:$N_PORT$BENCH_PATH")" == ok ]] || die "nginx N did not return the upstream body"

# ---------------------------------------------------------------- gateway
log "hashing the bench user's password"
HASH="$(echo -n "$BENCH_PASSWORD" | "$GATEWAY" hash-password | head -n 1)"
[[ "$HASH" == '$'* ]] || die "hash-password printed an unexpected value: $HASH"
SECRET="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"

cat >"$TMP/users.toml" <<EOF
[[users]]
username = "$BENCH_USER"
id = "1"
password_hash = '$HASH'
roles = ["user"]
disabled = false
EOF

cat >"$TMP/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
threads = $GATEWAY_THREADS
trusted_proxies = []
grace_period = "1s"
shutdown_timeout = "1s"

[upstream]
servers = ["127.0.0.1:$U_PORT"]
connect_timeout = "2s"
read_timeout = "60s"

[redis]
url = "redis://127.0.0.1:$REDIS_PORT/0"
key_prefix = "bench:"
timeout = "1s"
connect_timeout = "1s"

[session]
cookie_name = "$COOKIE_NAME"
secret = "$SECRET"
idle_timeout = "8h"
absolute_timeout = "24h"
cookie_secure = false

[login]
path = "/login"
logout_path = "/logout"
users_file = "users.toml"

[access]
public = ["/static/", "/favicon.ico"]
EOF

"$GATEWAY" check-config --config "$TMP/gateway.toml" >&2 || die "gateway rejected the bench config"
# (d): the same gateway with the validation cache off, sharing Redis (so the same session).
sed -e "s/127.0.0.1:$GW_PORT/127.0.0.1:$GW2_PORT/" -e "s/127.0.0.1:$ADMIN_PORT/127.0.0.1:$ADMIN2_PORT/" \
    -e 's/^cookie_secure = false$/cookie_secure = false\ncache = false/' \
    "$TMP/gateway.toml" >"$TMP/gateway-nocache.toml"
"$GATEWAY" check-config --config "$TMP/gateway-nocache.toml" >&2 || die "gateway rejected the cache-off config"
# Revocation latency: a third gateway with the cache on, sharing Redis; started after the
# wrk runs, so that its tracking connection costs nothing during them.
sed -e "s/127.0.0.1:$GW_PORT/127.0.0.1:$GW3_PORT/" -e "s/127.0.0.1:$ADMIN_PORT/127.0.0.1:$ADMIN3_PORT/" \
    "$TMP/gateway.toml" >"$TMP/gateway-cache2.toml"
"$GATEWAY" check-config --config "$TMP/gateway-cache2.toml" >&2 || die "gateway rejected the second cache-on config"

log "starting gateway: 127.0.0.1:$GW_PORT (admin $ADMIN_PORT, $GATEWAY_THREADS threads, RUST_LOG=$GATEWAY_LOG)"
RUST_LOG="$GATEWAY_LOG" "$GATEWAY" run --config "$TMP/gateway.toml" >"$TMP/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_until "gateway admin /healthz" 60 "$GW_PID" http_ok "http://127.0.0.1:$ADMIN_PORT/healthz"
wait_until "gateway /_gateway/health" 30 "$GW_PID" http_ok "http://127.0.0.1:$GW_PORT/_gateway/health"
RUST_LOG="$GATEWAY_LOG" "$GATEWAY" run --config "$TMP/gateway-nocache.toml" >"$TMP/gateway-nocache.log" 2>&1 &
GW2_PID=$!
PIDS+=("$GW2_PID")
wait_until "cache-off gateway /_gateway/health" 60 "$GW2_PID" http_ok "http://127.0.0.1:$GW2_PORT/_gateway/health"

# ---------------------------------------------------------------- login
log "logging in as $BENCH_USER"
LOGIN_STATUS="$(curl -sS -o "$TMP/login-body.json" -D "$TMP/login-headers.txt" -w '%{http_code}' \
    -H 'Content-Type: application/json' \
    --data "{\"username\":\"$BENCH_USER\",\"password\":\"$BENCH_PASSWORD\"}" \
    "http://127.0.0.1:$GW_PORT/login")"
[[ "$LOGIN_STATUS" == 200 ]] || die "login returned HTTP $LOGIN_STATUS: $(cat "$TMP/login-body.json")"
SESSION="$(tr -d '\r' <"$TMP/login-headers.txt" |
    sed -n "s/^[Ss]et-[Cc]ookie: *$COOKIE_NAME=\([^;]*\).*/\1/p" | head -n 1)"
[[ -n "$SESSION" ]] || die "no $COOKIE_NAME cookie in the login response"
COOKIE_HEADER="Cookie: $COOKIE_NAME=$SESSION"

# sanity: without a cookie the path is refused, with it the upstream answers
NOAUTH_STATUS="$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW_PORT$BENCH_PATH")"
[[ "$NOAUTH_STATUS" == 401 ]] || die "unauthenticated $BENCH_PATH returned $NOAUTH_STATUS, expected 401"
AUTH_BODY="$(curl -fsS -H "$COOKIE_HEADER" "http://127.0.0.1:$GW_PORT$BENCH_PATH")" \
    || die "authenticated $BENCH_PATH failed"
[[ "$AUTH_BODY" == ok ]] || die "authenticated $BENCH_PATH did not return the upstream body: $AUTH_BODY"

# ---------------------------------------------------------------- measure
# CPU is read for the proxy under test: U's workers for (a), N's for (c), the gateway for (b)/(d)
run_wrk a "$(nginx_workers "$NGINX_U_PID")" "http://127.0.0.1:$U_PORT$BENCH_PATH"
# count the Redis commands the gateway issues during the measured (b) run
redis_reset_stats() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config resetstat >/dev/null; }
BEFORE_MEASURE=redis_reset_stats
run_wrk b "$GW_PID" "http://127.0.0.1:$GW_PORT$BENCH_PATH" -H "$COOKIE_HEADER"
BEFORE_MEASURE=""
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info commandstats | tr -d '\r' >"$TMP/redis-commandstats-b.txt"
run_wrk c "$(nginx_workers "$NGINX_N_PID")" "http://127.0.0.1:$N_PORT$BENCH_PATH"
run_wrk d "$GW2_PID" "http://127.0.0.1:$GW2_PORT$BENCH_PATH" -H "$COOKIE_HEADER"

read -r A_RPS A_P50 A_P99 A_BAD A_SOCK A_REQS < <(parse_wrk "$TMP/wrk-a.txt") || die "cannot parse wrk output (a)"
read -r B_RPS B_P50 B_P99 B_BAD B_SOCK B_REQS < <(parse_wrk "$TMP/wrk-b.txt") || die "cannot parse wrk output (b)"
read -r C_RPS C_P50 C_P99 C_BAD C_SOCK C_REQS < <(parse_wrk "$TMP/wrk-c.txt") || die "cannot parse wrk output (c)"
read -r D_RPS D_P50 D_P99 D_BAD D_SOCK D_REQS < <(parse_wrk "$TMP/wrk-d.txt") || die "cannot parse wrk output (d)"
((D_REQS > 0 && D_BAD == 0)) || die "(d) got $D_BAD non-2xx responses out of $D_REQS (see $TMP/wrk-d.txt)"

# (b) must have measured real upstream responses, not 401/503s.
# wrk counts "Non-2xx or 3xx"; the gateway never answers a wrk request (no
# Accept: text/html) with a 3xx, so a zero count means every response was 2xx.
((B_REQS > 0)) || die "(b) completed no requests"
((B_BAD == 0)) || die "(b) got $B_BAD non-2xx responses out of $B_REQS (see $TMP/wrk-b.txt)"
if grep -q 'Non-2xx' "$TMP/wrk-b-warmup.txt"; then
    die "(b) warm-up got non-2xx responses: $(grep 'Non-2xx' "$TMP/wrk-b-warmup.txt")"
fi
((A_BAD == 0 && C_BAD == 0)) || die "nginx paths got non-2xx responses (a: $A_BAD, c: $C_BAD)"
# the session must still be valid after the run
AFTER_STATUS="$(curl -sS -o /dev/null -w '%{http_code}' -H "$COOKIE_HEADER" "http://127.0.0.1:$GW_PORT$BENCH_PATH")"
[[ "$AFTER_STATUS" == 200 ]] || die "session no longer accepted after the run (HTTP $AFTER_STATUS)"

A_CPU="$(cpu_us_per_req a "$A_REQS")"
B_CPU="$(cpu_us_per_req b "$B_REQS")"
C_CPU="$(cpu_us_per_req c "$C_REQS")"
D_CPU="$(cpu_us_per_req d "$D_REQS")"

# ---------------------------------------------------------------- revocation latency
log "starting a second cache-on gateway: 127.0.0.1:$GW3_PORT (admin $ADMIN3_PORT)"
RUST_LOG="$GATEWAY_LOG" "$GATEWAY" run --config "$TMP/gateway-cache2.toml" >"$TMP/gateway-cache2.log" 2>&1 &
GW3_PID=$!
PIDS+=("$GW3_PID")
wait_until "second cache-on gateway admin /healthz" 60 "$GW3_PID" http_ok "http://127.0.0.1:$ADMIN3_PORT/healthz"
wait_until "second cache-on gateway /_gateway/health" 30 "$GW3_PID" http_ok "http://127.0.0.1:$GW3_PORT/_gateway/health"

log "revocation latency: $REVOCATION_ROUNDS rounds, log out on :$GW_PORT, probe :$GW3_PORT"
python3 "$ROOT/benches/revocation.py" --rounds "$REVOCATION_ROUNDS" \
    --x "http://127.0.0.1:$GW_PORT" --y "http://127.0.0.1:$GW3_PORT" --y-admin "http://127.0.0.1:$ADMIN3_PORT" \
    --user "$BENCH_USER" --password "$BENCH_PASSWORD" --cookie-name "$COOKIE_NAME" --path "$BENCH_PATH" \
    >"$TMP/revocation.txt" 2>"$TMP/revocation.log" || die "revocation measurement failed: $(tail -n 1 "$TMP/revocation.log")"
sed 's/^/    /' "$TMP/revocation.log" >&2
read -r REV_ROUNDS REV_WORST REV_MEDIAN REV_BEST REV_ACCEPTED <"$TMP/revocation.txt" \
    || die "cannot read the revocation result"

# ---------------------------------------------------------------- report
ratio() { awk -v x="$1" -v y="$2" 'BEGIN { if (y == 0) print "n/a"; else printf "%.2f", x / y }'; }
fmt_rps() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }
fmt_ms() { awk -v x="$1" 'BEGIN { printf "%.2f ms", x }'; }

CPU_MODEL="$(awk -F: '/model name/ { sub(/^ +/, "", $2); print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
NGINX_VERSION="$("$NGINX_BIN" -v 2>&1 | sed 's/.*nginx\///')"
REDIS_VERSION="$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
WRK_VERSION="$(wrk --version 2>&1 | head -n 1 | awk '{print $2}' || true)"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo uncommitted)"
if [[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -n 1)" ]]; then GIT_REV="$GIT_REV (dirty tree)"; fi

# e.g. "get 1.00, pexpire 1.00" (commands per measured request; CONFIG/INFO excluded)
REDIS_PER_REQ="$(awk -F'[_:=,]' -v n="$B_REQS" '
    /^cmdstat_/ && $2 !~ /^(config|info)/ { out = out sep sprintf("%s %.2f", $2, $4 / n); sep = ", " }
    END { print (out == "" ? "none" : out) }' "$TMP/redis-commandstats-b.txt")"

sock_note=""
if ((A_SOCK + B_SOCK + C_SOCK + D_SOCK > 0)); then
    sock_note="- wrk socket errors: a=$A_SOCK, b=$B_SOCK, c=$C_SOCK, d=$D_SOCK (see raw wrk output)"
fi

REPORT="$(
    cat <<EOF
# Gateway load benchmark

- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit: $GIT_REV
- machine: $CPUS CPUs${CPU_MODEL:+ ($CPU_MODEL)}; wrk, nginx, redis and the gateway all share them, so compare the rows, not the absolute numbers
- wrk ${WRK_VERSION}: \`-t$THREADS -c$CONNECTIONS -d$DURATION --latency\` (after a $WARMUP warm-up), GET $BENCH_PATH, keep-alive, loopback
- nginx $NGINX_VERSION: worker_processes $NGINX_WORKERS, access_log off, upstream keepalive 64; redis $REDIS_VERSION; gateway threads $GATEWAY_THREADS, RUST_LOG=$GATEWAY_LOG
- (b) sent a valid session cookie: $B_REQS requests, 0 non-2xx; Redis commands per request: $REDIS_PER_REQ
- CPU µs/req: utime+stime (\`/proc/PID/stat\`, CLK_TCK $CLK_TCK) of the proxy under test during the measured run ÷ requests completed: (a) U's nginx workers, (b)/(d) the gateway process, (c) N's nginx workers; ×(c) = that ÷ (c)'s

| path | req/s | p50 | p99 | CPU µs/req | CPU ×(c) |
|---|---:|---:|---:|---:|---:|
| (a) wrk → upstream U (nginx \`return 200\`) | $(fmt_rps "$A_RPS") | $(fmt_ms "$A_P50") | $(fmt_ms "$A_P99") | $A_CPU | $(ratio "$A_CPU" "$C_CPU") |
| (b) wrk → gateway, validation cache on → U | $(fmt_rps "$B_RPS") | $(fmt_ms "$B_P50") | $(fmt_ms "$B_P99") | $B_CPU | $(ratio "$B_CPU" "$C_CPU") |
| (c) wrk → nginx reverse proxy N (no auth) → U | $(fmt_rps "$C_RPS") | $(fmt_ms "$C_P50") | $(fmt_ms "$C_P99") | $C_CPU | $(ratio "$C_CPU" "$C_CPU") |
| (d) wrk → gateway, cache off (one Redis GET per request) → U | $(fmt_rps "$D_RPS") | $(fmt_ms "$D_P50") | $(fmt_ms "$D_P99") | $D_CPU | $(ratio "$D_CPU" "$C_CPU") |

| ratio | req/s | p50 | p99 |
|---|---:|---:|---:|
| b/a (gateway vs. upstream direct) | $(ratio "$B_RPS" "$A_RPS") | $(ratio "$B_P50" "$A_P50") | $(ratio "$B_P99" "$A_P99") |
| b/c (gateway vs. nginx proxy) | $(ratio "$B_RPS" "$C_RPS") | $(ratio "$B_P50" "$C_P50") | $(ratio "$B_P99" "$C_P99") |
| d/c (gateway, cache off, vs. nginx proxy) | $(ratio "$D_RPS" "$C_RPS") | $(ratio "$D_P50" "$C_P50") | $(ratio "$D_P99" "$C_P99") |
$sock_note

## Revocation latency

Log in on gateway 1, let a second cache-on gateway (same Redis) serve the session from its
validation cache, log out on gateway 1, then probe the second gateway in a tight loop until it
answers 401; time from the logout response to that 401 (benches/revocation.py; design: ≤ 100 ms).

| rounds | worst | median | best | probes still answered 200 after logout (all rounds) |
|---:|---:|---:|---:|---:|
| $REV_ROUNDS | $(fmt_ms "$REV_WORST") | $(fmt_ms "$REV_MEDIAN") | $(fmt_ms "$REV_BEST") | $REV_ACCEPTED |
EOF
)"

mkdir -p "$RESULTS_DIR"
REPORT="$(printf '%s\n' "$REPORT" | cat -s)"   # no double blank lines (empty notes)
printf '%s\n' "$REPORT" >"$RESULTS_DIR/latest.md"
printf '\n%s\n\n' "$REPORT"
log "written to ${RESULTS_DIR#"$ROOT"/}/latest.md"
