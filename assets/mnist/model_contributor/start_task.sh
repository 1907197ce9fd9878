#!/usr/bin/env bash
# Set up the contribution's environment and run it (seed step 4: ./start_task.sh).
#   ./start_task.sh --task-id N --shard-index I [--config CONFIG.yaml]
# The contributor's key comes from $DECENTRALML_CONTRIBUTOR_URI (a secret URI or mnemonic).
# DECENTRALML_PYTHON: an interpreter that already has the requirements (skips the venv setup).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${DECENTRALML_PYTHON:-}"
if [ -z "$python" ]; then
  if [ ! -x "$here/.venv/bin/python" ]; then
    python3 -m venv "$here/.venv"
    "$here/.venv/bin/pip" install --quiet -r "$here/requirements.txt"
  fi
  python="$here/.venv/bin/python"
fi
exec "$python" "$here/model_contributor.py" "$@"
