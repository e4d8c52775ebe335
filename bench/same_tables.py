#!/usr/bin/env python3
"""Do two Tributary binaries write the same tables? (A check for refactors: no behaviour change.)

Runs the same jobs with both binaries into separate folders, then compares every Delta table
they wrote, row for row (all columns, rows sorted), with the Python `deltalake` package:

  1. `tributary demo` (the seed example, two days of full extracts);
  2. `tributary generate` (fixed seed) run as a full and as a delta extract, two days each, and
     day 2 again (a no-op);
  3. `tributary sync` of a synthetic landing zone, delivered in batches with a sync after each:
     a DMS table (tab-separated CSV, LOAD then change files with inserts, updates of the
     partition column, deletes and re-inserts, several changes of one key per file), a Debezium
     JSON-lines table with soft deletes, and a DMS table without a primary key.

Exit status 0 when every table matches (and each binary's exit codes match). Work files go to
bench/out/same_tables (or --out).

Usage: python3 bench/same_tables.py OLD_BIN NEW_BIN [--rows N] [--out DIR]
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def log(msg):
    print(f"[same_tables] {msg}", file=sys.stderr, flush=True)


def run(binary, *args, cwd=None):
    out = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, cwd=cwd)
    return out.returncode, out.stdout, out.stderr


def snapshot_jobs(binary, work, rows):
    """Demo, then generated data as full and delta extracts. Returns the exit codes."""
    codes = []
    codes.append(run(binary, "demo", work / "demo")[0])
    data = work / "gen"
    code, _, err = run(binary, "generate", rows, rows, 2, 4, 0.1, 0.2, 0.7,
                       data / "day1", data / "day2", "--seed", 7, "--config-out",
                       data / "full.yaml")
    if code != 0:
        raise SystemExit(f"generate failed: {err}")
    full = (data / "full.yaml").read_text()
    for kind in ["full", "delta"]:
        text = full.replace("extract_type: full", f"extract_type: {kind}")
        text = text.replace("sample_data", f"gen_{kind}")
        cfg = work / f"{kind}.yaml"
        cfg.write_text(text)
        for day, date in [("day1", "2024-01-01"), ("day2", "2024-01-02"), ("day2", "2024-01-02")]:
            codes.append(run(binary, "run", cfg, data / day, date, "--json", cwd=work)[0])
        # refused: an older date, the same date from other input; then a replacement
        codes.append(run(binary, "run", cfg, data / "day1", "2023-12-31", cwd=work)[0])
        codes.append(run(binary, "run", cfg, data / "day1", "2024-01-02", cwd=work)[0])
        codes.append(run(binary, "run", cfg, data / "day1", "2024-01-02", "--replace", cwd=work)[0])
    # bad rows set aside in the rejects table
    bad = data / "bad"
    bad.mkdir()
    lines = (data / "day2" / "part-00000.csv").read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ",not-a-number"
    lines[9] = "too,few"
    (bad / "part-00000.csv").write_text("\n".join(lines) + "\n")
    cfg = work / "reject.yaml"
    cfg.write_text(full.replace("sample_data", "gen_reject") + "on_error: reject\n")
    for day, date in [(data / "day1", "2024-01-01"), (bad, "2024-01-02")]:
        codes.append(run(binary, "run", cfg, day, date, cwd=work)[0])
    return codes


def landing_batches(seed=11, batches=5, keys=300):
    """Files of a synthetic landing zone, in delivery batches: {relative path: text}."""
    rng = random.Random(seed)
    regions = ["eu", "us", "apac"]
    live = {}
    out = []
    # DMS orders: LOAD first
    load = []
    for k in range(1, keys + 1):
        row = (k, rng.choice(regions), round(rng.uniform(1, 500), 2))
        live[k] = row
        load.append(f"{row[0]}\t{row[1]}\t{row[2]}")
    first = {"sales/orders/LOAD00000001.csv": "\n".join(load) + "\n"}
    # Debezium customers (soft deletes), DMS events (no key)
    cust = {}
    for b in range(batches):
        files = dict(first) if b == 0 else {}
        ts = f"2024010{b + 1}"
        lines = []
        for i in range(120):
            k = rng.randint(1, keys + 60)
            op = rng.choice("IUUDI")
            t = f"2024-01-0{b + 1} 10:{i // 60:02d}:{i % 60:02d}.000000"
            if op == "D":
                if k in live:
                    r = live.pop(k)
                    lines.append(f"D\t{t}\t{r[0]}\t{r[1]}\t{r[2]}")
            else:
                r = (k, rng.choice(regions), round(rng.uniform(1, 500), 2))
                live[k] = r
                lines.append(f"{op}\t{t}\t{r[0]}\t{r[1]}\t{r[2]}")
        files[f"sales/orders/{ts}-{b:09d}.csv"] = "\n".join(lines) + "\n"
        events = []
        for i in range(80):
            k = rng.randint(1, 50)
            ms = 1704067200000 + b * 86_400_000 + i * 1000
            if k in cust and rng.random() < 0.25:
                before = cust.pop(k)
                events.append({"before": before, "after": None, "op": "d",
                               "source": {"ts_ms": ms, "lsn": ms}})
            else:
                after = {"id": k, "name": f"n{rng.randint(0, 9)}", "score": rng.randint(0, 100)}
                op = "u" if k in cust else "c"
                events.append({"before": cust.get(k), "after": after, "op": op,
                               "source": {"ts_ms": ms, "lsn": ms}})
                cust[k] = after
        files[f"crm/customers/events-{b:03d}.json"] = "\n".join(json.dumps(e) for e in events) + "\n"
        files[f"web/events/{ts}-{b:09d}.csv"] = "\n".join(
            f"I,{b * 1000 + i},page{rng.randint(0, 5)}" for i in range(40)) + "\n"
        out.append(files)
    return out


TABLES = """tables:
- source: sales/orders
  active: true
  primary_key: [id]
  partition_by: [region]
  timestamp_column: ts
  delimiter: "\\t"
  columns:
  - {name: id, type: long}
  - {name: region, type: string}
  - {name: amount, type: double}
