#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine (with Rust installed) to a verdict:
#
#   bash tests/run.sh
#
# 1. tests/deps.sh                 Debian packages + .venv (skipped when already done)
# 2. cargo test --all-targets      Rust unit tests (gateway/src) and integration tests (tests/it,
#                                  one binary `it`; real redis-server); --no-fail-fast, so
#                                  failing unit tests do not skip the integration tests
# 3. pytest                        example app, compose and Kubernetes manifest checks, end-to-end (gateway + app
#                                  + Redis + headless Chromium)
#
# Every step runs even if an earlier one failed; the exit status is non-zero if any failed.
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k browser`.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

results=()
failed=0
step() {
    local name=$1
    shift
    printf '\n==> %s\n' "$name"
    local start=$SECONDS
    if "$@"; then
        results+=("ok    $name ($((SECONDS - start))s)")
    else
        results+=("FAIL  $name ($((SECONDS - start))s, exit $?)")
        failed=$((failed + 1))
    fi
}

step "dependencies (tests/deps.sh)" bash tests/deps.sh
if [[ ${results[0]} == FAIL* ]]; then
    printf '\nFAILED: dependencies could not be installed; nothing was tested\n' >&2
    exit 1
fi
step "cargo test --all-targets" cargo test --all-targets --no-fail-fast
step "pytest docker/app tests/check_compose.py tests/check_kubernetes.py tests/e2e" \
    .venv/bin/pytest -q docker/app tests/check_compose.py tests/check_kubernetes.py tests/e2e "$@"

printf '\n==> summary\n'
printf '  %s\n' "${results[@]}"
if ((failed)); then
    printf 'FAILED: %d of %d steps failed\n' "$failed" "${#results[@]}"
    exit 1
fi
printf 'PASSED: all %d steps passed\n' "${#results[@]}"
