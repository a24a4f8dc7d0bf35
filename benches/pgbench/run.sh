#!/usr/bin/env bash
# Runs the DAL's own statements with pgbench on the server that PG* variables point at, and prints
# the latency of each (the statement alone: pgbench -r, the task-id lookup before it excluded).
# Compare with the DAL's time for the same operation (cargo bench -p dal-benches: postgres/create/dal,
# postgres/transition_with_event/dal, postgres/claim_32/dal) on the same server: the difference is
# what the DAL adds on the client (Diesel, the pool, row decoding).
#
# Usage: PGHOST=127.0.0.1 PGUSER=postgres PGDATABASE=postgres benches/pgbench/run.sh [seconds per script]
# PGBENCH_OPTIONS adds server settings, e.g. PGBENCH_OPTIONS='-c synchronous_commit=off' (as
# DAL_BENCH_PG_OPTIONS does for cargo bench).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-6}
psql -q -v ON_ERROR_STOP=1 -f setup.sql
for script in create transition get claim; do
  # The store's sessions plan with sequential and bitmap scans off (dal_postgres::INDEX_PLANS).
  latency=$(PGOPTIONS="-c search_path=dal_pgbench -c enable_seqscan=off -c enable_bitmapscan=off ${PGBENCH_OPTIONS:-}" pgbench -n -M prepared -c1 -T"$secs" -r \
    -f "$script.sql" 2>&1 | awk '/statement latencies/ {found=1; next} found && NF {last=$1} END {print last}')
  printf '%-12s %s ms\n' "$script" "$latency"
done
psql -q -c 'DROP SCHEMA dal_pgbench CASCADE'
