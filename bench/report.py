#!/usr/bin/env python3
"""Build the Markdown results of one snapshot_bench.sh invocation and (re)write
its section of bench/RESULTS.md.  Called by snapshot_bench.sh; not meant to be
run by hand.

Usage: report.py OUT_DIR RESULTS_MD

OUT_DIR/bench.json                      the run's configuration (snapshot_bench.sh)
OUT_DIR/generate.json                   the generator's summary
OUT_DIR/<system>/day{1,2}.measure.json  (measure.py)
OUT_DIR/<system>/day{1,2}.json          (the system's own JSON summary)
OUT_DIR/floor/{cat,check}.measure.json  the day-2 read floor (measure.py)
OUT_DIR/floor/check.json                `tributary check --json`
OUT_DIR/verify.json                     (table_counts.py)
Every section of RESULTS.md is delimited by <!-- config=KEY --> ... <!-- /config=KEY -->,
KEY being the full configuration (rows, shape, format, extract mode, memory limit,
compression); the section of this KEY is replaced (or appended), the others are kept.
The default configuration also replaces a legacy <!-- rows=N --> section of its row count.
"""
import datetime
import json
import os
import platform
import re
import subprocess
import sys

MIB = 1024 * 1024
NAMES = {"tributary": "tributary", "duckdb": "DuckDB", "pyspark": "PySpark"}


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


def peak_mib(m):
    """Peak RSS of a measure.py result, MiB."""
    return max(m["maxrss_kib"], m["tree_peak_rss_kib"]) / 1024


def ratio(a, b):
    return f"{a / b:.2f}x" if b > 0 else "-"


def mib(n):
    return "-" if n is None else f"{n / MIB:,.0f}"


