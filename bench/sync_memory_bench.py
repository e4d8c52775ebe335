#!/usr/bin/env python3
"""`sync` full loads within `--memory-limit` (issue 22): peak RSS and wall time, held or spilled.

Workloads (DMS full-load CSV files, one `LOAD00000001.csv` each, made with DuckDB):

- wide: the shape of bench/dms_merge_bench.py (id long, region string of 8 values, amount
  double, note string of 16 characters), ROWS rows (default 10M), loaded four ways in one
  sitting: `--memory-limit 64GiB` (held in memory before 02beb33; since then a `LOAD` past
  64 MiB of changes streams to the writers whatever the limit), the default `1GiB` (before
  02beb33 partitioned by key and spilled past 512 MiB), `512MiB`, and the default with
  `tributary --threads 16` (16 threads oversubscribed on this machine's cores: the limit must
  hold on any core count). The held and spilled current tables are compared with DuckDB
  (EXCEPT ALL both ways: 0 rows).
- narrow: id long, amount double: SMALL rows (default 1M) and NARROW rows (default 100M) with the
  default limit; the per-row cost of the two.

Each load runs in its own process under /usr/bin/time -v (wall seconds, peak RSS); the sync
summary gives the partitions and spilled bytes. A section is appended to bench/RESULTS.md with
the machine (cores, CPU, memory), date and commit.

Usage: bench/sync_memory_bench.py [--bin target/release/tributary] [--rows 10000000]
       [--small 1000000] [--narrow 100000000] [--skip-narrow] [--keep]
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "sync_memory"
sys.path.insert(0, str(ROOT / "bench"))

# the wide shape and the timing are bench/dms_merge_bench.py's
from dms_merge_bench import TABLES as WIDE, timed  # noqa: E402

NARROW = """tables:
- source: bench/orders
  active: true
  primary_key: [id]
  columns:
  - {name: id, type: long}
  - {name: amount, type: double}
