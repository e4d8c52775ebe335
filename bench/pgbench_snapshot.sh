#!/usr/bin/env bash
# End-to-end check of tributary's snapshot CDC against a real OLTP workload.
#
#   1. start the local PostgreSQL cluster if it is down, (re)create database
#      tributary_pgbench and `pgbench -i -s SCALE` it (SCALE*100,000 accounts)
#   2. export pgbench_accounts (aid, bid, abalance, filler) ordered by aid -> day1/
#      and keep (aid, abalance) in table before_accounts
#   3. `pgbench -T PGBENCH_SECONDS -c 2` (TPC-B-like: random abalance updates)
#   4. export again -> day2/; count the accounts whose abalance changed, in SQL
#   5. `tributary run` day 1 and day 2 (full extracts), and check:
#        day 1: I == SCALE*100,000 (nothing else)
#        day 2: U == the SQL count, I == 0, D == 0, N == SCALE*100,000 - U
#      plus: the aids tributary wrote as U into the day-2 history partition are
#      exactly the aids whose abalance changed.
#   6. drop the database; delete the work dir (bench/out/pgbench) unless KEEP_WORK=1
#      or the check failed.
#
# Env: TRIBUTARY_BIN (default target/release/tributary, relative to the repo root)
#      PGBENCH_SECONDS (default 30), PGBENCH_SCALE (default 10), KEEP_WORK=1
# Needs root for starting the cluster; psql/pgbench connect as
# `-h 127.0.0.1 -U postgres` (trust auth).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
cd "$ROOT"

