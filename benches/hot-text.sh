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
# How: runs a release build with symbols under callgrind, at the default log
# level as the benchmarks and most deployments do (the info lines of start-up
# and of each change are formatted: their code is hot too), through the usual
# lives of the binary (etcd --watch with a change, etcd --onetime, file-backend
# --watch with a change, `sidekick exec` with a reload signal, Consul, Rancher
# and Kubernetes --watch with a change each), and
# writes one linker-script line per function run, with the hash of the symbol
# left as a wildcard so that the list survives rebuilds and most edits. Needs
# valgrind, etcd (etcd-server), curl and python3. Consul's agent and the
# Kubernetes API server are small stand-ins written below (the KV, catalog and
# health endpoints with blocking queries; list and watch of ConfigMaps): only
# which code runs matters here, and the backends' own tests check the protocol
# against fuller servers. Rancher's is `sidekick metadata-server` itself.
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
# HOT_TEXT_DRY=1 SIDEKICK_BIN=target/debug/sidekick runs the scenarios without
# callgrind and writes nothing, to check them quickly.
if [ -z "${SIDEKICK_BIN:-}" ]; then
  CARGO_TARGET_DIR=target/hot-text CARGO_PROFILE_RELEASE_STRIP=none \
    cargo build --release --bin sidekick
  SIDEKICK_BIN=target/hot-text/release/sidekick
fi
exec python3 - "$SIDEKICK_BIN" build/hot-text.ld <<'PY'
import os, re, shutil, signal, socket, subprocess, sys, tempfile, threading, time, base64, json, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

binary, out_path = os.path.abspath(sys.argv[1]), sys.argv[2]
DRY = os.environ.get("HOT_TEXT_DRY") == "1"
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
    if DRY:
        proc = subprocess.Popen([binary] + args, stdout=subprocess.DEVNULL,
                                stderr=open(f"{tmp}/{name}.log", "w"))
        return proc, None
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--demangle=no",
                             f"--callgrind-out-file={profile}", binary] + args,
                            stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/{name}.log", "w"))
    return proc, profile


class Store:
    """Values and an index that moves on every change; readers block on it."""

    def __init__(self, values):
        self.values, self.index, self.cond = dict(values), 1, threading.Condition()

    def set(self, key, value):
        with self.cond:
            self.values[key] = value
            self.index += 1
            self.cond.notify_all()

    def wait_past(self, index, secs):
        with self.cond:
            self.cond.wait_for(lambda: self.index > index, timeout=secs)
            return self.index, dict(self.values)


