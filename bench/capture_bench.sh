#!/usr/bin/env bash
# Benchmark of `tributary capture` against the local PostgreSQL (issue 21). Not a test: it
# prints figures and writes them to $OUT (default bench/capture_results.txt).
#
#   A. one transaction that updates every row of a ROWS-row table (default 1,000,000); A'
#      the same committed in parts of 100,000 changes (--max-buffered-changes); A'' the same
#      within --memory-limit 256MiB
#   B. TXNS single-row update transactions from 4 pgbench clients (default 200,000)
#   C. steady load: RATE transactions/s for LOAD_SECONDS (default 5,000/s for 60 s) with
#      capture running (--commit-interval 2s): lag p50/p99 from the source commit to the lake
#      commit, as capture's summary reports it
#   D. the initial copy of 4 tables of ROWS/4 rows each with --copy-workers 1 and 4
#
# For A and B, the time to drain the slot with `tributary capture --once` is compared with
# the floor: `pg_recvlogical` draining the same WAL (pgoutput, proto_version 1) to /dev/null
# from a slot created at the same moment. Peak RSS from GNU time. Run from the repository
# root with a release build: TRIBUTARY_BIN=target/release/tributary bash bench/capture_bench.sh
set -euo pipefail
BIN=${TRIBUTARY_BIN:-target/release/tributary}
ROWS=${ROWS:-1000000}
TXNS=${TXNS:-200000}
RATE=${RATE:-5000}
LOAD_SECONDS=${LOAD_SECONDS:-60}
OUT=${OUT:-bench/capture_results.txt}
DB=capture_bench
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
bash scripts/pg_logical.sh >/dev/null

