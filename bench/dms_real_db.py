#!/usr/bin/env python3
"""Real input for `tributary sync`: a MariaDB or PostgreSQL change history, in the DMS layout.

For each database (--db mariadb|postgres):
  1. (re)create database/schema `tributary_cdc` with table `orders(id PK, region, amount
     decimal(10,2), note NULL-able)` and a change table `orders_cdc` fed by AFTER INSERT/UPDATE/
     DELETE triggers (op, commit time, row values; the DELETE trigger writes the old row);
  2. seed rows, export them ordered by id as LOAD00000001.csv (tab-separated, NULL as `NULL`,
     no header: the AWS DMS CSV target with `csvDelimiter` set to a tab);
  3. run BATCHES workload batches (inserts, updates of amount and of the partition column
     `region`, deletes, re-inserts of deleted ids, several changes of one key per batch); after
     each batch export the new change rows in trigger order as a timestamp-named change file
     (`Op`, commit timestamp, columns), all files with one modification time (so nothing can rely
     on times: files are tracked by name);
  4. `tributary sync` after each batch; on some batches the sync is first aborted at a commit
     point (TRIBUTARY_CRASH_AT) or killed with SIGKILL after a random delay, then re-run;
  5. after every sync, compare the current Delta table (read with the Python `deltalake`
     package) with `SELECT * FROM orders`, row for row.

Exit status 0 when every comparison matched. Work files go to bench/out/dms_real_db/<db>.
"""

import argparse
import decimal
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB = "tributary_cdc"


def log(msg):
    print(f"[dms_real_db] {msg}", file=sys.stderr, flush=True)


class MariaDB:
    name = "mariadb"

    def sql(self, text, db=DB):
        args = ["mariadb", "-uroot", "-h127.0.0.1", "-B", "-N"]
        if db:
            args.append(db)
        out = subprocess.run(args, input=text, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"mariadb failed: {out.stderr}\n{text[:500]}")
        return out.stdout

    def setup(self):
        self.sql(f"DROP DATABASE IF EXISTS {DB}; CREATE DATABASE {DB};", db=None)
        self.sql(
            """
            CREATE TABLE orders (id INT PRIMARY KEY, region VARCHAR(16) NOT NULL,
                                 amount DECIMAL(10,2) NOT NULL, note VARCHAR(64) NULL);
            CREATE TABLE orders_cdc (seq BIGINT AUTO_INCREMENT PRIMARY KEY, op CHAR(1) NOT NULL,
                                     ts DATETIME(6) NOT NULL, id INT, region VARCHAR(16),
                                     amount DECIMAL(10,2), note VARCHAR(64));
            """
        )

    def triggers(self):
        cols = "id, region, amount, note"
        for op, when, row in [("I", "INSERT", "NEW"), ("U", "UPDATE", "NEW"), ("D", "DELETE", "OLD")]:
            self.sql(
                f"CREATE TRIGGER orders_{op} AFTER {when} ON orders FOR EACH ROW "
                f"INSERT INTO orders_cdc(op, ts, {cols}) VALUES ('{op}', NOW(6), "
                f"{row}.id, {row}.region, {row}.amount, {row}.note);"
            )

    def timestamp(self, col):
        return f"DATE_FORMAT({col}, '%Y-%m-%d %H:%i:%s.%f')"

    def drop(self):
        self.sql(f"DROP DATABASE IF EXISTS {DB};", db=None)


