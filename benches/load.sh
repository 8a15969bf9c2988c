#!/usr/bin/env bash
# Load benchmark for the authentication gateway (issue 9's bench), one command, one run.
#
#   bash benches/load.sh
#   SKIP=app,storm,memory bash benches/load.sh      # only the six proxy rows (+ revocation)
#
# Optional environment (see benches/README.md):
#   DURATION=10s       measured wrk run per row
#   CONNECTIONS=64     wrk connections (proxy rows)
#   THREADS=2          wrk threads (proxy rows and app rows)
#   WARMUP=3s          un-measured wrk run before each measured one
#   NGINX_WORKERS      nginx worker_processes                 (default: number of CPUs)
#   GATEWAY_THREADS    gateway [server] threads, and the bare pingora proxy's (default: CPUs)
#   GATEWAY_LOG=warn   RUST_LOG for the gateway (nginx runs with access_log off)
#   SKIP=              comma-separated parts to leave out: app, storm, memory, revocation
#   APP_CONNECTIONS=8  wrk connections for the real-app rows (gunicorn, 2 sync workers)
#   STORM_CLIENTS=8    concurrent login clients during the login storm
#   STORM_THREADS=1 STORM_CONNECTIONS=16   wrk settings for the proxied traffic of the storm
#   MEM_CONNECTIONS=10000   idle keep-alive connections for the memory measurement
#   REVOCATION_ROUNDS=20    rounds of the revocation-latency measurement
#   PYTHON_VENV=.venv  venv with gunicorn + the app's requirements (app rows only)
#   KEEP_TMP=1         keep the temp dir (configs, logs, raw wrk output); it is kept
#                      on failure unless KEEP_TMP=0
#
# Needs: cargo, nginx (nginx-light), wrk, redis-server, curl, python3, pgrep (procps), and for
# the app rows the .venv of tests/deps.sh (Flask app + gunicorn)
#   (fresh Debian machine: bash tests/deps.sh, or apt-get install nginx-light wrk redis-server procps python3)
#
# Six proxy rows, same wrk settings, all on loopback; U is nginx `return 200 "ok\n"`:
#   direct            wrk -> U
#   nginx             wrk -> N -> U            nginx plain reverse proxy, no auth (keepalive-tuned)
#   bare pingora      wrk -> bare_proxy -> U   benches/bare_proxy.rs: ProxyHttp with only upstream_peer
#   gateway public    wrk -> gateway -> U      a path in [access] public: no session check
#   gateway session   wrk -> gateway -> U      valid session cookie, validation cache on (default)
#   gateway no cache  wrk -> gateway2 -> U     the same session, [session] cache = false (one Redis GET)
# For every row: req/s, p50/p99, and the CPU time (utime+stime, /proc/PID/stat) the proxy under
# test used during the measured run ÷ requests (U's workers for direct, N's for nginx).
# Then: the example Flask app under gunicorn direct vs through a gateway (app), proxied p99
# quiet vs during an argon2 login storm (storm), RSS with MEM_CONNECTIONS idle keep-alive
# connections, gateway vs nginx vs bare pingora (memory), revocation latency across two
# instances (revocation). Prints a markdown report, writes it to benches/results/latest.md and a
# chart of the rows to benches/results/latest.svg. Fails instead of reporting when any measured
# request got a non-2xx answer.
set -euo pipefail

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
WARMUP="${WARMUP:-3s}"
CPUS="$(nproc)"
NGINX_WORKERS="${NGINX_WORKERS:-$CPUS}"
GATEWAY_THREADS="${GATEWAY_THREADS:-$CPUS}"
GATEWAY_LOG="${GATEWAY_LOG:-warn}"
SKIP="${SKIP:-}"
APP_CONNECTIONS="${APP_CONNECTIONS:-8}"
STORM_CLIENTS="${STORM_CLIENTS:-8}"
STORM_THREADS="${STORM_THREADS:-1}"
STORM_CONNECTIONS="${STORM_CONNECTIONS:-16}"
MEM_CONNECTIONS="${MEM_CONNECTIONS:-10000}"
REVOCATION_ROUNDS="${REVOCATION_ROUNDS:-20}"
KEEP_TMP="${KEEP_TMP:-}"
BENCH_PATH="/bench"
PUBLIC_PATH="/bench-public" # listed in [access] public of the bench config
APP_STATIC_PATH="/static/app.css"
BENCH_USER="bench"
BENCH_PASSWORD="bench-password"
COOKIE_NAME="gateway_session"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="$ROOT/benches/results"
NGINX_BIN="${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}"
PYTHON_VENV="${PYTHON_VENV:-$ROOT/.venv}"

log() { printf '[load.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for part in ${SKIP//,/ }; do
    case "$part" in
        app | storm | memory | revocation) ;;
        *) die "SKIP: unknown part '$part' (known: app, storm, memory, revocation)" ;;
    esac
done
enabled() { [[ ",$SKIP," != *",$1,"* ]]; }

for tool in cargo curl wrk redis-server redis-cli "$NGINX_BIN" python3 pgrep getconf ss; do
    command -v "$tool" >/dev/null 2>&1 || die "missing '$tool' (apt-get install nginx-light wrk redis-server curl python3 procps iproute2)"
done
CLK_TCK="$(getconf CLK_TCK)"
if enabled app; then
    VENV_PY="$PYTHON_VENV/bin/python"
    [[ -x "$VENV_PY" ]] || die "no Python venv at $PYTHON_VENV (bash tests/deps.sh creates it), or SKIP=app"
    "$VENV_PY" -c 'import gunicorn, flask, flask_login, flask_wtf' 2>/dev/null \
        || die "$PYTHON_VENV lacks gunicorn or the app's requirements (pip install -r docker/app/requirements.txt), or SKIP=app"
fi

