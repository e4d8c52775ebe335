#!/usr/bin/env python3
"""Change-log apply benchmark: DMS change rows against a large current table.

Workload (issue 4): a current table of ROWS rows (id long, region string of 8 values, amount
double, note string), loaded from a DMS full-load file; then one DMS change file of CHANGES rows:
60% updates, 20% inserts, 20% deletes (--no-deletes: 80% updates, 20% inserts), with 10% of the
changed keys changed twice (the second
change later in the file). Both systems apply the same change file to the same table:

- Tributary: `tributary sync` (keeps the last change per key, rewrites the files that hold a
  changed key, or with --deletion-vectors marks their rows in Delta deletion vectors, writes
  current + history + applied-files tables in one run commit);
- delta-rs MERGE from Python (`deltalake` package): the change rows de-duplicated to the last per
  key with DuckDB, then `DeltaTable.merge` (delete when Op = D, update when matched, insert when
  not matched); it writes the current table only.

Both write the same Parquet codec (`--compression`: zstd level 1, Tributary's default, as in the
snapshot benchmark; or snappy, delta-rs's default; `--compression delta-default` leaves delta-rs
at its default while Tributary writes zstd, as this benchmark did before 2026-12-07).

Each side runs in its own process under /usr/bin/time for wall time and peak RSS. After both, the
two current tables are compared row for row with DuckDB. Results are appended to
bench/RESULTS.md (with machine, date and commit).

Usage: bench/dms_merge_bench.py [--rows 10000000] [--changes 1000000] [--bin target/release/tributary]
       [--deletion-vectors] [--no-deletes] [--compression zstd|snappy|delta-default]
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "dms_merge"

TABLES = """tables:
- source: bench/orders
  active: true
  primary_key: [id]
  columns:
  - {name: id, type: long}
  - {name: region, type: string}
  - {name: amount, type: double}
  - {name: note, type: string}
"""


def log(msg):
    print(f"[dms_merge_bench] {msg}", file=sys.stderr, flush=True)


def generate(rows, changes, folder, hot, deletes=0.2):
    """Writes LOAD00000001.csv and one change file with DuckDB (`deletes`: the share of first
    changes that are deletes, taken from the 80% that are not inserts); returns the change
    file."""
    import duckdb

    folder.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SELECT setseed(0.42)")
    load = folder / "LOAD00000001.csv"
    con.execute(
        f"""COPY (SELECT i AS id, 'r' || (i % 8) AS region, round(random() * 1000, 2) AS amount,
                  md5(i::VARCHAR)[1:16] AS note FROM range({rows}) t(i) ORDER BY i)
            TO '{load}' (HEADER false)"""
    )
    twice = changes // 11  # ~10% of the changed keys get a second change
    first = changes - twice
    upd, dele = int(first * (0.8 - deletes)), int(first * deletes)
    ins = first - upd - dele
    change = folder / "20240301-0000000000.csv"
    con.execute(
        f"""CREATE TABLE picked AS
            SELECT id, row_number() OVER () AS n FROM
              (SELECT i AS id FROM range({rows - int(rows * hot)}, {rows}) t(i)
               ORDER BY hash(i + 7) LIMIT {upd + dele})"""
    )
    con.execute(
        f"""COPY (
            WITH firsts AS (
              SELECT CASE WHEN n <= {upd} THEN 'U' ELSE 'D' END AS op, id FROM picked
              UNION ALL SELECT 'I', {rows} + i FROM range({ins}) t(i)
            ), numbered AS (
              SELECT op, id, 1 AS round, random() AS r FROM firsts
            ), seconds AS (
              SELECT 'U' AS op, id, 2 AS round, random() AS r FROM firsts WHERE op <> 'D'
              ORDER BY hash(id + 11) LIMIT {twice}
            )
            SELECT op, id, 'r' || (id % 8 + round) % 8 AS region, round(random() * 1000, 2) AS amount,
                   md5((id + round)::VARCHAR)[1:16] AS note
            FROM (SELECT * FROM numbered UNION ALL SELECT * FROM seconds) ORDER BY round, r
          ) TO '{change}' (HEADER false)"""
    )
    return change


def timed(args, env=None):
    """Runs `args` under /usr/bin/time -v; returns (seconds, peak RSS bytes, stdout)."""
    started = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-v", *args], capture_output=True, text=True, env=env)
    secs = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1)) * 1024
    return secs, rss, out.stdout


# The writer properties of both delta-rs scripts: the codec of argv[3] (see --compression).
DELTA_PROPS = r"""
import sys
from deltalake import WriterProperties
props = None if sys.argv[3] == "delta-default" else WriterProperties(
    compression=sys.argv[3].upper(), compression_level=1 if sys.argv[3] == "zstd" else None)