class Postgres:
    name = "postgres"

    def sql(self, text, db=DB):
        args = ["psql", "-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", db or "postgres",
                "-v", "ON_ERROR_STOP=1", "-At", "-F", "\t", "-P", "null=NULL"]
        out = subprocess.run(args, input=text, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"psql failed: {out.stderr}\n{text[:500]}")
        return out.stdout

    def setup(self):
        self.sql(f"DROP DATABASE IF EXISTS {DB};", db=None)
        self.sql(f"CREATE DATABASE {DB};", db=None)
        self.sql(
            """
            CREATE TABLE orders (id INT PRIMARY KEY, region VARCHAR(16) NOT NULL,
                                 amount NUMERIC(10,2) NOT NULL, note VARCHAR(64) NULL);
            CREATE TABLE orders_cdc (seq BIGSERIAL PRIMARY KEY, op CHAR(1) NOT NULL,
                                     ts TIMESTAMP(6) NOT NULL, id INT, region VARCHAR(16),
                                     amount NUMERIC(10,2), note VARCHAR(64));
            CREATE FUNCTION orders_capture() RETURNS trigger AS $$
            BEGIN
              IF TG_OP = 'DELETE' THEN
                INSERT INTO orders_cdc(op, ts, id, region, amount, note)
                VALUES ('D', clock_timestamp(), OLD.id, OLD.region, OLD.amount, OLD.note);
              ELSE
                INSERT INTO orders_cdc(op, ts, id, region, amount, note)
                VALUES (left(TG_OP, 1), clock_timestamp(), NEW.id, NEW.region, NEW.amount, NEW.note);
              END IF;
              RETURN NULL;
            END $$ LANGUAGE plpgsql;
            """
        )

    def triggers(self):
        self.sql(
            "CREATE TRIGGER orders_capture AFTER INSERT OR UPDATE OR DELETE ON orders "
            "FOR EACH ROW EXECUTE FUNCTION orders_capture();"
        )

    def timestamp(self, col):
        return f"to_char({col}, 'YYYY-MM-DD HH24:MI:SS.US')"

    def drop(self):
        self.sql(f"DROP DATABASE IF EXISTS {DB};", db=None)


TABLES_YAML = """tables:
- source: shop/orders
  active: true
  primary_key: [id]
  partition_by: [region]
  timestamp_column: commit_ts
  delimiter: "\\t"
  null_value: "NULL"
  columns:
  - {name: id, type: int}
  - {name: region, type: string}
  - {name: amount, type: "decimal(10,2)"}
  - {name: note, type: string}
"""

REGIONS = ["east", "west", "north", "south"]


def note(rng):
    return "NULL" if rng.random() < 0.3 else f"'n{rng.randrange(1000)}'"


def workload(rng, live, deleted, next_id, size):
    """SQL statements of one batch; updates `live`/`deleted` (sets of ids) as the DB will."""
    stmts = []
    for _ in range(size):
        r = rng.random()
        if r < 0.2 or not live:
            i = next_id[0]
            next_id[0] += 1
            stmts.append(f"INSERT INTO orders VALUES ({i}, '{rng.choice(REGIONS)}', {rng.randrange(1, 10**6) / 100}, {note(rng)});")
            live.add(i)
        elif r < 0.45:
            i = rng.choice(sorted(live))
            stmts.append(f"UPDATE orders SET amount = {rng.randrange(1, 10**6) / 100} WHERE id = {i};")
        elif r < 0.65:
            i = rng.choice(sorted(live))
            stmts.append(f"UPDATE orders SET region = '{rng.choice(REGIONS)}', note = {note(rng)} WHERE id = {i};")
        elif r < 0.8:
            i = rng.choice(sorted(live))
            stmts.append(f"DELETE FROM orders WHERE id = {i};")
            live.discard(i)
            deleted.add(i)
        elif deleted:
            i = rng.choice(sorted(deleted))
            stmts.append(f"INSERT INTO orders VALUES ({i}, '{rng.choice(REGIONS)}', {rng.randrange(1, 10**6) / 100}, {note(rng)});")
            deleted.discard(i)
            live.add(i)
        else:
            # the same key twice in a row
            i = rng.choice(sorted(live))
            stmts.append(f"UPDATE orders SET amount = amount + 1 WHERE id = {i};")
            stmts.append(f"UPDATE orders SET amount = amount + 1 WHERE id = {i};")
    return stmts


def norm(value):
    if value is None or value == "NULL":
        return None
    return str(value)


def db_rows(db):
    out = db.sql("SELECT id, region, amount, note FROM orders ORDER BY id;")
    rows = []
    for line in out.splitlines():
        if not line:
            continue
        i, region, amount, n = line.split("\t")
        rows.append((int(i), region, decimal.Decimal(amount), norm(n)))
    return rows


def lake_rows(lake):
    from deltalake import DeltaTable

    path = lake / "shop" / "orders" / "current"
    t = DeltaTable(str(path)).to_pyarrow_table(columns=["id", "region", "amount", "note", "operation"])
    rows = []
    for r in t.to_pylist():
        rows.append((r["id"], r["region"], decimal.Decimal(r["amount"]), norm(r["note"])))
    rows.sort()
    return rows


