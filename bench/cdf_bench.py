#!/usr/bin/env python3
"""What writing the Delta change data feed costs (`change_data_feed: true`).

Two workloads, each run into two lakes, one without the feed and one with it, the same input:
  snapshot  seed-shaped extracts of --rows rows (`tributary generate`, 5 keys, 10 non-keys):
            day 1 (initial load), then day 2 (a full extract: 20% updates, 40% inserts, 40%
            deletes of day 1's count, the generator's split); day 2 is timed
  sync      a DMS landing zone: a full load of --rows orders, then one change file of
            --changes changes of random keys (inserts, updates, deletes); the change run is timed
Each timed run is a fresh process under bench/measure.py (best of --repeats, each on a fresh
copy of the lake before the run). Then the feed of the timed version is read back with
`tributary sql -e "... table_changes(...)"` (delta-rs's reader), timed, and its row counts by
change type printed; the tables of both lakes are compared (per operation: row count and distinct
keyhash and nonkeyhash counts of current and history).
Prints a Markdown table and writes RESULTS.json under --work.

Usage: cdf_bench.py --bin target/release/tributary [--rows 1000000] [--changes 100000]
       [--repeats 3] [--work DIR]
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from report import machine  # noqa: E402  (cores, CPU model, memory)
from sql_bench import measured  # noqa: E402  (one process under measure.py, its stats)

TABLES = """tables:
- source: sales/orders
  active: true
  primary_key: [id]
  {feed}columns:
  - {{name: id, type: long}}
  - {{name: region, type: string}}
  - {{name: amount, type: double}}
  - {{name: note, type: string}}
