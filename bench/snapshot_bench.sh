#!/usr/bin/env bash
# Snapshot-CDC benchmark: tributary vs DuckDB vs PySpark on `tributary generate` data.
#
# Usage: [ENV...] bench/snapshot_bench.sh [ROWS]          (default 1000000)
# Env (every knob is optional; the defaults reproduce the original benchmark):
#   TRIBUTARY_BIN    binary to benchmark, relative to the repo root or absolute
#                    (default target/release/tributary)
#   KEYS, NONKEYS    shape: string key columns and double non-key columns (default 5, 10)
#   FORMAT           csv (default) | parquet: parquet converts both generated days to
#                    Parquet (bench/to_parquet.py; keys string, non-keys double) and sets
#                    `format: parquet` in tributary's config; DuckDB/PySpark read it too
#   EXTRACT          full (default) | delta: delta makes day 2 a delta extract holding only
#                    DELTA_PCT% of day 1's row count (2/3 updates of existing keys, 1/3 new
#                    keys) and sets `extract_type: delta`; expected day 2: U and I as
#                    generated, X = the other day-1 rows, D = 0, N = 0
#   DELTA_PCT        size of the delta extract in % of ROWS (default 10)
#   MEMORY_LIMIT     e.g. 1GiB / 512MiB / bytes -> `memory_limit:` in tributary's config
#                    (default unset: tributary's default)
#   SPILL_DIR        -> `spill_dir:` (a relative path is taken from the current directory;
#                    default unset: tributary spills under TMPDIR)
#   COMPRESSION      snappy | zstd | none -> `compression:` of tributary's config, and the codec
#                    DuckDB and PySpark write with (default unset: tributary's default, zstd,
#                    for all three)
#   SKIP_DUCKDB=1    leave DuckDB out
#   SKIP_SPARK=1     leave PySpark out
#   DELETE_DATA=1    at exit, delete the generated data and the output tables (keeps the
#                    small JSON/log files under bench/out/); also runs every system's day 1
#                    first and deletes the day-1 input before the day-2 runs, to lower the
#                    peak disk use. Needed for 100M rows (~11 GB of CSV per day at KEYS=1
#                    NONKEYS=4)
#   SPACE_CHECK=0    skip the free-space check below
#
# Data:    bench/data/<ROWS>-k<KEYS>n<NONKEYS>-<FORMAT>-<full|deltaPCT>/
#          {initial,incremental}/part-00000.{csv,parquet} + config.yaml, generated with
#          `tributary generate ... --seed 42` (reused if present)
# Outputs: bench/out/<data key>-mem<MEMORY_LIMIT|default>[-<COMPRESSION>]/ (fresh each time)
#
# Steps: print `df -h` of bench/ and refuse (exit 2) when the free space is below an
# estimate of what the run writes; generate the data; time the read floor of the day-2
# input (`cat FILES > /dev/null`, then `tributary check CONFIG DIR --json`); for every
# system run day 1 (2019-06-18, initial load) and day 2 (2019-06-19), each timed with
# /usr/bin/time -f '%e %M' (via bench/measure.py), after a `sync` (dirty pages of the step
# before are written back first). Then the day-2 output tables of every
# system are counted and compared row by row with tributary's (bench/table_counts.py)
# and with the generator's split; any mismatch fails the script. Prints a Markdown
# table and rewrites this configuration's section of bench/RESULTS.md (bench/report.py).
set -euo pipefail

usage() { echo "error: $*" >&2; echo "usage: [ENV...] $0 [ROWS]  (see the header of $0)" >&2; exit 2; }

