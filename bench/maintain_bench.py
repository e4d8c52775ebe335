#!/usr/bin/env python3
"""Small files from many `sync` runs, then `tributary optimize` and `tributary vacuum`.

A DMS landing zone: a full load of --rows orders, then --runs change files of --changes random
keys each (inserts, updates, deletes), each synced as its own run (as a `sync --watch 5m` would
over a day), so history gains one file per run. The same queries are timed before and after
`optimize` (best of --repeats, each a fresh `tributary sql` process, under bench/measure.py),
then `vacuum --retain 0h --force --delete`. Prints a Markdown table and writes
RESULTS.json under --work.

Usage: maintain_bench.py --bin target/release/tributary [--rows 1000000] [--runs 100]
       [--changes 2000] [--repeats 3] [--work DIR]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from report import machine  # noqa: E402  (cores, CPU model, memory)
from sql_bench import measured  # noqa: E402  (one process under measure.py, its stats)

TABLES = """tables:
- source: sales/orders
  active: true
  primary_key: [id]
  columns:
  - {name: id, type: long}
  - {name: region, type: string}
  - {name: amount, type: double}
  - {name: note, type: string}
"""

QUERIES = {
    "count history": "SELECT count(*) FROM sales.orders_history",
    "key lookup (scd2)": "SELECT id, amount, eff_start_date, is_current FROM sales.orders_scd2 "
                         "WHERE id = 4242 ORDER BY source_position",
    "as_of": "SELECT count(*) FROM as_of('sales.orders', DATE '2024-02-01')",
    "changes (all runs)": "SELECT operation, count(*) FROM changes('sales.orders', 0, {latest}) "
                          "GROUP BY 1 ORDER BY 1",
}


def files(table):
    count = size = 0
    for root, dirs, names in os.walk(table):
        if "_delta_log" in root:
            continue
        for n in names:
            if n.endswith(".parquet"):
                count += 1
                size += os.path.getsize(os.path.join(root, n))
    return count, size


def live_files(binary, lake, latest_sql):
    out = subprocess.check_output([binary, "sql", "--lake", lake, "--format", "csv", "-e", latest_sql])
    return out.decode().strip().splitlines()[1]


def queries(binary, work, lake, label, repeats, latest):
    times = {}
    answers = {}
    for name, sql in QUERIES.items():
        sql = sql.format(latest=latest)
        best = None
        for r in range(repeats):
            tag = f"{label}-{name.split()[0]}-{r}"
            stats, out = measured(work, tag, [binary, "sql", "--lake", lake, "--format", "csv", "-e", sql])
            if best is None or stats["precise_wall_secs"] < best["precise_wall_secs"]:
                best = stats
            answers[name] = out
        times[name] = best
    return times, answers


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--changes", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work")
    a = p.parse_args()
    binary = os.path.abspath(a.bin)
    work = a.work or tempfile.mkdtemp(prefix="maintain-bench-")
    landing, lake = os.path.join(work, "landing"), os.path.join(work, "lake")
    folder = os.path.join(landing, "sales/orders")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(landing, "tables.yaml"), "w") as f:
        f.write(TABLES)
    rng = random.Random(7)
    regions = ["east", "west", "north", "south"]
    with open(os.path.join(folder, "LOAD00000001.csv"), "w") as f:
        for i in range(1, a.rows + 1):
            f.write(f"{i},{regions[i % 4]},{i * 0.5},note {i}\n")
    sync = [binary, "sync", landing, "--lake", lake, "--date", "2024-02-01", "--json"]
    started = time.perf_counter()
    subprocess.check_call(sync, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    next_id = a.rows + 1
    for run in range(1, a.runs + 1):
        with open(os.path.join(folder, f"20240201-{run:09}.csv"), "w") as f:
            for _ in range(a.changes):
                op = rng.choice("IUUD")
                if op == "I":
                    key, next_id = next_id, next_id + 1
                else:
                    key = rng.randint(1, a.rows)
                f.write(f"{op},{key},{regions[key % 4]},{rng.random() * 100:.2f},run {run}\n")
        subprocess.check_call(sync, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sync_secs = time.perf_counter() - started
    table = os.path.join(lake, "sales/orders")
    latest_sql = "SELECT max(history_version) FROM runs('sales.orders')"
    latest = live_files(binary, lake, latest_sql)

    before_files = {r: files(os.path.join(table, r)) for r in ("current", "history")}
    before, before_answers = queries(binary, work, lake, "before", a.repeats, latest)
    opt, opt_out = measured(work, "optimize", [binary, "optimize", "--lake", lake, "--json"])
    summary = json.loads(opt_out)[0]
    after, after_answers = queries(binary, work, lake, "after", a.repeats, latest)
    for name in QUERIES:
        if before_answers[name] != after_answers[name]:
            sys.exit(f"{name}: the answer changed after optimize:\n{before_answers[name]}\n{after_answers[name]}")
    vac, vac_out = measured(work, "vacuum", [binary, "vacuum", "--lake", lake, "--retain", "0h", "--force",
                                             "--delete", "--json"])
    deleted = sum(len(t["files"]) for t in json.loads(vac_out)[0]["tables"])
    after_files = {r: files(os.path.join(table, r)) for r in ("current", "history")}

    host = machine()
    machine_text = f"{host['nproc']} cores, {host['cpu']}, {host['mem']}"
    lines = [
        f"Machine: {machine_text}. {a.rows:,} rows loaded, {a.runs} sync runs of {a.changes:,} random-key "
        f"changes ({sync_secs:.0f} s in all); best of {a.repeats}, each query a fresh process.",
        "",
        f"- history files: {summary['history']['files_removed'] + summary['history']['files_after'] - summary['history']['files_added']} live before, "
        f"{summary['history']['files_after']} after; current {summary['current']['files_removed'] + summary['current']['files_after'] - summary['current']['files_added']} "
        f"-> {summary['current']['files_after']}",
        f"- optimize: {opt['precise_wall_secs']:.2f} s, peak RSS {opt['maxrss_kib'] / 1024:.0f} MiB, "
        f"{summary['history']['bytes_removed'] / 2**20:.1f} MiB of history rewritten as "
        f"{summary['history']['bytes_added'] / 2**20:.1f} MiB",
        f"- vacuum --delete: {vac['precise_wall_secs']:.2f} s, {deleted} files deleted; on disk "
        f"(current + history) {sum(v[1] for v in before_files.values()) / 2**20:.0f} MiB in "
        f"{sum(v[0] for v in before_files.values())} files before optimize, "
        f"{sum(v[1] for v in after_files.values()) / 2**20:.0f} MiB in {sum(v[0] for v in after_files.values())} after vacuum",
        "",
        "| query | before optimize | after | speed-up | peak RSS before / after |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in QUERIES:
        b, c = before[name], after[name]
        lines.append(
            f"| {name} | {b['precise_wall_secs']:.3f} s | {c['precise_wall_secs']:.3f} s | "
            f"{b['precise_wall_secs'] / c['precise_wall_secs']:.2f}x | "
            f"{b['maxrss_kib'] / 1024:.0f} / {c['maxrss_kib'] / 1024:.0f} MiB |"
        )
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(work, "RESULTS.json"), "w") as f:
        json.dump({"before": before, "after": after, "optimize": opt, "optimize_summary": summary,
                   "vacuum": vac, "files_before": before_files, "files_after": after_files,
                   "markdown": text}, f, indent=1)


if __name__ == "__main__":
    main()
