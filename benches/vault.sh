#!/usr/bin/env bash
# Benchmark of the Vault backend against the Vault test server of
# sidekick-testkit (no Vault binary can be installed here): write -> file
# latency (median, p99, next to one write's and one read's HTTP round trip),
# the backend alone polling every 10 ms, and idle CPU and RSS of a --watch at
# --interval 1 and 600. Vault has no watch: sidekick polls, so the latency is
# about the interval (1 s, the smallest --interval takes), not Vault's write
# time. Builds sidekick and the measuring program in release mode.
#
#   bash benches/vault.sh
#   BENCH_DIR=/dev/shm IDLE_SECS=10 CHANGES=200 bash benches/vault.sh
#
# CARGO_FEATURES picks the backends built into sidekick (default: the
# binary's default features); SIDEKICK_BIN measures that binary instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${SIDEKICK_BIN:-}" ]; then
  # shellcheck disable=SC2086
  SIDEKICK_HOT_TEXT=1 cargo build --release --bin sidekick ${CARGO_FEATURES:-}
  SIDEKICK_BIN="${CARGO_TARGET_DIR:-target}/release/sidekick"
fi
# The measuring program needs no LTO: build it apart, so the release
# profile (and sidekick's release artifacts) stay as they are.
tool="${CARGO_TARGET_DIR:-target}/bench-tool"
CARGO_TARGET_DIR="$tool" CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  cargo build --release -p sidekick-backend-vault --example bench
ls -l "$SIDEKICK_BIN" | awk '{print "sidekick binary " $9 ": " $5 " bytes"}'
exec "$tool/release/examples/bench" "$SIDEKICK_BIN"