"""


def size_of(folder):
    total = 0
    for root, _, names in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(root, n)) for n in names)
    return total


def sql(binary, args, query):
    out = subprocess.check_output([binary, "sql", *args, "--format", "csv", "-e", query])
    return out.decode().strip().splitlines()[1:]


def timed_run(work, name, repeats, prepared, cmd):
    """Best of `repeats` runs of `cmd`, each on a fresh copy of `prepared` (the lake before the
    timed run), copied to the folder the command writes; returns its stats."""
    best = None
    for r in range(repeats):
        target = prepared.rstrip("/").removesuffix(".base")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(prepared, target)
        subprocess.check_call(["sync"])
        stats, _ = measured(work, f"{name}-{r}", cmd)
        if best is None or stats["precise_wall_secs"] < best["precise_wall_secs"]:
            best = stats
    return best


def snapshot(binary, work, rows, repeats):
    data = os.path.join(work, "snapshot")
    config = os.path.join(data, "config.yaml")
    if not os.path.exists(config):
        subprocess.check_call([binary, "generate", str(rows), str(rows), "5", "10", "0.2", "0.4", "0.4",
                               os.path.join(data, "day1"), os.path.join(data, "day2"), "--seed", "7",
                               "--config-out", config], stdout=subprocess.DEVNULL)
    with open(config) as f:
        text = f.read()
    name = next(l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("name:"))
    results = {}
    for feed in (False, True):
        folder = os.path.join(data, "on" if feed else "off")
        os.makedirs(folder, exist_ok=True)
        own = os.path.join(folder, "config.yaml")
        with open(own, "w") as f:
            f.write(("change_data_feed: true\n" if feed else "") + text)
        lake = os.path.join(folder, "lake")
        shutil.rmtree(lake, ignore_errors=True)
        subprocess.check_call([binary, "run", own, os.path.join(data, "day1"), "2019-06-18"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = lake + ".base"
        shutil.rmtree(base, ignore_errors=True)
        shutil.move(lake, base)
        stats = timed_run(work, f"snapshot-{'on' if feed else 'off'}", repeats, base,
                          [binary, "run", own, os.path.join(data, "day2"), "2019-06-19", "--json"])
        results[feed] = {"stats": stats, "lake": lake, "args": ["--config", own]}
    return name, results


def sync_workload(binary, work, rows, changes, repeats):
    results = {}
    rng = random.Random(7)
    regions = ["east", "west", "north", "south"]
    change_lines = []
    next_id = rows + 1
    for _ in range(changes):
        op = rng.choice("IUUD")
        if op == "I":
            key, next_id = next_id, next_id + 1
        else:
            key = rng.randint(1, rows)
        change_lines.append(f"{op},{key},{regions[key % 4]},{rng.random() * 100:.2f},changed\n")
    for feed in (False, True):
        folder = os.path.join(work, "sync-on" if feed else "sync-off")
        shutil.rmtree(folder, ignore_errors=True)
        landing, lake = os.path.join(folder, "landing"), os.path.join(folder, "lake")
        table = os.path.join(landing, "sales/orders")
        os.makedirs(table)
        with open(os.path.join(landing, "tables.yaml"), "w") as f:
            f.write(TABLES.format(feed="change_data_feed: true\n  " if feed else ""))
        with open(os.path.join(table, "LOAD00000001.csv"), "w") as f:
            for i in range(1, rows + 1):
                f.write(f"{i},{regions[i % 4]},{i * 0.5},note {i}\n")
        command = [binary, "sync", landing, "--lake", lake, "--date", "2024-02-01", "--json"]
        subprocess.check_call(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(table, "20240201-000000001.csv"), "w") as f:
            f.writelines(change_lines)
        base = lake + ".base"
        shutil.move(lake, base)
        stats = timed_run(work, f"sync-{'on' if feed else 'off'}", repeats, base, command)
        results[feed] = {"stats": stats, "lake": lake, "args": ["--lake", lake]}
    return "sales.orders", results


def feed_read(binary, work, name, result, version):
    query = (f"SELECT _change_type, count(*) AS n FROM table_changes('{name}', {version}, {version}) "
             "GROUP BY 1 ORDER BY 1")
    stats, out = measured(work, f"feed-{name}", [binary, "sql", *result["args"], "--format", "csv", "-e", query])
    counts = dict(line.split(",") for line in out.strip().splitlines()[1:])
    return stats, {k: int(v) for k, v in counts.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--changes", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work")
    a = p.parse_args()
    binary = os.path.abspath(a.bin)
    work = a.work or tempfile.mkdtemp(prefix="cdf-bench-")
    os.makedirs(work, exist_ok=True)
    report = []
    for workload, (name, results) in (
        ("snapshot day 2", snapshot(binary, work, a.rows, a.repeats)),
        (f"sync of {a.changes:,} changes", sync_workload(binary, work, a.rows, a.changes, a.repeats)),
    ):
        off, on = results[False], results[True]
        for table in (name, name + "_history"):
            q = (f"SELECT operation, count(*), count(DISTINCT keyhash), count(DISTINCT nonkeyhash) "
                 f"FROM {table} GROUP BY 1 ORDER BY 1")
            if sql(binary, off["args"], q) != sql(binary, on["args"], q):
                sys.exit(f"{workload}: {table} differs between the lakes with and without the feed")
        if "sync" in workload:
            current = os.path.join(on["lake"], "sales/orders/current")
        else:
            current = next(os.path.join(on["lake"], d) for d in os.listdir(on["lake"]) if d.endswith("_current"))
        latest = int(sql(binary, on["args"], f"SELECT max(_commit_version) FROM table_changes('{name}', 1)")[0])
        read, counts = feed_read(binary, work, name, on, latest)
        row = {
            "workload": workload,
            "rows": a.rows,
            "off_secs": round(off["stats"]["precise_wall_secs"], 2),
            "off_peak_rss_mib": round(off["stats"]["maxrss_kib"] / 1024),
            "on_secs": round(on["stats"]["precise_wall_secs"], 2),
            "on_peak_rss_mib": round(on["stats"]["maxrss_kib"] / 1024),
            "on_over_off": round(on["stats"]["precise_wall_secs"] / off["stats"]["precise_wall_secs"], 2),
            "change_data_mib": round(size_of(os.path.join(current, "_change_data")) / 2**20, 1),
            "feed_rows": counts,
            "feed_read_secs": round(read["precise_wall_secs"], 2),
        }
        print(json.dumps(row), flush=True)
        report.append(row)
    host = machine()
    machine_text = f"{host['nproc']} cores, {host['cpu']}, {host['mem']}"
    with open(os.path.join(work, "RESULTS.json"), "w") as f:
        json.dump({"machine": machine_text, "rows": report}, f, indent=1)
    print(f"\n{a.rows:,} rows; {machine_text}; best of {a.repeats}, each run a fresh process on a fresh copy\n")
    print("| workload | feed off s | peak RSS MiB | feed on s | peak RSS MiB | on / off | _change_data MiB | feed rows | feed read s |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in report:
        rows = ", ".join(f"{k} {v:,}" for k, v in r["feed_rows"].items())
        print(f"| {r['workload']} | {r['off_secs']} | {r['off_peak_rss_mib']:,} | {r['on_secs']} | "
              f"{r['on_peak_rss_mib']:,} | {r['on_over_off']}x | {r['change_data_mib']} | {rows} | "
              f"{r['feed_read_secs']} |")


if __name__ == "__main__":
    main()
