"""Shared by duckdb_cdc.py, pyspark_cdc.py and to_parquet.py: the command line of the
CDC scripts and the column layout of `tributary generate` data."""
import argparse


def column_names(nkeys, nnonkeys):
    """(keys, nonkeys): keycol1..N (strings) and nonkeycol1..M (doubles), as in the
    config `tributary generate --config-out` writes."""
    return ([f"keycol{i}" for i in range(1, nkeys + 1)],
            [f"nonkeycol{i}" for i in range(1, nnonkeys + 1)])


def parse_args(doc):
    """INPUT_DIR OUTPUT_ROOT YYYY-MM-DD NO_KEYS NO_NONKEYS [--format F] [--extract E]
    [--compression C]."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("in_dir", metavar="INPUT_DIR")
    p.add_argument("out_root", metavar="OUTPUT_ROOT")
    p.add_argument("run_date", metavar="YYYY-MM-DD")
    p.add_argument("nkeys", metavar="NO_KEYS", type=int)
    p.add_argument("nnonkeys", metavar="NO_NONKEYS", type=int)
    p.add_argument("--format", choices=("csv", "parquet"), default="csv",
                   help="input files: headerless *.csv (default) or *.parquet")
    p.add_argument("--extract", choices=("full", "delta"), default="full",
                   help="full (default): keys missing from the input are deleted (D); "
                        "delta: they stay in current as X with their old eff_start_date")
    p.add_argument("--compression", choices=("zstd", "snappy", "none"), default="zstd",
                   help="Parquet codec of the written tables (default zstd, as tributary's)")
    return p.parse_args()
