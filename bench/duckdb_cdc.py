#!/usr/bin/env python3
"""Snapshot CDC in DuckDB SQL -- the seed article's hash + full-outer-join pattern.

Usage: duckdb_cdc.py INPUT_DIR OUTPUT_ROOT YYYY-MM-DD NO_KEYS NO_NONKEYS
                     [--format csv|parquet] [--extract full|delta]
                     [--compression zstd|snappy|none]

INPUT_DIR holds headerless CSV files (*.csv, the default) or, with --format parquet,
Parquet files (*.parquet): NO_KEYS string key columns keycol1..N and NO_NONKEYS
double columns nonkeycol1..M (Parquet columns are picked by name and cast).

Layout under OUTPUT_ROOT (plain Parquet, no table format):
  current/data.parquet                          configured columns + keyhash,
                                                nonkeyhash, operation, eff_start_date
  history/eff_start_date=YYYY-MM-DD/data.parquet  I/U/D rows of that run (hive
                                                partition; the date is in the path)

First run (no OUTPUT_ROOT/current): every row is I.
Later runs: key only in incoming = I; in both with a different nonkeyhash = U;
same nonkeyhash = N (keeps the old eff_start_date); only in current = D with
--extract full (history carries the current's old payload), X with --extract
delta (stays in current with its old payload and eff_start_date; not in history).

Hashing: keyhash = md5(concat_ws(chr(31), keycol1, ..., keycolN)) and
nonkeyhash = md5(concat_ws(chr(31), CAST(nonkeycol1 AS VARCHAR), ...)), both as
32-char hex strings.  chr(31) (ASCII unit separator) cannot occur in the
generated data, so ('ab','c') and ('a','bc') hash differently.  Caveat:
concat_ws skips NULLs (same as Spark), which is irrelevant for this data.

Prints the counts {I,U,D,X,N} and timings as JSON on stdout.
"""
import json
import os
import shutil
import time

import duckdb

from cdc_common import column_names, parse_args


def q(path):
    return "'" + path.replace("'", "''") + "'"


