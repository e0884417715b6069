#!/usr/bin/env bash
# Benchmark of the ZooKeeper backend against a local ZooKeeper (Debian's
# package, started on a free port with its data on tmpfs): setData -> file
# latency (median, p99, next to the write's own round trip), the same on the
# backend alone, idle CPU ticks and RSS of a --watch with 100 znodes, and
# --onetime over 10,000 znodes. Builds sidekick and the measuring program in
# release mode.
#
#   bash benches/zookeeper.sh                   # dest files in the system temp dir
#   BENCH_DIR=/dev/shm bash benches/zookeeper.sh   # dest files on tmpfs
#   IDLE_SECS=10 CHANGES=200 bash benches/zookeeper.sh
#
# CARGO_FEATURES picks the backends built into sidekick (default: the binary's
# default features); SIDEKICK_BIN measures that binary instead.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -f /usr/share/java/zookeeper.jar ] || [ -n "${ZOOKEEPER_JAR:-}" ] || {
  echo "benches/zookeeper.sh: ZooKeeper is not installed (apt-get install zookeeper)" >&2
  exit 1
}

target=${CARGO_TARGET_DIR:-target}
if [ -z "${SIDEKICK_BIN:-}" ]; then
  # shellcheck disable=SC2086
  SIDEKICK_HOT_TEXT=1 cargo build --release --bin sidekick ${CARGO_FEATURES:-}
  SIDEKICK_BIN=$target/release/sidekick
fi
# The measuring program needs no LTO: build it apart, so the release
# profile (and sidekick's release artifacts) stay as they are.
CARGO_TARGET_DIR=$target/bench-tool CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  cargo build --release -p sidekick-backend-zookeeper --example bench
ls -l "$SIDEKICK_BIN" | awk '{print "sidekick binary " $9 ": " $5 " bytes"}'
exec "$target/bench-tool/release/examples/bench" "$SIDEKICK_BIN"