"""

DELTA_LOAD = DELTA_PROPS + r"""
import pyarrow.csv as csv, pyarrow as pa
from deltalake import write_deltalake
schema = pa.schema([("id", pa.int64()), ("region", pa.string()), ("amount", pa.float64()), ("note", pa.string())])
t = csv.read_csv(sys.argv[1], read_options=csv.ReadOptions(column_names=schema.names),
                 convert_options=csv.ConvertOptions(column_types=schema))
write_deltalake(sys.argv[2], t, mode="overwrite", writer_properties=props)
"""

DELTA_MERGE = DELTA_PROPS + r"""
import json, duckdb, pyarrow as pa, pyarrow.csv as csv
from deltalake import DeltaTable
names = ["Op", "id", "region", "amount", "note"]
types = {"Op": pa.string(), "id": pa.int64(), "region": pa.string(), "amount": pa.float64(), "note": pa.string()}
ch = csv.read_csv(sys.argv[1], read_options=csv.ReadOptions(column_names=names),
                  convert_options=csv.ConvertOptions(column_types=types))
ch = ch.append_column("seq", pa.array(range(ch.num_rows), pa.int64()))
last = duckdb.sql("SELECT Op, id, region, amount, note FROM ch QUALIFY row_number() OVER (PARTITION BY id ORDER BY seq DESC) = 1").arrow()
if hasattr(last, "read_all"):
    last = last.read_all()
cols = {c: f"s.{c}" for c in ["id", "region", "amount", "note"]}
metrics = (DeltaTable(sys.argv[2]).merge(source=last, predicate="t.id = s.id", source_alias="s", target_alias="t",
                                         writer_properties=props)
           .when_matched_delete(predicate="s.Op = 'D'")
           .when_matched_update(updates=cols, predicate="s.Op <> 'D'")
           .when_not_matched_insert(updates=cols, predicate="s.Op <> 'D'")
           .execute())
print(json.dumps(metrics))
"""


def compare(tributary_current, delta_current):
    import duckdb
    from deltalake import DeltaTable

    from deltalake import QueryBuilder
    import pyarrow as pa

    def rows(path):
        # delta-rs's DataFusion reader: it skips the rows deletion vectors mark (a pyarrow
        # dataset of the files would not)
        reader = QueryBuilder().register("t", DeltaTable(str(path))).execute(
            "SELECT id, region, amount, note FROM t")
        return pa.RecordBatchReader.from_stream(reader).read_all()

    a = rows(tributary_current)
    b = rows(delta_current)
    con = duckdb.connect()
    con.register("a", a)
    con.register("b", b)
    q = "SELECT count(*) FROM (SELECT id, region, amount, note FROM {} EXCEPT ALL SELECT id, region, amount, note FROM {})"
    diff = con.execute(q.format("a", "b")).fetchone()[0] + con.execute(q.format("b", "a")).fetchone()[0]
    rows = con.execute("SELECT count(*) FROM a").fetchone()[0]
    return rows, diff


def stages(table):
    st = table["apply"]["stages"]
    return ", ".join(f"{k.removesuffix('_secs').replace('_', ' ')} {v:.2f}" for k, v in st.items())


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--changes", type=int, default=1_000_000)
    p.add_argument("--bin", default=str(ROOT / "target" / "release" / "tributary"))
    p.add_argument("--keep", action="store_true")
    p.add_argument("--hot", type=float, default=1.0,
                   help="share of the id range (the newest ids) that updates and deletes touch; "
                        "1.0 spreads them over the whole table")
    p.add_argument("--no-deletes", action="store_true",
                   help="no deletes: 80%% updates, 20%% inserts (a merge with deletion vectors then "
                        "reads no stored row whole)")
    p.add_argument("--deletion-vectors", action="store_true",
                   help="Tributary's table marks replaced rows in deletion vectors "
                        "(`deletion_vectors: true`) instead of rewriting files")
    p.add_argument("--compression", choices=["zstd", "snappy", "delta-default"], default="zstd",
                   help="the Parquet codec both systems write (zstd: level 1); delta-default: "
                        "Tributary zstd, delta-rs its default (snappy)")
    args = p.parse_args()
    shutil.rmtree(OUT, ignore_errors=True)
    landing, lake = OUT / "landing", OUT / "lake"
    folder = landing / "bench" / "orders"
    (landing).mkdir(parents=True)
    tables = TABLES
    if args.deletion_vectors:
        tables = tables.replace("  primary_key: [id]\n", "  primary_key: [id]\n  deletion_vectors: true\n")
    if args.compression == "snappy":
        tables = tables.replace("  primary_key: [id]\n", "  primary_key: [id]\n  compression: snappy\n")
    (landing / "tables.yaml").write_text(tables)
    log(f"generating {args.rows:,} rows and {args.changes:,} change rows")
    staging = OUT / "staging"
    change = generate(args.rows, args.changes, staging, args.hot, 0.0 if args.no_deletes else 0.2)
    folder.mkdir(parents=True)
    shutil.copy(staging / "LOAD00000001.csv", folder / "LOAD00000001.csv")

    sync = [args.bin, "sync", str(landing), "--lake", str(lake), "--date", "2024-03-01", "--json"]
    log("tributary: full load")
    load_secs, load_rss, out = timed(sync)
    (OUT / "tributary_load.json").write_text(out)
    load_apply = json.loads(out)["tables"][0]
    shutil.copy(change, folder / change.name)
    log("tributary: change file")
    t_secs, t_rss, out = timed(sync)
    (OUT / "tributary_changes.json").write_text(out)
    summary = json.loads(out)["tables"][0]
    apply = summary["apply"]

    delta = OUT / "delta_current"
    log("delta-rs: load")
    dl_secs, dl_rss, _ = timed([sys.executable, "-c", DELTA_LOAD, str(staging / "LOAD00000001.csv"), str(delta), args.compression])
    log("delta-rs: merge")
    d_secs, d_rss, out = timed([sys.executable, "-c", DELTA_MERGE, str(change), str(delta), args.compression])
    metrics = json.loads(out.strip().splitlines()[-1])
    rows, diff = compare(lake / "bench" / "orders" / "current", delta)
    if diff:
        raise SystemExit(f"the two current tables differ in {diff} rows")

    mib = lambda b: f"{b / 2**20:,.0f} MiB"
    hot_title = "" if args.hot >= 1.0 else f", updates and deletes on the newest {args.hot:.0%} of keys"
    hot_flag = "" if args.hot >= 1.0 else f" --hot {args.hot}"
    if args.deletion_vectors:
        hot_title += ", Tributary with deletion vectors"
        hot_flag += " --deletion-vectors"
    mix = "60% updates, 20% inserts, 20% deletes"
    if args.no_deletes:
        hot_title += ", no deletes"
        hot_flag += " --no-deletes"
        mix = "80% updates, 20% inserts, no deletes"
    codec = {"zstd": "zstd level 1 for both systems", "snappy": "snappy for both systems",
             "delta-default": "Tributary zstd level 1, delta-rs its default (snappy)"}[args.compression]
    if args.compression != "zstd":
        hot_flag += f" --compression {args.compression}"
    hot_title += {"zstd": ", both zstd", "snappy": ", both snappy",
                  "delta-default": ", delta-rs at its default codec"}[args.compression]
    marked = ""
    if apply.get("files_marked"):
        marked = f"; {apply['files_marked']} files given deletion vectors ({apply['rows_marked']:,} rows marked)"
    section = f"""
