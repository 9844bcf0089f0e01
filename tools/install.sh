#!/usr/bin/env bash
# Create .venv and install the pinned requirements. `--test` adds the test tools and Debian's
# Chromium for the browser tests (never a browser download). `--check` only says whether an
# install is needed (exit 0: up to date, 1: needed).
# pip runs only when the requirements files or the venv's Python changed since the last finished
# install, or the venv lacks a pinned package (tools/install_state.py keeps a stamp in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
KIND=()
CHECK_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --test) KIND=(--test) ;;
    --check) CHECK_ONLY=1 ;;
    *) echo "tools/install.sh: unknown option $arg (use --test and/or --check)" >&2; exit 2 ;;
  esac
done
REQUIREMENTS=requirements.txt
[ ${#KIND[@]} -eq 0 ] || REQUIREMENTS=requirements-test.txt

# Prints the decision; a missing or broken venv (its python does not run) needs an install too.
check() {
  if [ ! -x .venv/bin/python ]; then echo "install needed: no virtual environment in .venv"; return 1; fi
  local rc=0
  .venv/bin/python tools/install_state.py check --venv .venv "${KIND[@]}" || rc=$?
  if [ "$rc" -gt 1 ]; then echo "install needed: the virtual environment in .venv is broken"; return 1; fi
  return "$rc"
}

if [ "$CHECK_ONLY" = 1 ]; then
  check
  exit $?
fi

if decision=$(check); then
  echo "Python packages are up to date ($REQUIREMENTS unchanged); skipping pip."
else
  echo "${decision}"
  # no venv yet, or one whose python no longer runs (e.g. its base Python was removed): a fresh one
  .venv/bin/python -c "import sys" 2>/dev/null || "$PYTHON" -m venv --clear .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  echo "Installing Python packages from $REQUIREMENTS (the first install downloads several GB and takes minutes)..."
  # pip's own progress (one line per package, download bars) shows that something is happening.
  .venv/bin/python -m pip install -r "$REQUIREMENTS"
  .venv/bin/python -m pip install --no-deps -r requirements-nodeps.txt
  .venv/bin/python tools/install_state.py stamp --venv .venv "${KIND[@]}"
  echo "Python packages installed."
fi

if [ ${#KIND[@]} -gt 0 ] && [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "Installing Debian's chromium for the browser tests..."
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
