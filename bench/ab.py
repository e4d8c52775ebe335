#!/usr/bin/env python3
"""A/B of two Tributary binaries in one sitting: is a change faster, slower, or noise?

Two workloads, each run alternately with the two binaries (A B A B ...), on one data set
generated once, each timed with /usr/bin/time (wall seconds, peak RSS):

- `snapshot`: `tributary generate ROWS` with the seed shape of bench/snapshot_bench.sh (5 string
  keys, 10 double non-keys, 20/40/40, `--seed 42`); per repeat a fresh lake, day 1, `sync`,
  then day 2 timed (the number bench/snapshot_bench.sh reports).
- `changelog`: the workload of bench/dms_merge_bench.py (a DMS full load of ROWS rows, then one
  change file of CHANGES rows); per repeat a fresh landing zone and lake, the load timed, then
  the change file timed.

Prints each run, then per binary the median and the range, and the median ratio new/old.
Work files go to bench/out/ab (deleted at the end unless --keep).

Usage: python3 bench/ab.py OLD_BIN NEW_BIN [--workload snapshot|changelog|both]
       [--rows N] [--changes N] [--repeats N] [--keep]
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "ab"
sys.path.insert(0, str(ROOT / "bench"))


def log(msg):
    print(f"[ab] {msg}", file=sys.stderr, flush=True)


def timed(args, cwd=None):
    """(wall seconds, peak RSS MiB, stdout) of a command under /usr/bin/time."""
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M", *map(str, args)], capture_output=True,
                         text=True, cwd=cwd)
    if out.returncode != 0:
        raise SystemExit(f"{args[:2]} failed ({out.returncode}): {out.stderr[-2000:]}")
    wall, rss = out.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss) / 1024, out.stdout


def snapshot(bins, rows, repeats):
    data = OUT / "snapshot-data"
    gen = [bins["old"], "generate", rows, rows, 5, 10, 0.2, 0.4, 0.4, data / "initial",
           data / "incremental", "--seed", 42, "--config-out", data / "config.yaml"]
    log(f"snapshot: generating {rows:,} rows")
    subprocess.run(list(map(str, gen)), check=True, capture_output=True)
    config = (data / "config.yaml").read_text().replace("file:///tmp/", "lake/")
    results = []
    for i in range(repeats):
        for name in ["old", "new"]:
            work = OUT / f"snapshot-{name}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            (work / "config.yaml").write_text(config)
            timed([bins[name], "run", "config.yaml", data / "initial", "2019-06-18"], cwd=work)
            subprocess.run(["sync"], check=True)
            wall, rss, out = timed([bins[name], "run", "config.yaml", data / "incremental",
                                    "2019-06-19", "--json"], cwd=work)
            counts = json.loads(out)["counts"]
            log(f"snapshot {i + 1}/{repeats} {name}: day 2 {wall:.2f} s, {rss:,.0f} MiB, {counts}")
            results.append((name, "snapshot day 2", wall, rss))
    shutil.rmtree(data, ignore_errors=True)
    return results


def stage_times(table):
    """A sync table summary's read and apply stage times, seconds."""
    stages = {"read": table["read_secs"], **table["apply"]["stages"]}
    return ", ".join(f"{k.removesuffix('_secs')} {v:.2f}" for k, v in stages.items())


def changelog(bins, rows, changes, repeats):
    import dms_merge_bench as dms

    staging = OUT / "changelog-data"
    log(f"changelog: generating {rows:,} rows and {changes:,} change rows")
    change = dms.generate(rows, changes, staging, 1.0)
    results = []
    for i in range(repeats):
        for name in ["old", "new"]:
            work = OUT / f"changelog-{name}"
            shutil.rmtree(work, ignore_errors=True)
            folder = work / "landing" / "bench" / "orders"
            folder.mkdir(parents=True)
            (work / "landing" / "tables.yaml").write_text(dms.TABLES)
            (folder / "LOAD00000001.csv").symlink_to(staging / "LOAD00000001.csv")
            sync = [bins[name], "sync", work / "landing", "--lake", work / "lake", "--date",
                    "2024-03-01", "--json"]
            load, load_rss, load_out = timed(sync)
            (folder / change.name).symlink_to(change)
            subprocess.run(["sync"], check=True)
            wall, rss, out = timed(sync)
            table = json.loads(out)["tables"][0]
            apply = table["apply"]
            log(f"changelog {i + 1}/{repeats} {name}: load {load:.2f} s ({load_rss:,.0f} MiB; "
                f"{stage_times(json.loads(load_out)['tables'][0])}), changes {wall:.2f} s "
                f"({rss:,.0f} MiB; {stage_times(table)}), {apply['inserted']} I "
                f"{apply['updated']} U {apply['deleted']} D")
            results.append((name, "changelog load", load, load_rss))
            results.append((name, "changelog changes", wall, rss))
    return results


def report(results):
    print("| step | binary | runs (wall s) | median s | peak RSS MiB (median) |")
    print("|---|---|---|---:|---:|")
    steps = list(dict.fromkeys(step for _, step, _, _ in results))
    for step in steps:
        medians = {}
        for name in ["old", "new"]:
            runs = [(w, r) for n, s, w, r in results if n == name and s == step]
            walls = [w for w, _ in runs]
            medians[name] = statistics.median(walls)
            rss = statistics.median(r for _, r in runs)
            print(f"| {step} | {name} | {', '.join(f'{w:.2f}' for w in walls)} | "
                  f"{medians[name]:.2f} | {rss:,.0f} |")
        print(f"| {step} | new/old | | {medians['new'] / medians['old']:.3f}x | |")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--workload", choices=["snapshot", "changelog", "both"], default="both")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--changes", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--keep", action="store_true")
    a = p.parse_args()
    bins = {"old": Path(a.old).resolve(), "new": Path(a.new).resolve()}
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    started = time.time()
    results = []
    if a.workload in ("snapshot", "both"):
        results += snapshot(bins, a.rows, a.repeats)
    if a.workload in ("changelog", "both"):
        results += changelog(bins, a.rows, a.changes, a.repeats)
    report(results)
    log(f"{time.time() - started:.0f} s in all")
    if not a.keep:
        shutil.rmtree(OUT, ignore_errors=True)


if __name__ == "__main__":
    main()
