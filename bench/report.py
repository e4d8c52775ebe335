#!/usr/bin/env python3
"""Build the Markdown results of one snapshot_bench.sh invocation and (re)write
its section of bench/RESULTS.md.  Called by snapshot_bench.sh; not meant to be
run by hand.

Usage: report.py ROWS OUT_DIR RESULTS_MD COMMAND TRIBUTARY_BIN SYSTEM[,SYSTEM...] [NOTE...]

OUT_DIR/<system>/day{1,2}.measure.json  (measure.py)
OUT_DIR/<system>/day{1,2}.json          (the system's own JSON summary)
OUT_DIR/verify.json                     (table_counts.py)
Every section of RESULTS.md is delimited by <!-- rows=N --> ... <!-- /rows=N -->;
the section of ROWS is replaced (or appended), the others are kept.
"""
import datetime
import json
import os
import platform
import re
import subprocess
import sys


def load(path):
    """A JSON file, or the last line of a file whose last line is JSON."""
    with open(path) as f:
        text = f.read().strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return json.loads(text.splitlines()[-1])


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {"nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
            "mem": f"{mem_kib / 1024 / 1024:.1f} GiB", "cpu": cpu,
            "kernel": platform.release(), "load": " ".join(open("/proc/loadavg").read().split()[:3])}


def git(*args):
    return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()


def main():
    rows, out_dir, results_md, command, binary, systems = sys.argv[1:7]
    notes = [n for n in sys.argv[7:] if n]
    if "/debug/" in binary:
        notes.insert(0, "**DEBUG build of tributary (`" + os.path.relpath(binary) +
                     "`): these tributary timings are not representative.**")
    rows = int(rows)
    systems = systems.split(",")

    gen = load(os.path.join(out_dir, "generate.json"))
    rows_read = {"day1": gen["initial_rows"],
                 "day2": gen["updated"] + gen["unchanged"] + gen["inserted"]}
    meas, summ = {}, {}
    for s in systems:
        for d in ("day1", "day2"):
            meas[s, d] = load(os.path.join(out_dir, s, f"{d}.measure.json"))
            summ[s, d] = load(os.path.join(out_dir, s, f"{d}.json"))
    ref = meas["tributary", "day2"]["wall_secs"]

    def engine_secs(s, d):
        j = summ[s, d]
        return j.get("job_secs", j.get("elapsed_secs"))

    lines = ["| system | day | wall s | rows/s | peak RSS MiB | vs tributary day 2 | in-process s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for s in systems:
        for d in ("day1", "day2"):
            m = meas[s, d]
            wall = m["wall_secs"]
            rss = max(m["maxrss_kib"], m["tree_peak_rss_kib"]) / 1024
            rps = rows_read[d] / wall if wall > 0 else float("inf")
            ratio = wall / ref if ref > 0 else float("inf")
            lines.append(f"| {s} | {d[-1]} | {wall:.2f} | {rps:,.0f} | {rss:,.0f} | "
                         f"{ratio:.2f}x | {engine_secs(s, d):.2f} |")
    table = "\n".join(lines)

    verify = load(os.path.join(out_dir, "verify.json"))
    counts = verify["systems"]["tributary"]["counts"]
    mach = machine()
    dirty = git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock")
    commit = git("rev-parse", "--short", "HEAD") + (" (src/ had uncommitted changes)" if dirty else "")
    ver = {s: summ[s, "day2"] for s in systems}
    tver = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    versions = [f"{tver} (`{os.path.relpath(binary)}`)"]
    if "duckdb" in ver:
        versions.append(f"DuckDB {ver['duckdb'].get('duckdb_version')}")
    if "pyspark" in ver:
        versions.append(f"PySpark {ver['pyspark'].get('spark_version')} (local[2], "
                        "driver memory 4g, shuffle partitions 4)")

    section = f"""<!-- rows={rows} -->
## {rows:,} rows

- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}
- Commit: {commit}
- Command: `{command}`
- Machine: nproc {mach['nproc']}, CPU {mach['cpu']}, {mach['mem']} RAM, Linux {mach['kernel']}, load average at report time {mach['load']}
- Engines: {', '.join(versions)}
- Data: `tributary generate {rows} {rows} 5 10 0.2 0.4 0.4 ... --seed 42` (headerless CSV, 5 uuid keys + 10 doubles);
  day 1 = 2019-06-18 reads {rows_read['day1']:,} rows, day 2 = 2019-06-19 reads {rows_read['day2']:,} rows
- Day-2 counts (from the output tables, identical for every system): I={counts['I']:,} U={counts['U']:,} D={counts['D']:,} N={counts['N']:,}

{table}

wall s and peak RSS: `/usr/bin/time -f '%e %M'` around the whole process (includes
interpreter/JVM start-up); peak RSS is the larger of `%M` and the process tree's summed
RSS sampled every 50 ms (the latter is what counts for PySpark, whose JVM the Python driver
does not reap). rows/s = rows read / wall s. in-process s = the engine's own timer
(tributary `elapsed_secs`, DuckDB script `elapsed_secs`, PySpark `job_secs` = after session start-up).
Outputs: tributary writes Delta tables (current + history); the DuckDB and PySpark scripts write
plain Parquet (no transaction log), so they do less work per run.
""" + "".join(f"\nNote: {n}\n" for n in notes) + f"<!-- /rows={rows} -->\n"

    text = ""
    if os.path.exists(results_md):
        with open(results_md) as f:
            text = f.read()
    header = ("# Snapshot CDC benchmark results\n\n"
              "Generated by `bench/snapshot_bench.sh [ROWS]`; one section per row count "
              "(re-running a row count replaces its section).\n\n")
    if not text.startswith("# "):
        text = header + text
    pat = re.compile(rf"<!-- rows={rows} -->.*?<!-- /rows={rows} -->\n", re.S)
    if pat.search(text):
        text = pat.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(results_md, "w") as f:
        f.write(text)
    print(table)


if __name__ == "__main__":
    main()