BIN=${TRIBUTARY_BIN:-target/release/tributary}
[[ $BIN = /* ]] || BIN=$ROOT/$BIN
[[ -x $BIN ]] || { echo "error: tributary binary $BIN not found or not executable (set TRIBUTARY_BIN)" >&2; exit 2; }
SECONDS_=${PGBENCH_SECONDS:-30}
SCALE=${PGBENCH_SCALE:-10}
ACCOUNTS=$((SCALE * 100000))
DB=tributary_pgbench
DAY1=2019-06-18
DAY2=2019-06-19
WORK=$ROOT/bench/out/pgbench
PGCONN=(-h 127.0.0.1 -U postgres)

log() { echo "[pgbench_snapshot] $*" >&2; }
fail() {
    echo >&2
    echo "!!! FAIL: $*" >&2
    echo "!!! work dir kept: ${WORK#$ROOT/}" >&2
    KEEP_WORK=1
    exit 1
}

# ---- PostgreSQL + pgbench -----------------------------------------------------------
PGBENCH=$(command -v pgbench || true)
if [[ -z $PGBENCH ]]; then
    PGBENCH=$(ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n 1 || true)
fi
if [[ -z $PGBENCH ]]; then
    log "pgbench not found: apt-get install -y postgresql-contrib"
    apt-get install -y postgresql-contrib >/dev/null
    PGBENCH=$(ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n $PGBENCH ]] || { echo "error: no pgbench binary after installing postgresql-contrib" >&2; exit 2; }
fi
command -v psql >/dev/null || { echo "error: psql not found" >&2; exit 2; }

if ! pg_isready -q "${PGCONN[@]}"; then
    PGVER=$(ls /etc/postgresql | sort -V | tail -n 1)
    log "PostgreSQL is down: starting cluster $PGVER/main"
    pg_ctlcluster --skip-systemctl-redirect "$PGVER" main start
    for _ in $(seq 1 30); do pg_isready -q "${PGCONN[@]}" && break; sleep 1; done
    pg_isready -q "${PGCONN[@]}" || { echo "error: PostgreSQL did not come up" >&2; exit 2; }
fi

psql_admin() { psql "${PGCONN[@]}" -X -q -v ON_ERROR_STOP=1 -d postgres "$@"; }
psql_db() { psql "${PGCONN[@]}" -X -q -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

cleanup() {
    local rc=$?
    psql_admin -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 \
        || echo "warning: could not drop database $DB" >&2
    if [[ ${KEEP_WORK:-0} != 1 ]]; then rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT

rm -rf "$WORK"
mkdir -p "$WORK/day1" "$WORK/day2"
psql_admin -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"

log "pgbench -i -s $SCALE ($ACCOUNTS accounts)"
"$PGBENCH" "${PGCONN[@]}" -i -s "$SCALE" -q "$DB" > "$WORK/pgbench_init.log" 2>&1 \
    || { cat "$WORK/pgbench_init.log" >&2; fail "pgbench -i failed"; }

export_accounts() {
    psql_db -c "\\copy (select aid, bid, abalance, filler from pgbench_accounts order by aid) to '$1' with (format csv)"
}
export_accounts "$WORK/day1/pgbench_accounts.csv"
psql_db -c "CREATE TABLE before_accounts AS SELECT aid, abalance FROM pgbench_accounts"

log "pgbench -T $SECONDS_ -c 2"
"$PGBENCH" "${PGCONN[@]}" -T "$SECONDS_" -c 2 -j 2 "$DB" > "$WORK/pgbench_run.log" 2>&1 \
    || { cat "$WORK/pgbench_run.log" >&2; fail "pgbench run failed"; }
grep -E '^(number of transactions actually processed|tps)' "$WORK/pgbench_run.log" | sed 's/^/  /' >&2 || true

export_accounts "$WORK/day2/pgbench_accounts.csv"
CHANGED=$(psql_db -At -c "select count(*) from pgbench_accounts a join before_accounts b using (aid) where a.abalance <> b.abalance")
psql_db -c "\\copy (select aid from pgbench_accounts a join before_accounts b using (aid) where a.abalance <> b.abalance order by aid) to '$WORK/changed_aids.csv' with (format csv)"
log "accounts with a changed abalance (SQL): $CHANGED"

# ---- tributary ------------------------------------------------------------------------
cat > "$WORK/config.yaml" <<'EOF'
name: pgbench_accounts
current_table_path: lake/pgbench_accounts_current
history_table_path: lake/pgbench_accounts_history
delimiter: ","
extract_type: full
columns:
  - {name: aid, type: long, key: true}
  - {name: bid, type: int}
  - {name: abalance, type: int}
  - {name: filler, type: string}
EOF

run_day() {
    local tag=$1 date=$2
    /usr/bin/time -f '%e %M' -o "$WORK/$tag.time" \
        "$BIN" run "$WORK/config.yaml" "$WORK/$tag" "$date" --json > "$WORK/$tag.json" 2> "$WORK/$tag.log" \
        || { tail -n 30 "$WORK/$tag.log" >&2; fail "tributary run $tag failed"; }
    read -r wall rss < <(tail -n 1 "$WORK/$tag.time")
    log "tributary $tag ($date): ${wall}s, peak RSS $((rss / 1024)) MiB"
}
run_day day1 $DAY1
run_day day2 $DAY2

# ---- checks ---------------------------------------------------------------------------
set +e
RESULT=$(python3 - "$WORK" "$ACCOUNTS" "$CHANGED" "$DAY2" "$BENCH_DIR" <<'EOF'
import json, os, sys
work, accounts, changed, day2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sys.path.insert(0, sys.argv[5])
import duckdb
from table_counts import delta_active_files
problems = []
def counts(tag):
    j = json.load(open(os.path.join(work, f"{tag}.json")))
    return {k: j["counts"].get(k, 0) for k in "IUDXN"}, j
c1, j1 = counts("day1")
c2, j2 = counts("day2")
want1 = {"I": accounts, "U": 0, "D": 0, "X": 0, "N": 0}
want2 = {"I": 0, "U": changed, "D": 0, "X": 0, "N": accounts - changed}
if c1 != want1:
    problems.append(f"day 1 counts {c1}, expected {want1}")
if c2 != want2:
    problems.append(f"day 2 counts {c2}, expected {want2}")
for tag, j in (("day1", j1), ("day2", j2)):
    if j.get("rows_read") != accounts or j.get("rows_rejected", 0):
        problems.append(f"{tag}: rows_read={j.get('rows_read')} rows_rejected={j.get('rows_rejected')}, "
                        f"expected {accounts} and 0")
# Same aids, not just the same number: U rows of the day-2 history partition vs SQL.
hist = delta_active_files(os.path.join(work, "lake", "pgbench_accounts_history"))
files = [f for f, pv in hist.items() if pv.get("eff_start_date") == day2]
con = duckdb.connect()
if files:
    lst = "[" + ", ".join(f"'{f}'" for f in files) + "]"
    con.execute(f"CREATE VIEW h AS SELECT aid, operation FROM read_parquet({lst}, hive_partitioning = false)")
else:
    con.execute("CREATE VIEW h AS SELECT 0::BIGINT AS aid, '' AS operation LIMIT 0")
con.execute(f"CREATE VIEW s AS SELECT column0::BIGINT AS aid FROM read_csv('{work}/changed_aids.csv', header = false, columns = {{'column0': 'BIGINT'}})")
only_t = con.execute("SELECT count(*) FROM (SELECT aid FROM h WHERE operation = 'U' EXCEPT SELECT aid FROM s)").fetchone()[0]
only_s = con.execute("SELECT count(*) FROM (SELECT aid FROM s EXCEPT SELECT aid FROM h WHERE operation = 'U')").fetchone()[0]
other = con.execute("SELECT count(*) FROM h WHERE operation <> 'U'").fetchone()[0]
if only_t or only_s or other:
    problems.append(f"day-2 history: {only_t} U aids not changed in SQL, {only_s} changed aids not U, "
                    f"{other} non-U rows")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"day 1 I={c1['I']:,}; day 2 U={c2['U']:,} (SQL: {changed:,} accounts with a changed abalance) "
      f"I={c2['I']} D={c2['D']} N={c2['N']:,}; U aids match SQL exactly")
EOF
)
rc=$?
set -e
if [[ $rc -ne 0 ]]; then
    while IFS= read -r line; do echo "!!! $line" >&2; done <<< "$RESULT"
    fail "tributary's CDC counts disagree with PostgreSQL (see ${WORK#$ROOT/}/day{1,2}.json)"
fi
echo "PASS: $RESULT"
