#!/usr/bin/env python3
"""Snapshot CDC in PySpark (local[2]) -- the seed article's hash + full-outer-join pattern.

Usage: pyspark_cdc.py INPUT_DIR OUTPUT_ROOT YYYY-MM-DD NO_KEYS NO_NONKEYS
                      [--format csv|parquet] [--extract full|delta]

Same inputs, options, semantics and output layout as duckdb_cdc.py (plain Parquet):
  OUTPUT_ROOT/current/part-*.parquet
  OUTPUT_ROOT/history/eff_start_date=YYYY-MM-DD/part-*.parquet

keyhash = md5(concat_ws(chr(31), keycols)), nonkeyhash = md5(concat_ws(chr(31),
nonkeycols cast to string)) -- pyspark.sql.functions.md5 over concat_ws, 32-char hex.
chr(31) cannot occur in the data; concat_ws skips NULLs (irrelevant here).

Env: SPARK_DRIVER_MEMORY (default 4g).  Prints counts + timings as JSON on the
last stdout line.
"""
import json
import os
import shutil
import time

t_start = time.perf_counter()

from pyspark import StorageLevel  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql.types import DoubleType, StringType, StructField, StructType  # noqa: E402

from cdc_common import column_names, parse_args  # noqa: E402


def main():
    args = parse_args(__doc__)
    run_date = args.run_date
    in_dir = os.path.abspath(args.in_dir)
    out_root = os.path.abspath(args.out_root)
    cur_dir = os.path.join(out_root, "current")
    hist_dir = os.path.join(out_root, "history", f"eff_start_date={run_date}")
    first_run = not os.path.exists(os.path.join(cur_dir, "_SUCCESS"))

    spark = (SparkSession.builder.master("local[2]").appName("pyspark_cdc")
             .config("spark.driver.memory", os.environ.get("SPARK_DRIVER_MEMORY", "4g"))
             .config("spark.sql.shuffle.partitions", "4")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.parquet.compression.codec",
                     {"none": "uncompressed"}.get(args.compression, args.compression))
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    t0 = time.perf_counter()

    keys, nonkeys = column_names(args.nkeys, args.nnonkeys)
    cols = keys + nonkeys
    schema = StructType([StructField(k, StringType()) for k in keys] +
                        [StructField(n, DoubleType()) for n in nonkeys])
    sep = "\x1f"
    in_glob = os.path.join(in_dir, f"*.{args.format}")
    if args.format == "csv":
        raw = (spark.read.schema(schema).option("header", "false").option("sep", ",")
               .option("mode", "FAILFAST").csv(in_glob))
    else:
        raw = spark.read.parquet(in_glob).select(
            *[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
    incoming = (raw
                .withColumn("keyhash", F.md5(F.concat_ws(sep, *[F.col(k) for k in keys])))
                .withColumn("nonkeyhash", F.md5(F.concat_ws(
                    sep, *[F.col(n).cast("string") for n in nonkeys]))))
    date = F.to_date(F.lit(run_date))

    if first_run:
        classified = incoming.withColumn("operation", F.lit("I")).withColumn("eff_start_date", date)
    else:
        current = spark.read.parquet(cur_dir)
        i, c = incoming.alias("i"), current.alias("c")
        i_missing = F.col("i.keyhash").isNull()
        c_missing = F.col("c.keyhash").isNull()
        same = F.col("i.nonkeyhash") == F.col("c.nonkeyhash")
        gone_op, gone_date = (("D", date) if args.extract == "full"
                              else ("X", F.col("c.eff_start_date")))
        classified = i.join(c, F.col("i.keyhash") == F.col("c.keyhash"), "full_outer").select(
            *[F.when(i_missing, F.col(f"c.{x}")).otherwise(F.col(f"i.{x}")).alias(x) for x in cols],
            F.coalesce(F.col("i.keyhash"), F.col("c.keyhash")).alias("keyhash"),
            F.coalesce(F.col("i.nonkeyhash"), F.col("c.nonkeyhash")).alias("nonkeyhash"),
            F.when(c_missing, "I").when(i_missing, gone_op).when(~same, "U").otherwise("N")
             .alias("operation"),
            F.when(c_missing, date).when(i_missing, gone_date).when(~same, date)
             .otherwise(F.col("c.eff_start_date")).alias("eff_start_date"))
    # The classified frame feeds two writes and the counts: compute it once.
    classified = classified.persist(StorageLevel.MEMORY_AND_DISK)

    # Spark refuses to overwrite a path it is reading from: write the new current
    # beside it and swap directories once the job has finished.
    new_cur = cur_dir + ".new"
    shutil.rmtree(new_cur, ignore_errors=True)
    (classified.where(F.col("operation") != "D")
     .select(*cols, "keyhash", "nonkeyhash", "operation", "eff_start_date")
     .write.mode("overwrite").parquet(new_cur))
    (classified.where(F.col("operation").isin("I", "U", "D"))
     .select(*cols, "keyhash", "nonkeyhash", "operation")
     .write.mode("overwrite").parquet(hist_dir))
    counts = {k: 0 for k in "IUDXN"}
    for row in classified.groupBy("operation").count().collect():
        counts[row["operation"]] = row["count"]
    classified.unpersist()
    old_cur = cur_dir + ".old"
    if os.path.exists(cur_dir):
        os.rename(cur_dir, old_cur)
    os.rename(new_cur, cur_dir)
    shutil.rmtree(old_cur, ignore_errors=True)
    t1 = time.perf_counter()
    spark.stop()

    print(json.dumps({
        "system": "pyspark",
        "spark_version": spark.version,
        "business_date": run_date,
        "first_run": first_run,
        "input_format": args.format,
        "extract_type": args.extract,
        "rows_read": counts["I"] + counts["U"] + counts["N"],
        "counts": counts,
        "elapsed_secs": round(time.perf_counter() - t_start, 3),
        "startup_secs": round(t0 - t_start, 3),
        "job_secs": round(t1 - t0, 3),
    }))


if __name__ == "__main__":
    main()
