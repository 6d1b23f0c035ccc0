#!/usr/bin/env bash
# Installs what the local stack and the tests need and this machine lacks: Debian
# packages, then the virtual environment .venv/ with the project in it. Idempotent:
# a second run checks and does nothing. Each failure is one line saying what to do.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "installing Debian packages needs root: run as root or install sudo"; fi
}

listens() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- Debian packages: a package is needed only when what it provides is absent.
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
listens 5432 || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
listens 5672 || command -v rabbitmq-server >/dev/null 2>&1 || need+=(rabbitmq-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # browser tests (tests/browser)
if [ ${#need[@]} -gt 0 ]; then
    say "installing Debian packages: ${need[*]}"
    if ! as_root apt-get update -qq >/tmp/smap-bench-apt.log 2>&1 ||
       ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" \
            >>/tmp/smap-bench-apt.log 2>&1; then
        die "could not install Debian packages ${need[*]} ($(tail -n 1 /tmp/smap-bench-apt.log)); install them by hand, then re-run"
    fi
fi

# --- Python 3.11 and the virtual environment.
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            PY=$candidate; break
        fi
    done
fi
[ -n "$PY" ] || die "Python 3.11 is needed (torch and the bundled Triton are built for it): apt-get install python3.11 python3.11-venv, or set PYTHON=/path/to/python3.11"

if [ ! -x .venv/bin/python ]; then
    say "creating the virtual environment .venv/ with $PY"
    "$PY" -m venv .venv || die "could not create .venv (apt-get install python3.11-venv)"
fi
stamp=.venv/.smap-bench-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing smap-bench and its dependencies into .venv/ (a few minutes the first time)"
    .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
    if ! .venv/bin/python -m pip install --progress-bar on -e '.[dev]' 2>&1 |
        { grep --line-buffered -vE '^(Requirement already satisfied|  )' || true; }; then
        die "pip could not install the project (see the messages above)"
    fi
    echo "$want" >"$stamp"
fi