# Every process started here inherits this: the memory measurement holds MEM_CONNECTIONS
# sockets open in one client and one server at a time.
if enabled memory; then
    want_fds=$((MEM_CONNECTIONS + 4096))
    hard_fds="$(ulimit -Hn)"
    if [[ "$hard_fds" != unlimited ]] && ((hard_fds < want_fds)); then
        die "ulimit -Hn is $hard_fds, the memory part needs $want_fds: raise it, lower MEM_CONNECTIONS, or SKIP=memory"
    fi
    ulimit -n "$want_fds" || die "cannot raise ulimit -n to $want_fds"
fi

# ---------------------------------------------------------------- temp dir + cleanup
TMP="$(mktemp -d "${TMPDIR:-/tmp}/gateway-bench.XXXXXX")"
# nginx workers drop privileges when started as root; let them traverse the dir.
chmod 711 "$TMP"
PIDS=()      # long-lived processes, stopped in reverse start order on exit
BG_PIDS=()   # short-lived helpers (login storm), killed first

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i pid
    for pid in "${BG_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    # stop one by one in reverse start order (gateways, proxies, app, nginx, redis), so a
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
        for f in gateway.log gateway-nocache.log gateway-app.log gateway-cache2.log bare.log bare-small.log \
            app.log storm.log revocation.log nginx-u-error.log nginx-n-error.log redis.log; do
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

# seconds DURATION  -> whole seconds of a wrk duration (10, 10s, 2m)
seconds() {
    case "$1" in
        *m) echo $((${1%m} * 60)) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}

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

# cpu_split PID...  -> "UTIME STIME" of these processes, summed, in clock ticks (CLK_TCK/s):
# user space and kernel apart, since proxies make the same system calls per request and differ
# mostly in user space. /proc/PID/stat fields 14 and 15; the text after the last ")" starts at
# field 3, since field 2 (the command name, in parentheses) may contain spaces.
cpu_split() {
    local pid stat user=0 kernel=0
    local -a f
    for pid in "$@"; do
        stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || die "process $pid is gone (cpu_split)"
        read -r -a f <<<"${stat##*) }"
        user=$((user + f[11])) kernel=$((kernel + f[12]))
    done
    echo "$user $kernel"
}

# cpu_ticks PID...  -> utime+stime of these processes, summed, in clock ticks
cpu_ticks() {
    local -a split
    read -r -a split <<<"$(cpu_split "$@")"
    echo $((split[0] + split[1]))
}

# us_per_request TICKS REQUESTS  -> CPU µs per request, one decimal
us_per_request() {
    awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }'
}

# rss_kib PID...  -> VmRSS of these processes, summed, in KiB
rss_kib() {
    local pid total=0 kib
    for pid in "$@"; do
        kib="$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)" || die "process $pid is gone (rss_kib)"
        total=$((total + ${kib:-0}))
    done
    echo "$total"
}

# children MASTER_PID  -> its child PIDs (nginx or gunicorn workers), one line
children() {
    local kids
    kids="$(pgrep -P "$1" | tr '\n' ' ')" || die "process $1 has no worker processes"
    echo "${kids% }"
}

# Results per row name: RPS P50 P99 REQS SOCK CPU (CPU µs/req of the PIDs given to run_wrk),
# of which USER_CPU in user space and KERNEL_CPU in the kernel
declare -A RPS P50 P99 REQS SOCK CPU USER_CPU KERNEL_CPU

# run_wrk NAME "PID..." URL [wrk args...]
#   warm-up, then a measured `wrk --latency` with WRK_T threads and WRK_C connections; reads the
#   CPU the PIDs (the proxy under test) used during the measured run; raw output in
#   $TMP/wrk-NAME.txt. Fails if the warm-up or the measured run got any non-2xx answer or
#   completed no request. Calls BEFORE_MEASURE, if set, between the warm-up and the measured run.
BEFORE_MEASURE=""
WRK_T="$THREADS"
WRK_C="$CONNECTIONS"
run_wrk() {
    local name="$1" url="$3" ticks_before ticks_after rps p50 p99 bad sock reqs
    local -a pids split_before split_after
    read -r -a pids <<<"$2"
    shift 3
    log "warm-up $name ($WARMUP, -t$WRK_T -c$WRK_C): $url"
    wrk -t "$WRK_T" -c "$WRK_C" -d "$WARMUP" "$@" "$url" >"$TMP/wrk-$name-warmup.txt"
    if grep -q 'Non-2xx' "$TMP/wrk-$name-warmup.txt"; then
        die "$name warm-up got non-2xx answers: $(grep 'Non-2xx' "$TMP/wrk-$name-warmup.txt")"
    fi
    if [[ -n "$BEFORE_MEASURE" ]]; then "$BEFORE_MEASURE"; fi
    log "measure $name ($DURATION), CPU of PIDs ${pids[*]}"
    read -r -a split_before <<<"$(cpu_split "${pids[@]}")"
    wrk --latency -t "$WRK_T" -c "$WRK_C" -d "$DURATION" "$@" "$url" >"$TMP/wrk-$name.txt"
    read -r -a split_after <<<"$(cpu_split "${pids[@]}")"
    ticks_before=$((split_before[0] + split_before[1]))
    ticks_after=$((split_after[0] + split_after[1]))
    sed 's/^/    /' "$TMP/wrk-$name.txt" >&2
    read -r rps p50 p99 bad sock reqs < <(parse_wrk "$TMP/wrk-$name.txt") || die "cannot parse wrk output ($name)"
    ((reqs > 0)) || die "$name completed no requests (see $TMP/wrk-$name.txt)"
    ((bad == 0)) || die "$name got $bad non-2xx answers out of $reqs (see $TMP/wrk-$name.txt)"
    RPS[$name]="$rps" P50[$name]="$p50" P99[$name]="$p99" REQS[$name]="$reqs" SOCK[$name]="$sock"
    CPU[$name]="$(us_per_request $((ticks_after - ticks_before)) "$reqs")"
    USER_CPU[$name]="$(us_per_request $((split_after[0] - split_before[0])) "$reqs")"
    KERNEL_CPU[$name]="$(us_per_request $((split_after[1] - split_before[1])) "$reqs")"
    log "    CPU: $((ticks_after - ticks_before)) ticks (CLK_TCK=$CLK_TCK), ${CPU[$name]} µs/req"
}