## Change-log apply: {args.changes:,} DMS change rows into {args.rows:,} rows{hot_title}

Date {time.strftime('%Y-%m-%d')}, commit {commit()}, {platform.machine()} {os.cpu_count()} cores.
Command: `python3 bench/dms_merge_bench.py --rows {args.rows} --changes {args.changes}{hot_flag}`.
Parquet codec: {codec}. Changes: {mix}, ~10% of changed keys changed twice
({apply['changes_read']:,} rows, {apply['keys_changed']:,} keys). Both current tables compared
row for row after the runs: {rows:,} rows, 0 differences.

| step | system | wall s | peak RSS | notes |
|---|---|---:|---:|---|
| full load ({args.rows:,} rows) | Tributary `sync` | {load_secs:.2f} | {mib(load_rss)} | current + history + applied tables |
| full load | delta-rs `write_deltalake` | {dl_secs:.2f} | {mib(dl_rss)} | current table only |
| apply changes | Tributary `sync` | {t_secs:.2f} | {mib(t_rss)} | {apply['inserted']:,} I, {apply['updated']:,} U, {apply['deleted']:,} D; files rewritten {apply['files_rewritten']} of {apply['current_files']}; {apply['rows_copied']:,} rows copied{marked} |
| apply changes | delta-rs MERGE (Python) | {d_secs:.2f} | {mib(d_rss)} | files removed {metrics.get('num_target_files_removed')}, added {metrics.get('num_target_files_added')}; rows copied {metrics.get('num_target_rows_copied')} |

Tributary stages (seconds): load: read {load_apply['read_secs']:.2f}, {stages(load_apply)};
changes: read {summary['read_secs']:.2f}, {stages(summary)}.

Ratio (apply): delta-rs / Tributary = {d_secs / t_secs:.2f}x wall time. Tributary also writes the
history table ({apply['inserted'] + apply['updated'] + apply['deleted']:,} rows) and the applied-files
record in the same run; delta-rs writes only the current table.
"""
    from report import append_results

    append_results(section)
    if not args.keep:
        shutil.rmtree(OUT, ignore_errors=True)


if __name__ == "__main__":
    main()
