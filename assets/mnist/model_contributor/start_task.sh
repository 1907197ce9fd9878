#!/usr/bin/env bash
# Set up the contribution's environment and run it (seed step 4: ./start_task.sh).
#   ./start_task.sh --task-id N --shard-index I [--config CONFIG.yaml]
# The contributor's key comes from $DECENTRALML_CONTRIBUTOR_URI (a secret URI or mnemonic),
# storage credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE).
# DECENTRALML_PYTHON: an interpreter that already has decentralml (skips the venv setup).
# DECENTRALML_PIP_ARGS: extra pip options, e.g. "--index-url URL" for a mirror.
#
# The venv is built in .venv.partial and renamed to .venv only when every install succeeded
# (.venv/.installed marks it): a failed or interrupted install leaves no .venv behind, and the
# next run starts over instead of reusing a half-made one. Inside the renamed venv only
# bin/python is used (console scripts keep the old path in their first line).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${DECENTRALML_PYTHON:-}"
if [ -z "$python" ]; then
  venv="$here/.venv"
  if [ ! -f "$venv/.installed" ]; then
    wheels=("$here"/wheels/decentralml-*.whl)
    if [ ! -f "${wheels[0]}" ]; then
      echo "error: this package carries no decentralml wheel (wheels/); set" \
        "DECENTRALML_PYTHON to an interpreter that has decentralml installed" >&2
      exit 2
    fi
    partial="$here/.venv.partial"
    rm -rf "$partial"
    trap 'rm -rf "$partial"' EXIT
    echo "installing the contribution's environment into $venv" >&2
    python3 -m venv "$partial"
    # shellcheck disable=SC2086  # DECENTRALML_PIP_ARGS holds several options
    "$partial/bin/python" -m pip install --quiet --disable-pip-version-check \
      ${DECENTRALML_PIP_ARGS:-} -r "$here/requirements.txt"
    # shellcheck disable=SC2086
    "$partial/bin/python" -m pip install --quiet --disable-pip-version-check \
      ${DECENTRALML_PIP_ARGS:-} --no-deps "${wheels[@]}"
    touch "$partial/.installed"
    rm -rf "$venv"  # a half-made .venv from an older script: no marker, never used
    mv "$partial" "$venv"
    trap - EXIT
  fi
  python="$venv/bin/python"
fi
exec "$python" "$here/model_contributor.py" "$@"
