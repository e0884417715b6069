#!/usr/bin/env bash
# The README's first command, as a new user runs it: a fresh clone of HEAD, no
# protoc anywhere (PROTOC unset, every protoc on PATH hidden), README command 1
# exactly as the README writes it, then the two files it promises.
#
# Downloads are shared (the caller's CARGO_HOME: nothing to measure there), the
# build is not: its own target directory, deleted afterwards, so it is a cold
# build like a first-time user's. scripts/test runs this last.
#
#   bash tests/first_run.sh
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
work=$(mktemp -d "${TMPDIR:-/tmp}/sidekick-first-run.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$SECONDS

git clone -q "$root" "$work/clone"
cd "$work/clone"

# README command 1: the `cargo run` line under "# 1." in "## Two commands", with
# its continuation lines, and the files named on the `->` line after it.
command=$(awk '
  /^# 1\./ { on = 1; next }
  on && /^cargo run/ { take = 1 }
  take { line = $0; sub(/\\$/, "", line); cmd = cmd line; if ($0 !~ /\\$/) { print cmd; exit } }
' README.md)
outputs=$(awk '/^# 1\./ { on = 1 } on && /->/ { sub(/.*-> */, ""); gsub(/ and /, " "); print; exit }' README.md)
if [ -z "$command" ] || [ -z "$outputs" ]; then
  echo "first_run: README.md has no command 1 (\`# 1.\` then \`cargo run ...\`, then \`-> FILES\`)" >&2
  exit 1
fi
echo "first_run: fresh clone in $work/clone, protoc hidden, running README command 1:"
echo "    $command"

# The run, in a shell where no protoc can be found. As root: a private mount
# namespace with an empty, non-executable file bound over each protoc on PATH;
# otherwise the same in a user namespace; failing both, a PATH of links to
# everything on PATH but protoc.
cat > "$work/run.sh" <<'EOF'
set -eu
for protoc in $(type -ap protoc | xargs -r -n1 readlink -f | sort -u); do
  mount --bind "$HIDE" "$protoc"
done
if protoc --version >/dev/null 2>&1; then
  echo "first_run: protoc still runs ($(type -p protoc))" >&2
  exit 1
fi
exec bash -c "$COMMAND"
EOF
: > "$work/no-protoc"
chmod 0644 "$work/no-protoc"
export HIDE="$work/no-protoc" COMMAND="$command" CARGO_TARGET_DIR="$work/target"
unset PROTOC PROTOC_INCLUDE
if unshare --mount true 2>/dev/null; then
  unshare --mount bash "$work/run.sh"
elif unshare --user --map-root-user --mount true 2>/dev/null; then
  unshare --user --map-root-user --mount bash "$work/run.sh"
else
  farm="$work/path"
  mkdir "$farm"
  IFS=: read -ra dirs <<<"$PATH"
  for dir in "${dirs[@]}"; do
    for f in "$dir"/*; do
      name=${f##*/}
      [ "$name" = protoc ] || [ -e "$farm/$name" ] || ln -s "$f" "$farm/$name"
    done
  done
  PATH="$farm" bash -c 'if command -v protoc >/dev/null; then exit 1; fi; exec bash -c "$COMMAND"'
fi

missing=0
for f in $outputs; do
  if [ -s "$f" ]; then
    echo "first_run: $f: $(wc -l <"$f") lines"
  else
    echo "first_run: README command 1 did not write $f" >&2
    missing=1
  fi
done
[ "$missing" -eq 0 ] || exit 1

# While the binary is here: every flag `--help` lists (sidekick's and each
# subcommand's) has a line in README.md.
bin="$work/target/debug/sidekick"
[ -x "$bin" ] || bin="$work/target/release/sidekick"
undocumented=()
for sub in "" dev exec metadata-server convert check render completions man; do
  # shellcheck disable=SC2086
  for flag in $("$bin" $sub --help | grep -oE '^ +(-[a-zA-Z], )?--[a-z][a-z0-9-]*' | grep -oE -- '--[a-z0-9-]+'); do
    grep -qE -- "\`$flag[ =\`]" README.md || undocumented+=("$flag${sub:+ ($sub)}")
  done
done
if [ ${#undocumented[@]} -gt 0 ]; then
  echo "first_run: README.md does not document: ${undocumented[*]}" >&2
  exit 1
fi
echo "first_run: ok in $((SECONDS - start)) s"
