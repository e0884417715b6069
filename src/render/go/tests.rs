//! The Go engine with confd's function map.

use super::*;
use crate::render::testutil::{
    dir_with, render_go, try_render_go, try_render_go_view, view, with_named,
};

const KEYS: &[(&str, &str)] = &[
    ("/app/db/host", "db1"),
    ("/app/db/port", "5432"),
    ("/app/upstream/a/host", "10.0.0.2"),
    ("/app/upstream/b/host", "10.0.0.1"),
    ("/app/upstream/b/port", "81"),
    ("/app/flag", "x"),
    ("/other/secret", "s"),
];

fn with_prefix(tpl: &str) -> Result<String, String> {
    try_render_go_view(tpl, view(KEYS, "/app", &["/app"]))
}

#[test]
fn getv_get_exists_relative_to_prefix() {
    assert_eq!(
        with_prefix(r#"{{getv "/db/host"}} {{getv "/db/user" "postgres"}} {{exists "/flag"}} {{exists "/nope"}}"#)
            .unwrap(),
        "db1 postgres true false"
    );
    assert_eq!(
        with_prefix(r#"{{with get "/db/port"}}{{.Key}}={{.Value}} {{base .Key}}{{end}}"#).unwrap(),
        "/db/port=5432 port"
    );
}

#[test]
fn trailing_slash_and_unclean_keys_are_not_found_as_in_confd() {
    for k in ["/db/host/", "db/host", "/db//host"] {
        let err = with_prefix(&format!("{{{{getv {k:?}}}}}")).unwrap_err();
        assert!(err.contains("key not found"), "{k}: {err}");
        assert_eq!(
            with_prefix(&format!("{{{{exists {k:?}}}}}")).unwrap(),
            "false"
        );
    }
    assert_eq!(with_prefix(r#"{{len (gets "/db/")}}"#).unwrap(), "0");
    // ls and lsdir clean their argument, as confd does.
    assert_eq!(
        with_prefix(r#"{{ls "/upstream/b/"}}"#).unwrap(),
        "[host port]"
    );
}

#[test]
fn getv_error_names_file_line_col() {
    let err = with_prefix("a\nb {{getv \"/db/user\"}}").unwrap_err();
    assert!(err.contains("t.tmpl:2:4: executing \"t.tmpl\" at <getv \"/db/user\">: error calling getv: key not found: /db/user (looked up as /app/db/user)"), "{err}");
}

#[test]
fn gets_in_key_order_getvs_sorted_by_value() {
    assert_eq!(
        with_prefix(r#"{{range gets "/upstream/*/host"}}{{.Key}}={{.Value}};{{end}}"#).unwrap(),
        "/upstream/a/host=10.0.0.2;/upstream/b/host=10.0.0.1;"
    );
    assert_eq!(
        with_prefix(r#"{{getvs "/upstream/*/host"}}"#).unwrap(),
        "[10.0.0.1 10.0.0.2]"
    );
}

#[test]
fn ls_lsdir() {
    assert_eq!(
        with_prefix(
            r#"{{ls "/"}} {{lsdir "/"}} {{ls "/upstream/b"}} {{ls "/none"}} {{ls "/db/host"}}"#
        )
        .unwrap(),
        "[db flag upstream] [db upstream] [host port] [] [host]"
    );
}

#[test]
fn visibility_is_shared_with_tera() {
    let v = view(KEYS, "/", &["/app/db"]);
    let err = try_render_go_view(r#"{{getv "/other/secret"}}"#, v.clone()).unwrap_err();
    assert!(
        err.contains("outside this resource's keys (/app/db)"),
        "{err}"
    );
    assert_eq!(
        try_render_go_view(r#"{{exists "/app/flag"}} {{ls "/app"}}"#, v).unwrap(),
        "false [db]"
    );
}

#[test]
fn strings_and_paths() {
    let r = |t: &str| render_go(t, &[]);
    assert_eq!(
        r(
            r#"{{split "a:b:c" ":"}} {{index (split "" ",") 0 | printf "%q"}} {{len (split "" ",")}}"#
        ),
        r#"[a b c] "" 1"#
    );
    assert_eq!(
        r(r#"{{join (split "a,b" ",") "-"}} {{replace "aaa" "a" "b" 2}} {{contains "abc" "b"}}"#),
        "a-b bba true"
    );
    assert_eq!(
        r(r#"{{toUpper "straße"}} {{toLower "ÀB"}} {{trimSuffix "a.conf" ".conf"}}"#),
        "STRAßE àb a"
    );
    assert_eq!(r(r#"{{base "/a/b"}} {{dir "/a/b"}} {{dir "a"}}"#), "b /a .");
    assert_eq!(
        r(r#"{{base64Encode "Value"}} {{base64Decode "VmFsdWU="}}"#),
        "VmFsdWU= Value"
    );
}

#[test]
fn numbers_truncate_like_go() {
    let r = |t: &str| render_go(t, &[]);
    assert_eq!(
        r("{{div -7 2}} {{mod -7 2}} {{add 1 2}} {{sub 1 2}} {{mul 3 4}}"),
        "-3 -1 3 -1 12"
    );
    assert_eq!(
        r(r#"{{seq 1 3}} {{seq 3 1}} {{atoi "42"}} {{parseBool "t"}}"#),
        "[1 2 3] [] 42 true"
    );
    let err = try_render_go("{{div 1 0}}", &[]).unwrap_err();
    assert!(
        err.contains("error calling div: runtime error: integer divide by zero"),
        "{err}"
    );
    let err = try_render_go(r#"{{atoi "x"}}"#, &[]).unwrap_err();
    assert!(
        err.contains(r#"strconv.Atoi: parsing "x": invalid syntax"#),
        "{err}"
    );
}

#[test]
fn json_map_and_sorting() {
    let keys = [
        ("/j", r#"{"Id":"h1","ports":[80,443],"n":1e6}"#),
        ("/a", "[\"1\",\"2\"]"),
    ];
    assert_eq!(
        render_go(
            r#"{{$d := json (getv "/j")}}{{$d.Id}} {{$d.ports}} {{$d.n}} {{range jsonArray (getv "/a")}}{{.}};{{end}}"#,
            &keys
        ),
        "h1 [80 443] 1e+06 1;2;"
    );
    assert_eq!(
        render_go(
            r#"{{$m := map "a" 1 "b" "x"}}{{$m.a}} {{$m.b}} {{index $m "a"}}"#,
            &[]
        ),
        "1 x 1"
    );
    assert_eq!(
        render_go(
            r#"{{sortByLength (split "ccc,b,aa,a,bb" ",")}} {{reverse (split "a,b" ",")}}"#,
            &[]
        ),
        "[b a aa bb ccc] [b a]"
    );
    let keys = [
        ("/u/bbb", "1"),
        ("/u/a", "2"),
        ("/u/cc", "3"),
        ("/u/b", "4"),
    ];
    assert_eq!(
        render_go(
            r#"{{range sortKVByLength (gets "/u/*")}}{{.Key}} {{end}}"#,
            &keys
        ),
        "/u/a /u/b /u/cc /u/bbb "
    );
}

#[test]
fn environment_functions() {
    std::env::set_var("SIDEKICK_GO_TEST_VAR", "val");
    std::env::set_var("SIDEKICK_GO_TEST_EMPTY", "");
    assert_eq!(
        render_go(
            r#"{{getenv "SIDEKICK_GO_TEST_VAR"}}|{{getenv "SIDEKICK_GO_TEST_EMPTY" "d"}}|{{getenv "SIDEKICK_GO_TEST_UNSET"}}"#,
            &[]
        ),
        "val|d|"
    );
    assert_eq!(
        render_go(
            r#"{{fileExists "/"}} {{lookupIPV4 "127.0.0.1"}} {{lookupIP "no-such-host.invalid"}}"#,
            &[]
        ),
        "true [127.0.0.1] []"
    );
    let expected = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(render_go("{{hostname}}", &[]), expected);
    assert!(render_go("{{datetime}}", &[]).starts_with("20"));
    let year = render_go(
        "{{datetime.Format \"2006\"}} {{(datetime).Format \"2006\"}}",
        &[],
    );
    assert_eq!(year.len(), 9, "{year}");
    assert!(year.starts_with("20"), "{year}");
}

#[test]
fn catalog_functions() {
    use sidekick_backend::{Catalog, ServiceInstance};
    use std::collections::BTreeMap;
    let inst = |addr: &str, port, healthy| ServiceInstance {
        id: String::new(),
        name: String::new(),
        address: addr.into(),
        port,
        node: "n1".into(),
        tags: vec!["http".into()],
        meta: BTreeMap::new(),
        healthy,
    };
    let cat = Catalog::from_services(BTreeMap::from([(
        "web".to_string(),
        vec![inst("10.0.0.2", 80, true), inst("10.0.0.1", 80, false)],
    )]));
    let v = crate::render::testutil::view_with_catalog(&[], cat);
    assert_eq!(
        try_render_go_view(r#"{{services}} {{range service "web"}}{{.Address}}:{{.Port}} {{.Tags}}{{end}} {{len (service "web" "" false)}}"#, v).unwrap(),
        "[web] 10.0.0.2:80 [http] 2"
    );
    let err = try_render_go("{{services}}", &[]).unwrap_err();
    assert!(err.contains("backend env has no service catalog"), "{err}");
}

#[test]
fn loader_reads_one_file_and_finds_catalog_calls() {
    let dir = dir_with(&[
        (
            "a.tmpl",
            "{{define \"x\"}}X{{end}}{{template \"x\"}} {{\"service\"}} {{.service}}",
        ),
        ("b.tmpl", "{{range service \"web\"}}{{end}}"),
    ]);
    let r = GoRenderer::new(dir.path(), "a.tmpl").unwrap();
    assert!(!r.uses_catalog());
    assert_eq!(
        r.files(),
        [std::path::absolute(dir.path()).unwrap().join("a.tmpl")]
    );
    assert_eq!(
        r.render(view(&[], "/", &["/"])).unwrap(),
        "X service <no value>"
    );
    assert!(GoRenderer::new(dir.path(), "b.tmpl")
        .unwrap()
        .uses_catalog());
    assert!(matches!(
        GoRenderer::new(dir.path(), "../x").unwrap_err(),
        RenderError::Name { .. }
    ));
}

#[test]
fn parse_errors_name_the_file_and_line() {
    let dir = dir_with(&[("bad.tmpl", "ok\n{{getvv \"/x\"}}\n")]);
    let msg = GoRenderer::new(dir.path(), "bad.tmpl")
        .unwrap_err()
        .to_string();
    let path = std::path::absolute(dir.path()).unwrap().join("bad.tmpl");
    assert!(msg.starts_with(&format!("{}:2: ", path.display())), "{msg}");
    assert!(msg.contains("function \"getvv\" not defined"), "{msg}");
}

#[test]
fn renderer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<GoRenderer>();
}

#[test]
fn backend_reads_a_named_source() {
    let v = with_named(
        view(&[("/app/host", "db1")], "/app", &["/app"]),
        "secrets",
        &[("/db/password", "pw"), ("/db/user", "u")],
    );
    let tpl = "{{getv \"/host\"}} {{backend \"secrets\" \"getv\" \"/db/password\"}} \
               {{range backend \"secrets\" \"gets\" \"/db/*\"}}{{.Key}} {{end}}";
    assert_eq!(
        try_render_go_view(tpl, v.clone()).unwrap(),
        "db1 pw /db/password /db/user "
    );
    let e = try_render_go_view("{{backend \"other\" \"getv\" \"/a\"}}", v.clone()).unwrap_err();
    assert!(
        e.contains("backend \"other\" is not one this resource reads"),
        "{e}"
    );
    let e = try_render_go_view("{{backend \"secrets\" \"json\" \"/a\"}}", v).unwrap_err();
    assert!(e.contains("not a function of a source"), "{e}");
    assert_eq!(
        backend_args("{{backend \"a\" \"getv\" \"/x\"}}{{/* backend \"c\" */}}{{$backend := 1}}{{backend `b` \"ls\" \"/\"}} backend \"t\""),
        ["a", "b"]
    );
}
