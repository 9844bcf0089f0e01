#!/usr/bin/env bash
# Install (first run) and launch the web UI on http://127.0.0.1:7860. Flags pass through to launch.py.
set -euo pipefail
cd "$(dirname "$0")"
bash tools/install.sh
exec .venv/bin/python launch.py "$@"
