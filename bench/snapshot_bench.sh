#!/usr/bin/env bash
# Snapshot-CDC benchmark: tributary vs DuckDB vs PySpark on the seed-shaped dataset.
#
# Usage: bench/snapshot_bench.sh [ROWS]          (default 1000000)
# Env:   TRIBUTARY_BIN  binary to benchmark, relative to the repo root or absolute
#                       (default target/release/tributary)
#        SKIP_SPARK=1   leave PySpark out
#
# Data:    bench/data/<ROWS>/{initial,incremental}/part-00000.csv + config.yaml,
#          `tributary generate ROWS ROWS 5 10 0.2 0.4 0.4 ... --seed 42` (reused if present)
# Outputs: bench/out/<ROWS>/<system>/ (fresh each invocation)
# For every system: day 1 (2019-06-18, initial load) then day 2 (2019-06-19, full
# extract diff), each timed with /usr/bin/time -f '%e %M' (via bench/measure.py).
# Then the day-2 output tables of every system are counted and compared row by row
# with tributary's (bench/table_counts.py); any mismatch fails the script.
# Prints a Markdown table and rewrites this row count's section of bench/RESULTS.md.
set -euo pipefail

ROWS=${1:-1000000}
[[ $ROWS =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [ROWS]" >&2; exit 2; }
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
cd "$ROOT"
COMMAND="TRIBUTARY_BIN=${TRIBUTARY_BIN:-target/release/tributary} SKIP_SPARK=${SKIP_SPARK:-0} bench/snapshot_bench.sh $ROWS"

BIN=${TRIBUTARY_BIN:-target/release/tributary}
[[ $BIN = /* ]] || BIN=$ROOT/$BIN
if [[ ! -x $BIN ]]; then
    echo "error: tributary binary $BIN not found or not executable (set TRIBUTARY_BIN)" >&2
    exit 2
fi
if [[ ! -x /usr/bin/time ]]; then
    echo "installing GNU time (apt-get install -y time)" >&2
    apt-get install -y time >/dev/null || { apt-get update >/dev/null && apt-get install -y time >/dev/null; }
fi
python3 -c 'import duckdb' || { echo "error: python duckdb package missing (pip install duckdb)" >&2; exit 2; }

DAY1=2019-06-18
DAY2=2019-06-19
NKEYS=5
NNONKEYS=10
DATA=$ROOT/bench/data/$ROWS
OUT=$ROOT/bench/out/$ROWS

# ---- data -------------------------------------------------------------------------
if [[ -f $DATA/.complete ]]; then
    echo "reusing data in ${DATA#$ROOT/}"
else
    echo "generating $ROWS + $ROWS rows into ${DATA#$ROOT/}"
    rm -rf "$DATA"
    mkdir -p "$DATA"
    "$BIN" generate "$ROWS" "$ROWS" $NKEYS $NNONKEYS 0.2 0.4 0.4 \
        "$DATA/initial" "$DATA/incremental" --seed 42 \
        --config-out "$DATA/config.yaml" --json > "$DATA/generate.json"
    touch "$DATA/.complete"
fi

# ---- systems ----------------------------------------------------------------------
SYSTEMS=(tributary duckdb)
NOTES=()
if [[ ${SKIP_SPARK:-0} == 1 ]]; then
    NOTES+=("PySpark skipped (SKIP_SPARK=1).")
elif ! python3 -c 'import pyspark' 2>/dev/null; then
    NOTES+=("PySpark skipped: the pyspark module is not importable (pip install pyspark).")
else
    SYSTEMS+=(pyspark)
fi
for n in "${NOTES[@]}"; do echo "note: $n" >&2; done

rm -rf "$OUT"
mkdir -p "$OUT"
cp "$DATA/generate.json" "$OUT/generate.json"

# run SYSTEM DAYTAG DATE INPUT_DIR
run() {
    local sys=$1 tag=$2 date=$3 input=$4 dir=$OUT/$1
    local -a cmd
    case $sys in
        tributary) cmd=("$BIN" run "$dir/config.yaml" "$input" "$date" --json) ;;
        duckdb)    cmd=(python3 "$BENCH_DIR/duckdb_cdc.py" "$input" "$dir" "$date" $NKEYS $NNONKEYS) ;;
        pyspark)   cmd=(python3 "$BENCH_DIR/pyspark_cdc.py" "$input" "$dir" "$date" $NKEYS $NNONKEYS) ;;
    esac
    if ! python3 "$BENCH_DIR/measure.py" "$dir/$tag.measure.json" "$dir/$tag.json" "$dir/$tag.log" \
            -- "${cmd[@]}"; then
        echo "error: $sys $tag failed: ${cmd[*]}" >&2
        tail -n 30 "$dir/$tag.log" >&2
        exit 1
    fi
    python3 - "$sys" "$tag" "$dir/$tag.measure.json" <<'EOF' >&2
import json, sys
m = json.load(open(sys.argv[3]))
print(f"  {sys.argv[1]:<9} {sys.argv[2]}: {m['wall_secs']:.2f} s, "
      f"peak RSS {max(m['maxrss_kib'], m['tree_peak_rss_kib']) / 1024:.0f} MiB")
EOF
}

for sys in "${SYSTEMS[@]}"; do
    mkdir -p "$OUT/$sys"
    # tributary resolves the table paths relative to the config: give it its own copy.
    [[ $sys == tributary ]] && cp "$DATA/config.yaml" "$OUT/$sys/config.yaml"
    echo "$sys:" >&2
    run "$sys" day1 "$DAY1" "$DATA/initial"
    run "$sys" day2 "$DAY2" "$DATA/incremental"
done

# ---- correctness ------------------------------------------------------------------
specs=("tributary@tributary=$OUT/tributary/lake:sample_data")
for sys in "${SYSTEMS[@]}"; do
    [[ $sys == tributary ]] || specs+=("$sys@parquet=$OUT/$sys")
done
verify_rc=0
python3 "$BENCH_DIR/table_counts.py" "$DAY2" $NKEYS $NNONKEYS "${specs[@]}" > "$OUT/verify.json" \
    || verify_rc=$?
# Also hold every system's own summary and the generator's intended split to the
# tributary table counts, and day 1 to "everything is an insert".
problems=$(python3 - "$OUT" "$verify_rc" "${SYSTEMS[@]}" <<'EOF'
import json, os, sys
out, verify_rc, systems = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(p):
    t = open(p).read().strip()
    try:
        return json.loads(t)
    except json.JSONDecodeError:
        return json.loads(t.splitlines()[-1])
v = load(os.path.join(out, "verify.json"))
problems = list(v["mismatches"])
if verify_rc and not problems:
    problems.append(f"table_counts.py exited {verify_rc}")
ref = v["systems"]["tributary"]["counts"]
g = load(os.path.join(out, "generate.json"))
want = {"I": g["inserted"], "U": g["updated"], "D": g["deleted"], "N": g["unchanged"]}
if ref != want:
    problems.append(f"tributary table counts {ref} != generator's split {want}")
for s in systems:
    d1 = load(os.path.join(out, s, "day1.json"))["counts"]
    d2 = load(os.path.join(out, s, "day2.json"))["counts"]
    d1 = {k: d1.get(k, 0) for k in "IUDN"}
    d2 = {k: d2.get(k, 0) for k in "IUDN"}
    if d1 != {"I": g["initial_rows"], "U": 0, "D": 0, "N": 0}:
        problems.append(f"{s} day 1 reported {d1}, expected I={g['initial_rows']} only")
    if d2 != ref:
        problems.append(f"{s} day 2 reported {d2} but the tables say {ref}")
print("\n".join(problems))
EOF
)
if [[ -n $problems ]]; then
    echo >&2
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    echo "!!! CDC RESULT MISMATCH ($ROWS rows) -- see ${OUT#$ROOT/}/verify.json" >&2
    while IFS= read -r line; do echo "!!!   $line" >&2; done <<< "$problems"
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    exit 1
fi
echo "correctness: all systems agree on day 2 (tables compared row by row)" >&2

# ---- report -----------------------------------------------------------------------
echo
python3 "$BENCH_DIR/report.py" "$ROWS" "$OUT" "$BENCH_DIR/RESULTS.md" "$COMMAND" "$BIN" \
    "$(IFS=,; echo "${SYSTEMS[*]}")" "${NOTES[@]}"
echo
echo "wrote bench/RESULTS.md (section rows=$ROWS); outputs in ${OUT#$ROOT/}"
