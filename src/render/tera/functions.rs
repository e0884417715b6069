//! Tera's template functions, named as in confd so templates port one-to-one:
//! key lookups (`getv`, `get`, `gets`, `getvs`, `exists`, `ls`, `lsdir`), the
//! environment (`getenv`, `fileExists`, `hostname`, `datetime`), DNS
//! (`lookupIP`, `lookupSRV`), `seq`, and the service catalog (`services`,
//! `service`). What each one means lives in [`crate::render::confd`]; here
//! are only Tera's named arguments and values.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use tera::{Error, Kwargs, State, Tera, TeraResult, Value};

use super::args::Args;
use crate::render::confd::{self, FuncError, Scope, Slot};

/// Default `datetime` format: RFC 3339 to the second, local time.
const DEFAULT_DATETIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%:z";

/// A shared function's error as Tera's, prefixed with the function's name.
fn fail(what: &str) -> impl Fn(FuncError) -> Error + '_ {
    move |e| Error::message(format!("{what}: {e}"))
}

/// Registers every function; the key and catalog functions read `slot`.
pub(super) fn register(tera: &mut Tera, slot: &Slot) {
    macro_rules! scoped {
        ($name:literal, $f:path) => {{
            let slot = Arc::clone(slot);
            tera.register_function($name, move |kwargs: Kwargs, _: &State| {
                let scope: Arc<Scope> = confd::current(&slot).map_err(|e| Error::message(e.0))?;
                $f(&scope, &kwargs)
            });
        }};
    }
    scoped!("getv", getv);
    scoped!("get", get);
    scoped!("gets", gets);
    scoped!("getvs", getvs);
    scoped!("exists", exists);
    scoped!("ls", ls);
    scoped!("lsdir", lsdir);
    scoped!("services", services);
    scoped!("service", service);
    tera.register_function("getenv", getenv);
    tera.register_function("fileExists", file_exists);
    tera.register_function("lookupIP", lookup_ip);
    tera.register_function("lookupIPV4", |k, s: &State| {
        lookup_ip_family(k, s, "lookupIPV4", '.')
    });
    tera.register_function("lookupIPV6", |k, s: &State| {
        lookup_ip_family(k, s, "lookupIPV6", ':')
    });
    tera.register_function("lookupSRV", lookup_srv);
    tera.register_function("seq", seq);
    tera.register_function("datetime", datetime);
    tera.register_function("hostname", hostname);
    for op in ["add", "sub", "mul", "div", "mod"] {
        tera.register_function(op, move |kwargs: Kwargs, _: &State| arith(op, &kwargs));
    }
}

/// confd's integer `add`, `sub`, `mul`, `div`, `mod` (`div(a=-7, b=2)` is
/// -3 and `mod(a=-7, b=2)` -1, truncating as Go does; Tera's own `//` and `%`
/// floor).
fn arith(op: &'static str, kwargs: &Kwargs) -> TeraResult<Value> {
    let args = Args::new(op, kwargs, &["a", "b"])?;
    let (a, b) = (args.req_int("a")?, args.req_int("b")?);
    Ok(confd::arith(op, a, b).map_err(fail(op))?.into())
}

/// `{key, value}`, the shape of confd's KVPair.
fn kv(key: &str, value: &str) -> Value {
    /// Serialized, so Tera builds the map once (`Value::from(Map)` copies it).
    #[derive(serde::Serialize)]
    struct Kv<'a> {
        key: &'a str,
        value: &'a str,
    }
    // Cannot fail: two strings always serialize.
    Value::from_serializable(&Kv { key, value })
}

/// The scope a call reads: its `backend="NAME"` source, or the resource's own.
fn source<'s>(scope: &'s Scope, args: &Args) -> TeraResult<&'s Scope> {
    scope
        .on(args.str("backend")?)
        .map_err(|e| Error::message(e.0))
}

