#!/usr/bin/env bash
# Regenerates build/hot-text.ld, the list of functions that build.rs has the
# linker place together at the start of the release binary's code.
#
# Why: an idle sidekick keeps every code page it touched while starting,
# rendering and reacting to a change, and the kernel maps code in 64 KB windows
# around each page faulted in. Spread over a 10 MB .text, the ~1.5 MB of code
# sidekick actually runs kept about 5 MB resident; packed together it keeps
# about 2.4 MB (see docs/decisions.md).
#
# How: runs a release build with symbols under callgrind through the usual
# lives of the binary (etcd --watch with a change, etcd --onetime, file-backend
# --watch with a change, `sidekick exec` with a reload signal), and
# writes one linker-script line per function run, with the hash of the symbol
# left as a wildcard so that the list survives rebuilds and most edits. Needs
# valgrind, etcd (etcd-server), curl and python3.
#
#   bash benches/hot-text.sh        # then rebuild and compare idle RSS:
#   IDLE_SECS=10 bash benches/etcd.sh
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in valgrind curl python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "benches/hot-text.sh: needs $tool" >&2; exit 1; }
done
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || {
  echo "benches/hot-text.sh: etcd is not installed (apt-get install etcd-server)" >&2
  exit 1
}

# The release profile, symbols kept: the same inlining as what ships.
CARGO_TARGET_DIR=target/hot-text CARGO_PROFILE_RELEASE_STRIP=none \
  cargo build --release --bin sidekick
exec python3 - target/hot-text/release/sidekick build/hot-text.ld <<'PY'
import os, re, signal, socket, subprocess, sys, tempfile, time, base64, json, urllib.request

binary, out_path = os.path.abspath(sys.argv[1]), sys.argv[2]
ETCD = "/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else "etcd"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(path, text, secs=60):
    end = time.time() + secs
    while time.time() < end:
        try:
            if text in open(path).read():
                return
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    sys.exit(f"hot-text: {path} never held {text!r}")


def put(url, key, value):
    body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                       "value": base64.b64encode(value.encode()).decode()}).encode()
    urllib.request.urlopen(urllib.request.Request(url + "/v3/kv/put", body), timeout=10).read()


def confdir(root, name, keys, extra=""):
    os.makedirs(f"{root}/conf.d", exist_ok=True)
    os.makedirs(f"{root}/templates", exist_ok=True)
    with open(f"{root}/conf.d/{name}.toml", "w") as f:
        f.write(f'[template]\nsrc = "{name}.tmpl"\ndest = "{root}/{name}.out"\n'
                f'keys = ["{keys}"]\n{extra}')
    with open(f"{root}/templates/{name}.tmpl", "w") as f:
        f.write('{% for kv in gets(pattern="KEYS/*") %}{{ kv.key }}={{ kv.value }}\n'
                '{% endfor %}'.replace("KEYS", keys))
    return f"{root}/{name}.out"


def grind(tmp, name, args):
    """Starts the binary under callgrind; returns (process, profile path)."""
    profile = f"{tmp}/{name}.cg"
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--demangle=no",
                             f"--callgrind-out-file={profile}", binary] + args,
                            stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/{name}.log", "w"))
    return proc, profile


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


profiles = []
with tempfile.TemporaryDirectory(prefix="sidekick-hot-") as tmp:
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    etcd = subprocess.Popen(
        [ETCD, "--name", "hot", "--data-dir", f"{tmp}/etcd",
         "--listen-client-urls", url, "--advertise-client-urls", url,
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"hot=http://127.0.0.1:{peer}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                put(url, "/idle/k000", "v")
                break
            except OSError:
                time.sleep(0.1)
        for i in range(100):
            put(url, f"/idle/k{i:03}", f"value-{i}")
        etcd_args = ["--backend", "etcdv3", "--node", url, "--log-level", "warn"]

        # 1. etcd --watch: start, render, one change, stop.
        dest = confdir(f"{tmp}/watch", "idle", "/idle")
        proc, profile = grind(tmp, "etcd-watch", etcd_args + ["--watch", "--confdir", f"{tmp}/watch"])
        wait_for(dest, "/idle/k099=value-99")
        put(url, "/idle/k050", "changed")
        wait_for(dest, "/idle/k050=changed")
        stop(proc)
        profiles.append(profile)

        # 2. etcd --onetime.
        confdir(f"{tmp}/once", "idle", "/idle")
        proc, profile = grind(tmp, "etcd-onetime", etcd_args + ["--onetime", "--confdir", f"{tmp}/once"])
        proc.wait(timeout=120)
        profiles.append(profile)
    finally:
        etcd.terminate()
        etcd.wait()

    # 3. file backend --watch: start, render, one save, stop.
    data = f"{tmp}/data.yaml"
    with open(data, "w") as f:
        f.write("app:\n" + "".join(f"  k{i:03}: value-{i}\n" for i in range(100)))
    dest = confdir(f"{tmp}/file", "app", "/app")
    file_args = ["--backend", "file", "--file", data, "--log-level", "warn"]
    proc, profile = grind(tmp, "file-watch", file_args + ["--watch", "--confdir", f"{tmp}/file"])
    wait_for(dest, "/app/k099=value-99")
    with open(data, "a") as f:
        f.write("  k100: added\n")
    wait_for(dest, "/app/k100=added")
    stop(proc)
    profiles.append(profile)

    # 4. sidekick exec: render, start the child, a save, SIGHUP to the child, stop.
    dest = confdir(f"{tmp}/exec", "app", "/app", 'reload_signal = "SIGHUP"\n')
    proc, profile = grind(tmp, "exec", ["exec", "--watch", "--confdir", f"{tmp}/exec"] + file_args
                          + ["--", "sh", "-c", "trap 'echo hup >> %s/hups' HUP; "
                             "while :; do sleep 0.1; done" % tmp])
    wait_for(dest, "/app/k100=added")
    time.sleep(1)
    with open(data, "a") as f:
        f.write("  k101: again\n")
    wait_for(f"{tmp}/hups", "hup")
    stop(proc)
    profiles.append(profile)

    # Functions run, in order of first sight, as text symbols of the binary.
    nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True,
                        check=True).stdout
    text = {p[2] for p in (l.split() for l in nm.splitlines()) if len(p) == 3 and p[1] in "tT"}
    patterns, seen = [], set()
    for profile in profiles:
        for line in open(profile):
            m = re.match(r"c?fn=\(\d+\) (.+)", line)
            if not m or m.group(1).strip() not in text:
                continue
            name = m.group(1).strip()
            # Legacy mangling ends in a hash (17h<16 hex>E); v0 names carry crate
            # hashes (Cs<base62>_). Both change between builds: wildcard them.
            pattern = re.sub(r"17h[0-9a-f]{16}E$", "17h*", name)
            if pattern.startswith("_R"):
                pattern = re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", pattern)
            if pattern not in seen:
                seen.add(pattern)
                patterns.append(pattern)

with open(out_path, "w") as f:
    f.write("/* GENERATED FILE, do not edit: made by benches/hot-text.sh.\n   Generated by benches/hot-text.sh: the functions sidekick runs while it\n"
            "   starts, renders, watches and reacts to a change, placed together so an\n"
            "   idle process keeps few code pages resident. Layout only: a function\n"
            "   missing here still links, in .text. Regenerate after large changes. */\n")
    f.write("SECTIONS {\n  .text.hot : {\n")
    for p in patterns:
        f.write(f"    *(.text.{p} .text.unlikely.{p})\n")
    f.write("  }\n} INSERT BEFORE .text;\n")
print(f"{out_path}: {len(patterns)} patterns from {len(profiles)} runs")
PY