ratio() { awk -v x="$1" -v y="$2" 'BEGIN { if (y == 0) print "n/a"; else printf "%.2f", x / y }'; }
fmt_rps() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }
fmt_ms() { awk -v x="$1" 'BEGIN { printf "%.2f ms", x }'; }
fmt_mib() { awk -v x="$1" 'BEGIN { printf "%.1f MiB", x / 1024 }'; }
# yes_no EXPR  (awk condition) -> "yes" or "no"
yes_no() { awk "BEGIN { print (($1) ? \"yes\" : \"no\") }"; }

# ---------------------------------------------------------------- build
log "building the gateway and the bare pingora proxy (release)"
(cd "$ROOT" && cargo build --release --bin gateway --example bare_proxy)
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
GATEWAY="$TARGET_DIR/release/gateway"
BARE="$TARGET_DIR/release/examples/bare_proxy"
[[ -x "$GATEWAY" ]] || die "no binary at $GATEWAY"
[[ -x "$BARE" ]] || die "no binary at $BARE"

for v in REDIS_PORT U_PORT N_PORT BARE_PORT BARE_SMALL_PORT GW_PORT ADMIN_PORT GW2_PORT ADMIN2_PORT \
    GW3_PORT ADMIN3_PORT APP_PORT NA_PORT GWA_PORT ADMINA_PORT GWP_PORT ADMINP_PORT; do
    free_port "$v"
done

# ---------------------------------------------------------------- redis
log "starting redis-server on 127.0.0.1:$REDIS_PORT"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$TMP" --logfile "$TMP/redis.log" --daemonize no &
REDIS_PID=$!
PIDS+=("$REDIS_PID")