"""


def log(msg):
    print(f"[sync_memory_bench] {msg}", file=sys.stderr, flush=True)


def generate(rows, path, narrow):
    import duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SELECT setseed(0.42)")
    columns = ("i AS id, round(random() * 1000, 2) AS amount" if narrow else
               "i AS id, 'r' || (i % 8) AS region, round(random() * 1000, 2) AS amount, "
               "md5(i::VARCHAR)[1:16] AS note")
    con.execute(f"COPY (SELECT {columns} FROM range({rows}) t(i) ORDER BY i) TO '{path}' (HEADER false)")


def load(binary, data, tables, name, limit=None, threads=None):
    """Syncs the LOAD file `data` into a fresh lake; returns a result row and the lake."""
    work = OUT / name
    shutil.rmtree(work, ignore_errors=True)
    folder = work / "landing" / "bench" / "orders"
    folder.mkdir(parents=True)
    (work / "landing" / "tables.yaml").write_text(tables)
    (folder / "LOAD00000001.csv").symlink_to(data)
    spill = work / "spill"
    spill.mkdir()
    args = [binary]
    if threads:
        args += ["--threads", threads]
    args += ["sync", work / "landing", "--lake", work / "lake", "--date", "2024-03-01", "--json",
             "--spill-dir", spill]
    if limit:
        args += ["--memory-limit", limit]
    secs, rss, out = timed([str(a) for a in args])
    table = json.loads(out)["tables"][0]
    if table["status"] != "applied":
        raise SystemExit(f"{name}: {table['message']}")
    apply = table["apply"]
    row = {"name": name, "limit": limit or "1GiB (default)", "threads": threads or "cores",
           "secs": secs, "rss": rss, "rows": apply["changes_read"],
           "partitions": apply["partitions"], "spilled": apply["spilled_bytes"],
           "read": table["read_secs"], "stages": apply["stages"]}
    log(f"{name}: {secs:.2f} s, {rss / 2**20:,.0f} MiB, {apply['partitions']} partitions, "
        f"{apply['spilled_bytes'] / 2**20:,.0f} MiB spilled"
        f"{', streamed' if apply.get('streamed') else ''}")
    return row, work / "lake" / "bench" / "orders" / "current"


def differences(a, b):
    import duckdb
    from deltalake import DeltaTable

    con = duckdb.connect()
    con.register("a", DeltaTable(str(a)).to_pyarrow_dataset())
    con.register("b", DeltaTable(str(b)).to_pyarrow_dataset())
    q = "SELECT count(*) FROM (SELECT * FROM {} EXCEPT ALL SELECT * FROM {})"
    return (con.execute(q.format("a", "b")).fetchone()[0] + con.execute(q.format("b", "a")).fetchone()[0],
            con.execute("SELECT count(*) FROM a").fetchone()[0])


def main():
    from report import append_results, git, machine, mib

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=str(ROOT / "target" / "release" / "tributary"))
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--small", type=int, default=1_000_000)
    p.add_argument("--narrow", type=int, default=100_000_000)
    p.add_argument("--skip-narrow", action="store_true")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    binary = str(Path(args.bin).resolve())
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    results = []

    wide = OUT / "data" / "wide.csv"
    log(f"generating {args.rows:,} wide rows")
    generate(args.rows, wide, narrow=False)
    held, held_lake = load(binary, wide, WIDE, "wide-held", limit="64GiB")
    results.append(held)
    spilled, spilled_lake = load(binary, wide, WIDE, "wide-1GiB")
    results.append(spilled)
    diff, rows = differences(held_lake, spilled_lake)
    if diff:
        raise SystemExit(f"held and spilled current tables differ in {diff} rows")
    log(f"held and spilled current tables equal ({rows:,} rows)")
    shutil.rmtree(OUT / "wide-held")
    for limit, threads in [("512MiB", None), (None, "16")]:
        name = f"wide-{limit or '1GiB'}-threads-{threads or 'cores'}"
        results.append(load(binary, wide, WIDE, name, limit=limit, threads=threads)[0])
        shutil.rmtree(OUT / name)
    wide.unlink()

    narrow = []
    if not args.skip_narrow:
        for n in [args.small, args.narrow]:
            data = OUT / "data" / f"narrow-{n}.csv"
            log(f"generating {n:,} narrow rows")
            generate(n, data, narrow=True)
            row, _ = load(binary, data, NARROW, f"narrow-{n}")
            narrow.append(row)
            shutil.rmtree(OUT / f"narrow-{n}")
            data.unlink()

    m = machine()
    lines = [
        "",
        f"## `sync` full loads within `--memory-limit` (issue 22)",
        "",
        f"Date {time.strftime('%Y-%m-%d')}, commit {git('rev-parse', '--short', 'HEAD')}, "
        f"{m['nproc']} cores ({m['cpu']}), {m['mem']}. "
        f"Command: `python3 bench/sync_memory_bench.py --rows {args.rows} --small {args.small} "
        f"--narrow {args.narrow}{' --skip-narrow' if args.skip_narrow else ''}`. One DMS `LOAD` CSV file per "
        "workload, synced into a fresh lake (current, history sharing the load's files, applied); "
        f"the held and the 1 GiB current tables compared with DuckDB: {rows:,} rows, 0 differences.",
        "",
        "| workload | rows | --memory-limit | threads | wall s | peak RSS MiB | partitions | spilled MiB | read s | dedupe s | merge s | write s |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results + narrow:
        st = r["stages"]
        lines.append(
            f"| {r['name'].split('-')[0]} | {r['rows']:,} | {r['limit']} | {r['threads']} | {r['secs']:.2f} | "
            f"{mib(r['rss'])} | {r['partitions']} | {mib(r['spilled'])} | {r['read']:.2f} | "
            f"{st['dedupe_secs']:.2f} | {st['merge_secs']:.2f} | {st['write_secs']:.2f} |")
    lines.append("")
    lines.append(f"Spilled against held (wide, {args.rows:,} rows): {spilled['secs'] / held['secs']:.2f}x wall time, "
                 f"{spilled['rss'] / held['rss']:.2f}x peak RSS.")
    if len(narrow) == 2:
        per = [r["secs"] / r["rows"] * 1e9 for r in narrow]
        lines.append(f"Narrow per-row cost: {per[0]:.0f} ns at {narrow[0]['rows']:,} rows, {per[1]:.0f} ns at "
                     f"{narrow[1]['rows']:,} ({per[1] / per[0]:.2f}x).")
    append_results("\n".join(lines) + "\n")
    if not args.keep:
        shutil.rmtree(OUT, ignore_errors=True)


if __name__ == "__main__":
    main()
