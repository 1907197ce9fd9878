#!/usr/bin/env bash
# The creator's development environment: the project venv with decentralml installed.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root" && make venv
echo "activate with: source $root/.venv/bin/activate"
