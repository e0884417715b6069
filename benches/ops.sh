#!/usr/bin/env bash
# Benchmark of the operations endpoints (issue 15), file backend, `sidekick
# exec --watch -- sleep infinity` as the sidecar/init shape runs:
#
#  1. idle cost with --metrics-addr on, and in the same run with it off:
#     VmRSS from /proc/PID/status and CPU ticks (utime + stime) over SECONDS
#     seconds of nothing happening;
#  2. a scrape of /metrics: median and p99 wall time over SCRAPES requests on
#     one kept-alive connection, and sidekick's own CPU time per scrape
#     (its ticks over all the scrapes, divided);
#  3. binary size, against BASE_BIN when given (a build without the
#     endpoints, e.g. of commit 37704b3).
#
# Targets (issue 15): idle RSS with --metrics-addr <= 8 MB (glibc release
# build), 0 CPU ticks idle, a scrape < 1 ms.
#
# Usage:  benches/ops.sh
# Environment:
#   SECONDS=10        idle window (default 10)
#   SCRAPES=2000      scrapes measured (default 2000)
#   SIDEKICK_BIN=...  measure this binary instead of building one
#   BASE_BIN=...      a binary to compare the size with

if [ -n "$(printenv SECONDS 2>/dev/null)" ]; then
    IDLE_SECONDS=$SECONDS
else
    IDLE_SECONDS=10
fi
set -euo pipefail

cd "$(dirname "$0")/.."
if [ -z "${SIDEKICK_BIN:-}" ]; then
    SIDEKICK_HOT_TEXT=1 cargo build --release --bin sidekick >&2
    SIDEKICK_BIN="$PWD/target/release/sidekick"
fi

helper=$(mktemp --suffix=.py)
trap 'rm -f "$helper"' EXIT
cat >"$helper" <<'PY'
"""Measures the operations endpoints: idle cost and scrape cost."""
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def confdir(root):
    os.makedirs(os.path.join(root, "conf.d"))
    os.makedirs(os.path.join(root, "templates"))
    with open(os.path.join(root, "data.yaml"), "w") as f:
        f.write("app:\n" + "".join("  k%d: v%d\n" % (i, i) for i in range(100)))
    with open(os.path.join(root, "templates", "app.tmpl"), "w") as f:
        f.write('{% for kv in gets(pattern="/app/*") %}{{ kv.key }}={{ kv.value }}\n{% endfor %}')
    for n in range(5):
        with open(os.path.join(root, "conf.d", "app%d.toml" % n), "w") as f:
            f.write('[template]\nsrc = "app.tmpl"\ndest = "%s/app%d.conf"\nkeys = ["/app"]\n'
                    % (root, n))


def ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run(binary, seconds, scrapes, metrics):
    with tempfile.TemporaryDirectory(prefix="sidekick-bench-") as root:
        confdir(root)
        addr = "127.0.0.1:%d" % free_port()
        args = [binary, "exec", "--confdir", root, "--backend", "file", "--watch",
                "--file", os.path.join(root, "data.yaml")]
        if metrics:
            args += ["--metrics-addr", addr]
        args += ["--", "sleep", "infinity"]
        log = open(os.path.join(root, "log"), "w")
        proc = subprocess.Popen(args, stdout=log, stderr=log)
        try:
            deadline = time.time() + 20
            while not os.path.exists(os.path.join(root, "app4.conf")):
                if time.time() > deadline or proc.poll() is not None:
                    raise SystemExit("sidekick did not render: " + open(os.path.join(root, "log")).read())
                time.sleep(0.01)
            time.sleep(1)
            t0 = ticks(proc.pid)
            time.sleep(seconds)
            idle_ticks = ticks(proc.pid) - t0
            rss = rss_kb(proc.pid)
            result = {"rss": rss, "ticks": idle_ticks}
            if metrics:
                host, port = addr.split(":")
                conn = http.client.HTTPConnection(host, int(port))
                lat = []
                size = 0
                c0 = ticks(proc.pid)
                for _ in range(scrapes):
                    t = time.perf_counter()
                    conn.request("GET", "/metrics")
                    body = conn.getresponse().read()
                    lat.append((time.perf_counter() - t) * 1000)
                    size = len(body)
                cpu = ticks(proc.pid) - c0
                lat.sort()
                result.update(median=statistics.median(lat), p99=lat[int(len(lat) * 0.99) - 1],
                              cpu_ms=cpu * 1000 / os.sysconf("SC_CLK_TCK") / scrapes,
                              size=size, rss_after=rss_kb(proc.pid))
        finally:
            proc.terminate()
            proc.wait(10)
    return result


def main():
    binary, seconds, scrapes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    base = sys.argv[4] if len(sys.argv) > 4 else ""
    size = os.path.getsize(binary)
    print("binary: %s (%.2f MB)" % (binary, size / 1e6))
    if base:
        bsize = os.path.getsize(base)
        print("  base %s: %.2f MB; growth %+.0f KB (%+.1f%%)" % (
            base, bsize / 1e6, (size - bsize) / 1024, 100.0 * (size - bsize) / bsize))
    off = run(binary, seconds, scrapes, False)
    on = run(binary, seconds, scrapes, True)
    print("idle sidekick exec --watch, 5 resources, over %d s:" % seconds)
    print("  --metrics-addr off: VmRSS %.2f MB, CPU ticks %d" % (off["rss"] / 1024, off["ticks"]))
    print("  --metrics-addr on:  VmRSS %.2f MB, CPU ticks %d" % (on["rss"] / 1024, on["ticks"]))
    print("scrape of /metrics (%d bytes), %d requests on one connection:" % (on["size"], scrapes))
    print("  wall median %.3f ms, p99 %.3f ms (client included); sidekick CPU %.3f ms per scrape;"
          " VmRSS after %.2f MB" % (on["median"], on["p99"], on["cpu_ms"], on["rss_after"] / 1024))
    print("targets: idle RSS <= 8 MB: %s; 0 idle ticks: %s; scrape < 1 ms: %s" % (
        "met" if on["rss"] <= 8 * 1024 else "MISSED",
        "met" if on["ticks"] == 0 else "MISSED",
        "met" if on["median"] < 1 else "MISSED"))


main()
PY

python3 "$helper" "$SIDEKICK_BIN" "$IDLE_SECONDS" "${SCRAPES:-2000}" "${BASE_BIN:-}"