ROWS=${1:-1000000}
KEYS=${KEYS:-5}
NONKEYS=${NONKEYS:-10}
FORMAT=${FORMAT:-csv}
EXTRACT=${EXTRACT:-full}
DELTA_PCT=${DELTA_PCT:-10}
MEMORY_LIMIT=${MEMORY_LIMIT:-}
SPILL_DIR=${SPILL_DIR:-}
COMPRESSION=${COMPRESSION:-}
SKIP_DUCKDB=${SKIP_DUCKDB:-0}
SKIP_SPARK=${SKIP_SPARK:-0}
DELETE_DATA=${DELETE_DATA:-0}
SPACE_CHECK=${SPACE_CHECK:-1}
[[ $ROWS =~ ^[1-9][0-9]*$ ]] || usage "ROWS must be a positive integer, got '$ROWS'"
[[ $KEYS =~ ^[1-9][0-9]*$ ]] || usage "KEYS must be a positive integer, got '$KEYS'"
[[ $NONKEYS =~ ^[1-9][0-9]*$ ]] || usage "NONKEYS must be a positive integer, got '$NONKEYS'"
[[ $FORMAT =~ ^(csv|parquet)$ ]] || usage "FORMAT must be csv or parquet, got '$FORMAT'"
[[ $EXTRACT =~ ^(full|delta)$ ]] || usage "EXTRACT must be full or delta, got '$EXTRACT'"
[[ $DELTA_PCT =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage "DELTA_PCT must be a number, got '$DELTA_PCT'"
[[ -z $MEMORY_LIMIT || $MEMORY_LIMIT =~ ^[0-9]+(\.[0-9]+)?\ ?[A-Za-z]*$ ]] \
    || usage "MEMORY_LIMIT must look like 1GiB, 512MiB or a byte count, got '$MEMORY_LIMIT'"
[[ -z $COMPRESSION || $COMPRESSION =~ ^(snappy|zstd|none)$ ]] \
    || usage "COMPRESSION must be snappy, zstd or none, got '$COMPRESSION'"
[[ -z $SPILL_DIR ]] || SPILL_DIR=$(mkdir -p "$SPILL_DIR" && cd "$SPILL_DIR" && pwd)

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
cd "$ROOT"

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

# The command line that reproduces this run (non-default knobs only).
COMMAND=""
for var in TRIBUTARY_BIN KEYS NONKEYS FORMAT EXTRACT DELTA_PCT MEMORY_LIMIT SPILL_DIR COMPRESSION \
           SKIP_DUCKDB SKIP_SPARK DELETE_DATA SPACE_CHECK; do
    case $var in
        KEYS) def=5 ;; NONKEYS) def=10 ;; FORMAT) def=csv ;; EXTRACT) def=full ;;
        DELTA_PCT) [[ $EXTRACT == delta ]] && def=10 || def=$DELTA_PCT ;;
        SKIP_DUCKDB | SKIP_SPARK | DELETE_DATA) def=0 ;; SPACE_CHECK) def=1 ;; *) def="" ;;
    esac
    val=${!var:-}
    [[ $val == "$def" ]] || COMMAND+="$var=$(printf %q "$val") "
done
COMMAND+="bench/snapshot_bench.sh $ROWS"

