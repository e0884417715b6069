#!/usr/bin/env bash
# Benchmark of the Redis backend against a local redis-server: SET -> file
# latency (median, p99, next to the SET's own round trip), the same on the
# backend alone, idle CPU and RSS of a --watch with 100 keys, and --onetime
# over 10,000 keys. Needs redis-server (Debian's redis-server). Builds
# sidekick and the measuring program in release mode.
#
#   bash benches/redis.sh                        # dest files in the system temp dir
#   BENCH_DIR=/dev/shm bash benches/redis.sh     # dest files on tmpfs (no disk fsync)
#   IDLE_SECS=10 CHANGES=200 bash benches/redis.sh
#
# CARGO_FEATURES (default: the binary's default features) picks the backends
# built into sidekick, e.g. CARGO_FEATURES="--no-default-features --features redis".
# SIDEKICK_BIN measures that binary instead (e.g. the static musl one that
# benches/image.sh builds).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || {
  echo "benches/redis.sh: redis-server is not installed (apt-get install redis-server)" >&2
  exit 1
}

TARGET="${CARGO_TARGET_DIR:-target}"
if [ -z "${SIDEKICK_BIN:-}" ]; then
  # shellcheck disable=SC2086
  SIDEKICK_HOT_TEXT=1 cargo build --release --bin sidekick ${CARGO_FEATURES:-}
  SIDEKICK_BIN="$TARGET/release/sidekick"
fi
# The measuring program needs no LTO: build it apart, so the release
# profile (and sidekick's release artifacts) stay as they are.
CARGO_TARGET_DIR="$TARGET/bench-tool" CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  cargo build --release -p sidekick-backend-redis --example bench
ls -l "$SIDEKICK_BIN" | awk '{print "sidekick binary " $9 ": " $5 " bytes"}'
exec "$TARGET/bench-tool/release/examples/bench" "$SIDEKICK_BIN"