fn getv(scope: &Scope, kwargs: &Kwargs) -> TeraResult<Value> {
    let args = Args::new("getv", kwargs, &["key", "default", "backend"])?;
    let scope = source(scope, &args)?;
    let key = args.req_str("key")?;
    match (scope.lookup(key), args.value("default")?) {
        (Some(v), _) => Ok(Value::from(v)),
        (None, Some(default)) => Ok(default.clone()),
        (None, None) => Err(Error::message(scope.not_found(key).0)),
    }
}

fn get(scope: &Scope, kwargs: &Kwargs) -> TeraResult<Value> {
    let args = Args::new("get", kwargs, &["key", "backend"])?;
    let scope = source(scope, &args)?;
    let key = args.req_str("key")?;
    let (key, value) = scope.get(key).map_err(|e| Error::message(e.0))?;
    Ok(kv(key, value))
}

fn gets(scope: &Scope, kwargs: &Kwargs) -> TeraResult<Value> {
    let args = Args::new("gets", kwargs, &["pattern", "backend"])?;
    let scope = source(scope, &args)?;
    let pattern = args.req_str("pattern")?;
    Ok(scope
        .gets(pattern)
        .into_iter()
        .map(|(k, v)| kv(k, v))
        .collect::<Vec<_>>()
        .into())
}

fn getvs(scope: &Scope, kwargs: &Kwargs) -> TeraResult<Value> {
    let args = Args::new("getvs", kwargs, &["pattern", "backend"])?;
    let scope = source(scope, &args)?;
    Ok(scope.getvs(args.req_str("pattern")?).into())
}

fn exists(scope: &Scope, kwargs: &Kwargs) -> TeraResult<Value> {
    let args = Args::new("exists", kwargs, &["key", "backend"])?;
    let scope = source(scope, &args)?;
    Ok(scope.exists(args.req_str("key")?).into())
}

fn ls(scope: &Scope, kwargs: &Kwargs) -> TeraResult<Value> {
    let args = Args::new("ls", kwargs, &["path", "backend"])?;
    let scope = source(scope, &args)?;
    Ok(scope.ls(args.req_str("path")?).into())
}

fn lsdir(scope: &Scope, kwargs: &Kwargs) -> TeraResult<Value> {
    let args = Args::new("lsdir", kwargs, &["path", "backend"])?;
    let scope = source(scope, &args)?;
    Ok(scope.lsdir(args.req_str("path")?).into())
}

fn services(scope: &Scope, kwargs: &Kwargs) -> TeraResult<Value> {
    let args = Args::new("services", kwargs, &["backend"])?;
    let scope = source(scope, &args)?;
    Ok(scope.services().map_err(|e| Error::message(e.0))?.into())
}

fn service(scope: &Scope, kwargs: &Kwargs) -> TeraResult<Value> {
    let args = Args::new("service", kwargs, &["name", "tag", "passing", "backend"])?;
    let scope = source(scope, &args)?;
    let name = args.req_str("name")?;
    let tag = args.str("tag")?;
    let passing = args.bool("passing")?.unwrap_or(true);
    let instances = scope
        .service(name, tag, passing)
        .map_err(|e| Error::message(e.0))?;
    instances
        .into_iter()
        .map(Value::try_from_serializable)
        .collect::<TeraResult<Vec<Value>>>()
        .map(Value::from)
}

fn getenv(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let args = Args::new("getenv", &kwargs, &["name", "default"])?;
    let name = args.req_str("name")?;
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v.into()),
        // Unset or empty: the default, as confd.
        _ => Ok(args.value("default")?.cloned().unwrap_or_else(|| "".into())),
    }
}

fn file_exists(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let path = Args::new("fileExists", &kwargs, &["path"])?.req_str("path")?;
    Ok(confd::file_exists(path).into())
}

fn lookup_ip(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let name = Args::new("lookupIP", &kwargs, &["name"])?.req_str("name")?;
    Ok(confd::lookup_ip(name).map_err(fail("lookupIP"))?.into())
}