# ---------------------------------------------------------------- nginx (U and N)
# Two nginx processes, U and N, so that the CPU each uses can be read separately.
# write_nginx_conf NAME WORKER_CONNECTIONS SERVER_BLOCKS  -> $TMP/nginx-NAME.conf
write_nginx_conf() {
    local name="$1" conns="$2" servers="$3"
    mkdir -p "$TMP/nginx-$name"
    cat >"$TMP/nginx-$name.conf" <<EOF
# worker_processes = number of CPUs ($CPUS), i.e. the same parallelism as the
# gateway's threads; nginx's usual production setting ("auto").
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile $((2 * conns + 1024));
pid $TMP/nginx-$name.pid;
error_log $TMP/nginx-$name-error.log warn;

events {
    worker_connections $conns;
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

write_nginx_conf u 4096 "
    # (U) fast upstream
    server {
        listen 127.0.0.1:$U_PORT backlog=4096;
        location / {
            default_type text/plain;
            return 200 \"ok\\n\";
        }
    }"

# N holds the memory measurement's idle connections (all may land on one worker)
N_WORKER_CONNECTIONS=$((MEM_CONNECTIONS + 1024 > 4096 ? MEM_CONNECTIONS + 1024 : 4096))
write_nginx_conf n "$N_WORKER_CONNECTIONS" "
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
    }

    # (N) the same in front of the example app (the app rows' reference; idle otherwise)
    upstream bench_app {
        server 127.0.0.1:$APP_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NA_PORT backlog=4096;
        location / {
            proxy_pass http://bench_app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
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
N_WORKERS="$(children "$NGINX_N_PID")"
U_WORKERS="$(children "$NGINX_U_PID")"
# shellcheck disable=SC2086
RSS_START_NGINX="$(rss_kib $N_WORKERS)"
# shellcheck disable=SC2086
RSS_START_U="$(rss_kib $U_WORKERS)"

# ---------------------------------------------------------------- bare pingora proxy
log "starting the bare pingora proxy: 127.0.0.1:$BARE_PORT -> U ($GATEWAY_THREADS threads)"
"$BARE" "127.0.0.1:$BARE_PORT" "127.0.0.1:$U_PORT" "$GATEWAY_THREADS" >"$TMP/bare.log" 2>&1 &
BARE_PID=$!
PIDS+=("$BARE_PID")
wait_until "bare pingora proxy" 30 "$BARE_PID" http_ok "http://127.0.0.1:$BARE_PORT$BENCH_PATH"
[[ "$(curl -fsS "http://127.0.0.1:$BARE_PORT$BENCH_PATH")" == ok ]] || die "the bare proxy did not return the upstream body"
RSS_START_BARE="$(rss_kib "$BARE_PID")"

# ---------------------------------------------------------------- gateway
log "hashing the bench user's password"
HASH="$(printf %s "$BENCH_PASSWORD" | "$GATEWAY" hash-password | head -n 1)"
[[ "$HASH" == '$'* ]] || die "hash-password printed an unexpected value: $HASH"
HASH_PARAMS="$(printf %s "$HASH" | cut -d'$' -f2,4)"   # e.g. argon2id$m=19456,t=2,p=1
SECRET="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
IDENTITY_SECRET="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"

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
drain_delay = "0s"
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
public = ["/static/", "/favicon.ico", "$PUBLIC_PATH"]
EOF

"$GATEWAY" check-config --config "$TMP/gateway.toml" >&2 || die "gateway rejected the bench config"
# gateway no cache: the same gateway with the validation cache off, sharing Redis (so the same session).
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
RSS_START_GW="$(rss_kib "$GW_PID")"
RUST_LOG="$GATEWAY_LOG" "$GATEWAY" run --config "$TMP/gateway-nocache.toml" >"$TMP/gateway-nocache.log" 2>&1 &
GW2_PID=$!
PIDS+=("$GW2_PID")
wait_until "cache-off gateway /_gateway/health" 60 "$GW2_PID" http_ok "http://127.0.0.1:$GW2_PORT/_gateway/health"
RSS_START_GW2="$(rss_kib "$GW2_PID")"

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

# sanity: without a cookie the path is refused, with it the upstream answers; the public path
# answers without one
NOAUTH_STATUS="$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW_PORT$BENCH_PATH")"
[[ "$NOAUTH_STATUS" == 401 ]] || die "unauthenticated $BENCH_PATH returned $NOAUTH_STATUS, expected 401"
AUTH_BODY="$(curl -fsS -H "$COOKIE_HEADER" "http://127.0.0.1:$GW_PORT$BENCH_PATH")" \
    || die "authenticated $BENCH_PATH failed"
[[ "$AUTH_BODY" == ok ]] || die "authenticated $BENCH_PATH did not return the upstream body: $AUTH_BODY"
PUBLIC_BODY="$(curl -fsS "http://127.0.0.1:$GW_PORT$PUBLIC_PATH")" || die "public $PUBLIC_PATH failed without a session"
[[ "$PUBLIC_BODY" == ok ]] || die "public $PUBLIC_PATH did not return the upstream body: $PUBLIC_BODY"

# ---------------------------------------------------------------- the six proxy rows
ROWS=(direct nginx bare public cached nocache)
declare -A LABEL=(
    [direct]="direct: wrk → U (nginx \`return 200\`)"
    [nginx]="nginx plain proxy N → U (no auth)"
    [bare]="bare pingora proxy → U"
    [public]="gateway, public path (no session check) → U"
    [cached]="gateway, session, validation cache on → U"
    [nocache]="gateway, session, cache off (1 Redis GET) → U"
)
declare -A SHORT=(
    [direct]="direct (upstream U)" [nginx]="nginx plain proxy" [bare]="bare pingora"
    [public]="gateway, public path" [cached]="gateway, session, cache on" [nocache]="gateway, session, cache off"
)
run_wrk direct "$U_WORKERS" "http://127.0.0.1:$U_PORT$BENCH_PATH"
run_wrk nginx "$N_WORKERS" "http://127.0.0.1:$N_PORT$BENCH_PATH"
run_wrk bare "$BARE_PID" "http://127.0.0.1:$BARE_PORT$BENCH_PATH"
run_wrk public "$GW_PID" "http://127.0.0.1:$GW_PORT$PUBLIC_PATH"
# count the Redis commands the gateway issues during the measured cache-on run
redis_reset_stats() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config resetstat >/dev/null; }
BEFORE_MEASURE=redis_reset_stats
run_wrk cached "$GW_PID" "http://127.0.0.1:$GW_PORT$BENCH_PATH" -H "$COOKIE_HEADER"
BEFORE_MEASURE=""
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info commandstats | tr -d '\r' >"$TMP/redis-commandstats-cached.txt"
run_wrk nocache "$GW2_PID" "http://127.0.0.1:$GW2_PORT$BENCH_PATH" -H "$COOKIE_HEADER"
# (the gateway never answers a wrk request, which has no Accept: text/html, with a 3xx, so
# run_wrk's zero "Non-2xx or 3xx" count means every answer was the upstream's 200)

# the session must still be valid after the runs
AFTER_STATUS="$(curl -sS -o /dev/null -w '%{http_code}' -H "$COOKIE_HEADER" "http://127.0.0.1:$GW_PORT$BENCH_PATH")"
[[ "$AFTER_STATUS" == 200 ]] || die "session no longer accepted after the run (HTTP $AFTER_STATUS)"

# ---------------------------------------------------------------- the real app
if enabled app; then
    APP_SECRET_KEY="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    log "starting the example Flask app under gunicorn (2 workers) on 127.0.0.1:$APP_PORT"
    (
        cd "$ROOT/docker/app"
        GATEWAY_IDENTITY_SECRET="$IDENTITY_SECRET" APP_SECRET_KEY="$APP_SECRET_KEY" PYTHONDONTWRITEBYTECODE=1 \
            exec "$VENV_PY" -m gunicorn --bind "127.0.0.1:$APP_PORT" --workers 2 \
            --access-logfile - "app:create_app()"
    ) >"$TMP/app.log" 2>&1 &
    APP_PID=$!
    PIDS+=("$APP_PID")
    wait_until "gunicorn (example app)" 60 "$APP_PID" http_ok "http://127.0.0.1:$APP_PORT/api/v1/health/basic"

    # Two gateways in front of the app the way docker/gateway.toml puts one there (identity
    # headers signed, the app's own session cookie named), with the same Redis, prefix and
    # secret as the bench gateways, so the bench session is valid on them:
    # - GWA: /static/ is NOT public, so the static file needs a session: the session check runs,
    #   the identity headers are signed and added, and the app checks them (gateway_auth.py);
    # - GWP: /static/ public, exactly as in docker/gateway.toml: no session check, no identity.
    # write_app_gateway_conf FILE PORT ADMIN_PORT PUBLIC_LIST
    write_app_gateway_conf() {
        sed -e "s/127.0.0.1:$GW_PORT/127.0.0.1:$2/" -e "s/127.0.0.1:$ADMIN_PORT/127.0.0.1:$3/" \
            -e "s/^servers = .*/servers = [\"127.0.0.1:$APP_PORT\"]\napp_session_cookie = \"whalefall_session\"/" \
            -e "s|^public = .*|public = $4|" \
            "$TMP/gateway.toml" >"$1"
        printf '\n[identity]\nsigning_secret = "%s"\n' "$IDENTITY_SECRET" >>"$1"
        "$GATEWAY" check-config --config "$1" >&2 || die "gateway rejected $1"
    }
    write_app_gateway_conf "$TMP/gateway-app.toml" "$GWA_PORT" "$ADMINA_PORT" '["/favicon.ico", "/api/v1/health/"]'
    write_app_gateway_conf "$TMP/gateway-app-public.toml" "$GWP_PORT" "$ADMINP_PORT" \
        '["/static/", "/favicon.ico", "/api/v1/health/", "/api/v1/auth/csrf-token"]'
    log "starting two gateways in front of the app: 127.0.0.1:$GWA_PORT (session), 127.0.0.1:$GWP_PORT (/static/ public)"
    RUST_LOG="$GATEWAY_LOG" "$GATEWAY" run --config "$TMP/gateway-app.toml" >"$TMP/gateway-app.log" 2>&1 &
    GWA_PID=$!
    PIDS+=("$GWA_PID")
    RUST_LOG="$GATEWAY_LOG" "$GATEWAY" run --config "$TMP/gateway-app-public.toml" >"$TMP/gateway-app-public.log" 2>&1 &
    GWP_PID=$!
    PIDS+=("$GWP_PID")
    wait_until "app gateway /_gateway/health" 60 "$GWA_PID" http_ok "http://127.0.0.1:$GWA_PORT/_gateway/health"
    wait_until "app gateway (public) /_gateway/health" 60 "$GWP_PID" http_ok "http://127.0.0.1:$GWP_PORT/_gateway/health"

    curl -fsS -o "$TMP/static-direct" "http://127.0.0.1:$APP_PORT$APP_STATIC_PATH" || die "the app did not serve $APP_STATIC_PATH"
    APP_NOAUTH="$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GWA_PORT$APP_STATIC_PATH")"
    [[ "$APP_NOAUTH" == 401 ]] || die "$APP_STATIC_PATH through the gateway without a session: HTTP $APP_NOAUTH, expected 401"
    curl -fsS -H "$COOKIE_HEADER" -o "$TMP/static-gateway" "http://127.0.0.1:$GWA_PORT$APP_STATIC_PATH" \
        || die "$APP_STATIC_PATH through the gateway with a session failed"
    cmp -s "$TMP/static-direct" "$TMP/static-gateway" || die "$APP_STATIC_PATH differs direct vs through the gateway"
    curl -fsS -o "$TMP/static-public" "http://127.0.0.1:$GWP_PORT$APP_STATIC_PATH" \
        || die "$APP_STATIC_PATH through the gateway with /static/ public failed"
    cmp -s "$TMP/static-direct" "$TMP/static-public" || die "$APP_STATIC_PATH differs direct vs through the public gateway"
    curl -fsS -o "$TMP/static-nginx" "http://127.0.0.1:$NA_PORT$APP_STATIC_PATH" || die "$APP_STATIC_PATH through nginx failed"
    cmp -s "$TMP/static-direct" "$TMP/static-nginx" || die "$APP_STATIC_PATH differs direct vs through nginx"
    APP_STATIC_BYTES="$(wc -c <"$TMP/static-direct")"

    APP_WORKERS="$(children "$APP_PID")"
    WRK_C="$APP_CONNECTIONS"
    run_wrk app_direct "$APP_WORKERS" "http://127.0.0.1:$APP_PORT$APP_STATIC_PATH"
    # the app's own CPU behind a gateway, over the measured run (read right after it)
    declare -A APP_BEHIND_CPU
    app_ticks_before() { APP_TICKS_BEFORE="$(cpu_ticks $APP_WORKERS)"; }
    app_behind_cpu() {
        APP_BEHIND_CPU[$1]="$(us_per_request $(($(cpu_ticks $APP_WORKERS) - APP_TICKS_BEFORE)) "${REQS[$1]}")"
    }
    BEFORE_MEASURE=app_ticks_before
    run_wrk app_nginx "$N_WORKERS" "http://127.0.0.1:$NA_PORT$APP_STATIC_PATH"
    app_behind_cpu app_nginx
    run_wrk app_public "$GWP_PID" "http://127.0.0.1:$GWP_PORT$APP_STATIC_PATH" -H "$COOKIE_HEADER"
    app_behind_cpu app_public
    run_wrk app_gateway "$GWA_PID" "http://127.0.0.1:$GWA_PORT$APP_STATIC_PATH" -H "$COOKIE_HEADER"
    app_behind_cpu app_gateway
    BEFORE_MEASURE=""
    WRK_C="$CONNECTIONS"
    # taken ROW -> % of the direct throughput lost through the gateway; p50_diff ROW -> ms
    taken() { awk -v g="${RPS[$1]}" -v d="${RPS[app_direct]}" 'BEGIN { printf "%.1f", (1 - g / d) * 100 }'; }
    p50_diff() { awk -v g="${P50[$1]}" -v d="${P50[app_direct]}" 'BEGIN { printf "%+.2f ms", g - d }'; }
    APP_TAKEN="$(taken app_gateway)"
fi

# ---------------------------------------------------------------- login storm
if enabled storm; then
    WRK_T="$STORM_THREADS" WRK_C="$STORM_CONNECTIONS"
    run_wrk storm_quiet "$GW_PID" "http://127.0.0.1:$GW_PORT$BENCH_PATH" -H "$COOKIE_HEADER"
    STORM_SECONDS=$(($(seconds "$DURATION") + $(seconds "$WARMUP") + 2))
    log "login storm: $STORM_CLIENTS clients logging in for ${STORM_SECONDS}s ($HASH_PARAMS)"
    python3 "$ROOT/benches/login_storm.py" --target "127.0.0.1:$GW_PORT" --path /login \
        --user "$BENCH_USER" --password "$BENCH_PASSWORD" --clients "$STORM_CLIENTS" --duration "$STORM_SECONDS" \
        >"$TMP/storm.txt" 2>"$TMP/storm.log" &
    STORM_PID=$!
    BG_PIDS+=("$STORM_PID")
    sleep 1
    kill -0 "$STORM_PID" 2>/dev/null || die "the login storm stopped early: $(cat "$TMP/storm.log")"
    run_wrk storm_busy "$GW_PID" "http://127.0.0.1:$GW_PORT$BENCH_PATH" -H "$COOKIE_HEADER"
    kill -0 "$STORM_PID" 2>/dev/null || die "the login storm ended before the measured run did"
    wait "$STORM_PID" || die "login storm failed: $(tail -n 1 "$TMP/storm.log")"
    BG_PIDS=()
    read -r STORM_LOGINS STORM_FAILED STORM_RATE STORM_LOGIN_P50 STORM_LOGIN_P99 <"$TMP/storm.txt" \
        || die "cannot read the login storm's result"
    ((STORM_LOGINS > 0 && STORM_FAILED == 0)) || die "login storm: $STORM_LOGINS logins, $STORM_FAILED failed"
    WRK_T="$THREADS" WRK_C="$CONNECTIONS"
    STORM_RATIO="$(ratio "${P99[storm_busy]}" "${P99[storm_quiet]}")"
fi

# ---------------------------------------------------------------- memory
declare -A MEM_START MEM_BEFORE MEM_OPEN
if enabled memory; then
    # A second bare proxy whose downstream L4 read buffer is 4 KiB instead of pingora's 64 KiB:
    # the difference per connection is what that buffer costs (benches/README.md).
    "$BARE" "127.0.0.1:$BARE_SMALL_PORT" "127.0.0.1:$U_PORT" "$GATEWAY_THREADS" 4096 >"$TMP/bare-small.log" 2>&1 &
    BARE_SMALL_PID=$!
    PIDS+=("$BARE_SMALL_PID")
    wait_until "bare pingora proxy (4 KiB buffer)" 30 "$BARE_SMALL_PID" http_ok "http://127.0.0.1:$BARE_SMALL_PORT$BENCH_PATH"
    MEM_START[bare_small]="$(rss_kib "$BARE_SMALL_PID")"
    MEM_START[nginx]="$RSS_START_NGINX" MEM_START[bare]="$RSS_START_BARE" MEM_START[cached]="$RSS_START_GW"

    # measure_conns NAME PORT PATH "PIDS" [header]
    measure_conns() {
        local name="$1" port="$2" path="$3" pids="$4" before open count
        local -a hdr=()
        [[ $# -ge 5 ]] && hdr=(--header "$5")
        log "memory $name: $MEM_CONNECTIONS keep-alive connections to :$port$path (RSS of PIDs $pids)"
        python3 "$ROOT/benches/conns.py" --target "127.0.0.1:$port" --path "$path" "${hdr[@]}" \
            --count "$MEM_CONNECTIONS" --pids "$pids" >"$TMP/mem-$name.txt" 2>"$TMP/mem-$name.log" \
            || die "memory $name failed: $(tail -n 1 "$TMP/mem-$name.log")"
        sed 's/^/    /' "$TMP/mem-$name.log" >&2
        read -r before open count <"$TMP/mem-$name.txt" || die "cannot read the memory result ($name)"
        ((count == MEM_CONNECTIONS)) || die "memory $name: only $count connections"
        MEM_BEFORE[$name]="$before" MEM_OPEN[$name]="$open"
        sleep 1   # let the server notice the closes before the next measurement
    }
    measure_conns nginx "$N_PORT" "$BENCH_PATH" "$N_WORKERS"
    measure_conns bare "$BARE_PORT" "$BENCH_PATH" "$BARE_PID"
    measure_conns bare_small "$BARE_SMALL_PORT" "$BENCH_PATH" "$BARE_SMALL_PID"
    measure_conns cached "$GW_PORT" "$BENCH_PATH" "$GW_PID" "$COOKIE_HEADER"
    per_conn() { awk -v a="${MEM_OPEN[$1]}" -v b="${MEM_BEFORE[$1]}" -v n="$MEM_CONNECTIONS" 'BEGIN { printf "%.1f", (a - b) / n }'; }
fi

# ---------------------------------------------------------------- revocation latency
if enabled revocation; then
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
fi

# ---------------------------------------------------------------- report
CPU_MODEL="$(awk -F: '/model name/ { sub(/^ +/, "", $2); print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
NGINX_VERSION="$("$NGINX_BIN" -v 2>&1 | sed 's/.*nginx\///')"
REDIS_VERSION="$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
WRK_VERSION="$(wrk --version 2>&1 | head -n 1 | awk '{print $2}' || true)"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo uncommitted)"
if [[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -n 1)" ]]; then GIT_REV="$GIT_REV (dirty tree)"; fi
LOAD_AVG="$(cut -d' ' -f1-3 /proc/loadavg)"

# e.g. "get 1.00, pexpire 1.00" (commands per measured request; CONFIG/INFO excluded)
REDIS_PER_REQ="$(awk -F'[_:=,]' -v n="${REQS[cached]}" '
    /^cmdstat_/ && $2 !~ /^(config|info)/ { out = out sep sprintf("%s %.2f", $2, $4 / n); sep = ", " }
    END { print (out == "" ? "none" : out) }' "$TMP/redis-commandstats-cached.txt")"

sock_note=""
for row in "${ROWS[@]}"; do
    if ((${SOCK[$row]} > 0)); then sock_note+="${sock_note:+, }$row ${SOCK[$row]}"; fi
done
[[ -n "$sock_note" ]] && sock_note="- wrk socket errors: $sock_note (see the raw wrk output)"

ROW_TABLE="| row | req/s | req/s ×nginx | p50 | p99 | p99 ×nginx | CPU µs/req | CPU ×nginx | user µs/req | kernel µs/req |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
: >"$TMP/rows.tsv"
for row in "${ROWS[@]}"; do
    ROW_TABLE+="
| ${LABEL[$row]} | $(fmt_rps "${RPS[$row]}") | $(ratio "${RPS[$row]}" "${RPS[nginx]}") | $(fmt_ms "${P50[$row]}") | $(fmt_ms "${P99[$row]}") | $(ratio "${P99[$row]}" "${P99[nginx]}") | ${CPU[$row]} | $(ratio "${CPU[$row]}" "${CPU[nginx]}") | ${USER_CPU[$row]} | ${KERNEL_CPU[$row]} |"
    printf '%s\t%s\t%s\t%s\n' "${SHORT[$row]}" "${RPS[$row]}" "${P99[$row]}" "${CPU[$row]}" >>"$TMP/rows.tsv"
done

GOALS="| goal (issue 9) | measured | met |
|---|---:|:---:|
| gateway with a session (cache on) ≥ 1.0× nginx req/s | $(ratio "${RPS[cached]}" "${RPS[nginx]}")× | $(yes_no "${RPS[cached]} >= ${RPS[nginx]}") |
| its p99 no worse than nginx's | $(fmt_ms "${P99[cached]}") vs $(fmt_ms "${P99[nginx]}") | $(yes_no "${P99[cached]} <= ${P99[nginx]}") |
| its CPU per request ≤ nginx's | ${CPU[cached]} vs ${CPU[nginx]} µs | $(yes_no "${CPU[cached]} <= ${CPU[nginx]}") |
| its CPU per request within 10% of bare pingora | $(ratio "${CPU[cached]}" "${CPU[bare]}")× bare | $(yes_no "${CPU[cached]} <= 1.1 * ${CPU[bare]}") |
| its CPU per request below bare pingora | | $(yes_no "${CPU[cached]} < ${CPU[bare]}") |"
if enabled app; then
    GOALS+="
| real app: the gateway takes < 5% of the app's throughput | ${APP_TAKEN}% | $(yes_no "$APP_TAKEN < 5") |"
fi
if enabled storm; then
    GOALS+="
| login storm: proxied p99 ≤ 2× quiet | ${STORM_RATIO}× | $(yes_no "${P99[storm_busy]} <= 2 * ${P99[storm_quiet]}") |"
fi
if enabled memory; then
    GOALS+="
| memory per keep-alive connection ≤ nginx's | $(per_conn cached) vs $(per_conn nginx) KiB | $(yes_no "$(per_conn cached) <= $(per_conn nginx)") |"
fi
if enabled revocation; then
    GOALS+="
| revocation refused by the other instance within 100 ms (worst of $REV_ROUNDS) | $(fmt_ms "$REV_WORST") | $(yes_no "$REV_WORST <= 100") |"
fi

CHART_NOTE=""
if python3 "$ROOT/benches/chart.py" "$TMP/rows.tsv" "$TMP/latest.svg" \
    "$(date -u '+%Y-%m-%d'), $GIT_REV, $CPUS CPUs, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, gateway threads $GATEWAY_THREADS"; then
    CHART_NOTE="![req/s, p99 and CPU per request of the six rows](latest.svg)"
else
    log "WARNING: chart.py failed; no chart this run"
fi

REPORT="$(
    cat <<EOF
# Gateway load benchmark

- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit: $GIT_REV
- machine: $CPUS CPUs${CPU_MODEL:+ ($CPU_MODEL)}, load average at the end $LOAD_AVG; wrk, nginx, redis, the app and the proxies all share the CPUs, so compare rows of one run, not absolute numbers
- wrk ${WRK_VERSION}: \`-t$THREADS -c$CONNECTIONS -d$DURATION --latency\` (after a $WARMUP warm-up), GET, keep-alive, loopback
- nginx $NGINX_VERSION: worker_processes $NGINX_WORKERS, access_log off, upstream keepalive 64; redis $REDIS_VERSION; gateway and bare pingora: $GATEWAY_THREADS threads, mimalloc, release profile; gateway RUST_LOG=$GATEWAY_LOG
- session rows sent a valid session cookie; the public row GET $PUBLIC_PATH (in \`[access] public\`) without one; every measured and warm-up request was answered 2xx; Redis commands per request with the cache on: $REDIS_PER_REQ
- CPU µs/req: utime+stime (\`/proc/PID/stat\`, CLK_TCK $CLK_TCK) of the proxy under test during the measured run ÷ requests completed (direct: U's nginx workers; nginx: N's workers, not U's; the others: that one process); ×nginx = that row ÷ the nginx row; user and kernel: the same split into utime and stime
$sock_note

## Proxy rows

$ROW_TABLE

$CHART_NOTE

## Goals

$GOALS
EOF
)"

if enabled app; then
    REPORT+="

## In front of the real app

The example Flask app (docker/app) under gunicorn, 2 sync workers, access log on (as in its
Dockerfile), GET $APP_STATIC_PATH ($APP_STATIC_BYTES bytes, served by Flask) with
\`wrk -t$THREADS -c$APP_CONNECTIONS -d$DURATION\`:
- directly;
- through nginx N, as a reference for what any proxy sharing the CPUs with the app costs;
- through a gateway with /static/ public, as in docker/gateway.toml (the session cookie is sent
  but not checked; no identity headers);
- through a gateway with a session (/static/ not public there: the session is checked, the
  identity headers are signed and added, and the app verifies them in gateway_auth.py and loads
  the user).

gunicorn's sync workers close every connection, so the proxies connect to the app for every
request. Proxy CPU is the gateway's (or N's workers'), app CPU gunicorn's two workers', per
request.

| path | req/s | throughput taken | p50 | p50 difference | p99 | proxy CPU µs/req | app CPU µs/req |
|---|---:|---:|---:|---:|---:|---:|---:|
| direct → gunicorn | $(fmt_rps "${RPS[app_direct]}") | | $(fmt_ms "${P50[app_direct]}") | | $(fmt_ms "${P99[app_direct]}") | | ${CPU[app_direct]} |
| nginx plain proxy → gunicorn (reference) | $(fmt_rps "${RPS[app_nginx]}") | $(taken app_nginx)% | $(fmt_ms "${P50[app_nginx]}") | $(p50_diff app_nginx) | $(fmt_ms "${P99[app_nginx]}") | ${CPU[app_nginx]} (nginx) | ${APP_BEHIND_CPU[app_nginx]} |
| gateway, /static/ public → gunicorn | $(fmt_rps "${RPS[app_public]}") | $(taken app_public)% | $(fmt_ms "${P50[app_public]}") | $(p50_diff app_public) | $(fmt_ms "${P99[app_public]}") | ${CPU[app_public]} | ${APP_BEHIND_CPU[app_public]} |
| gateway, with a session → gunicorn | $(fmt_rps "${RPS[app_gateway]}") | $(taken app_gateway)% | $(fmt_ms "${P50[app_gateway]}") | $(p50_diff app_gateway) | $(fmt_ms "${P99[app_gateway]}") | ${CPU[app_gateway]} | ${APP_BEHIND_CPU[app_gateway]} |

With a session, the gateway takes **${APP_TAKEN}%** of the app's throughput (goal: under 5%),
p50 $(p50_diff app_gateway)."
fi

if enabled storm; then
    REPORT+="

## Login storm

Proxied traffic (\`wrk -t$STORM_THREADS -c$STORM_CONNECTIONS -d$DURATION\`, GET $BENCH_PATH with a session,
cache on) quiet, then while $STORM_CLIENTS clients log in back to back on the same gateway
(benches/login_storm.py, JSON \`POST /login\`, correct password, $HASH_PARAMS from
\`gateway hash-password\`).

| proxied traffic | req/s | p50 | p99 |
|---|---:|---:|---:|
| quiet | $(fmt_rps "${RPS[storm_quiet]}") | $(fmt_ms "${P50[storm_quiet]}") | $(fmt_ms "${P99[storm_quiet]}") |
| during the storm | $(fmt_rps "${RPS[storm_busy]}") | $(fmt_ms "${P50[storm_busy]}") | $(fmt_ms "${P99[storm_busy]}") |

Proxied p99 during the storm: **${STORM_RATIO}×** quiet (goal: ≤ 2×). Logins: $STORM_LOGINS in
${STORM_SECONDS}s, $STORM_RATE/s, 0 failed, login p50 $STORM_LOGIN_P50 ms, p99 $STORM_LOGIN_P99 ms."
fi

if enabled memory; then
    REPORT+="

## Memory

RSS (VmRSS) with $MEM_CONNECTIONS idle keep-alive connections open, each having made one
\`GET $BENCH_PATH\` (benches/conns.py), measured one server after the other in this run;
\"before\" is right before opening them (after the rows above), per connection = (open − before)
÷ $MEM_CONNECTIONS. nginx: N's $NGINX_WORKERS workers summed (master excluded). The gateway is the
cache-on one, with the session cookie.

| process | RSS at start-up | before | with $MEM_CONNECTIONS connections | KiB per connection | ×nginx |
|---|---:|---:|---:|---:|---:|
| nginx plain proxy (workers) | $(fmt_mib "${MEM_START[nginx]}") | $(fmt_mib "${MEM_BEFORE[nginx]}") | $(fmt_mib "${MEM_OPEN[nginx]}") | $(per_conn nginx) | 1.00 |
| bare pingora | $(fmt_mib "${MEM_START[bare]}") | $(fmt_mib "${MEM_BEFORE[bare]}") | $(fmt_mib "${MEM_OPEN[bare]}") | $(per_conn bare) | $(ratio "$(per_conn bare)" "$(per_conn nginx)") |
| bare pingora, 4 KiB L4 read buffer | $(fmt_mib "${MEM_START[bare_small]}") | $(fmt_mib "${MEM_BEFORE[bare_small]}") | $(fmt_mib "${MEM_OPEN[bare_small]}") | $(per_conn bare_small) | $(ratio "$(per_conn bare_small)" "$(per_conn nginx)") |
| gateway (session, cache on) | $(fmt_mib "${MEM_START[cached]}") | $(fmt_mib "${MEM_BEFORE[cached]}") | $(fmt_mib "${MEM_OPEN[cached]}") | $(per_conn cached) | $(ratio "$(per_conn cached)" "$(per_conn nginx)") |

Gateway with the cache off at start-up: $(fmt_mib "$RSS_START_GW2"). nginx preallocates its
connection table (\`worker_connections\`: $N_WORKER_CONNECTIONS for N, 4096 for U) at start-up, so
that part of each connection is in the start-up RSS, not in the growth: N's workers started at
$(fmt_mib "$RSS_START_NGINX"), U's at $(fmt_mib "$RSS_START_U"), about
$(awk -v n="$RSS_START_NGINX" -v u="$RSS_START_U" -v d="$((NGINX_WORKERS * (N_WORKER_CONNECTIONS - 4096)))" \
    'BEGIN { if (d > 0) printf "%.2f", (n - u) / d; else printf "n/a" }') KiB per preallocated slot."
fi

if enabled revocation; then
    REPORT+="

## Revocation latency

Log in on gateway 1, let a second cache-on gateway (same Redis) serve the session from its
validation cache, log out on gateway 1, then probe the second gateway in a tight loop until it
answers 401; time from the logout response to that 401 (benches/revocation.py; design: ≤ 100 ms).

| rounds | worst | median | best | probes still answered 200 after logout (all rounds) |
|---:|---:|---:|---:|---:|
| $REV_ROUNDS | $(fmt_ms "$REV_WORST") | $(fmt_ms "$REV_MEDIAN") | $(fmt_ms "$REV_BEST") | $REV_ACCEPTED |"
fi

if [[ -n "$SKIP" ]]; then
    REPORT+="

Parts skipped in this run (SKIP): $SKIP."
fi

mkdir -p "$RESULTS_DIR"
REPORT="$(printf '%s\n' "$REPORT" | cat -s)"   # no double blank lines (empty notes)
printf '%s\n' "$REPORT" >"$RESULTS_DIR/latest.md"
if [[ -s "$TMP/latest.svg" ]]; then
    cp "$TMP/latest.svg" "$RESULTS_DIR/latest.svg"
else
    rm -f "$RESULTS_DIR/latest.svg"
fi
printf '\n%s\n\n' "$REPORT"
log "written to ${RESULTS_DIR#"$ROOT"/}/latest.md${CHART_NOTE:+ and latest.svg}"