def main():
    args = parse_args(__doc__)
    run_date = args.run_date
    t0 = time.perf_counter()

    keys, nonkeys = column_names(args.nkeys, args.nnonkeys)
    cols = keys + nonkeys
    types = {k: "VARCHAR" for k in keys}
    types.update({n: "DOUBLE" for n in nonkeys})
    col_spec = "{" + ", ".join(f"'{c}': '{types[c]}'" for c in cols) + "}"
    sep = "chr(31)"
    keyhash = f"md5(concat_ws({sep}, {', '.join(keys)}))"
    nonkeyhash = f"md5(concat_ws({sep}, {', '.join(f'CAST({c} AS VARCHAR)' for c in nonkeys)}))"

    in_glob = os.path.join(os.path.abspath(args.in_dir), f"*.{args.format}")
    if args.format == "csv":
        source = (f"read_csv({q(in_glob)}, header = false, delim = ',', quote = '\"', "
                  f"columns = {col_spec}, auto_detect = false)")
        select = ", ".join(cols)
    else:
        source = f"read_parquet({q(in_glob)})"
        select = ", ".join(f"CAST({c} AS {types[c]}) AS {c}" for c in cols)
    out_root = os.path.abspath(args.out_root)
    cur_dir = os.path.join(out_root, "current")
    cur_file = os.path.join(cur_dir, "data.parquet")
    hist_dir = os.path.join(out_root, "history", f"eff_start_date={run_date}")
    os.makedirs(out_root, exist_ok=True)
    first_run = not os.path.exists(cur_file)

    codec = {"none": "uncompressed"}.get(args.compression, args.compression)
    con = duckdb.connect()
    # DUCKDB_THREADS: DuckDB's `threads` (default: every core of the machine, whatever the
    # process's CPU affinity; bench/threads_bench.py sets it to the cores it pins).
    if os.environ.get("DUCKDB_THREADS"):
        con.execute(f"SET threads = {int(os.environ['DUCKDB_THREADS'])}")
    date = f"DATE '{run_date}'"

    # Stage 1: read + hash the incoming extract (materialised once, used by both writes).
    con.execute(f"""
        CREATE TEMP TABLE incoming AS
        SELECT *, {keyhash} AS keyhash, {nonkeyhash} AS nonkeyhash
        FROM (SELECT {select} FROM {source})
    """)
    t_read = time.perf_counter()

    # Stage 2: classify.
    if first_run:
        con.execute(f"""
            CREATE TEMP TABLE classified AS
            SELECT *, 'I' AS operation, {date} AS eff_start_date FROM incoming
        """)
    else:
        # Full outer join on keyhash: incoming (payload + hashes) against current
        # (keyhash, nonkeyhash, eff_start_date + the payload, which D rows carry into
        # history and X rows keep in current).  One pass over each side.
        if args.extract == "full":
            gone_op, gone_date = "'D'", date
        else:
            gone_op, gone_date = "'X'", "c.eff_start_date"
        payload = ",\n".join(
            f"CASE WHEN i.keyhash IS NULL THEN c.{c} ELSE i.{c} END AS {c}" for c in cols)
        con.execute(f"""
            CREATE TEMP TABLE classified AS
            SELECT {payload},
                   coalesce(i.keyhash, c.keyhash) AS keyhash,
                   coalesce(i.nonkeyhash, c.nonkeyhash) AS nonkeyhash,
                   CASE WHEN c.keyhash IS NULL THEN 'I'
                        WHEN i.keyhash IS NULL THEN {gone_op}
                        WHEN i.nonkeyhash <> c.nonkeyhash THEN 'U'
                        ELSE 'N' END AS operation,
                   CASE WHEN c.keyhash IS NULL THEN {date}
                        WHEN i.keyhash IS NULL THEN {gone_date}
                        WHEN i.nonkeyhash <> c.nonkeyhash THEN {date}
                        ELSE c.eff_start_date END AS eff_start_date
            FROM incoming i
            FULL OUTER JOIN read_parquet({q(cur_file)}) c ON i.keyhash = c.keyhash
        """)
    con.execute("DROP TABLE incoming")
    t_diff = time.perf_counter()

    # Stage 3: write the new current (to a side directory, then swap) and the
    # history partition of this run date (overwritten if it exists).
    new_cur = cur_dir + ".new"
    shutil.rmtree(new_cur, ignore_errors=True)
    os.makedirs(new_cur)
    all_cols = ", ".join(cols + ["keyhash", "nonkeyhash", "operation", "eff_start_date"])
    con.execute(f"""
        COPY (SELECT {all_cols} FROM classified WHERE operation <> 'D')
        TO {q(os.path.join(new_cur, 'data.parquet'))} (FORMAT parquet, COMPRESSION {codec})
    """)
    shutil.rmtree(hist_dir, ignore_errors=True)
    os.makedirs(hist_dir)
    hist_cols = ", ".join(cols + ["keyhash", "nonkeyhash", "operation"])
    con.execute(f"""
        COPY (SELECT {hist_cols} FROM classified WHERE operation IN ('I', 'U', 'D'))
        TO {q(os.path.join(hist_dir, 'data.parquet'))} (FORMAT parquet, COMPRESSION {codec})
    """)
    old_cur = cur_dir + ".old"
    if os.path.exists(cur_dir):
        os.rename(cur_dir, old_cur)
    os.rename(new_cur, cur_dir)
    shutil.rmtree(old_cur, ignore_errors=True)
    t_write = time.perf_counter()

    counts = {k: 0 for k in "IUDXN"}
    for op, n in con.execute("SELECT operation, count(*) FROM classified GROUP BY 1").fetchall():
        counts[op] = n
    rows_read = counts["I"] + counts["U"] + counts["N"]
    print(json.dumps({
        "system": "duckdb",
        "duckdb_version": duckdb.__version__,
        "business_date": run_date,
        "first_run": first_run,
        "input_format": args.format,
        "extract_type": args.extract,
        "rows_read": rows_read,
        "counts": counts,
        "elapsed_secs": round(time.perf_counter() - t0, 3),
        "stages": {"read_secs": round(t_read - t0, 3), "diff_secs": round(t_diff - t_read, 3),
                   "write_secs": round(t_write - t_diff, 3)},
    }))


if __name__ == "__main__":
    main()
