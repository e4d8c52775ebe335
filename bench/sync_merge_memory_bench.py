#!/usr/bin/env python3
"""`sync` merges within `--memory-limit` (issue 22): peak RSS and wall time, held or spilled.

Workload: bench/dms_merge_bench.py's table (id long, region string of 8 values, amount double,
note string of 16 characters) loaded from one DMS `LOAD` file of ROWS rows (default 10M), then
one DMS change file merged into it (60% updates, 20% inserts, 20% deletes over the whole key
range, ~10% of the changed keys changed twice), for each change count of `--changes` (default
1M and 5M). Each merge starts from a copy of the same loaded lake and runs with:

- `--memory-limit 64GiB`: the changes held in memory (as before merges could spill);
- the default `1GiB`: held while the changes take at most half of it, else split by key and
  spilled;
- `256MiB`: spilled (1M changes take more than 128 MiB).

The held run's current and history tables are compared with every other run's with DuckDB
(EXCEPT ALL both ways, every column: 0 rows). Each merge runs in its own process under /usr/bin/time -v (wall seconds, peak
RSS); the sync summary gives the partitions and spilled bytes. A section is appended to
bench/RESULTS.md with the machine (cores, CPU, memory), date and commit.

Usage: bench/sync_merge_memory_bench.py [--bin target/release/tributary] [--rows 10000000]
       [--changes 1000000 5000000] [--limits 1GiB 256MiB] [--keep]
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "sync_merge_memory"
sys.path.insert(0, str(ROOT / "bench"))

from dms_merge_bench import TABLES, generate, timed  # noqa: E402
from sync_memory_bench import differences  # noqa: E402


def log(msg):
    print(f"[sync_merge_memory_bench] {msg}", file=sys.stderr, flush=True)


def sync(binary, work, limit):
    """Runs one sync of the landing folder under `work`; returns (secs, rss, table summary)."""
    spill = work / "spill"
    spill.mkdir(exist_ok=True)
    args = [binary, "sync", work / "landing", "--lake", work / "lake", "--date", "2024-03-01",
            "--json", "--spill-dir", spill, "--memory-limit", limit]
    secs, rss, out = timed([str(a) for a in args])
    table = json.loads(out)["tables"][0]
    if table["status"] != "applied":
        raise SystemExit(f"{work.name}: {table['message']}")
    if any(spill.iterdir()):
        raise SystemExit(f"{work.name}: the spill folder is not empty after the run")
    return secs, rss, table


def main():
    from report import append_results, git, machine, mib

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=str(ROOT / "target" / "release" / "tributary"))
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--changes", type=int, nargs="+", default=[1_000_000, 5_000_000])
    p.add_argument("--limits", nargs="+", default=["1GiB", "256MiB"],
                   help="--memory-limit of the merges besides the held one (64GiB)")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    binary = str(Path(args.bin).resolve())
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    results = []
    for changes in args.changes:
        staging = OUT / f"data-{changes}"
        log(f"generating {args.rows:,} rows and {changes:,} change rows")
        change = generate(args.rows, changes, staging, 1.0)
        base = OUT / f"base-{changes}"
        folder = base / "landing" / "bench" / "orders"
        folder.mkdir(parents=True)
        (base / "landing" / "tables.yaml").write_text(TABLES)
        shutil.move(staging / "LOAD00000001.csv", folder / "LOAD00000001.csv")
        secs, rss, _ = sync(binary, base, "64GiB")
        log(f"loaded {args.rows:,} rows in {secs:.2f} s")
        shutil.rmtree(base / "spill")
        lakes = {}
        for limit in ["64GiB", *args.limits]:
            work = OUT / f"merge-{changes}-{limit}"
            shutil.copytree(base, work, symlinks=True)
            shutil.copy(change, work / "landing" / "bench" / "orders" / change.name)
            secs, rss, table = sync(binary, work, limit)
            a = table["apply"]
            if a["changes_read"] != changes:
                raise SystemExit(f"{work.name}: read {a['changes_read']} changes, not {changes}")
            results.append({"changes": changes, "limit": limit, "secs": secs, "rss": rss,
                            "partitions": a["partitions"], "spilled": a["spilled_bytes"],
                            "files": a["files_rewritten"], "copied": a["rows_copied"],
                            "iud": (a["inserted"], a["updated"], a["deleted"]),
                            "read": table["read_secs"], "stages": a["stages"]})
            log(f"{work.name}: {secs:.2f} s, {rss / 2**20:,.0f} MiB, {a['partitions']} partitions, "
                f"{a['spilled_bytes'] / 2**20:,.0f} MiB spilled")
            lakes[limit] = work / "lake" / "bench" / "orders"
        for limit in args.limits:
            for role in ["current", "history"]:
                diff, rows = differences(lakes["64GiB"] / role, lakes[limit] / role)
                if diff:
                    raise SystemExit(f"{changes} changes: held and {limit} {role} tables differ in {diff} rows")
                log(f"{changes:,} changes: held and {limit} {role} tables equal ({rows:,} rows)")
        if not args.keep:
            for limit in lakes:
                shutil.rmtree(OUT / f"merge-{changes}-{limit}")
            shutil.rmtree(base)
            shutil.rmtree(staging)

    m = machine()
    lines = [
        "",
        "## `sync` merges within `--memory-limit` (issue 22)",
        "",
        f"Date {time.strftime('%Y-%m-%d')}, commit {git('rev-parse', '--short', 'HEAD')}, "
        f"{m['nproc']} cores ({m['cpu']}), {m['mem']}. "
        f"Command: `python3 bench/sync_merge_memory_bench.py --rows {args.rows} --changes "
        f"{' '.join(map(str, args.changes))} --limits {' '.join(args.limits)}`. A table of {args.rows:,} rows (dms_merge_bench shape) "
        "loaded once; each merge of one DMS change file starts from a copy of it. The held (64GiB) "
        "and each limited run's current and history tables compared with DuckDB (EXCEPT ALL both "
        "ways, every column): 0 differences. `partitions` 1: the changes were held.",
        "",
        "| changes | --memory-limit | wall s | peak RSS MiB | partitions | spilled MiB | files rewritten | rows copied | I / U / D | read s | dedupe s | impacted scan s | merge s | write s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        st = r["stages"]
        lines.append(
            f"| {r['changes']:,} | {r['limit']} | {r['secs']:.2f} | {mib(r['rss'])} | {r['partitions']} | "
            f"{mib(r['spilled'])} | {r['files']} | {r['copied']:,} | {' / '.join(f'{n:,}' for n in r['iud'])} | "
            f"{r['read']:.2f} | {st['dedupe_secs']:.2f} | {st['impacted_scan_secs']:.2f} | "
            f"{st['merge_secs']:.2f} | {st['write_secs']:.2f} |")
    lines.append("")
    for changes in args.changes:
        by = {r["limit"]: r for r in results if r["changes"] == changes}
        held = by["64GiB"]
        ratios = ", ".join(f"{limit} {by[limit]['secs'] / held['secs']:.2f}x wall time and "
                           f"{by[limit]['rss'] / held['rss']:.2f}x peak RSS"
                           for limit in args.limits)
        lines.append(f"{changes:,} changes against held: {ratios}.")
    append_results("\n".join(lines) + "\n")
    if not args.keep:
        shutil.rmtree(OUT, ignore_errors=True)


if __name__ == "__main__":
    main()