def append_results(section):
    """Appends a Markdown section to bench/RESULTS.md (beside this file) and prints it."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"), "a") as f:
        f.write(section)
    print(section)


def systems_table(conf, meas, summ, rows_read):
    """One row per system: day-1/day-2 wall, day-2 rows/s and peak RSS, ratio to tributary."""
    ref = meas["tributary", "day2"]["wall_secs"]
    lines = ["| system | day-1 wall s | day-2 wall s | day-2 rows/s | day-1 peak RSS MiB "
             "| day-2 peak RSS MiB | day-2 time / tributary's | day-2 in-process s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in conf["systems"]:
        d1, d2 = meas[s, "day1"], meas[s, "day2"]
        wall = d2["wall_secs"]
        rps = f"{rows_read['day2'] / wall:,.0f}" if wall > 0 else "-"
        j = summ[s, "day2"]
        inproc = j.get("job_secs", j.get("elapsed_secs"))
        lines.append(f"| {NAMES[s]} | {d1['wall_secs']:.2f} | {wall:.2f} | {rps} | "
                     f"{peak_mib(d1):,.0f} | {peak_mib(d2):,.0f} | {ratio(wall, ref)} | "
                     f"{inproc:.2f} |")
    speedups = [f"{ratio(meas[s, 'day2']['wall_secs'], ref)} vs {NAMES[s]}"
                for s in conf["systems"] if s != "tributary"]
    if speedups:
        lines.append("")
        lines.append("tributary day-2 speedup (other system's wall time / tributary's): "
                     + ", ".join(speedups) + ".")
    return "\n".join(lines)


def tributary_table(summ):
    """tributary's own stage times and memory plan per day."""
    lines = ["| tributary | read s | scan s | diff s | write s | commit s | elapsed s "
             "| memory limit MiB | partitions | workers | spilled MiB | spills "
             "| peak RSS MiB (VmHWM) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for d in ("day1", "day2"):
        j = summ["tributary", d]
        st = j.get("stages") or {}
        mem = j.get("memory") or {}
        plan, spill = mem.get("plan") or {}, mem.get("spill") or {}
        stages = " | ".join(f"{st[k]:.2f}" if k in st else "-" for k in
                            ("read_secs", "scan_secs", "diff_secs", "write_secs", "commit_secs"))
        # A streamed run has no partitions nor workers: its diff probes an in-memory index.
        partitions = "streamed" if plan.get("streamed") else plan.get("partitions", "-")
        workers = "-" if plan.get("streamed") else plan.get("workers", "-")
        lines.append(f"| day {d[-1]} | {stages} | {j['elapsed_secs']:.2f} | "
                     f"{mib(plan.get('limit_bytes'))} | {partitions} | "
                     f"{workers} | {mib(spill.get('spilled_bytes'))} | "
                     f"{spill.get('spills', '-')} | {mib(mem.get('peak_rss_bytes'))} |")
    return "\n".join(lines)


def floor_table(out_dir, meas, rows_read):
    """The day-2 read floor (cat, tributary check) against tributary's full day-2 run."""
    check = load(os.path.join(out_dir, "floor", "check.json"))
    in_bytes = check["input_bytes"]
    run = meas["tributary", "day2"]
    rows = [("`cat` day-2 files `> /dev/null`", load(os.path.join(out_dir, "floor", "cat.measure.json"))),
            ("`tributary check` (read, cast, hash)",
             load(os.path.join(out_dir, "floor", "check.measure.json"))),
            ("`tributary run` day 2 (full run)", run)]
    def wall(m):  # the ms-resolution timer where measure.py recorded it
        return m.get("precise_wall_secs", m["wall_secs"])

    lines = ["| day-2 input | wall s | rows/s | MiB/s | peak RSS MiB | full run / this |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, m in rows:
        w = wall(m)
        rps = f"{rows_read['day2'] / w:,.0f}" if w > 0 else "-"
        mbs = f"{in_bytes / MIB / w:,.0f}" if w > 0 else "-"
        lines.append(f"| {label} | {w:.3f} | {rps} | {mbs} | {peak_mib(m):,.0f} | "
                     f"{ratio(wall(run), w)} |")
    return "\n".join(lines), check


def heading(conf, summ):
    shape = f"{conf['keys']} key{'s' if conf['keys'] != 1 else ''} + {conf['nonkeys']} non-keys"
    mode = ("full extract" if conf["extract"] == "full"
            else f"delta extract ({conf['delta_pct']}% of the rows)")
    limit = conf["memory_limit"] or "default"
    plan = ((summ["tributary", "day2"].get("memory") or {}).get("plan") or {})
    if not conf["memory_limit"] and plan.get("limit_bytes"):
        limit += f" ({plan['limit_bytes'] / MIB:,.0f} MiB)"
    parts = [f"{conf['rows']:,} rows", shape, conf["format"].upper() if conf["format"] == "csv"
             else "Parquet", mode, f"memory limit {limit}"]
    if conf["compression"]:
        parts.append(f"{conf['compression']} compression")
    return " · ".join(parts)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    out_dir, results_md = sys.argv[1:]
    conf = load(os.path.join(out_dir, "bench.json"))
    binary, systems, key = conf["binary"], conf["systems"], conf["key"]
    notes = list(conf["notes"])
    if "/debug/" in binary:
        notes.insert(0, "**DEBUG build of tributary (`" + os.path.relpath(binary) +
                     "`): these tributary timings are not representative.**")
    if conf["memory_limit"] and len(systems) > 1:
        notes.append(f"MEMORY_LIMIT={conf['memory_limit']} applies to tributary only; DuckDB and "
                     "PySpark run with their own defaults.")

    gen = load(os.path.join(out_dir, "generate.json"))
    rows_read = {"day1": gen["initial_rows"],
                 "day2": gen["updated"] + gen["unchanged"] + gen["inserted"]}
    meas, summ = {}, {}
    for s in systems:
        for d in ("day1", "day2"):
            meas[s, d] = load(os.path.join(out_dir, s, f"{d}.measure.json"))
            summ[s, d] = load(os.path.join(out_dir, s, f"{d}.json"))

    table = systems_table(conf, meas, summ, rows_read)
    ttable = tributary_table(summ)
    ftable, check = floor_table(out_dir, meas, rows_read)

    counts = load(os.path.join(out_dir, "verify.json"))["systems"]["tributary"]["counts"]
    mach = machine()
    dirty = git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock")
    commit = git("rev-parse", "--short", "HEAD") + (" (src/ had uncommitted changes)" if dirty else "")
    tver = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    versions = [f"{tver} (`{os.path.relpath(binary)}`)"]
    if "duckdb" in systems:
        versions.append(f"DuckDB {summ['duckdb', 'day2'].get('duckdb_version')}")
    if "pyspark" in systems:
        versions.append(f"PySpark {summ['pyspark', 'day2'].get('spark_version')} (local[2], "
                        "driver memory 4g, shuffle partitions 4)")
    fmt = ("headerless CSV" if conf["format"] == "csv" else
           "converted to Parquet by `bench/to_parquet.py` (snappy; keys string, non-keys double)")
    day2_what = ("full extract" if conf["extract"] == "full" else
                 f"delta extract of {conf['delta_pct']}% of the rows (2/3 updates, 1/3 new keys)")
    knobs = [f"`{k}: {conf[v]}`" for k, v in (("memory_limit", "memory_limit"),
             ("spill_dir", "spill_dir"), ("compression", "compression")) if conf[v]]

    section = f"""<!-- config={key} -->
## {heading(conf, summ)}

- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}
- Commit: {commit}
- Command: `{conf['command']}`
- Machine: nproc {mach['nproc']}, CPU {mach['cpu']}, {mach['mem']} RAM, Linux {mach['kernel']}, load average at report time {mach['load']}
- Engines: {', '.join(versions)}
- Data: `tributary generate {conf['generate_args']} ... --seed 42` ({conf['keys']} uuid keys + {conf['nonkeys']} doubles), {fmt};
  day 1 = 2019-06-18 reads {rows_read['day1']:,} rows, day 2 = 2019-06-19 ({day2_what}) reads {rows_read['day2']:,} rows, {check['input_bytes'] / MIB:,.0f} MiB
- tributary config: generated config with `extract_type: {conf['extract']}`{', `format: parquet`' if conf['format'] == 'parquet' else ''}{''.join(', ' + k for k in knobs)}
- Day-2 counts (from the output tables, identical for every system): I={counts['I']:,} U={counts['U']:,} D={counts['D']:,} X={counts.get('X', 0):,} N={counts['N']:,}

{table}

{ttable}

{ftable}

wall s and peak RSS: `/usr/bin/time -f '%e %M'` around the whole process (includes
interpreter/JVM start-up); peak RSS is the larger of `%M` and the process tree's summed
RSS sampled every 50 ms (the latter is what counts for PySpark, whose JVM the Python driver
does not reap). rows/s = rows read / wall s. in-process s = the engine's own timer
(tributary `elapsed_secs`, DuckDB script `elapsed_secs`, PySpark `job_secs` = after session start-up).
tributary's stage times, memory plan and spill figures are from its `run --json` summary; a
"streamed" day diffs each batch against an in-memory index of the current table as it is read
(docs/memory.md): its scan s come first (the index), its read s include the diff and the
writing, and its diff s are the gone rows' read-back alone.
Read floor: timed after generating the data and before any system ran, `cat` first (so it
also pulls the files into the page cache if they fit), then `tributary check`; its wall s
come from a ms-resolution timer around the process; "full run / this" = tributary's day-2
wall time over the floor's.
Outputs: tributary writes Delta tables (current + history); the DuckDB and PySpark scripts write
plain Parquet (no transaction log), so they do less work per run.
""" + "".join(f"\nNote: {n}\n" for n in notes) + f"<!-- /config={key} -->\n"

    text = ""
    if os.path.exists(results_md):
        with open(results_md) as f:
            text = f.read()
    header = ("# Snapshot CDC benchmark results\n\n"
              "Generated by `bench/snapshot_bench.sh [ROWS]`; one section per configuration "
              "(rows, shape, format, extract mode, memory limit); re-running a configuration "
              "replaces its section.\n\n")
    if not text.startswith("# "):
        text = header + text
    text = re.sub(r"\A# Snapshot CDC benchmark results\n\nGenerated by[^\n]*\n", header.rstrip("\n") + "\n",
                  text)
    pat = re.compile(rf"<!-- config={re.escape(key)} -->.*?<!-- /config={re.escape(key)} -->\n", re.S)
    legacy = None
    if key == f"{conf['rows']}-k5n10-csv-full-memdefault":
        legacy = re.compile(rf"<!-- rows={conf['rows']} -->.*?<!-- /rows={conf['rows']} -->\n", re.S)
    if pat.search(text):
        text = pat.sub(lambda _: section, text)
        if legacy:
            text = legacy.sub("", text)
    elif legacy and legacy.search(text):
        text = legacy.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(results_md, "w") as f:
        f.write(text)
    print(f"## {heading(conf, summ)}\n\n{table}\n\n{ttable}\n\n{ftable}")


if __name__ == "__main__":
    main()
