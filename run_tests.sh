#!/usr/bin/env bash
# Install everything the tests need (first run) and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")"
bash tools/install.sh --test
exec .venv/bin/python -m pytest "$@"
