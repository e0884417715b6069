//! confd drop-in (issue 14): the real sidekick binary with `--template-engine
//! go` on confd's own integration suite and on the cases of confd's
//! `resource/template/template_test.go`, compared byte for byte with confd's
//! expected outputs.
//!
//! The fixtures under `tests/fixtures/confd/` are confd's files unchanged
//! (see its README). Each backend's data comes from confd's own loading
//! script, read here: the heredocs of `file/test.sh`, the `export`s of
//! `env/test.sh`, the `etcdctl put`s of `etcdv3/test.sh`; and each run uses the
//! `confd ...` command line of that script with the binary renamed. The one
//! change: the resources' `dest` directory `/tmp/` becomes the test's own
//! output directory, so that tests running at once do not share files.
//! Under `CI=true` a missing etcd is a failure.

use std::path::{Path, PathBuf};

use crate::harness::{self as util, Dir, Output, TestCommand};
#[cfg(feature = "etcd")]
use sidekick_testkit::etcd::Etcd;

/// `tests/fixtures/confd/REL`.
fn fixture(rel: &str) -> PathBuf {
    util::repo_root().join("tests/fixtures/confd").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// confd's `integration/confdir` copied into a fresh directory, the
/// resources' `dest = "/tmp/..."` pointed at `out/` there.
fn integration_confdir() -> Dir {
    let dir = Dir::new();
    for sub in ["conf.d", "templates"] {
        let from = fixture(&format!("confdir/{sub}"));
        for entry in std::fs::read_dir(&from).unwrap() {
            let path = entry.unwrap().path();
            let mut text = read(&path);
            if sub == "conf.d" {
                text = text.replace("dest = \"/tmp/", &format!("dest = \"{}/", dir.out_dir()));
            }
            dir.write(
                format!("{sub}/{}", path.file_name().unwrap().to_string_lossy()),
                &text,
            );
        }
    }
    dir
}

/// The `confd ...` line of a confd integration script, as arguments for
/// sidekick, with `--template-engine go` added and `./integration/confdir`
/// and each `(from, to)` of `replace` swapped.
fn confd_command(script: &str, confdir: &Path, replace: &[(&str, &str)]) -> Vec<String> {
    let line = script
        .lines()
        .find(|l| l.starts_with("confd "))
        .expect("the script runs confd");
    let mut args: Vec<String> = vec!["--template-engine".into(), "go".into()];
    for word in line.split_whitespace().skip(1) {
        let mut w = word.to_string();
        if w == "./integration/confdir" {
            w = confdir.display().to_string();
        }
        for (from, to) in replace {
            if w == *from {
                w = to.to_string();
            }
        }
        args.push(w);
    }
    args
}

/// `export NAME="VALUE"` lines of a script.
fn exports(script: &str) -> Vec<(String, String)> {
    script
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// The files a script writes with `cat <<EOT >> PATH` ... `EOT`.
fn heredocs(script: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut lines = script.lines();
    while let Some(line) = lines.next() {
        if let Some(path) = line.strip_prefix("cat <<EOT >> ") {
            let mut body = String::new();
            for l in lines.by_ref() {
                if l == "EOT" {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            files.push((path.to_string(), body));
        }
    }
    files
}

/// `etcdctl put KEY VALUE` lines of a script.
#[cfg(feature = "etcd")]
fn etcd_puts(script: &str) -> Vec<(String, String)> {
    script
        .lines()
        .filter_map(|l| l.strip_prefix("etcdctl put "))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What confd's `expect/check.sh` diffs: each `/tmp/confd-*.conf` against
/// `integration/expect/*`, here in `out/`.
fn check_expected(dir: &Dir) {
    let check = read(&fixture("expect/check.sh"));
    let mut checked = 0;
    for line in check.lines().filter_map(|l| l.strip_prefix("diff /tmp/")) {
        let (got, want) = line.split_once(' ').unwrap();
        let want = want.strip_prefix("integration/").unwrap();
        assert_eq!(
            dir.read(format!("out/{got}")),
            read(&fixture(want)),
            "{got} differs from confd's {want}"
        );
        checked += 1;
    }
    assert_eq!(checked, 4, "check.sh diffs four files");
}

/// What confd renders for `nested.conf.tmpl` over `/nested/app1` and
/// `/nested/app2` (check.sh does not diff it; this is Go's output of the
/// template, whitespace as written).
const NESTED: &str = "upstream app {\n\n  \n    server 10.0.1.10:8080;\n  \n\n  \n    server 10.0.1.11:8080;\n  \n\n}\n\nserver {\n    server_name  www.example.com;\n    location / {\n        proxy_pass        http://app;\n        proxy_redirect    off;\n        proxy_set_header  Host             $host;\n        proxy_set_header  X-Real-IP        $remote_addr;\n        proxy_set_header  X-Forwarded-For  $proxy_add_x_forwarded_for;\n   }\n}\n";

#[test]
fn integration_file_backend() {
    let dir = integration_confdir();
    let script = read(&fixture("file/test.sh"));
    let work = dir.path("work");
    for (path, body) in heredocs(&script) {
        util::write_file(&work.join(path), &body);
    }
    let mut cmd = TestCommand::new(&work);
    cmd.args(confd_command(&script, dir.root(), &[]));
    for (k, v) in exports(&script) {
        cmd.env(&k, v);
    }
    cmd.run();
    check_expected(&dir);
    assert_eq!(dir.read("out/confd-nested-test.conf"), NESTED);
}

#[test]
fn integration_env_backend() {
    let dir = integration_confdir();
    let script = read(&fixture("env/test.sh"));
    let mut cmd = TestCommand::new(dir.root());
    cmd.args(confd_command(&script, dir.root(), &[]));
    for (k, v) in exports(&script) {
        cmd.env(&k, v);
    }
    cmd.run();
    check_expected(&dir);
}

#[cfg(feature = "etcd")]
#[test]
fn integration_etcd() {
    let Some(etcd) = Etcd::start() else { return };
    let dir = integration_confdir();
    let script = read(&fixture("etcdv3/test.sh"));
    for (k, v) in etcd_puts(&script) {
        etcd.put(&k, &v);
    }
    let url = etcd.url();
    let mut cmd = TestCommand::new(dir.root());
    cmd.args(confd_command(
        &script,
        dir.root(),
        &[("http://127.0.0.1:2379", &url)],
    ));
    for (k, v) in exports(&script) {
        cmd.env(&k, v);
    }
    cmd.run();
    check_expected(&dir);
}

/// One case of confd's `template_test.go`: its toml, template, the keys its
/// `updateStore` sets, and what confd writes (any of several when it depends
/// on the host's resolver).
struct Case {
    desc: &'static str,
    toml: &'static str,
    tmpl: &'static str,
    store: &'static [(&'static str, &'static str)],
    expected: &'static [&'static str],
}

/// Every case of `template_test.go` a backend can hold. Left out: "jsonArray
/// test", whose store key is `/test/data/` with a trailing slash; confd's own
/// loading cleans every key (`path.Join`), so no backend gives confd that key.
const CASES: &[Case] = &[
    Case {
        desc: "base, get test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\nkeys = [\n    \"/test/key\",\n]\n",
        tmpl: "\n{{with get \"/test/key\"}}\nkey: {{base .Key}}\nval: {{.Value}}\n{{end}}\n",
        store: &[("/test/key", "abc")],
        expected: &["\n\nkey: key\nval: abc\n\n"],
    },
    Case {
        desc: "gets test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\nkeys = [\n    \"/test/user\",\n    \"/test/pass\",\n    \"/nada/url\",\n]\n",
        tmpl: "\n{{range gets \"/test/*\"}}\nkey: {{.Key}}\nval: {{.Value}}\n{{end}}\n",
        store: &[("/test/user", "mary"), ("/test/pass", "abc"), ("/nada/url", "url")],
        expected: &["\n\nkey: /test/pass\nval: abc\n\nkey: /test/user\nval: mary\n\n"],
    },
    Case {
        desc: "getv test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\nkeys = [\n    \"/test/url\",\n    \"/test/user\",\n]\n",
        tmpl: "\nurl = {{getv \"/test/url\"}}\nuser = {{getv \"/test/user\"}}\n",
        store: &[("/test/url", "http://www.abc.com"), ("/test/user", "bob")],
        expected: &["\nurl = http://www.abc.com\nuser = bob\n"],
    },
    Case {
        desc: "getvs test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\nkeys = [\n    \"/test/user\",\n    \"/test/pass\",\n    \"/nada/url\",\n]\n",
        tmpl: "\n{{range getvs \"/test/*\"}}\nval: {{.}}\n{{end}}\n",
        store: &[("/test/user", "mary"), ("/test/pass", "abc"), ("/nada/url", "url")],
        expected: &["\n\nval: abc\n\nval: mary\n\n"],
    },
    Case {
        desc: "split test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\nkeys = [\n    \"/test/data\",\n]\n",
        tmpl: "\n{{$data := split (getv \"/test/data\") \":\"}}\nf: {{index $data 0}}\nbr: {{index $data 1}}\nbz: {{index $data 2}}\n",
        store: &[("/test/data", "foo:bar:baz")],
        expected: &["\n\nf: foo\nbr: bar\nbz: baz\n"],
    },
    Case {
        desc: "toUpper test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\nkeys = [\n    \"/test/data/\",\n]\n",
        tmpl: "\n{{$data := toUpper (getv \"/test/data\") }}\nkey: {{$data}}\n",
        store: &[("/test/data", "Value")],
        expected: &["\n\nkey: VALUE\n"],
    },
    Case {
        desc: "toLower test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\nkeys = [\n    \"/test/data/\",\n]\n",
        tmpl: "\n{{$data := toLower (getv \"/test/data\") }}\nkey: {{$data}}\n",
        store: &[("/test/data", "Value")],
        expected: &["\n\nkey: value\n"],
    },
    Case {
        desc: "json test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\nkeys = [\n    \"/test/data/\",\n]\n",
        tmpl: "\n{{range getvs \"/test/data/*\"}}\n{{$data := json .}}\nid: {{$data.Id}}\nip: {{$data.IP}}\n{{end}}\n",
        store: &[
            ("/test/data/1", "{\"Id\":\"host1\", \"IP\":\"192.168.10.11\"}"),
            ("/test/data/2", "{\"Id\":\"host2\", \"IP\":\"192.168.10.12\"}"),
        ],
        expected: &["\n\n\nid: host1\nip: 192.168.10.11\n\n\nid: host2\nip: 192.168.10.12\n\n"],
    },
    Case {
        desc: "ls test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\nkeys = [\n    \"/test/data/abc\",\n    \"/test/data/def\",\n    \"/test/data/ghi\",\n]\n",
        tmpl: "\n{{range ls \"/test/data\"}}\nvalue: {{.}}\n{{end}}\n",
        store: &[("/test/data/abc", "123"), ("/test/data/def", "456"), ("/test/data/ghi", "789")],
        expected: &["\n\nvalue: abc\n\nvalue: def\n\nvalue: ghi\n\n"],
    },
    Case {
        desc: "lsdir test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\nkeys = [\n    \"/test/data/abc\",\n    \"/test/data/def/ghi\",\n    \"/test/data/jkl/mno\",\n]\n",
        tmpl: "\n{{range lsdir \"/test/data\"}}\nvalue: {{.}}\n{{end}}\n",
        store: &[("/test/data/abc", "123"), ("/test/data/def/ghi", "456"), ("/test/data/jkl/mno", "789")],
        expected: &["\n\nvalue: def\n\nvalue: jkl\n\n"],
    },
    Case {
        desc: "dir test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\nkeys = [\n    \"/test/data\",\n    \"/test/data/abc\",\n]\n",
        tmpl: "\n{{with dir \"/test/data/abc\"}}\ndir: {{.}}\n{{end}}\n",
        store: &[("/test/data", "parent"), ("/test/data/def", "child")],
        expected: &["\n\ndir: /test/data\n\n"],
    },
    Case {
        desc: "ipv4 lookup test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\nkeys = [\n    \"/test/data\",\n    \"/test/data/abc\",\n]\n",
        tmpl: "\n{{range lookupIPV4 \"localhost\"}}\nip: {{.}}\n{{end}}\n",
        store: &[("/test/data", "parent"), ("/test/data/def", "child")],
        expected: &["\n\nip: 127.0.0.1\n\n"],
    },
    // confd lists "\nip: ::1\n\n" and "\n\n"; its check of a list of
    // expectations always fails, and the template gives "\n\nip: ::1\n\n"
    // when localhost has ::1, which is what confd writes then.
    Case {
        desc: "ipv6 lookup test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\nkeys = [\n    \"/test/data\",\n    \"/test/data/abc\",\n]\n",
        tmpl: "\n{{range lookupIPV6 \"localhost\"}}\nip: {{.}}\n{{end}}\n",
        store: &[("/test/data", "parent"), ("/test/data/def", "child")],
        expected: &["\n\nip: ::1\n\n", "\n\n"],
    },
    Case {
        desc: "ip lookup test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\nkeys = [\n    \"/test/data\",\n    \"/test/data/abc\",\n]\n",
        tmpl: "\n{{range lookupIP \"localhost\"}}\nip: {{.}}\n{{end}}\n",
        store: &[("/test/data", "parent"), ("/test/data/def", "child")],
        expected: &[
            "\n\nip: 127.0.0.1\n\n",
            "\n\nip: 127.0.0.1\n\nip: ::1\n\n",
            "\n\nip: ::1\n\n",
        ],
    },
    Case {
        desc: "base64Encode test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\nkeys = [\n    \"/test/data/\",\n]\n",
        tmpl: "\n{{$data := base64Encode (getv \"/test/data\") }}\nkey: {{$data}}\n",
        store: &[("/test/data", "Value")],
        expected: &["\n\nkey: VmFsdWU=\n"],
    },
    Case {
        desc: "base64Decode test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\nkeys = [\n    \"/test/data/\",\n]\n",
        tmpl: "\n{{$data := base64Decode (getv \"/test/data\") }}\nkey: {{$data}}\n",
        store: &[("/test/data", "VmFsdWU=")],
        expected: &["\n\nkey: Value\n"],
    },
    Case {
        desc: "seq test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\n",
        tmpl: "\n{{ seq 1 3 }}\n",
        store: &[],
        expected: &["\n[1 2 3]\n"],
    },
    Case {
        desc: "atoi test",
        toml: "\n[template]\nsrc = \"test.conf.tmpl\"\ndest = \"./tmp/test.conf\"\nkeys = [\n    \"/test/count/\",\n]\n",
        tmpl: "\n{{ seq 1 (atoi (getv \"/test/count\")) }}\n",
        store: &[("/test/count", "3")],
        expected: &["\n[1 2 3]\n"],
    },
];

/// A confdir holding `case`'s resource (as `conf.d/config.toml`, confd's
/// name) and template, its dest moved to `out/test.conf`.
fn case_dir(case: &Case) -> Dir {
    let dir = Dir::new();
    dir.resource(
        "config",
        &case
            .toml
            .replace("\"./tmp/test.conf\"", "\"@OUT@/test.conf\""),
    );
    dir.template("test.conf.tmpl", case.tmpl);
    dir
}

fn check_case(case: &Case, dir: &Dir, failures: &mut Vec<String>) {
    let got = dir.try_read("out/test.conf").unwrap_or_default();
    if !case.expected.contains(&got.as_str()) {
        failures.push(format!(
            "{}: got {got:?}, confd writes {:?}",
            case.desc, case.expected
        ));
    }
}

/// `/test/data/def` is variable `TEST_DATA_DEF`, as the env backend maps keys.
fn env_name(key: &str) -> String {
    key.trim_start_matches('/').replace('/', "_").to_uppercase()
}

/// Runs every case in its own confdir through `run` (which starts sidekick on
/// it) and asserts that each wrote what confd writes.
fn run_cases(mut run: impl FnMut(usize, &Case, &Dir) -> Output) {
    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let dir = case_dir(case);
        let out = run(i, case, &dir);
        if !out.status.success() {
            failures.push(format!("{}: {out}", case.desc));
            continue;
        }
        check_case(case, &dir, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn template_test_cases_env_backend() {
    run_cases(|_, case, dir| {
        let mut cmd = dir.command();
        cmd.args(["--template-engine", "go", "--backend", "env", "--onetime"]);
        for (k, v) in case.store {
            cmd.env(&env_name(k), v);
        }
        cmd.output()
    });
}

#[cfg(feature = "etcd")]
#[test]
fn template_test_cases_etcd() {
    let Some(etcd) = Etcd::start() else { return };
    run_cases(|i, case, dir| {
        // Each case under its own prefix, so the stores do not mix.
        let prefix = format!("/case{i}");
        for (k, v) in case.store {
            etcd.put(&format!("{prefix}{k}"), v);
        }
        dir.command()
            .args([
                "--template-engine",
                "go",
                "--backend",
                "etcdv3",
                "--onetime",
            ])
            .args(["--node", &etcd.url(), "--prefix", &prefix])
            .output()
    });
}

/// A confd confdir as confd reads it: field names in any case (`[Template]`,
/// `Src`, `Dest`, `Keys`), resources in subdirectories of conf.d, and the
/// command line written with Go's single-dash flags.
#[test]
fn confd_resource_files_and_command_line_as_confd_reads_them() {
    let dir = Dir::new();
    dir.template("a.tmpl", "a={{getv \"/app/a\"}}\n");
    dir.write(
        "conf.d/sub/deeper/a.toml",
        "[Template]\nSrc = \"a.tmpl\"\nDEST = \"@OUT@/a.conf\"\nKeys = [\"/app\"]\n",
    );
    let out = TestCommand::new(dir.root())
        .args([
            "-onetime",
            "-template-engine=go",
            "-backend",
            "env",
            "-confdir",
        ])
        .arg(dir.root())
        .env("APP_A", "1")
        .run();
    assert_eq!(dir.read("out/a.conf"), "a=1\n", "{out}");
}

/// `engine` in a resource wins over `--template-engine`; both engines render
/// side by side with the same keys and the same confd semantics.
#[test]
fn resource_engine_overrides_the_flag() {
    let dir = Dir::new();
    dir.data("app:\n  hosts:\n    b: 10.0.0.1\n    a: 10.0.0.2\n");
    dir.template(
        "go.tmpl",
        "{{range getvs \"/app/hosts/*\"}}{{.}} {{end}}{{getenv \"SIDEKICK_TEST_EMPTY\" \"d\"}}\n",
    );
    dir.template(
        "tera.tmpl",
        "{% for v in getvs(pattern=\"/app/hosts/*\") %}{{ v }} {% endfor %}{{ getenv(name=\"SIDEKICK_TEST_EMPTY\", default=\"d\") }}\n",
    );
    dir.resource(
        "go",
        "[template]\nsrc = \"go.tmpl\"\ndest = \"@OUT@/go.conf\"\nkeys = [\"/app\"]\nengine = \"go\"\n",
    );
    dir.resource(
        "tera",
        "[template]\nsrc = \"tera.tmpl\"\ndest = \"@OUT@/tera.conf\"\nkeys = [\"/app\"]\n",
    );
    dir.onetime().env("SIDEKICK_TEST_EMPTY", "").run();
    // getvs sorts the values; an empty variable gives the default (confd).
    assert_eq!(dir.read("out/go.conf"), "10.0.0.1 10.0.0.2 d\n");
    assert_eq!(dir.read("out/tera.conf"), "10.0.0.1 10.0.0.2 d\n");

    // The flag decides for resources that name no engine.
    dir.resource(
        "tera",
        "[template]\nsrc = \"go.tmpl\"\ndest = \"@OUT@/tera.conf\"\nkeys = [\"/app\"]\n",
    );
    dir.onetime()
        .args(["--template-engine", "go"])
        .env("SIDEKICK_TEMPLATE_ENGINE", "tera")
        .run();
    assert_eq!(dir.read("out/tera.conf"), "10.0.0.1 10.0.0.2 d\n");

    let out = dir
        .onetime()
        .env("SIDEKICK_TEMPLATE_ENGINE", "jinja")
        .run_fail();
    out.assert_stderr_has(&["jinja"]);
}

/// A bad `engine` names the file, line and field.
#[test]
fn bad_engine_names_file_line_and_field() {
    let dir = Dir::new();
    dir.data("x: 1\n");
    dir.template("a.tmpl", "x\n");
    let file = dir.resource(
        "a",
        "[template]\nsrc = \"a.tmpl\"\ndest = \"@OUT@/a.conf\"\nengine = \"jinja\"\n",
    );
    let out = dir.onetime().run_fail();
    out.assert_stderr_has(&[&format!("{}:4", file.display()), "field `engine`", "jinja"]);
}

/// A Go template given to the Tera engine says which engine it needs.
#[test]
fn go_template_on_tera_names_the_go_engine() {
    let dir = Dir::new();
    dir.data("x: 1\n");
    dir.simple("a", "{{ range gets \"/x\" }}{{ .Value }}{{ end }}\n", "");
    let out = dir.onetime().run_fail();
    out.assert_stderr_has(&["--template-engine go"]);
}

/// Dev mode shows a Go template's errors with file and line, and keeps the
/// last good output.
#[test]
fn dev_mode_shows_go_errors_with_file_and_line() {
    let dir = Dir::new();
    dir.data("greeting: hello\n");
    dir.simple("app", "{{getv \"/greeting\"}}\n", "");
    let mut p = dir
        .command()
        .args(["dev", "--template-engine", "go", "--file"])
        .arg(dir.path("data.yaml"))
        .spawn();
    p.wait_for_file(&dir.out("app.conf"), "hello\n");

    let mark = p.stdout_mark();
    let tmpl = dir.template("app.tmpl", "fine\n{{getv \"/greeting\"\n");
    // Go's own words: the action runs to the end of the text.
    p.wait_stdout_after(
        mark,
        &format!(
            "{}:3: unclosed action started at app.tmpl:2",
            tmpl.display()
        ),
    );

    let mark = p.stdout_mark();
    dir.template("app.tmpl", "fine\nline {{getv \"/nope\"}}\n");
    let out = p.wait_stdout_after(mark, &format!("{}:2:7", tmpl.display()));
    assert!(out.contains("key not found: /nope"), "{out}");
    assert_eq!(dir.read("out/app.conf"), "hello\n", "last good output kept");

    dir.template("app.tmpl", "{{getv \"/greeting\" | toUpper}}\n");
    p.wait_for_file(&dir.out("app.conf"), "HELLO\n");
}

/// YAML data as confd's file backend reads it (YAML 1.1 scalars; a null
/// value is no key), rendered by a confd template.
#[test]
fn yaml_scalars_as_confds_file_backend_reads_them() {
    let dir = Dir::new();
    dir.data("app:\n  tls: yes\n  debug: off\n  mode: 0755\n  max: 1e3\n  ratio: 1.0\n  quoted: 'yes'\n  unset: ~\n");
    dir.simple(
        "app",
        "{{range gets \"/app/*\"}}{{.Key}}={{.Value}}\n{{end}}{{exists \"/app/unset\"}}\n",
        "",
    );
    dir.onetime().args(["--template-engine", "go"]).run();
    assert_eq!(
        dir.read("out/app.conf"),
        "/app/debug=false\n/app/max=1000\n/app/mode=493\n/app/quoted=yes\n/app/ratio=1\n/app/tls=true\nfalse\n"
    );
}

/// `sidekick convert` turns confd's integration templates into Tera ones that
/// render confd's expected outputs with the default engine.
#[test]
fn convert_writes_tera_templates_that_render_the_same() {
    let dir = integration_confdir();
    dir.write("templates/extra.tmpl", "a\n{{printf \"%05d\" 1}}\n");
    dir.resource(
        "extra",
        "[template]\nsrc = \"extra.tmpl\"\ndest = \"@OUT@/extra.conf\"\nkeys = []\nengine = \"go\"\n",
    );
    let out = dir.path("converted");
    let run = dir.command().arg("convert").arg("--out").arg(&out).run();
    assert!(
        run.stdout.contains(&format!(
            "{}:2: not converted",
            dir.path("templates/extra.tmpl").display()
        )),
        "{run}"
    );
    let extra = read(&out.join("templates/extra.tmpl"));
    assert!(
        extra.contains(
            "{# sidekick convert: line 2 not converted, port it by hand: {{printf \"%05d\" 1}} #}"
        ),
        "{extra}"
    );
    assert!(!read(&out.join("conf.d/extra.toml")).contains("engine"));

    // The converted confdir, on the Tera engine, with confd's env data.
    let script = read(&fixture("env/test.sh"));
    let mut cmd = TestCommand::new(dir.root());
    cmd.args(["--onetime", "--backend", "env", "--confdir"])
        .arg(&out);
    for (k, v) in exports(&script) {
        cmd.env(&k, v);
    }
    cmd.run();
    check_expected(&dir);
    assert_eq!(dir.read("out/extra.conf"), "a\n\n");
}
