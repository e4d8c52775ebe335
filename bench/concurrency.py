#!/usr/bin/env python3
"""Two writers at once, larger than the test (tests/it/concurrency.rs): P processes of R
`tributary run`s each on one table, started together, dates in different orders and repeated,
first runs included; each day a full extract of ROWS rows (a tenth deleted, a fifth updated,
new keys inserted, moving from day to day).

Checks, then prints a summary:
  - each run number is in history's log once, in order, and current records the same run;
  - every process's outcome is true: applied (its run id is in the log with its date), no-op
    (the run it names applied its date), or refused (exit 3, naming an applied date or a
    conflict);
  - the tables equal a serial replay of the applied runs in run order (another lake, the same
    binary), row for row (Python `deltalake`, all columns, sorted).

Usage: python3 bench/concurrency.py [--bin target/release/tributary] [--processes 4]
       [--runs 5] [--days 5] [--rows 200000] [--keep]
Exit status 0 when every check holds. Work files: bench/out/concurrency.
"""

import argparse
import json
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "concurrency"
CONFIG = """name: t
current_table_path: lake/current
history_table_path: lake/history
extract_type: full
columns:
- {name: id, type: string, key: true}
- {name: v, type: double}
- {name: note, type: string}
"""


def log(msg):
    print(f"[concurrency] {msg}", file=sys.stderr, flush=True)


def write_days(folder, days, rows):
    """Day k: keys id<k*rows/10 .. >, a tenth dropped each day, a fifth of values moved."""
    rng = random.Random(7)
    for k in range(days):
        day = folder / f"day{k}"
        day.mkdir(parents=True)
        first = k * rows // 10
        with open(day / "part-0.csv", "w") as f:
            for i in range(first, first + rows):
                if rng.random() < 0.2:
                    v = rng.random()
                else:
                    v = (i % 1000) / 7
                f.write(f"id{i:09d},{v!r},n{i % 13}\n")


def date(k):
    return f"2024-01-{k + 1:02d}"


def run(binary, lake_dir, k, data):
    out = subprocess.run([str(binary), "run", "config.yaml", str(data / f"day{k}"), date(k),
                          "--json"], capture_output=True, text=True, cwd=lake_dir)
    try:
        summary = json.loads(out.stdout)
    except json.JSONDecodeError:
        summary = None
    return {"date": date(k), "code": out.returncode, "json": summary,
            "stderr": out.stderr[-2000:]}


def log_runs(table):
    runs = []
    for f in sorted((table / "_delta_log").glob("*.json")):
        for line in f.read_text().splitlines():
            info = json.loads(line).get("commitInfo", {}).get("tributary")
            if info:
                runs.append((info["seq"], info.get("run_id", ""), info["business_date"]))
    return runs


def recorded(table):
    versions = [json.loads(line)["txn"]["version"]
                for f in sorted((table / "_delta_log").glob("*.json"))
                for line in f.read_text().splitlines() if '"txn"' in line]
    return max(versions, default=None)


def rows(table):
    from deltalake import DeltaTable
    t = DeltaTable(str(table)).to_pyarrow_table()
    cols = sorted(t.column_names)
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in t.select(cols).to_pylist())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=str(ROOT / "target" / "release" / "tributary"))
    p.add_argument("--processes", type=int, default=4)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--days", type=int, default=5)
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--keep", action="store_true")
    a = p.parse_args()
    binary = Path(a.bin).resolve()
    shutil.rmtree(OUT, ignore_errors=True)
    data, lake, replay = OUT / "data", OUT / "lake", OUT / "replay"
    log(f"writing {a.days} days of {a.rows:,} rows")
    write_days(data, a.days, a.rows)
    for folder in (lake, replay):
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(CONFIG)
    rng = random.Random(11)
    jobs = [[rng.randrange(a.days) for _ in range(a.runs)] for _ in range(a.processes)]
    for j in jobs:
        j[0] = 0  # first runs race
    log(f"jobs: {jobs}")
    outcomes = [[] for _ in jobs]
    barrier = threading.Barrier(len(jobs))

    def worker(slot):
        barrier.wait()
        for k in jobs[slot]:
            outcomes[slot].append(run(binary, lake, k, data))

    started = time.time()
    threads = [threading.Thread(target=worker, args=(s,)) for s in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - started
    ok = True

    def fail(msg):
        nonlocal ok
        ok = False
        log(f"FAIL: {msg}")

    history = log_runs(lake / "lake" / "history")
    seqs = [s for s, _, _ in history]
    if seqs != list(range(1, len(seqs) + 1)):
        fail(f"run numbers {seqs}")
    if recorded(lake / "lake" / "current") != (seqs[-1] if seqs else None):
        fail("current records another run than history")
    by_seq = {s: (i, d) for s, i, d in history}
    applied_dates = {d for _, _, d in history}
    counts = {"applied": 0, "no-op": 0, "refused": 0, "conflicts retried": 0}
    for o in (o for slot in outcomes for o in slot):
        counts["conflicts retried"] += o["stderr"].count("re-planning on top of it")
        if o["code"] == 0 and o["json"]:
            seq, status = o["json"]["run_seq"], o["json"]["status"]
            if by_seq.get(seq, (None, None))[1] != o["date"]:
                fail(f"run {seq} is not {o['date']} in the log")
            if status == "applied" and by_seq[seq][0] != o["json"].get("run_id"):
                fail(f"applied run {seq} has another id in the log")
            counts[status] += 1
        elif o["code"] == 3 and ("conflict:" in o["stderr"] or any(
                d in o["stderr"] for d in applied_dates)):
            counts["refused"] += 1
        else:
            fail(f"outcome {o['code']}: {o['stderr'][-300:]}")
    if counts["applied"] != len(history):
        fail(f"{counts['applied']} runs reported applied, {len(history)} in the log")
    log(f"{len(history)} runs applied in {elapsed:.1f} s; {counts}")
    log("serial replay")
    for seq in sorted(by_seq):
        k = next(k for k in range(a.days) if date(k) == by_seq[seq][1])
        o = run(binary, replay, k, data)
        if o["code"] != 0 or o["json"]["run_seq"] != seq or o["json"]["status"] != "applied":
            fail(f"replay of run {seq}: {o['code']} {o['stderr'][-300:]}")
    for role in ("current", "history"):
        left, right = rows(lake / "lake" / role), rows(replay / "lake" / role)
        same = left == right
        log(f"{role}: {len(left):,} rows, {'equal to' if same else 'DIFFERENT from'} the replay")
        if not same:
            ok = False
    print(json.dumps({"processes": a.processes, "runs": a.runs, "rows": a.rows,
                      "applied": len(history), "elapsed_secs": round(elapsed, 2), **counts,
                      "pass": ok}))
    if not a.keep:
        shutil.rmtree(OUT, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
