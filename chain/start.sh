#!/usr/bin/env bash
# Start the local dev chain (chopsticks + Rococo Asset Hub genesis runtime) in the background.
#
#   chain/start.sh [--port N] [--block-mode Instant|Batch|Manual] [--log FILE] [--pidfile FILE]
#                  [--timeout SECONDS]
#
# Installs node_modules (npm ci) and extracts the genesis spec when missing, starts chopsticks,
# waits until it logs "RPC listening" and its port accepts connections, then prints its PID as
# the only line on stdout (messages go to stderr) and exits 0. Stop it with `kill PID`
# or chain/stop.sh.
# The chain keeps no state across restarts: every start is a new chain from genesis.
# Defaults come from the environment: CHAIN_PORT (9950), CHAIN_BLOCK_MODE (Instant),
# CHAIN_LOG (chain/chopsticks-<port>.log), CHAIN_START_TIMEOUT (60); the PID is also written to
# --pidfile (chain/chopsticks-<port>.pid), which chain/stop.sh reads.
# Exit status: 0 ready, 2 Node.js/npm or the node dependencies are missing and cannot be
# installed, 1 any other failure (port taken, chopsticks crashed or not ready in time).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${CHAIN_PORT:-9950}"
block_mode="${CHAIN_BLOCK_MODE:-Instant}"
log="${CHAIN_LOG:-}"
pidfile=""
timeout="${CHAIN_START_TIMEOUT:-60}"

die() { echo "chain/start.sh: $*" >&2; exit 1; }
missing() { echo "chain/start.sh: $*" >&2; exit 2; }
say() { echo "chain/start.sh: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --block-mode) block_mode="$2"; shift 2 ;;
    --log) log="$2"; shift 2 ;;
    --pidfile) pidfile="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$port" =~ ^[0-9]+$ ]] || die "--port must be a number, got '$port'"
log="${log:-$here/chopsticks-$port.log}"
pidfile="${pidfile:-$here/chopsticks-$port.pid}"

command -v node >/dev/null || missing "node is not installed: install Node.js >= 20 (and npm) first"
command -v npm >/dev/null || missing "npm is not installed: install npm (it comes with Node.js)"

install_deps() {
  if [[ -f "$here/node_modules/@acala-network/chopsticks/chopsticks.cjs" &&
        -f "$here/node_modules/@substrate/connect-known-chains/package.json" ]]; then
    return
  fi
  say "installing node dependencies into $here/node_modules (about 2 minutes)"
  if [[ -f "$here/package-lock.json" ]]; then
    (cd "$here" && npm ci --no-audit --no-fund >&2) || missing "npm ci failed (see above; needs the npm registry)"
  else
    (cd "$here" && npm install --no-audit --no-fund >&2) || missing "npm install failed (see above)"
  fi
}

extract_spec() {
  if [[ ! -s "$here/asset-hub-rococo.json" ]]; then
    (cd "$here" && node extract-spec.mjs "$here/asset-hub-rococo.json" >&2) ||
      missing "could not extract the chain spec (is @substrate/connect-known-chains installed?)"
  fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A lock, so that two starts at once (make chain + a test session) do not race on npm.
if command -v flock >/dev/null; then
  exec 9>"$here/.install-lock"
  flock 9
  install_deps
  extract_spec
  flock -u 9
else
  install_deps
  extract_spec
fi

port_open "$port" && die "port $port is already in use (a chain already running? stop it or pass --port)"

: >"$log"
# exec in the subshell: $! is node's own PID, so `kill PID` stops the chain itself.
# PORT is unset because chopsticks lets it override --port.
(cd "$here" && exec env -u PORT node node_modules/@acala-network/chopsticks/chopsticks.cjs \
  --config chain.yml --port "$port" --build-block-mode "$block_mode" >>"$log" 2>&1 </dev/null) &
pid=$!
echo "$pid" >"$pidfile"

deadline=$((SECONDS + timeout))
until grep -q "RPC listening" "$log" 2>/dev/null && port_open "$port"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    tail -n 30 "$log" >&2 || true
    die "chopsticks exited before it was ready (log: $log)"
  fi
  if ((SECONDS >= deadline)); then
    tail -n 30 "$log" >&2 || true
    kill "$pid" 2>/dev/null || true
    die "chopsticks not ready after ${timeout}s; stopped it (log: $log)"
  fi
  sleep 0.2
done
say "chain ready at ws://127.0.0.1:$port (pid $pid, block mode $block_mode, log $log)"
echo "$pid"