- source: crm/customers
  active: true
  layout: debezium
  primary_key: [id]
  delete_mode: soft
  columns:
  - {name: id, type: long}
  - {name: name, type: string}
  - {name: score, type: long}
- source: web/events
  active: true
  columns:
  - {name: seq, type: long}
  - {name: page, type: string}
"""


def sync_jobs(binary, work):
    landing, lake = work / "landing", work / "lake"
    landing.mkdir(parents=True)
    (landing / "tables.yaml").write_text(TABLES)
    codes = []
    for b, files in enumerate(landing_batches()):
        for rel, text in files.items():
            p = landing / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
            # the same modification times for both binaries (the applied table records them)
            t = 1_704_067_200 + b * 3600
            os.utime(p, (t, t))
        codes.append(run(binary, "sync", landing, "--lake", lake, "--date", "2024-02-01",
                         "--json")[0])
    codes.append(run(binary, "sync", landing, "--lake", lake, "--date", "2024-02-01")[0])
    return codes


def delta_tables(root):
    return sorted(p.parent.relative_to(root) for p in root.rglob("_delta_log") if p.is_dir())


def rows(table, work):
    """Column names and sorted rows as JSON, the work folder's path replaced (rejects name
    their input file)."""
    from deltalake import DeltaTable
    t = DeltaTable(str(table)).to_pyarrow_table()
    cols = sorted(t.column_names)
    data = t.select(cols).to_pylist()
    text = (json.dumps(r, sort_keys=True, default=str).replace(str(work), "<work>") for r in data)
    return cols, sorted(text)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "same_tables"))
    a = p.parse_args()
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    codes = {}
    for name, binary in [("old", a.old), ("new", a.new)]:
        work = out / name
        work.mkdir(parents=True)
        binary = Path(binary).resolve()
        log(f"{name}: {binary}")
        codes[name] = snapshot_jobs(binary, work / "snapshot", a.rows) + sync_jobs(binary, work / "sync")
    ok = True
    if codes["old"] != codes["new"]:
        log(f"exit codes differ: old {codes['old']}, new {codes['new']}")
        ok = False
    tables = delta_tables(out / "old")
    if tables != delta_tables(out / "new"):
        log(f"table lists differ: {tables} against {delta_tables(out / 'new')}")
        ok = False
    total = 0
    for t in tables:
        left, right = rows(out / "old" / t, out / "old"), rows(out / "new" / t, out / "new")
        same = left == right
        total += len(left[1])
        log(f"{'same' if same else 'DIFFERENT'}: {t} ({len(left[1])} rows, {len(left[0])} columns)")
        ok &= same
    log(f"{len(tables)} tables, {total} rows, exit codes {codes['new']}: {'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