fn lookup_ip_family(
    kwargs: Kwargs,
    _: &State,
    what: &'static str,
    mark: char,
) -> TeraResult<Value> {
    let name = Args::new(what, &kwargs, &["name"])?.req_str("name")?;
    let ips = confd::lookup_ip(name).map_err(fail(what))?;
    Ok(ips
        .into_iter()
        .filter(|ip| ip.contains(mark))
        .collect::<Vec<_>>()
        .into())
}

fn lookup_srv(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let args = Args::new("lookupSRV", &kwargs, &["service", "proto", "name"])?;
    let service = args.str("service")?.unwrap_or("");
    let proto = args.str("proto")?.unwrap_or("");
    let name = args.req_str("name")?;
    let records = confd::lookup_srv(service, proto, name).map_err(fail("lookupSRV"))?;
    Ok(records
        .into_iter()
        .map(|r| {
            let mut m = BTreeMap::new();
            m.insert("target", Value::from(r.target));
            m.insert("port", Value::from(r.port));
            m.insert("priority", Value::from(r.priority));
            m.insert("weight", Value::from(r.weight));
            Value::from(m)
        })
        .collect::<Vec<_>>()
        .into())
}

fn seq(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let args = Args::new("seq", &kwargs, &["start", "end"])?;
    let (start, end) = (args.req_int("start")?, args.req_int("end")?);
    Ok(confd::seq(start, end).map_err(fail("seq"))?.into())
}

fn datetime(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let args = Args::new("datetime", &kwargs, &["format"])?;
    let format = args.str("format")?.unwrap_or(DEFAULT_DATETIME_FORMAT);
    let mut out = String::new();
    // chrono reports a bad format as a fmt::Error (and would panic in to_string).
    write!(out, "{}", chrono::Local::now().format(format))
        .map_err(|_| Error::message(format!("datetime: invalid format `{format}`")))?;
    Ok(out.into())
}

