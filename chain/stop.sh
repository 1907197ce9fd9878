#!/usr/bin/env bash
# Stop a chain started by chain/start.sh: reads its PID file and sends SIGTERM (SIGKILL after
# 15 s). Only a process whose command line mentions chopsticks is signalled.
#
#   chain/stop.sh [--port N | --pidfile FILE]      (default port: CHAIN_PORT or 9950)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${CHAIN_PORT:-9950}"
pidfile=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --pidfile) pidfile="$2"; shift 2 ;;
    *) echo "chain/stop.sh: unknown argument '$1'" >&2; exit 1 ;;
  esac
done
pidfile="${pidfile:-$here/chopsticks-$port.pid}"

if [[ ! -f "$pidfile" ]]; then
  echo "chain/stop.sh: no $pidfile: nothing to stop" >&2
  exit 0
fi
pid="$(cat "$pidfile")"
if ! grep -qa chopsticks "/proc/$pid/cmdline" 2>/dev/null; then
  echo "chain/stop.sh: process $pid is not running chopsticks (already stopped)" >&2
  rm -f "$pidfile"
  exit 0
fi
kill "$pid"
for _ in $(seq 150); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
rm -f "$pidfile"
echo "chain/stop.sh: stopped chopsticks (pid $pid)" >&2