def serve(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def consul_agent(store):
    """/v1/kv/<prefix>?recurse, /v1/catalog/services and /v1/health/service/web,
    each a blocking query on the store's index (X-Consul-Index)."""

    class Agent(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            url = urlparse(self.path)
            query = parse_qs(url.query)
            index, values = store.wait_past(int(query.get("index", ["0"])[0]), 5)
            if url.path.startswith("/v1/kv/"):
                prefix = url.path[len("/v1/kv/"):]
                body = [{"Key": k, "Value": base64.b64encode(v.encode()).decode(),
                         "CreateIndex": 1, "ModifyIndex": index, "LockIndex": 0, "Flags": 0}
                        for k, v in sorted(values.items()) if k.startswith(prefix)]
            elif url.path == "/v1/catalog/services":
                body = {"web": []}
            elif url.path == "/v1/health/service/web":
                body = [{"Node": {"Node": "n1", "Address": "10.0.0.1"},
                         "Service": {"ID": "web-1", "Service": "web", "Address": values["web"],
                                     "Port": 80, "Tags": []},
                         "Checks": [{"Status": "passing"}]}]
            else:
                body = None
            data = json.dumps(body).encode()
            self.send_response(200 if body is not None else 404)
            for name, value in [("Content-Type", "application/json"), ("X-Consul-Index", str(index)),
                                ("X-Consul-KnownLeader", "true"), ("X-Consul-LastContact", "0"),
                                ("Content-Length", str(len(data)))]:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return serve(Agent)


def kube_apiserver(store):
    """ConfigMap `app` in namespace `default`: list, and watch as a chunked
    stream of MODIFIED events, one per store change."""

    def configmap(index, values):
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "app", "namespace": "default", "uid": "u1",
                             "resourceVersion": str(index)},
                "data": values}

    class Api(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def chunk(self, obj):
            data = json.dumps(obj).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def do_GET(self):
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if url.path != "/api/v1/namespaces/default/configmaps":
                data = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "reason": "NotFound", "code": 404}).encode()
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            index, values = store.wait_past(0, 0)
            if query.get("watch", ["false"])[0] not in ("true", "1"):
                data = json.dumps({"apiVersion": "v1", "kind": "ConfigMapList",
                                   "metadata": {"resourceVersion": str(index)},
                                   "items": [configmap(index, values)]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            seen = int(query.get("resourceVersion", ["0"])[0] or 0)
            end = time.time() + int(query.get("timeoutSeconds", ["30"])[0])
            try:
                while time.time() < end:
                    index, values = store.wait_past(seen, 1)
                    if index > seen:
                        seen = index
                        self.chunk({"type": "MODIFIED", "object": configmap(index, values)})
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass

    return serve(Api)


def vault_server(store):
    """KV v2 mount `kv` with a token that looks itself up: LIST and read of
    metadata (current_version), and data reads."""

    class Vault(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            url = urlparse(self.path)
            path = url.path
            _, values = store.wait_past(0, 0)
            if path == "/v1/auth/token/lookup-self":
                body = {"data": {"ttl": 0, "renewable": False}}
            elif path.startswith("/v1/kv/metadata/") and "list" in parse_qs(url.query):
                d = path[len("/v1/kv/metadata/"):]
                names = sorted({k[len(d):].split("/")[0] + ("/" if "/" in k[len(d):] else "")
                                for k in values if k.startswith(d)})
                body = {"data": {"keys": names}} if names else None
            elif path.startswith("/v1/kv/metadata/"):
                k = path[len("/v1/kv/metadata/"):]
                v = values.get(k)
                body = v and {"data": {"current_version": v[0], "versions": {
                    str(v[0]): {"deletion_time": "", "destroyed": False}}}}
            elif path.startswith("/v1/kv/data/"):
                v = values.get(path[len("/v1/kv/data/"):])
                body = v and {"data": {"data": v[1], "metadata": {"version": v[0]}}}
            else:
                body = None
            data = json.dumps(body if body else {"errors": []}).encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return serve(Vault)


def redis(port, *words):
    """One command to a redis-server, in RESP; its reply is read and dropped."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"*%d\r\n" % len(words) + b"".join(
            b"$%d\r\n%s\r\n" % (len(w.encode()), w.encode()) for w in words))
        c.recv(1024)


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
        etcd_args = ["--backend", "etcdv3", "--node", url]

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
    file_args = ["--backend", "file", "--file", data]
    # With the operations endpoints on, scraped: their code is hot too.
    ops = f"127.0.0.1:{free_port()}"
    proc, profile = grind(tmp, "file-watch", file_args + ["--watch", "--confdir", f"{tmp}/file",
                                                          "--metrics-addr", ops])
    wait_for(dest, "/app/k099=value-99")
    with open(data, "a") as f:
        f.write("  k100: added\n")
    wait_for(dest, "/app/k100=added")
    for path in ["/metrics", "/healthz", "/readyz", "/metrics"]:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://{ops}{path}", timeout=30).read()
                break
            except OSError:
                time.sleep(0.2)
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

    # 5. Consul --watch: KV keys and a service's healthy instances, one change each.
    store = Store({f"idle/k{i:03}": f"value-{i}" for i in range(100)} | {"web": "10.0.0.1"})
    agent, agent_url = consul_agent(store)
    dest = confdir(f"{tmp}/consul", "idle", "/idle")
    shutil.copytree("examples/consul/templates", f"{tmp}/consul/templates", dirs_exist_ok=True)
    with open(f"{tmp}/consul/conf.d/upstream.toml", "w") as f:
        f.write(f'[template]\nsrc = "upstream.conf.tmpl"\ndest = "{tmp}/consul/upstream.out"\n'
                'keys = []\n')
    proc, profile = grind(tmp, "consul-watch", ["--backend", "consul", "--node", agent_url,
                                                "--watch",
                                                "--confdir", f"{tmp}/consul"])
    wait_for(dest, "/idle/k099=value-99")
    wait_for(f"{tmp}/consul/upstream.out", "10.0.0.1:80")
    store.set("idle/k050", "changed")
    wait_for(dest, "/idle/k050=changed")
    store.set("web", "10.0.0.2")
    wait_for(f"{tmp}/consul/upstream.out", "10.0.0.2:80")
    stop(proc)
    agent.shutdown()
    profiles.append(profile)

    # 6. Rancher --watch against `sidekick metadata-server`: an answers edit.
    answers = f"{tmp}/answers.yaml"
    shutil.copy("examples/zookeeper/answers-3.yaml", answers)
    shutil.copytree("examples/zookeeper", f"{tmp}/zk")
    for toml in os.listdir(f"{tmp}/zk/conf.d"):
        path = f"{tmp}/zk/conf.d/{toml}"
        text = open(path).read().replace("examples/zookeeper/out", f"{tmp}/zk/out")
        open(path, "w").write(text)
    meta_port = free_port()
    meta = subprocess.Popen([binary, "metadata-server", "--listen", f"127.0.0.1:{meta_port}",
                             "--file", answers],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{meta_port}/latest/version", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        proc, profile = grind(tmp, "rancher-watch", ["--backend", "rancher", "--node",
                                                     f"http://127.0.0.1:{meta_port}",
                                                     "--self", "zk-zookeeper-2", 
                                                     "--watch", "--confdir", f"{tmp}/zk"])
        wait_for(f"{tmp}/zk/out/zoo.cfg", "10.42.0.12:2888")
        text = open(answers).read().replace("10.42.0.12", "10.42.0.22")
        with open(answers + ".tmp", "w") as f:
            f.write(text)
        os.rename(answers + ".tmp", answers)
        wait_for(f"{tmp}/zk/out/zoo.cfg", "10.42.0.22:2888")
        stop(proc)
        profiles.append(profile)
    finally:
        meta.terminate()
        meta.wait()

    # 7. Kubernetes --watch: a ConfigMap listed, then modified.
    store = Store({f"k{i:03}": f"value-{i}" for i in range(100)})
    api, api_url = kube_apiserver(store)
    kubeconfig = f"{tmp}/kubeconfig"
    with open(kubeconfig, "w") as f:
        f.write(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{api_url}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u, namespace: default}}}}]
current-context: x
""")
    dest = confdir(f"{tmp}/kube", "app", "/configmaps/app")
    proc, profile = grind(tmp, "kubernetes-watch", ["--backend", "kubernetes", "--kubeconfig", kubeconfig,
                                                    "--watch",
                                                    "--confdir", f"{tmp}/kube"])
    wait_for(dest, "/configmaps/app/k099=value-99")
    store.set("k050", "changed")
    wait_for(dest, "/configmaps/app/k050=changed")
    stop(proc)
    api.shutdown()
    profiles.append(profile)

    # 8. Vault --watch (it polls): 20 KV v2 secrets read, one changed.
    store = Store({f"app/s{i:02}": (1, {"user": f"u{i}", "password": f"p{i}"}) for i in range(20)})
    vault, vault_url = vault_server(store)
    os.makedirs(f"{tmp}/vault", exist_ok=True)
    dest = confdir(f"{tmp}/vault", "app", "/kv/app")
    proc, profile = grind(tmp, "vault-watch", ["--backend", "vault", "--node", vault_url,
                                               "--vault-token", "t", "--vault-mount", "kv",
                                               "--watch", "--interval", "1",
                                               "--confdir", f"{tmp}/vault"])
    wait_for(dest, '/kv/app/s19={"password":"p19","user":"u19"}')
    store.set("app/s05", (2, {"user": "changed", "password": "p5"}))
    wait_for(dest, '"user":"changed"')
    stop(proc)
    vault.shutdown()
    profiles.append(profile)

    # 9. Redis --watch (keyspace notifications), when redis-server is there.
    server = shutil.which("redis-server")
    if server:
        port = free_port()
        rs = subprocess.Popen([server, "--port", str(port), "--save", "", "--appendonly", "no",
                               "--dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    redis(port, "PING")
                    break
                except OSError:
                    time.sleep(0.1)
            for i in range(100):
                redis(port, "SET", f"/idle/k{i:03}", f"value-{i}")
            dest = confdir(f"{tmp}/redis", "idle", "/idle")
            proc, profile = grind(tmp, "redis-watch", ["--backend", "redis", "--node",
                                                       f"redis://127.0.0.1:{port}",
                                                       "--redis-notify-config", "--watch",
                                                       "--confdir", f"{tmp}/redis"])
            wait_for(dest, "/idle/k099=value-99")
            redis(port, "SET", "/idle/k050", "changed")
            wait_for(dest, "/idle/k050=changed")
            stop(proc)
            profiles.append(profile)
        finally:
            rs.terminate()
            rs.wait()

    if DRY:
        print(f"hot-text: {len(profiles)} scenarios ran (dry run: nothing written)")
        sys.exit(0)

    # Functions run, in order of first sight, as text symbols of the binary.
    nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True,
                        check=True).stdout
    text = {p[2] for p in (l.split() for l in nm.splitlines()) if len(p) == 3 and p[1] in "tT"}
    # Order: functions most scenarios run first (start-up, rendering, the
    # event loop), then by first sight with the file backend and `exec`
    # scenarios before the network backends, so that what one idle process
    # keeps is one run of pages rather than pieces spread over all backends'.
    first = ["exec", "file-watch", "etcd-watch", "etcd-onetime"]
    profiles.sort(key=lambda p: next((i for i, n in enumerate(first)
                                      if os.path.basename(p) == n + ".cg"), len(first)))
    order, runs = {}, {}
    for profile in profiles:
        here = set()
        for line in open(profile):
            m = re.match(r"c?fn=\(\d+\) (.+)", line)
            if not m or m.group(1).strip() not in text:
                continue
            name = m.group(1).strip()
            # v0 names (.cargo/config.toml) carry crate hashes (Cs<base62>_),
            # which change between builds: wildcard them. A legacy name (set
            # RUSTFLAGS without v0) ends in a hash (17h<16 hex>E) whose wildcard
            # matches every instance of a generic function.
            pattern = re.sub(r"17h[0-9a-f]{16}E$", "17h*", name)
            if pattern.startswith("_R"):
                pattern = re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", pattern)
                # Backrefs (B<base62>_) are offsets into the name, which move
                # when a crate hash is a character shorter in another build.
                pattern = re.sub(r"B[0-9A-Za-z]*_", "B*_", pattern)
            # A local copy LTO made (`name.1802`) is numbered anew by each build.
            pattern = re.sub(r"\.[0-9]+$", ".*", pattern)
            order.setdefault(pattern, len(order))
            here.add(pattern)
        for pattern in here:
            runs[pattern] = runs.get(pattern, 0) + 1
    patterns = sorted(order, key=lambda p: (-runs[p], order[p]))

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