fn hostname(kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    Args::new("hostname", &kwargs, &[])?;
    Ok(confd::hostname().map_err(fail("hostname"))?.into())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sidekick_backend::{Catalog, ServiceInstance};

    use crate::render::testutil::{render, try_render, try_render_view, view, view_with_catalog};

    const KEYS: &[(&str, &str)] = &[
        ("/app/db/host", "db1"),
        ("/app/db/port", "5432"),
        ("/app/upstream/a/host", "10.0.0.1"),
        ("/app/upstream/b/host", "10.0.0.2"),
        ("/app/upstream/b/port", "81"),
        ("/app/flag", "x"),
        ("/other/secret", "s"),
    ];

    fn with_prefix(tpl: &str) -> Result<String, String> {
        try_render_view(tpl, view(KEYS, "/app", &["/app"]))
    }

    #[test]
    fn functions_read_a_named_source_with_backend() {
        let v = crate::render::testutil::with_named(
            view(KEYS, "/app", &["/app"]),
            "secrets",
            &[("/db/password", "pw"), ("/db/user", "u")],
        );
        let tpl = "{{ getv(key=\"/db/host\") }} {{ getv(key=\"/db/password\", backend=\"secrets\") }} \
                   {% for kv in gets(pattern=\"/db/*\", backend=\"secrets\") %}{{ kv.key }} {% endfor %}\
                   {{ exists(key=\"/db/host\", backend=\"secrets\") }} {{ ls(path=\"/db\", backend=\"secrets\") | join(sep=\",\") }}";
        assert_eq!(
            try_render_view(tpl, v.clone()).unwrap(),
            "db1 pw /db/password /db/user false password,user"
        );
        let e =
            try_render_view("{{ getv(key=\"/x\", backend=\"other\") }}", v.clone()).unwrap_err();
        assert!(
            e.contains("backend \"other\" is not one this resource reads"),
            "{e}"
        );
        let e = try_render_view("{{ getv(key=\"/nope\", backend=\"secrets\") }}", v).unwrap_err();
        assert!(e.contains("key not found: /nope"), "{e}");
    }

    #[test]
    fn getv_reads_relative_to_prefix() {
        assert_eq!(with_prefix("{{ getv(key=\"/db/host\") }}").unwrap(), "db1");
        // Keys are matched exactly, as confd's store does: a spelling other
        // than the clean one finds nothing.
        let err = with_prefix("{{ getv(key=\"db//host/\") }}").unwrap_err();
        assert!(
            err.contains(
                "key not found: db//host/ (keys are matched exactly, as in confd: write /db/host)"
            ),
            "{err}"
        );
        assert_eq!(
            with_prefix("{{ getv(key=\"/db/user\", default=\"postgres\") }}").unwrap(),
            "postgres"
        );
        assert_eq!(render("{{ getv(key=\"/app/flag\") }}", KEYS), "x");
    }

    #[test]
    fn getv_missing_key_names_it() {
        let err = with_prefix("{{ getv(key=\"/db/user\") }}").unwrap_err();
        assert!(
            err.contains("key not found: /db/user (looked up as /app/db/user)"),
            "{err}"
        );
        assert!(err.contains("t.tmpl:1:4"), "{err}");
        let err = try_render("{{ getv(key=\"/nope\") }}", KEYS).unwrap_err();
        assert!(err.starts_with("error: key not found: /nope\n"), "{err}");
    }

    #[test]
    fn getv_rejects_unknown_and_bad_arguments() {
        let err = with_prefix("{{ getv(key=\"/db/host\", defualt=\"x\") }}").unwrap_err();
        assert!(
            err.contains("getv: unknown argument `defualt` (takes key, default, backend)"),
            "{err}"
        );
        let err = with_prefix("{{ getv(key=1) }}").unwrap_err();
        assert!(
            err.contains("getv: argument `key` must be a string, got i64"),
            "{err}"
        );
        let err = with_prefix("{{ getv() }}").unwrap_err();
        assert!(err.contains("getv: missing argument `key`"), "{err}");
    }

    #[test]
    fn keys_outside_visible_are_not_found() {
        let v = view(KEYS, "/", &["/app/db"]);
        assert_eq!(
            try_render_view("{{ getv(key=\"/app/db/host\") }}", v.clone()).unwrap(),
            "db1"
        );
        let err = try_render_view("{{ getv(key=\"/other/secret\") }}", v.clone()).unwrap_err();
        assert!(err.contains("key not found: /other/secret"), "{err}");
        assert!(
            err.contains("outside this resource's keys (/app/db)"),
            "{err}"
        );
        let tpl = "{{ exists(key=\"/app/flag\") }} {{ gets(pattern=\"/app/*\") | length }} {{ ls(path=\"/app\") | join(sep=\",\") }} {{ getv(key=\"/app/flag\", default=\"d\") }}";
        assert_eq!(try_render_view(tpl, v).unwrap(), "false 0 db d");
    }

    #[test]
    fn visible_is_segment_wise() {
        let v = view(&[("/app/x", "1"), ("/apple/x", "2")], "/", &["/app"]);
        assert_eq!(
            try_render_view(
                "{{ exists(key=\"/apple/x\") }} {{ ls(path=\"/\") | join(sep=\",\") }}",
                v
            )
            .unwrap(),
            "false app"
        );
    }

    #[test]
    fn nothing_visible_without_declared_keys() {
        let v = view(KEYS, "/app", &[]);
        assert_eq!(
            try_render_view("{{ exists(key=\"/db/host\") }}", v).unwrap(),
            "false"
        );
    }

    #[test]
    fn get_returns_key_without_prefix() {
        assert_eq!(
            with_prefix("{% set kv = get(key=\"/db/port\") %}{{ kv.key }}={{ kv.value }}").unwrap(),
            "/db/port=5432"
        );
        let err = with_prefix("{{ get(key=\"/nope\") }}").unwrap_err();
        assert!(err.contains("key not found: /nope"), "{err}");
    }

    #[test]
    fn gets_and_getvs_glob_sorted_without_prefix() {
        let tpl = "{% for kv in gets(pattern=\"/upstream/*/host\") %}{{ kv.key }}={{ kv.value }};{% endfor %}";
        assert_eq!(
            with_prefix(tpl).unwrap(),
            "/upstream/a/host=10.0.0.1;/upstream/b/host=10.0.0.2;"
        );
        assert_eq!(
            with_prefix("{{ getvs(pattern=\"/upstream/b/*\") | join(sep=\",\") }}").unwrap(),
            "10.0.0.2,81"
        );
        assert_eq!(
            with_prefix("{{ getvs(pattern=\"/upstream/*/host\") | join(sep=\",\") }}").unwrap(),
            "10.0.0.1,10.0.0.2"
        );
        assert_eq!(
            with_prefix("{{ gets(pattern=\"/nothing/*\") | length }}").unwrap(),
            "0"
        );
    }

    #[test]
    fn exists_reports_presence() {
        assert_eq!(
            with_prefix("{{ exists(key=\"/db/host\") }} {{ exists(key=\"/db/nope\") }}").unwrap(),
            "true false"
        );
    }

    #[test]
    fn ls_and_lsdir_relative_to_prefix() {
        assert_eq!(
            with_prefix("{{ ls(path=\"/\") | join(sep=\",\") }}|{{ lsdir(path=\"/\") | join(sep=\",\") }}|{{ ls(path=\"/upstream/b\") | join(sep=\",\") }}")
                .unwrap(),
            "db,flag,upstream|db,upstream|host,port"
        );
        assert_eq!(
            with_prefix("{{ ls(path=\"/none\") | length }}").unwrap(),
            "0"
        );
    }

    #[test]
    fn getenv_with_default() {
        std::env::set_var("SIDEKICK_RENDER_TEST_VAR", "val");
        assert_eq!(
            render("{{ getenv(name=\"SIDEKICK_RENDER_TEST_VAR\") }}|{{ getenv(name=\"SIDEKICK_RENDER_TEST_UNSET\") }}|{{ getenv(name=\"SIDEKICK_RENDER_TEST_UNSET\", default=\"d\") }}", &[]),
            "val||d"
        );
    }

    #[test]
    fn file_exists_checks_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "").unwrap();
        let tpl = format!(
            "{{{{ fileExists(path=\"{}\") }}}} {{{{ fileExists(path=\"{}\") }}}}",
            f.display(),
            dir.path().join("nope").display()
        );
        assert_eq!(render(&tpl, &[]), "true false");
    }

    #[test]
    fn lookup_ip_resolves_sorted_and_unique() {
        assert_eq!(
            render("{{ lookupIP(name=\"127.0.0.1\") | join(sep=\",\") }}", &[]),
            "127.0.0.1"
        );
        let out = render("{{ lookupIP(name=\"localhost\") | join(sep=\",\") }}", &[]);
        let ips: Vec<&str> = out.split(',').collect();
        let mut sorted = ips.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ips, sorted);
        assert!(
            ips.iter().any(|ip| *ip == "127.0.0.1" || *ip == "::1"),
            "{out}"
        );
        let err = try_render("{{ lookupIP(name=\"no-such-host.invalid\") }}", &[]).unwrap_err();
        assert!(
            err.contains("lookupIP: cannot resolve `no-such-host.invalid`"),
            "{err}"
        );
    }

    #[test]
    fn lookup_srv_through_the_env_override() {
        let server = crate::dns::tests::spawn_srv_server();
        std::env::set_var(crate::dns::SERVER_ENV, server.to_string());
        let tpl = "{% for s in lookupSRV(service=\"http\", proto=\"tcp\", name=\"example.com.\") %}{{ s.target }}:{{ s.port }}/{{ s.priority }}/{{ s.weight }};{% endfor %}";
        assert_eq!(
            render(tpl, &[]),
            "web1.example.com.:8080/10/5;web2.example.com.:8081/20/0;"
        );
    }

    #[test]
    fn seq_is_inclusive() {
        assert_eq!(
            render("{{ seq(start=1, end=4) | join(sep=\",\") }}", &[]),
            "1,2,3,4"
        );
        assert_eq!(
            render("{{ seq(start=3, end=3) | join(sep=\",\") }}", &[]),
            "3"
        );
        assert_eq!(render("{{ seq(start=3, end=1) | length }}", &[]), "0");
        assert!(try_render("{{ seq(start=0, end=1000000) }}", &[]).is_err());
        let err = try_render("{{ seq(start=\"1\", end=2) }}", &[]).unwrap_err();
        assert!(
            err.contains("seq: argument `start` must be an integer"),
            "{err}"
        );
    }

    #[test]
    fn integer_arithmetic_truncates_as_go() {
        assert_eq!(
            render("{{ div(a=-7, b=2) }} {{ mod(a=-7, b=2) }} {{ add(a=1, b=2) }} {{ sub(a=1, b=2) }} {{ mul(a=3, b=4) }}", &[]),
            "-3 -1 3 -1 12"
        );
        let err = try_render("{{ div(a=1, b=0) }}", &[]).unwrap_err();
        assert!(
            err.contains("div: runtime error: integer divide by zero"),
            "{err}"
        );
    }

    #[test]
    fn datetime_formats_now() {
        let year = render("{{ datetime(format=\"%Y\") }}", &[]);
        assert_eq!(year.len(), 4);
        assert!(year.starts_with("20"), "{year}");
        let default = render("{{ datetime() }}", &[]);
        assert!(
            chrono::DateTime::parse_from_rfc3339(&default).is_ok(),
            "{default}"
        );
        let err = try_render("{{ datetime(format=\"%Q\") }}", &[]).unwrap_err();
        assert!(err.contains("datetime: invalid format `%Q`"), "{err}");
    }

    #[test]
    fn hostname_matches_the_system() {
        let expected = nix::unistd::gethostname().unwrap().into_string().unwrap();
        assert_eq!(render("{{ hostname() }}", &[]), expected);
    }

    fn catalog() -> Catalog {
        let inst = |addr: &str, port, healthy, tags: &[&str]| ServiceInstance {
            id: String::new(),
            name: String::new(),
            address: addr.into(),
            port,
            node: "n1".into(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            meta: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            healthy,
        };
        let mut m = BTreeMap::new();
        m.insert(
            "web".to_string(),
            vec![
                inst("10.0.0.2", 80, true, &["http"]),
                inst("10.0.0.1", 80, false, &[]),
                inst("10.0.0.1", 81, true, &[]),
            ],
        );
        m.insert("db".to_string(), vec![inst("10.0.1.1", 5432, true, &[])]);
        Catalog::from_services(m)
    }

    #[test]
    fn services_and_service() {
        let v = view_with_catalog(&[], catalog());
        assert_eq!(
            try_render_view("{{ services() | join(sep=\",\") }}", v.clone()).unwrap(),
            "db,web"
        );
        let tpl = "{% for i in service(name=\"web\") %}{{ i.address }}:{{ i.port }} {{ i.id }} {{ i.name }} {{ i.node }} {{ i.meta.zone }} {{ i.healthy }} [{{ i.tags | join(sep=\",\") }}];{% endfor %}";
        assert_eq!(
            try_render_view(tpl, v.clone()).unwrap(),
            "10.0.0.1:81 web:10.0.0.1:81 web n1 a true [];10.0.0.2:80 web:10.0.0.2:80 web n1 a true [http];"
        );
        let tpl = "{{ service(name=\"web\", passing=false) | length }} {{ service(name=\"web\", tag=\"http\") | length }} {{ service(name=\"none\") | length }}";
        assert_eq!(try_render_view(tpl, v).unwrap(), "3 1 0");
    }

    #[test]
    fn catalog_functions_need_a_catalog() {
        for call in ["services()", "service(name=\"web\")"] {
            let err = try_render(&format!("{{{{ {call} }}}}"), &[]).unwrap_err();
            let func = call.split('(').next().unwrap();
            assert!(
                err.contains(&format!("backend env has no service catalog ({func}() needs consul, kubernetes, rancher, or the file backend with --services-file)")),
                "{err}"
            );
        }
    }
}
