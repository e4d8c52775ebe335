#!/usr/bin/env python3
"""Queries over Tributary's tables: `tributary sql` against DuckDB over the same Delta tables.

Usage: bench/sql_bench.py --bin target/release/tributary [--rows 10000000] [--work DIR] [--repeats 3]

Generates the seed-shaped data (5 UUID keys, 10 floats; day 2 deletes 20%, updates 40%, keeps
40%, inserts 20%), runs both days with Tributary, then times each query in a fresh process, for
both systems, `--repeats` times (the best wall time and its peak RSS are reported):

  count      SELECT count(*) of current
  lookup     one key of current (all five key columns)
  as_of      the table as of day 1 (from history), counted
  changes    the rows history gained from version 1 to 2 (day 2's run), counted by operation

DuckDB (the `duckdb` and `deltalake` Python packages) reads the tables through deltalake's Arrow
dataset, as tests/it/readers.rs does; `as_of` is the same SQL over history, and `changes` reads
the files history version 2 added (`file_uris()` of version 2 minus version 1). Both results
are compared. Wall time and peak RSS come from bench/measure.py (GNU time). Prints one JSON
object per query and a Markdown table.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

DUCKDB = r'''
import sys, duckdb, deltalake, pyarrow.dataset as pads
lake, query, key = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
duckdb.sql("SET enable_progress_bar = false")
cur = deltalake.DeltaTable(lake + "/sample_data_current").to_pyarrow_dataset()
if query == "count":
    rows = duckdb.sql("select count(*) from cur").fetchall()
elif query == "lookup":
    rows = duckdb.sql(
        "select keycol1, nonkeycol1 from cur where keycol1=? and keycol2=? and keycol3=? and keycol4=? and keycol5=?",
        params=key).fetchall()
elif query == "as_of":
    hist = deltalake.DeltaTable(lake + "/sample_data_history").to_pyarrow_dataset()
    rows = duckdb.sql("""select count(*) from (select operation, row_number() over (partition by keyhash
        order by eff_start_date desc) as r from hist where eff_start_date <= date '2019-06-18')
        where r = 1 and operation <> 'D'""").fetchall()
elif query == "changes":
    h = lake + "/sample_data_history"
    new = sorted(set(deltalake.DeltaTable(h, version=2).file_uris()) - set(deltalake.DeltaTable(h, version=1).file_uris()))
    ds = pads.dataset(new, format="parquet")  # history files hold eff_start_date themselves
    rows = duckdb.sql("select operation, count(*) from ds group by 1 order by 1").fetchall()
print([list(r) for r in rows])
# PyArrow's scanner threads can abort the interpreter at exit (apache/arrow#34314): the result
# is printed, so leave without the interpreter's teardown.
sys.stdout.flush()
import os; os._exit(0)
'''

SQL = {
    "count": "SELECT count(*) FROM sample_data",
    "lookup": "SELECT keycol1, nonkeycol1 FROM sample_data WHERE keycol1='{0}' AND keycol2='{1}' "
              "AND keycol3='{2}' AND keycol4='{3}' AND keycol5='{4}'",
    "as_of": "SELECT count(*) FROM as_of('sample_data', DATE '2019-06-18')",
    "changes": "SELECT operation, count(*) FROM changes('sample_data', 1, 2) GROUP BY 1 ORDER BY 1",
}


def measured(work, name, cmd):
    result = os.path.join(work, f"{name}.json")
    out, err = os.path.join(work, f"{name}.out"), os.path.join(work, f"{name}.err")
    code = subprocess.call([sys.executable, os.path.join(HERE, "measure.py"), result, out, err, "--"] + cmd)
    with open(result) as f:
        stats = json.load(f)
    with open(out) as f:
        stdout = f.read()
    if code != 0:
        with open(err) as f:
            sys.exit(f"{name} failed ({code}): {f.read()[-2000:]}")
    return stats, stdout


def tributary_rows(csv_text):
    lines = [l for l in csv_text.strip().splitlines()[1:]]
    return [[int(x) if x.isdigit() else x for x in l.split(",")] for l in lines]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--work")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    binary = os.path.abspath(a.bin)
    work = a.work or tempfile.mkdtemp(prefix="sql-bench-")
    os.makedirs(work, exist_ok=True)
    config = os.path.join(work, "config.yaml")
    if not os.path.exists(os.path.join(work, "lake/sample_data_history/_delta_log")):
        subprocess.check_call([binary, "generate", str(a.rows), str(a.rows), "5", "10", "0.2", "0.4", "0.4",
                               os.path.join(work, "day1"), os.path.join(work, "day2"), "--seed", "7",
                               "--config-out", config], stdout=subprocess.DEVNULL)
        for day, date in (("day1", "2019-06-18"), ("day2", "2019-06-19")):
            subprocess.check_call([binary, "run", config, os.path.join(work, day), date],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(work, "day2/part-00000.csv")) as f:
        key = f.readline().split(",")[:5]
    lake = os.path.join(work, "lake")
    rows = []
    for name, sql in SQL.items():
        best = {}
        for system in ("tributary", "duckdb"):
            for r in range(a.repeats):
                if system == "tributary":
                    cmd = [binary, "sql", "--config", config, "--format", "csv", "-e", sql.format(*key)]
                else:
                    cmd = [sys.executable, "-c", DUCKDB, lake, name, ",".join(key)]
                stats, out = measured(work, f"{name}-{system}-{r}", cmd)
                result = (tributary_rows(out) if system == "tributary"
                          else json.loads(out.strip().splitlines()[-1].replace("'", '"')))
                if system not in best or stats["precise_wall_secs"] < best[system][0]["precise_wall_secs"]:
                    best[system] = (stats, result)
        t, d = best["tributary"], best["duckdb"]
        same = [[str(x) for x in r] for r in t[1]] == [[str(x) for x in r] for r in d[1]]
        row = {
            "query": name,
            "tributary_secs": round(t[0]["precise_wall_secs"], 3),
            "tributary_peak_rss_mib": round(t[0]["maxrss_kib"] / 1024),
            "duckdb_secs": round(d[0]["precise_wall_secs"], 3),
            "duckdb_peak_rss_mib": round(d[0]["maxrss_kib"] / 1024),
            "duckdb_over_tributary": round(d[0]["precise_wall_secs"] / t[0]["precise_wall_secs"], 2),
            "same_result": same,
            "result": t[1],
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(f"\n{a.rows:,} rows, seed shape, after two days; best of {a.repeats}, each query in a fresh process\n")
    print("| query | Tributary s | peak RSS MiB | DuckDB s | peak RSS MiB | DuckDB / Tributary | same result |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['query']} | {r['tributary_secs']} | {r['tributary_peak_rss_mib']:,} | {r['duckdb_secs']} | "
              f"{r['duckdb_peak_rss_mib']:,} | {r['duckdb_over_tributary']}x | {'yes' if r['same_result'] else 'NO'} |")
    if not all(r["same_result"] for r in rows):
        sys.exit("results differ")


if __name__ == "__main__":
    main()
