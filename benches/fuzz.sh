#!/usr/bin/env bash
# Fuzzing, in one command: the property tests of gateway/src/fuzz_props.rs in a release build
# with at least 10^6 generated inputs in all, then the HTTP mutation run of benches/http_fuzz.py
# (10^5 mutated requests over raw sockets against a live gateway, Redis and upstream).
#
#   bash benches/fuzz.sh            # both
#   bash benches/fuzz.sh props      # property tests only
#   bash benches/fuzz.sh http       # HTTP mutation run only
#
# Environment:
#   FUZZ_CASES=100000           cases of a cheap property; one that costs more per case runs
#                               FUZZ_CASES / cost (100000 gives about 1.44 million in all)
#   FUZZ_SEED=random            property-test seed; the one drawn is printed, and passing it
#                               back (FUZZ_SEED=<n>) replays the same inputs
#   FUZZ_HTTP_REQUESTS=100000   mutated requests
#   FUZZ_HTTP_SEED=20261130     HTTP run seed (request i depends on the seed and i only)
#   FUZZ_HTTP_CONCURRENCY=32    sockets in flight
#
# Prints a table of property -> cases and the HTTP run's status histogram, writes both to
# benches/results/fuzz-latest.md, and exits non-zero if anything failed. Needs cargo, python3
# (3.11, standard library only) and redis-server.
set -euo pipefail

MODE="${1:-all}"
FUZZ_CASES="${FUZZ_CASES:-100000}"
FUZZ_SEED="${FUZZ_SEED:-random}"
FUZZ_HTTP_REQUESTS="${FUZZ_HTTP_REQUESTS:-100000}"
FUZZ_HTTP_SEED="${FUZZ_HTTP_SEED:-20261130}"
FUZZ_HTTP_CONCURRENCY="${FUZZ_HTTP_CONCURRENCY:-32}"
MIN_PROPERTY_CASES=1000000

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="$ROOT/benches/results/fuzz-latest.md"
cd "$ROOT"
if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

log() { printf '[fuzz.sh] %s\n' "$*" >&2; }
case "$MODE" in
all | props | http) ;;
*)
    log "usage: bash benches/fuzz.sh [all|props|http]"
    exit 2
    ;;
esac
for tool in cargo python3; do
    command -v "$tool" >/dev/null || { log "missing $tool"; exit 2; }
done
if [[ "$MODE" != props ]] && ! command -v redis-server >/dev/null; then
    log "missing redis-server (apt-get install redis-server)"
    exit 2
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/gateway-fuzz.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
failed=0
report=()

if [[ "$MODE" != http ]]; then
    if [[ "$FUZZ_SEED" == random ]]; then
        FUZZ_SEED="$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')"
    fi
    log "property tests: release build, FUZZ_CASES=$FUZZ_CASES FUZZ_SEED=$FUZZ_SEED"
    start=$SECONDS
    # Two test threads on a 2-core machine: the properties are independent and CPU-bound.
    if FUZZ_CASES="$FUZZ_CASES" FUZZ_SEED="$FUZZ_SEED" \
        cargo test --release --locked --lib fuzz_props -- --nocapture --test-threads=2 \
        >"$TMP/props.log" 2>&1; then
        props_status=passed
    else
        props_status=FAILED
        failed=1
    fi
    props_seconds=$((SECONDS - start))
    grep -E '^(fuzz_props|test |test result)' "$TMP/props.log" >&2 || true
    # "fuzz_props: NAME cases=N cost=C seed=S ms=M" -> a markdown table and the total
    rows="$(awk '$1 == "fuzz_props:" && $3 ~ /^cases=/ {
            split($3, c, "="); split($6, t, "=");
            printf "| `%s` | %d | %.1f |\n", $2, c[2], t[2] / 1000
        }' "$TMP/props.log" | sort)"
    total="$(awk '$1 == "fuzz_props:" && $3 ~ /^cases=/ { split($3, c, "="); t += c[2] }
        END { print t + 0 }' "$TMP/props.log")"
    table="$rows"$'\n'"| **total** | **$total** | |"
    gaps="$(grep -E '^fuzz_props: known gap' "$TMP/props.log" | sed 's/^fuzz_props: /- /' || true)"
    if ((total < MIN_PROPERTY_CASES)) && [[ "$props_status" == passed ]]; then
        log "only $total property cases ran (want >= $MIN_PROPERTY_CASES): raise FUZZ_CASES"
        props_status="FAILED (too few cases)"
        failed=1
    fi
    if [[ "$props_status" != passed ]]; then
        grep -E -A30 'panicked at|minimal failing input' "$TMP/props.log" | head -80 >&2 || true
    fi
    report+=(
        "## Property tests"
        ""
        "\`FUZZ_CASES=$FUZZ_CASES FUZZ_SEED=$FUZZ_SEED cargo test --release --lib fuzz_props\`:"
        "**$props_status**, $total generated inputs in ${props_seconds}s (build included)."
        ""
        "| property | cases | seconds |"
        "|---|---:|---:|"
        "$table"
        ""
        "Known gaps (inputs a property excludes until the code is fixed):"
        ""
        "${gaps:-- none}"
        ""
    )
fi

if [[ "$MODE" != props ]]; then
    log "building the gateway (release)"
    cargo build --release --locked --bin gateway >&2
    TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
    [[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
    log "HTTP mutation run: $FUZZ_HTTP_REQUESTS requests, seed $FUZZ_HTTP_SEED"
    start=$SECONDS
    if python3 benches/http_fuzz.py --requests "$FUZZ_HTTP_REQUESTS" --seed "$FUZZ_HTTP_SEED" \
        --concurrency "$FUZZ_HTTP_CONCURRENCY" --gateway-bin "$TARGET_DIR/release/gateway" \
        | tee "$TMP/http.log"; then
        http_status=passed
    else
        http_status=FAILED
        failed=1
    fi
    report+=(
        "## HTTP mutation run"
        ""
        "\`python3 benches/http_fuzz.py --requests $FUZZ_HTTP_REQUESTS --seed $FUZZ_HTTP_SEED\`"
        "(release gateway, concurrency $FUZZ_HTTP_CONCURRENCY): **$http_status** in $((SECONDS - start))s."
        ""
        '```'
        "$(cat "$TMP/http.log")"
        '```'
        ""
    )
fi

{
    printf '# Fuzzing results\n\n'
    printf '%s, commit %s, %s CPUs (`bash benches/fuzz.sh %s`).\n\n' \
        "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
        "$(nproc)" "$MODE"
    printf '%s\n' "${report[@]}"
} >"$TMP/report.md"
mkdir -p "$(dirname "$RESULTS")"
cp "$TMP/report.md" "$RESULTS"
printf '\n' >&2
cat "$TMP/report.md"
log "written to ${RESULTS#"$ROOT"/}"
if ((failed)); then
    log "FAILED"
    exit 1
fi
log "PASSED"
