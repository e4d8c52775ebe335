#!/usr/bin/env python3
"""Convert the headerless CSV files of a generated day to Parquet, in place.

Usage: to_parquet.py DIR NO_KEYS NO_NONKEYS

Every DIR/*.csv becomes DIR/*.parquet (same stem; snappy, DuckDB's default row
groups) with columns keycol1..N as strings and nonkeycol1..M as doubles -- the
names and types of the config `tributary generate --config-out` writes -- and the
CSV file is removed.  Row order is kept.  Prints {"files", "rows", "parquet_bytes"}.
"""
import glob
import json
import os
import sys

import duckdb

from cdc_common import column_names


def q(path):
    return "'" + path.replace("'", "''") + "'"


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    folder, nkeys, nnonkeys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    keys, nonkeys = column_names(nkeys, nnonkeys)
    spec = ", ".join([f"'{k}': 'VARCHAR'" for k in keys] + [f"'{n}': 'DOUBLE'" for n in nonkeys])
    con = duckdb.connect()
    files = sorted(glob.glob(os.path.join(folder, "*.csv")))
    if not files:
        sys.exit(f"{folder}: no *.csv file")
    rows = size = 0
    for csv in files:
        out = csv[:-len(".csv")] + ".parquet"
        tmp = out + ".tmp"
        con.execute(f"""
            COPY (SELECT * FROM read_csv({q(csv)}, header = false, delim = ',', quote = '"',
                                         columns = {{{spec}}}, auto_detect = false))
            TO {q(tmp)} (FORMAT parquet, COMPRESSION snappy)
        """)
        rows += con.execute(f"SELECT count(*) FROM read_parquet({q(tmp)})").fetchone()[0]
        os.rename(tmp, out)
        os.unlink(csv)
        size += os.path.getsize(out)
    print(json.dumps({"files": len(files), "rows": rows, "parquet_bytes": size}))


if __name__ == "__main__":
    main()