def tributary(bin_, landing, lake, crash_at=None, kill_after=None):
    env = dict(os.environ)
    if crash_at:
        env["TRIBUTARY_CRASH_AT"] = crash_at
    args = [bin_, "sync", str(landing), "--lake", str(lake), "--date", "2024-03-09", "--json"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    return proc.returncode, out, err


def run(db, args):
    rng = random.Random(args.seed)
    work = ROOT / "bench" / "out" / "dms_real_db" / db.name
    shutil.rmtree(work, ignore_errors=True)
    landing, lake = work / "landing", work / "lake"
    folder = landing / "shop" / "orders"
    folder.mkdir(parents=True)
    (landing / "tables.yaml").write_text(TABLES_YAML)

    db.setup()
    live, deleted, next_id = set(), set(), [1]
    seed = []
    for _ in range(args.seed_rows):
        i = next_id[0]
        next_id[0] += 1
        seed.append(f"INSERT INTO orders VALUES ({i}, '{rng.choice(REGIONS)}', {rng.randrange(1, 10**6) / 100}, {note(rng)});")
        live.add(i)
    db.sql("\n".join(seed))
    load = folder / "LOAD00000001.csv"
    load.write_text(db.sql("SELECT id, region, amount, note FROM orders ORDER BY id;"))
    file_time = time.time()
    os.utime(load, (file_time, file_time))
    db.triggers()

    last_seq = 0
    checks = 0
    crash_plan = {2: ("before-history-commit", None), 4: ("after-history-commit", None), 6: (None, 0.05), 7: (None, 0.15)}
    for batch in range(1, args.batches + 1):
        db.sql("\n".join(workload(rng, live, deleted, next_id, args.batch_size)))
        out = db.sql(
            f"SELECT seq, op, {db.timestamp('ts')}, id, region, amount, note FROM orders_cdc "
            f"WHERE seq > {last_seq} ORDER BY seq;"
        )
        lines = [l.split("\t") for l in out.splitlines() if l]
        if lines:
            last_seq = int(lines[-1][0])
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"{batch:04d}"
            change = folder / f"{stamp}.csv"
            change.write_text("".join("\t".join(l[1:]) + "\n" for l in lines))
            os.utime(change, (file_time, file_time))
        crash_at, kill_after = crash_plan.get(batch, (None, None))
        if crash_at or kill_after is not None:
            code, _, _ = tributary(args.bin, landing, lake, crash_at, kill_after)
            log(f"batch {batch}: interrupted sync ({crash_at or f'SIGKILL after {kill_after}s'}) exited {code}")
        code, out, err = tributary(args.bin, landing, lake)
        if code != 0:
            raise SystemExit(f"sync failed (exit {code}):\n{err}\n{out}")
        want, got = db_rows(db), lake_rows(lake)
        if want != got:
            missing = sorted(set(want) - set(got))[:5]
            extra = sorted(set(got) - set(want))[:5]
            raise SystemExit(f"{db.name} batch {batch}: lake differs from the database "
                             f"({len(want)} vs {len(got)} rows); missing {missing}, extra {extra}")
        checks += 1
        log(f"{db.name} batch {batch}: {len(lines)} changes, {len(want)} rows, lake == database")
    if not args.keep:
        db.drop()
        shutil.rmtree(work, ignore_errors=True)
    return checks


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=["mariadb", "postgres", "both"], default="both")
    p.add_argument("--bin", default=str(ROOT / "target" / "release" / "tributary"))
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--seed-rows", type=int, default=2000)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=400)
    p.add_argument("--keep", action="store_true", help="keep the database and work files")
    args = p.parse_args()
    if not os.access(args.bin, os.X_OK):
        raise SystemExit(f"tributary binary {args.bin} not found (pass --bin)")
    dbs = {"mariadb": [MariaDB()], "postgres": [Postgres()], "both": [MariaDB(), Postgres()]}[args.db]
    for db in dbs:
        checks = run(db, args)
        print(f"{db.name}: PASS ({checks} syncs compared row for row with SELECT * FROM orders)")


if __name__ == "__main__":
    main()
