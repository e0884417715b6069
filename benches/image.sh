#!/usr/bin/env bash
# What the images ship: the static musl sidekick, built as images/Dockerfile.*
# build it (release profile, musl, statically linked), and its size. The
# sidecar image is this one file on `scratch`, so its size is the image's.
# With a Docker engine, also builds both images and prints their sizes.
#
#   bash benches/image.sh
#
# Needs the musl target (`rustup target add x86_64-unknown-linux-musl`) and
# musl-gcc (Debian's musl-tools) for the C parts of ring; both are installed
# when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
command -v musl-gcc >/dev/null 2>&1 || apt-get install -y musl-tools

CARGO_TARGET_DIR=target/musl CC_x86_64_unknown_linux_musl=musl-gcc \
  SIDEKICK_HOT_TEXT=1 cargo build --release --locked --target "$target"
bin="target/musl/$target/release/sidekick"

echo
file "$bin" | sed 's/, BuildID[^,]*//'
size=$(stat -c %s "$bin")
echo "static musl binary: $size bytes ($(awk "BEGIN{printf \"%.1f\", $size/1e6}") MB)"
echo "sidecar image (scratch + this binary): about the same; target < 15 MB:" \
  "$([ "$size" -lt 15000000 ] && echo met || echo MISSED)"

if docker info >/dev/null 2>&1; then
  for shape in sidecar base; do
    docker build -q -f "images/Dockerfile.$shape" -t "sidekick-$shape:bench" . >/dev/null
    bytes=$(docker image inspect --format '{{.Size}}' "sidekick-$shape:bench")
    echo "image sidekick-$shape: $bytes bytes"
  done
else
  echo "(no Docker engine here: images not built)"
fi
