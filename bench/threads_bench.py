#!/usr/bin/env python3
"""Snapshot runs on 2, 8 and 16 threads (issue 22): time, peak RSS and the memory plan.

Seed-shaped data (`tributary generate ROWS ROWS 5 10 0.2 0.4 0.4`: 5 string keys, 10 double
non-keys; day 2 deletes 20% of day 1's keys, updates 40%, keeps 40% unchanged and inserts 20%)
of --rows rows.
Day 1 (the initial load) is run once; then, for each thread count T of --threads:
  check  `tributary check` of day 2: the read-and-hash floor of the run's read stage
  day 2  `tributary run` of day 2 on a fresh copy of the day-1 lake (best of --repeats)
  duckdb (with --duckdb) bench/duckdb_cdc.py day 2 on a copy of its day 1, `SET threads = T`
Each is one process under bench/measure.py (wall time, peak RSS of the process tree).

--pin taskset   run each process under `taskset -c 0-(T-1)` (T cores; needs T cores here):
                the measurement of a many-core machine
--pin threads   pass `--threads T` instead, on whatever cores this machine has: more threads
                than cores (oversubscribed) shows the plan and memory of a T-core server on a
                small machine, not its speed
Prints a Markdown table and writes RESULTS.json under --work.

Usage: threads_bench.py --bin target/release/tributary [--rows 10000000] [--threads 2,8,16]
       [--pin taskset|threads] [--memory-limit 1GiB] [--repeats 1] [--duckdb] [--work DIR]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from report import machine  # noqa: E402  (cores, CPU model, memory)
from sql_bench import measured  # noqa: E402  (one process under measure.py, its stats)


def prefix(pin, threads):
    """The command prefix and the tributary arguments that give a process `threads`."""
    if pin == "taskset":
        return ["taskset", "-c", f"0-{threads - 1}"], []
    return [], ["--threads", str(threads)]


def fresh_copy(base, target):
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(base, target)
    subprocess.check_call(["sync"])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--threads", default="2,8,16")
    p.add_argument("--pin", choices=["taskset", "threads"], default="taskset")
    p.add_argument("--memory-limit", default="1GiB")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--duckdb", action="store_true")
    p.add_argument("--work", default=os.path.join(HERE, "out", "threads"))
    a = p.parse_args()
    binary = os.path.abspath(a.bin)
    counts = [int(t) for t in a.threads.split(",")]
    cores = os.cpu_count() or 1
    if a.pin == "taskset" and max(counts) > len(os.sched_getaffinity(0)):
        sys.exit(f"--pin taskset needs {max(counts)} cores; this process may use "
                 f"{len(os.sched_getaffinity(0))} (use --pin threads to oversubscribe)")
    work = os.path.abspath(a.work)
    data = os.path.join(work, f"data-{a.rows}")
    os.makedirs(work, exist_ok=True)
    if not os.path.exists(os.path.join(data, ".complete")):
        shutil.rmtree(data, ignore_errors=True)
        os.makedirs(data)
        subprocess.check_call([
            binary, "generate", str(a.rows), str(a.rows), "5", "10", "0.2", "0.4", "0.4",
            os.path.join(data, "initial"), os.path.join(data, "incremental"), "--seed", "42",
            "--config-out", os.path.join(data, "config.yaml")], stdout=subprocess.DEVNULL)
        open(os.path.join(data, ".complete"), "w").close()
    # The generator's config, with the limit, its lake under the work folder.
    with open(os.path.join(data, "config.yaml")) as f:
        text = f.read()
    config = os.path.join(work, "config.yaml")
    lake = os.path.join(work, "lake")
    text = text.replace("columns:", f"memory_limit: {a.memory_limit}\ncolumns:", 1)
    for line in text.splitlines():
        if line.startswith(("current_table_path:", "history_table_path:")):
            key = line.split(":")[0]
            name = "current" if key.startswith("current") else "history"
            text = text.replace(line, f"{key}: {os.path.join(lake, name)}")
    with open(config, "w") as f:
        f.write(text)
    day1 = f"{lake}-{a.rows}.day1"
    if not os.path.exists(os.path.join(day1, "history", "_delta_log")):
        shutil.rmtree(lake, ignore_errors=True)
        measured(work, "day1", [binary, "run", config, os.path.join(data, "initial"),
                                "2019-06-18", "--json"])
        shutil.rmtree(day1, ignore_errors=True)
        os.rename(lake, day1)
    duck_day1 = os.path.join(work, f"duckdb-{a.rows}.day1")
    duck = os.path.join(work, "duckdb")
    if a.duckdb and not os.path.exists(os.path.join(duck_day1, "current")):
        measured(work, "duckdb-day1", [sys.executable, os.path.join(HERE, "duckdb_cdc.py"),
                                       os.path.join(data, "initial"), duck_day1,
                                       "2019-06-18", "5", "10"])
    results = []
    for threads in counts:
        pin, args = prefix(a.pin, threads)
        row = {"threads": threads}
        check, out = measured(work, f"check-{threads}", pin + [
            binary, *args, "check", config, os.path.join(data, "incremental"), "--json"])
        row["check_secs"] = check["precise_wall_secs"]
        best = None
        for r in range(a.repeats):
            fresh_copy(day1, lake)
            stats, out = measured(work, f"day2-{threads}-{r}", pin + [
                binary, *args, "run", config, os.path.join(data, "incremental"),
                "2019-06-19", "--json"])
            if best is None or stats["precise_wall_secs"] < best[0]["precise_wall_secs"]:
                best = (stats, json.loads(out))
        stats, summary = best
        plan = summary["memory"]["plan"]
        row.update(
            wall_secs=stats["precise_wall_secs"],
            peak_rss_mib=stats["tree_peak_rss_kib"] / 1024,
            maxrss_mib=stats["maxrss_kib"] / 1024,
            stages=summary["stages"],
            plan={k: plan[k] for k in ("threads", "streamed", "partitions", "workers")},
            spilled_mib=summary["memory"]["spill"]["spilled_bytes"] / 2**20,
            counts=summary["counts"],
        )
        if a.duckdb:
            fresh_copy(duck_day1, duck)
            env = dict(os.environ, DUCKDB_THREADS=str(threads))
            cmd = pin + [sys.executable, os.path.join(HERE, "duckdb_cdc.py"),
                         os.path.join(data, "incremental"), duck, "2019-06-19", "5", "10"]
            result = os.path.join(work, f"duckdb-{threads}.json")
            code = subprocess.call([sys.executable, os.path.join(HERE, "measure.py"), result,
                                    os.path.join(work, f"duckdb-{threads}.out"),
                                    os.path.join(work, f"duckdb-{threads}.err"), "--"] + cmd,
                                   env=env)
            if code != 0:
                sys.exit(f"duckdb on {threads} threads failed ({code})")
            with open(result) as f:
                d = json.load(f)
            row["duckdb_secs"] = d["precise_wall_secs"]
            row["duckdb_peak_rss_mib"] = d["tree_peak_rss_kib"] / 1024
        results.append(row)
        print(json.dumps(row), flush=True)
    shutil.rmtree(lake, ignore_errors=True)
    shutil.rmtree(duck, ignore_errors=True)
    report = {"machine": machine(), "rows": a.rows, "pin": a.pin, "cores": cores,
              "memory_limit": a.memory_limit, "results": results}
    with open(os.path.join(work, "RESULTS.json"), "w") as f:
        json.dump(report, f, indent=1)
    base = results[0]
    print(f"\n{a.rows:,} rows, day 2 full extract, memory_limit {a.memory_limit}, "
          f"{'taskset' if a.pin == 'taskset' else '--threads'}; {machine()}\n")
    print("| threads | day 2 | vs first | read | scan | diff | write | check | partitions | "
          "diff workers | spilled | peak RSS |" + (" DuckDB | DuckDB RSS |" if a.duckdb else ""))
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" +
          ("---:|---:|" if a.duckdb else ""))
    for r in results:
        s = r["stages"]
        line = (f"| {r['threads']} | {r['wall_secs']:.2f} s | "
                f"{base['wall_secs'] / r['wall_secs']:.2f}x | {s['read_secs']:.2f} s | "
                f"{s['scan_secs']:.2f} s | {s['diff_secs']:.2f} s | {s['write_secs']:.2f} s | "
                f"{r['check_secs']:.2f} s | {r['plan']['partitions']} | {r['plan']['workers']} | "
                f"{r['spilled_mib']:.0f} MiB | {r['peak_rss_mib']:.0f} MiB |")
        if a.duckdb:
            line += f" {r['duckdb_secs']:.2f} s | {r['duckdb_peak_rss_mib']:.0f} MiB |"
        print(line)


if __name__ == "__main__":
    main()
