#!/usr/bin/env python3
"""Run one command under GNU time and also sample its process tree's RSS.

Usage: measure.py RESULT_JSON STDOUT_FILE STDERR_FILE -- CMD [ARG...]

RESULT_JSON gets {"exit_code", "wall_secs", "maxrss_kib", "tree_peak_rss_kib", "precise_wall_secs"}:
  wall_secs, maxrss_kib  from `/usr/bin/time -f '%e %M'` (%M = ru_maxrss of the
                         command: largest single process, counting only
                         descendants it reaped itself)
  tree_peak_rss_kib      peak of the summed RSS of the whole process tree,
                         sampled every 50 ms from /proc (needed for PySpark,
                         whose JVM is a child the Python driver never reaps, so
                         %M only sees the Python process)
  precise_wall_secs      wall time from time.perf_counter() around the process
                         (for runs shorter than %e's 10 ms resolution matters)
Exit status: the command's.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def tree_rss_kib(root):
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        except (OSError, ValueError):
            pass
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_KIB
        except (OSError, ValueError):
            pass
        todo.extend(children.get(pid, []))
    return total


def main():
    args = sys.argv[1:]
    if len(args) < 5 or args[3] != "--":
        sys.exit(__doc__)
    result_json, out_file, err_file, cmd = args[0], args[1], args[2], args[4:]
    fd, tfile = tempfile.mkstemp(prefix="measure-time-")
    os.close(fd)
    with open(out_file, "wb") as out, open(err_file, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(["/usr/bin/time", "-o", tfile, "-f", "%e %M", *cmd],
                                stdout=out, stderr=err)
        peak = 0
        while True:
            peak = max(peak, tree_rss_kib(proc.pid))
            try:
                proc.wait(timeout=0.05)  # returns as soon as the process exits
                break
            except subprocess.TimeoutExpired:
                pass
        precise = time.perf_counter() - started
    with open(tfile) as f:
        lines = [l for l in f.read().splitlines() if l.strip()]
    os.unlink(tfile)
    # GNU time prefixes "Command exited with non-zero status N" on failure.
    wall, maxrss = lines[-1].split()
    res = {"exit_code": proc.returncode, "wall_secs": float(wall), "maxrss_kib": int(maxrss),
           "tree_peak_rss_kib": peak, "precise_wall_secs": round(precise, 4)}
    with open(result_json, "w") as f:
        json.dump(res, f)
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
