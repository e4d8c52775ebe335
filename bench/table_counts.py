#!/usr/bin/env python3
"""Count I/U/D/N from the *output tables* of one CDC run and compare systems row by row.

Usage: table_counts.py DATE NO_KEYS NO_NONKEYS KIND=ROOT [KIND=ROOT ...]

KIND is `tributary` (ROOT = folder holding the current and history Delta tables,
e.g. out/tributary/lake/sample_data_{current,history}: pass the folder with
`ROOT:NAME`, NAME being the table name of the config) or `parquet` (the plain
layout written by duckdb_cdc.py / pyspark_cdc.py: ROOT/current/*.parquet and
ROOT/history/eff_start_date=DATE/*.parquet).  A label may precede: label@KIND=ROOT.

Counts are derived from the tables, not from a tool's own summary:
  I, U = rows of the current table with that operation and eff_start_date = DATE
  N    = rows of the current table with operation N
  X    = rows of the current table with operation X (delta extract: not supplied,
         kept with an earlier eff_start_date)
  D    = rows of the history partition eff_start_date = DATE with operation D
and the history partition's I and U must match the current's.  A full-extract run
has X = 0 and a delta-extract run D = 0; the caller checks which applies.

The first system is the reference; every other one is compared with it as
multisets of (configured columns, operation, eff_start_date) over the current
table and (configured columns, operation) over the DATE history partition.

Prints one JSON object; exits 1 if any count or row set differs from the reference.
"""
import glob
import json
import os
import sys
from urllib.parse import unquote

import duckdb


def delta_active_files(table_dir):
    """Replay a Delta log (JSON commits only) and return the active data files
    with their partition values."""
    log = os.path.join(table_dir, "_delta_log")
    if os.path.exists(os.path.join(log, "_last_checkpoint")):
        raise SystemExit(f"{table_dir}: checkpointed Delta log; this checker only replays JSON commits")
    active = {}
    for commit in sorted(glob.glob(os.path.join(log, "*.json"))):
        with open(commit) as f:
            for line in f:
                if not line.strip():
                    continue
                action = json.loads(line)
                if "add" in action:
                    a = action["add"]
                    active[a["path"]] = a.get("partitionValues") or {}
                elif "remove" in action:
                    active.pop(action["remove"]["path"], None)
    return {os.path.join(table_dir, unquote(p)): pv for p, pv in active.items()}


def sql_list(files):
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in sorted(files)) + "]"


def sources(kind, root, date):
    """Return (current_sql, history_sql): FROM-clauses of the current table and of
    the DATE history partition. The latter's files are read by column name: Tributary's
    history files of I and U rows are shared with current and hold eff_start_date, the
    others do not (their partition value is in the Delta log)."""
    if kind == "tributary":
        root, _, name = root.partition(":")
        name = name or "sample_data"
        cur = delta_active_files(os.path.join(root, f"{name}_current"))
        hist = delta_active_files(os.path.join(root, f"{name}_history"))
        hist = [f for f, pv in hist.items() if pv.get("eff_start_date") == date]
        cur = list(cur)
    elif kind == "parquet":
        cur = glob.glob(os.path.join(root, "current", "*.parquet"))
        hist = glob.glob(os.path.join(root, "history", f"eff_start_date={date}", "*.parquet"))
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    if not cur:
        raise SystemExit(f"{root}: no current files")
    cur_sql = f"read_parquet({sql_list(cur)}, hive_partitioning = false)"
    if hist:
        hist_sql = f"read_parquet({sql_list(hist)}, hive_partitioning = false, union_by_name = true)"
    else:  # no history rows for that date: an empty relation with the right columns
        hist_sql = f"(SELECT * EXCLUDE (eff_start_date) FROM {cur_sql} LIMIT 0)"
    return cur_sql, hist_sql


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    date, nkeys, nnonkeys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cols = [f"keycol{i}" for i in range(1, nkeys + 1)] + \
           [f"nonkeycol{i}" for i in range(1, nnonkeys + 1)]
    con = duckdb.connect()
    systems = []
    for spec in sys.argv[4:]:
        label, _, rest = spec.rpartition("@")
        kind, _, root = rest.partition("=")
        systems.append((label or kind, kind, root))

    result = {"date": date, "systems": {}, "mismatches": []}
    ref = None
    for label, kind, root in systems:
        cur_sql, hist_sql = sources(kind, root, date)
        cur_counts = dict(con.execute(f"""
            SELECT operation || CASE WHEN eff_start_date = DATE '{date}' THEN '' ELSE '_old' END,
                   count(*)
            FROM {cur_sql} GROUP BY 1""").fetchall())
        hist_counts = dict(con.execute(
            f"SELECT operation, count(*) FROM {hist_sql} GROUP BY 1").fetchall())
        counts = {"I": cur_counts.get("I", 0), "U": cur_counts.get("U", 0),
                  "D": hist_counts.get("D", 0), "X": cur_counts.get("X_old", 0),
                  "N": cur_counts.get("N", 0) + cur_counts.get("N_old", 0)}
        entry = {"counts": counts, "current_rows": sum(cur_counts.values()),
                 "history_rows": sum(hist_counts.values())}
        # Internal consistency of the two tables.
        odd = {k: v for k, v in cur_counts.items() if k not in ("I", "U", "N", "N_old", "X_old")}
        if odd:
            result["mismatches"].append(f"{label}: unexpected current rows {odd}")
        for op in ("I", "U"):
            if hist_counts.get(op, 0) != counts[op]:
                result["mismatches"].append(
                    f"{label}: history {op}={hist_counts.get(op, 0)} but current {op}={counts[op]}")
        if set(hist_counts) - {"I", "U", "D"}:
            result["mismatches"].append(f"{label}: unexpected history operations {hist_counts}")

        col_list = ", ".join(cols)
        con.execute(f"CREATE OR REPLACE TEMP VIEW cur_{len(result['systems'])} AS "
                    f"SELECT {col_list}, operation, eff_start_date FROM {cur_sql}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW hist_{len(result['systems'])} AS "
                    f"SELECT {col_list}, operation FROM {hist_sql}")
        idx = len(result["systems"])
        if ref is None:
            ref = (label, idx, counts)
        else:
            rlabel, ridx, rcounts = ref
            if counts != rcounts:
                result["mismatches"].append(f"{label}: counts {counts} != {rlabel} {rcounts}")
            diffs = {}
            for t in ("cur", "hist"):
                a = con.execute(f"SELECT count(*) FROM (SELECT * FROM {t}_{idx} EXCEPT ALL "
                                f"SELECT * FROM {t}_{ridx})").fetchone()[0]
                b = con.execute(f"SELECT count(*) FROM (SELECT * FROM {t}_{ridx} EXCEPT ALL "
                                f"SELECT * FROM {t}_{idx})").fetchone()[0]
                diffs[t] = {"only_here": a, f"only_in_{rlabel}": b}
                if a or b:
                    result["mismatches"].append(
                        f"{label}: {'current' if t == 'cur' else 'history ' + date} rows differ "
                        f"from {rlabel}: {a} only in {label}, {b} only in {rlabel}")
            entry["row_diff_vs_" + rlabel] = diffs
        result["systems"][label] = entry

    print(json.dumps(result, indent=2))
    sys.exit(1 if result["mismatches"] else 0)


if __name__ == "__main__":
    main()
