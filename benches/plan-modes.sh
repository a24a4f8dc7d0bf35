#!/usr/bin/env bash
# The workload in each PostgreSQL plan cache mode, interleaved (auto, custom, generic, then again),
# so that the machine's drift falls on every mode alike. Sets plan_cache_mode server-wide with
# ALTER SYSTEM between the runs and resets it at the end: run it on a server of your own.
#
# Usage: benches/plan-modes.sh [rounds (6)] [workflows (5000: 50,000 tasks)] [database URL]
# Build first: cargo build --release -p dal-benches --bin workload
set -euo pipefail
rounds=${1:-6}
workflows=${2:-5000}
url=${3:-postgres://postgres@127.0.0.1:5432/postgres}
workload="$(dirname "$0")/../target/release/workload"
set_mode() {
  psql "$url" -qAt -c "ALTER SYSTEM SET plan_cache_mode = $1" -c "SELECT pg_reload_conf()" >/dev/null
}
trap 'psql "$url" -qAt -c "ALTER SYSTEM RESET plan_cache_mode" -c "SELECT pg_reload_conf()" >/dev/null' EXIT
for round in $(seq 1 "$rounds"); do
  for mode in auto force_custom_plan force_generic_plan; do
    set_mode "$mode"
    rate=$("$workload" --quiet --workflows "$workflows" --database-url "$url" | grep -oE '[0-9]+ tasks/s' | head -1)
    printf '%s %-20s %s\n' "$round" "$mode" "$rate"
  done
done