DAY1=2019-06-18
DAY2=2019-06-19
MODE=$EXTRACT
[[ $EXTRACT == full ]] || MODE=delta$DELTA_PCT
DATA_KEY=$ROWS-k${KEYS}n$NONKEYS-$FORMAT-$MODE
RUN_KEY=$DATA_KEY-mem${MEMORY_LIMIT:-default}
RUN_KEY=${RUN_KEY// /}
[[ -z $COMPRESSION ]] || RUN_KEY+=-$COMPRESSION
DATA=$ROOT/bench/data/$DATA_KEY
OUT=$ROOT/bench/out/$RUN_KEY

# Generator arguments: INCR_ROWS PCT_DEL PCT_UPD PCT_UNCHANGED.
if [[ $EXTRACT == full ]]; then
    GEN_SPLIT=("$ROWS" 0.2 0.4 0.4)
else
    GEN_SPLIT=()
    # Day 2 = DELTA_PCT% of ROWS: 2/3 updated day-1 keys + 1/3 new keys, nothing unchanged;
    # the generator's "deleted" day-1 rows are the ones the delta does not supply (X).
    # The shares are nudged up by ulps so that the generator's floor(ROWS * share) is exact.
    read -r -a GEN_SPLIT < <(python3 - "$ROWS" "$DELTA_PCT" <<'EOF'
import math, sys
rows, pct = int(sys.argv[1]), float(sys.argv[2])
delta = round(rows * pct / 100)
if not 1 <= delta <= rows:
    sys.exit(f"DELTA_PCT={sys.argv[2]} gives {delta} delta rows out of {rows}")
upd = delta * 2 // 3
def share(n):
    s = n / rows
    while int(rows * s) < n:
        s = math.nextafter(s, 1.0)
    return s
print(delta, repr(share(rows - upd)), repr(share(upd)), 0)
EOF
    ) || true
    [[ ${#GEN_SPLIT[@]} == 4 ]] || usage "cannot plan a $DELTA_PCT% delta extract of $ROWS rows"
fi

# ---- systems ----------------------------------------------------------------------
SYSTEMS=(tributary)
NOTES=()
if [[ $SKIP_DUCKDB == 1 ]]; then
    NOTES+=("DuckDB skipped (SKIP_DUCKDB=1).")
else
    SYSTEMS+=(duckdb)
fi
if [[ $SKIP_SPARK == 1 ]]; then
    NOTES+=("PySpark skipped (SKIP_SPARK=1).")
elif ! python3 -c 'import pyspark' 2>/dev/null; then
    NOTES+=("PySpark skipped: the pyspark module is not importable (pip install pyspark).")
else
    SYSTEMS+=(pyspark)
fi
[[ $DELETE_DATA != 1 ]] || NOTES+=("DELETE_DATA=1: every system ran day 1 before any day 2 (the day-1 input was deleted in between).")
for n in "${NOTES[@]}"; do echo "note: $n" >&2; done

# ---- disk space -------------------------------------------------------------------
# One day of CSV is about ROWS * (37 * KEYS + 19 * NONKEYS) bytes (uuid keys, doubles as
# shortest round-trip text); its Parquet tables (payload + 2 hashes) are about as large.
# Needed, in days of CSV: both days of input unless already generated; tributary 4 (Delta
# keeps day 1's current files beside day 2's: ~3.8, plus spill files, deleted as the diff
# goes); DuckDB and PySpark 3 each (current + history, and the old current until the
# swap); DELETE_DATA=1 frees the day-1 input before day 2: one less.
DAY_BYTES=$((ROWS * (37 * KEYS + 19 * NONKEYS)))
NEED_DAYS=0
[[ -f $DATA/.complete ]] || NEED_DAYS=2
for sys in "${SYSTEMS[@]}"; do
    if [[ $sys == tributary ]]; then NEED_DAYS=$((NEED_DAYS + 4)); else NEED_DAYS=$((NEED_DAYS + 3)); fi
done
[[ $DELETE_DATA != 1 ]] || NEED_DAYS=$((NEED_DAYS - 1))
NEED=$((NEED_DAYS * DAY_BYTES))
rm -rf "$OUT"
mkdir -p "$OUT"
echo "disk space of ${BENCH_DIR#$ROOT/}:" >&2
df -h "$BENCH_DIR" >&2
FREE=$(($(df -Pk "$BENCH_DIR" | awk 'NR == 2 { print $4 }') * 1024))
gib() { python3 -c "print(f'{$1 / 2**30:.1f} GiB')"; }
echo "estimated need: $(gib $NEED) (one day of CSV ~ $(gib $DAY_BYTES)), free: $(gib $FREE)" >&2
if [[ $SPACE_CHECK != 0 && $FREE -lt $NEED ]]; then
    echo "error: not enough free space in ${BENCH_DIR#$ROOT/}: about $(gib $NEED) needed, $(gib $FREE) free." >&2
    echo "       Remove old bench/data/* and bench/out/* folders, skip systems, or set SPACE_CHECK=0." >&2
    exit 2
fi

# DELETE_DATA=1: drop the data and the output tables whatever way the script ends.
cleanup() {
    [[ $DELETE_DATA == 1 ]] || return 0
    rm -rf "$DATA" "$OUT/tributary/lake" "$OUT"/{duckdb,pyspark}/{current,history}
    echo "DELETE_DATA=1: removed ${DATA#$ROOT/} and the output tables under ${OUT#$ROOT/}" >&2
}
trap cleanup EXIT

# ---- data -------------------------------------------------------------------------
if [[ -f $DATA/.complete ]]; then
    echo "reusing data in ${DATA#$ROOT/}"
else
    echo "generating $ROWS + ${GEN_SPLIT[0]} rows (KEYS=$KEYS NONKEYS=$NONKEYS, $FORMAT, $MODE) into ${DATA#$ROOT/}"
    rm -rf "$DATA"
    mkdir -p "$DATA"
    "$BIN" generate "$ROWS" "${GEN_SPLIT[0]}" "$KEYS" "$NONKEYS" "${GEN_SPLIT[@]:1}" \
        "$DATA/initial" "$DATA/incremental" --seed 42 \
        --config-out "$DATA/config.yaml" --json > "$DATA/generate.json"
    if [[ $FORMAT == parquet ]]; then
        for day in initial incremental; do
            python3 "$BENCH_DIR/to_parquet.py" "$DATA/$day" "$KEYS" "$NONKEYS" > "$DATA/$day.to_parquet.json"
        done
    fi
    touch "$DATA/.complete"
fi
cp "$DATA/generate.json" "$OUT/generate.json"

# tributary's config: the generated one plus the knobs (it resolves the table paths
# relative to the config, so every run gets its own copy next to its lake).
mkdir -p "$OUT/tributary"
TCONFIG=$OUT/tributary/config.yaml
extra="extract_type: $EXTRACT"$'\n'
[[ $FORMAT == csv ]] || extra+="format: $FORMAT"$'\n'
[[ -z $MEMORY_LIMIT ]] || extra+="memory_limit: $MEMORY_LIMIT"$'\n'
[[ -z $SPILL_DIR ]] || extra+="spill_dir: $SPILL_DIR"$'\n'
[[ -z $COMPRESSION ]] || extra+="compression: $COMPRESSION"$'\n'
extra=$extra awk '/^extract_type:/ { printf "%s", ENVIRON["extra"]; next } { print }' \
    "$DATA/config.yaml" > "$TCONFIG"

# timed LABEL PREFIX STDOUT CMD...: run CMD under measure.py (times in PREFIX.measure.json,
# stdout in STDOUT, stderr in PREFIX.log); print a one-line summary; fail if CMD fails.
timed() {
    local label=$1 prefix=$2 stdout=$3
    shift 3
    # The previous step's output is written back to disk first, so that no timed run pays
    # (in kernel writeback on the same 2 cores) for the one before it: a daily job's day 1
    # was written back long before its day 2.
    sync
    if ! python3 "$BENCH_DIR/measure.py" "$prefix.measure.json" "$stdout" "$prefix.log" -- "$@"; then
        echo "error: $label failed: $*" >&2
        tail -n 30 "$prefix.log" >&2
        exit 1
    fi
    python3 - "$label" "$prefix.measure.json" <<'EOF' >&2
import json, sys
m = json.load(open(sys.argv[2]))
print(f"  {sys.argv[1]:<15} {m['wall_secs']:.2f} s, "
      f"peak RSS {max(m['maxrss_kib'], m['tree_peak_rss_kib']) / 1024:.0f} MiB")
EOF
}

# ---- read floor of the day-2 input ------------------------------------------------
mkdir -p "$OUT/floor"
DAY2_FILES=("$DATA/incremental/"*."$FORMAT")
echo "floor (day-2 input, ${#DAY2_FILES[@]} file(s)):" >&2
timed "cat > /dev/null" "$OUT/floor/cat" /dev/null cat "${DAY2_FILES[@]}"
timed "tributary check" "$OUT/floor/check" "$OUT/floor/check.json" \
    "$BIN" check "$TCONFIG" "$DATA/incremental" --json

# ---- systems ----------------------------------------------------------------------
# run SYSTEM DAYTAG DATE INPUT_DIR
run() {
    local sys=$1 tag=$2 date=$3 input=$4 dir=$OUT/$1
    local -a cmd
    case $sys in
        tributary) cmd=("$BIN" run "$TCONFIG" "$input" "$date" --json) ;;
        duckdb | pyspark)
            cmd=(python3 "$BENCH_DIR/${sys}_cdc.py" "$input" "$dir" "$date" "$KEYS" "$NONKEYS"
                 --format "$FORMAT" --extract "$EXTRACT" --compression "${COMPRESSION:-zstd}") ;;
    esac
    timed "$sys $tag" "$dir/$tag" "$dir/$tag.json" "${cmd[@]}"
}

for sys in "${SYSTEMS[@]}"; do mkdir -p "$OUT/$sys"; done
if [[ $DELETE_DATA == 1 ]]; then
    # Every day 1, then drop the day-1 input (the data is deleted at exit anyway).
    for sys in "${SYSTEMS[@]}"; do run "$sys" day1 "$DAY1" "$DATA/initial"; done
    rm -f "$DATA/.complete"
    rm -rf "$DATA/initial"
    for sys in "${SYSTEMS[@]}"; do run "$sys" day2 "$DAY2" "$DATA/incremental"; done
else
    for sys in "${SYSTEMS[@]}"; do
        run "$sys" day1 "$DAY1" "$DATA/initial"
        run "$sys" day2 "$DAY2" "$DATA/incremental"
    done
fi

# ---- correctness ------------------------------------------------------------------
specs=("tributary@tributary=$OUT/tributary/lake:sample_data")
for sys in "${SYSTEMS[@]}"; do
    [[ $sys == tributary ]] || specs+=("$sys@parquet=$OUT/$sys")
done
verify_rc=0
python3 "$BENCH_DIR/table_counts.py" "$DAY2" "$KEYS" "$NONKEYS" "${specs[@]}" > "$OUT/verify.json" \
    || verify_rc=$?
# Also hold every system's own summary and the generator's intended split to the
# tributary table counts, and day 1 to "everything is an insert".
problems=$(python3 - "$OUT" "$verify_rc" "$EXTRACT" "${SYSTEMS[@]}" <<'EOF'
import json, os, sys
out, verify_rc, extract, systems = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
def load(p):
    t = open(p).read().strip()
    try:
        return json.loads(t)
    except json.JSONDecodeError:
        return json.loads(t.splitlines()[-1])
def ops(counts):
    return {k: counts.get(k, 0) for k in "IUDXN"}
v = load(os.path.join(out, "verify.json"))
problems = list(v["mismatches"])
if verify_rc and not problems:
    problems.append(f"table_counts.py exited {verify_rc}")
ref = ops(v["systems"]["tributary"]["counts"])
g = load(os.path.join(out, "generate.json"))
# The generator's "deleted" day-1 rows are missing from day 2: D in a full extract, X in a delta.
gone = "D" if extract == "full" else "X"
want = ops({"I": g["inserted"], "U": g["updated"], gone: g["deleted"], "N": g["unchanged"]})
if ref != want:
    problems.append(f"tributary table counts {ref} != generator's split {want} ({extract} extract)")
for s in systems:
    d1 = ops(load(os.path.join(out, s, "day1.json"))["counts"])
    d2 = ops(load(os.path.join(out, s, "day2.json"))["counts"])
    if d1 != ops({"I": g["initial_rows"]}):
        problems.append(f"{s} day 1 reported {d1}, expected I={g['initial_rows']} only")
    if d2 != ref:
        problems.append(f"{s} day 2 reported {d2} but the tables say {ref}")
c = load(os.path.join(out, "floor", "check.json"))
if c["rows_read"] != g["updated"] + g["unchanged"] + g["inserted"] or c["rejects"]:
    problems.append(f"tributary check read {c['rows_read']} rows with {len(c['rejects'])} rejects")
print("\n".join(problems))
EOF
)
if [[ -n $problems ]]; then
    echo >&2
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    echo "!!! CDC RESULT MISMATCH ($RUN_KEY) -- see ${OUT#$ROOT/}/verify.json" >&2
    while IFS= read -r line; do echo "!!!   $line" >&2; done <<< "$problems"
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    exit 1
fi
echo "correctness: all systems agree on day 2 (tables compared row by row)" >&2

# ---- report -----------------------------------------------------------------------
# The run's configuration for report.py, as bench.json (KEY=VALUE arguments).
python3 - "$OUT/bench.json" key="$RUN_KEY" rows="$ROWS" keys="$KEYS" nonkeys="$NONKEYS" \
    format="$FORMAT" extract="$EXTRACT" delta_pct="$DELTA_PCT" memory_limit="$MEMORY_LIMIT" \
    spill_dir="$SPILL_DIR" compression="$COMPRESSION" command="$COMMAND" binary="$BIN" \
    generate_args="$ROWS ${GEN_SPLIT[0]} $KEYS $NONKEYS ${GEN_SPLIT[*]:1}" \
    systems="${SYSTEMS[*]}" "${NOTES[@]/#/note=}" <<'EOF'
import json, sys
conf = {"notes": []}
for arg in sys.argv[2:]:
    k, _, v = arg.partition("=")
    if k == "note":
        conf["notes"].append(v)
    else:
        conf[k] = v
conf["systems"] = conf["systems"].split()
for k in ("rows", "keys", "nonkeys"):
    conf[k] = int(conf[k])
json.dump(conf, open(sys.argv[1], "w"), indent=2)
EOF
echo
python3 "$BENCH_DIR/report.py" "$OUT" "$BENCH_DIR/RESULTS.md"
echo
echo "wrote bench/RESULTS.md (section $RUN_KEY); outputs in ${OUT#$ROOT/}"
