#!/usr/bin/env bash
# Installs everything the demo (docker/demo.sh) and the tests (tests/run.sh) need on a
# Debian machine. Safe to rerun: apt runs only when a package is missing, pip only when a
# requirements file changed.
#
#   bash tests/deps.sh
#
# - Debian packages (apt-get; through sudo when not root).
# - A Python venv at .venv (repo root) with every requirements file the tests use.
# - The Rust toolchain is NOT installed here (Debian's rustc is too old for this crate,
#   rust-version in Cargo.toml): install it once with rustup, https://rustup.rs.
#
# Environment: PYTHON (interpreter for the venv, default python3),
#              DEPS_FORCE_PIP=1 (reinstall the Python packages even if unchanged).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

say() { printf 'deps: %s\n' "$*" >&2; }

# --- Debian packages ----------------------------------------------------------------------
APT_PACKAGES=(
    build-essential pkg-config cmake   # the gateway's native build dependencies
    curl                               # readiness checks in docker/demo.sh
    redis-server                       # session store for the demo and the tests
    nginx-light wrk                    # benches/, tests/it/forward_auth.rs (auth_request)
    caddy                              # tests/it/forward_auth.rs (forward_auth)
    chromium chromium-driver           # tests/e2e/test_browser.py
    fonts-wqy-zenhei                   # CJK glyphs for the Chinese login page screenshot
    python3 python3-venv               # .venv
)

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        SUDO=()
    elif command -v sudo >/dev/null; then
        SUDO=(sudo)
    else
        say "missing Debian packages (${missing[*]}) and not root, and no sudo to install them"
        exit 1
    fi
    say "installing Debian packages: ${missing[*]}"
    "${SUDO[@]}" apt-get update
    # Debian 13 dropped nginx-light; plain nginx serves benches/ just as well.
    if [[ " ${missing[*]} " == *" nginx-light "* ]] \
        && ! apt-cache show nginx-light >/dev/null 2>&1; then
        missing=("${missing[@]/nginx-light/nginx}")
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
else
    say "Debian packages: all present"
fi

# --- Rust -----------------------------------------------------------------------------------
if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
    say "cargo not found: install Rust (>= $(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml)) with rustup, https://rustup.rs, then rerun"
    exit 1
fi

# --- Python venv ----------------------------------------------------------------------------
REQUIREMENTS=(
    docker/app/requirements.txt
    docker/app/requirements-dev.txt
    tests/requirements.txt
    tests/vectors/requirements.txt
    tests/e2e/requirements.txt
)
VENV="$ROOT/.venv"
STAMP="$VENV/.requirements.sha256"
PYTHON=${PYTHON:-python3}

if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    say "creating the Python venv at .venv ($("$PYTHON" --version 2>&1))"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi

# The hash covers the requirement files and the venv's interpreter version.
want=$( { cat "${REQUIREMENTS[@]}"; "$VENV/bin/python" -VV; } | sha256sum | cut -d' ' -f1)
if [[ ${DEPS_FORCE_PIP:-} != 1 && -f "$STAMP" && $(cat "$STAMP") == "$want" ]]; then
    say "Python packages: up to date (.venv)"
else
    say "installing Python packages into .venv"
    rm -f "$STAMP"
    args=()
    for f in "${REQUIREMENTS[@]}"; do args+=(-r "$f"); done
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${args[@]}"
    echo "$want" >"$STAMP"
fi

say "ready"