sql() { psql -XqAt -v ON_ERROR_STOP=1 -d "$DB" -c "$1"; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
peak_mb() { awk '/Maximum resident set size/ {printf "%.0f", $NF/1024}' "$1"; }
{
  echo "# tributary capture benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "machine: $(nproc) cores, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "PostgreSQL: $(psql -XAtc 'SHOW server_version' -d postgres); rows $ROWS, single-row transactions $TXNS"
} | tee "$OUT"

psql -XqAt -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
  WHERE slot_name ~ '^(capture_bench|floor_bench|copy_bench)(_copy|__copy[0-9]+)?$'" >/dev/null
psql -Xq -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
sql "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, pad text NOT NULL);
     INSERT INTO items SELECT g, 0, md5(g::text) FROM generate_series(1, $ROWS) g;
     CREATE PUBLICATION tributary FOR TABLE items;"

capture_once() { # label [capture flags]
  local t0 t1 label=$1
  shift
  t0=$(now)
  /usr/bin/time -v "$BIN" capture "$URL" --lake "$WORK/lake" --slot capture_bench --once --json "$@" \
    >"$WORK/$label.json" 2>"$WORK/$label.time"
  t1=$(now)
  echo "$(secs "$t0" "$t1") $(peak_mb "$WORK/$label.time")"
}
floor() { # end LSN
  local t0 t1
  t0=$(now)
  pg_recvlogical -d "$DB" --slot floor_bench --start -E "$1" -o proto_version=1 \
    -o publication_names=tributary -f /dev/null
  t1=$(now)
  secs "$t0" "$t1"
}

read -r copy_s copy_mb < <(capture_once copy)
echo "initial copy of $ROWS rows: $copy_s s, peak RSS $copy_mb MB" | tee -a "$OUT"
sql "SELECT pg_create_logical_replication_slot('floor_bench', 'pgoutput')" >/dev/null

# A: one transaction updating every row
sql "UPDATE items SET v = v + 1"
end=$(sql "SELECT pg_current_wal_lsn()")
read -r a_s a_mb < <(capture_once update)
a_floor=$(floor "$end")
echo "A. 1 transaction x $ROWS updates: capture $a_s s ($(python3 -c "print(round($ROWS/$a_s))") rows/s, peak RSS $a_mb MB); pg_recvlogical $a_floor s; capture at $(python3 -c "print(f'{$a_floor/$a_s:.0%}')") of the floor" | tee -a "$OUT"

# A': the same with the transaction committed in parts of 100,000 changes (bounded memory)
sql "UPDATE items SET v = v + 1"
end=$(sql "SELECT pg_current_wal_lsn()")
read -r p_s p_mb < <(capture_once parts --max-buffered-changes 100000)
p_floor=$(floor "$end")
echo "A'. the same, --max-buffered-changes 100000 (committed in parts): capture $p_s s (peak RSS $p_mb MB); pg_recvlogical $p_floor s; capture at $(python3 -c "print(f'{$p_floor/$p_s:.0%}')") of the floor" | tee -a "$OUT"

# A'': the same within --memory-limit 256MiB (parts when the buffered changes take 128 MiB)
sql "UPDATE items SET v = v + 1"
end=$(sql "SELECT pg_current_wal_lsn()")
read -r m_s m_mb < <(capture_once memory --memory-limit 256MiB)
runs=$(python3 -c "import json; print(json.load(open('$WORK/memory.json'))['tables'][0]['runs'])")
m_floor=$(floor "$end")
echo "A''. the same, --memory-limit 256MiB: capture $m_s s in $runs runs (peak RSS $m_mb MB); pg_recvlogical $m_floor s; capture at $(python3 -c "print(f'{$m_floor/$m_s:.0%}')") of the floor" | tee -a "$OUT"

# B: single-row transactions
cat >"$WORK/one.sql" <<SQL
\set id random(1, $ROWS)
UPDATE items SET v = v + 1 WHERE id = :id;
SQL
pgbench -n -c 4 -j 2 -t $((TXNS / 4)) -f "$WORK/one.sql" "$DB" >/dev/null
end=$(sql "SELECT pg_current_wal_lsn()")
read -r b_s b_mb < <(capture_once single)
b_floor=$(floor "$end")
echo "B. $TXNS single-row transactions: capture $b_s s ($(python3 -c "print(round($TXNS/$b_s))") transactions/s, peak RSS $b_mb MB); pg_recvlogical $b_floor s; capture at $(python3 -c "print(f'{$b_floor/$b_s:.0%}')") of the floor" | tee -a "$OUT"
sql "SELECT pg_drop_replication_slot('floor_bench')" >/dev/null

# C: lag under steady load
"$BIN" capture "$URL" --lake "$WORK/lake" --slot capture_bench --commit-interval 2s --json \
  >"$WORK/steady.json" 2>"$WORK/steady.log" &
capture_pid=$!
sleep 2
pgbench -n -c 4 -j 2 -R "$RATE" -T "$LOAD_SECONDS" -f "$WORK/one.sql" "$DB" >"$WORK/steady.pgbench" 2>&1
sleep 5
kill -TERM $capture_pid
wait $capture_pid
python3 - "$WORK/steady.json" "$RATE" "$LOAD_SECONDS" <<'PY' | tee -a "$OUT"
import json, sys
lag = json.load(open(sys.argv[1]))["lag"]
print(f"C. steady {sys.argv[2]} transactions/s for {sys.argv[3]} s, --commit-interval 2s: "
      f"{lag['transactions']} transactions, lag p50 {lag['p50_secs']:.2f} s, p99 {lag['p99_secs']:.2f} s, max {lag['max_secs']:.2f} s")
PY
psql -XqAt -d postgres -c "SELECT pg_drop_replication_slot('capture_bench')" >/dev/null

# D: the initial copy of 4 tables, one at a time against 4 at once (side slots of their own)
for t in 1 2 3 4; do
  sql "CREATE TABLE part$t (id bigint PRIMARY KEY, v int NOT NULL, pad text NOT NULL);
       INSERT INTO part$t SELECT g, 0, md5(g::text) FROM generate_series(1, $((ROWS / 4))) g;"
done
sql "CREATE PUBLICATION parts FOR TABLE part1, part2, part3, part4"
for workers in 1 4; do
  rm -rf "$WORK/parts"
  t0=$(now)
  /usr/bin/time -v "$BIN" capture "$URL" --lake "$WORK/parts" --publication parts --slot copy_bench \
    --copy-workers $workers --once --json >"$WORK/parts$workers.json" 2>"$WORK/parts$workers.time"
  t1=$(now)
  echo "D. initial copy of 4 tables x $((ROWS / 4)) rows, --copy-workers $workers: $(secs "$t0" "$t1") s, peak RSS $(peak_mb "$WORK/parts$workers.time") MB" | tee -a "$OUT"
  psql -XqAt -d postgres -c "SELECT pg_drop_replication_slot('copy_bench')" >/dev/null
done
psql -Xq -d postgres -c "DROP DATABASE $DB WITH (FORCE)"
