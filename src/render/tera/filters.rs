//! Template filters, named as in confd so templates port one-to-one: paths
//! (`base`, `dir`), parsing (`json`, `jsonArray`, `parseBool`, `atoi`,
//! `base64Decode`), strings (`base64Encode`, `trimSuffix`, `trimPrefix`,
//! `toUpper`, `toLower`, `contains`) and lists (`reverse`, `sortByLength`,
//! `sortKVByLength`).
//!
//! Tera's built-in filters stay available; ours replace a built-in of the same
//! name (`reverse`), since Tera keeps the last filter registered under a name.

use tera::{Error, Kwargs, State, Tera, TeraResult, Value};

use super::args::Args;
use crate::render::confd::{self, go_base, go_dir};

/// Registers every filter.
pub(super) fn register(tera: &mut Tera) {
    tera.register_filter("base", base);
    tera.register_filter("dir", dir);
    tera.register_filter("json", json);
    tera.register_filter("jsonArray", json_array);
    tera.register_filter("base64Encode", base64_encode);
    tera.register_filter("base64Decode", base64_decode);
    tera.register_filter("parseBool", parse_bool);
    tera.register_filter("atoi", atoi);
    tera.register_filter("trimSuffix", trim_suffix);
    tera.register_filter("trimPrefix", trim_prefix);
    tera.register_filter("toUpper", to_upper);
    tera.register_filter("toLower", to_lower);
    tera.register_filter("reverse", reverse);
    tera.register_filter("sortByLength", sort_by_length);
    tera.register_filter("sortKVByLength", sort_kv_by_length);
    tera.register_filter("contains", contains);
}

/// The filtered value as a string, or an error naming the filter.
fn input<'v>(what: &str, value: &'v Value) -> TeraResult<&'v str> {
    value
        .as_str()
        .ok_or_else(|| Error::message(format!("{what}: expected a string, got {}", value.name())))
}

/// The string filtered by `what`, which takes no arguments.
fn plain<'v>(what: &'static str, value: &'v Value, kwargs: &Kwargs) -> TeraResult<&'v str> {
    Args::new(what, kwargs, &[])?;
    input(what, value)
}

fn base(value: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    Ok(go_base(plain("base", &value, &kwargs)?).into())
}

fn dir(value: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    Ok(go_dir(plain("dir", &value, &kwargs)?).into())
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Parses the filtered string as JSON and checks its kind.
fn parse_json(
    what: &'static str,
    value: &Value,
    kwargs: &Kwargs,
    want_object: bool,
) -> TeraResult<Value> {
    let text = plain(what, value, kwargs)?;
    let parsed: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::message(format!("{what}: invalid JSON: {e}")))?;
    let (ok, wanted) = if want_object {
        (parsed.is_object(), "object")
    } else {
        (parsed.is_array(), "array")
    };
    if !ok {
        return Err(Error::message(format!(
            "{what}: expected a JSON {wanted}, got {}",
            json_kind(&parsed)
        )));
    }
    Value::try_from_serializable(&parsed)
}

fn json(value: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    parse_json("json", &value, &kwargs, true)
}

fn json_array(value: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    parse_json("jsonArray", &value, &kwargs, false)
}

fn base64_encode(value: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    Ok(confd::base64_encode(plain("base64Encode", &value, &kwargs)?).into())
}

fn base64_decode(value: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let text = plain("base64Decode", &value, &kwargs)?;
    confd::base64_decode(text)
        .map(Value::from)
        .map_err(|e| Error::message(format!("base64Decode: {e}")))
}

fn parse_bool(value: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let text = plain("parseBool", &value, &kwargs)?;
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true.into()),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false.into()),
        _ => Err(Error::message(format!(
            "parseBool: `{text}` is not a boolean (1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)"
        ))),
    }
}

fn atoi(value: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let text = plain("atoi", &value, &kwargs)?;
    text.parse::<i64>()
        .map(Value::from)
        .map_err(|e| Error::message(format!("atoi: `{text}` is not an integer: {e}")))
}

fn trim_suffix(value: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let suffix = Args::new("trimSuffix", &kwargs, &["suffix"])?.req_str("suffix")?;
    let text = input("trimSuffix", &value)?;
    Ok(text.strip_suffix(suffix).unwrap_or(text).into())
}

fn trim_prefix(value: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let prefix = Args::new("trimPrefix", &kwargs, &["prefix"])?.req_str("prefix")?;
    let text = input("trimPrefix", &value)?;
    Ok(text.strip_prefix(prefix).unwrap_or(text).into())
}

fn to_upper(value: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    Ok(confd::go_to_upper(plain("toUpper", &value, &kwargs)?).into())
}

fn to_lower(value: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    Ok(confd::go_to_lower(plain("toLower", &value, &kwargs)?).into())
}

fn contains(value: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let needle = Args::new("contains", &kwargs, &["substring"])?.req_str("substring")?;
    Ok(input("contains", &value)?.contains(needle).into())
}

fn reverse(value: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    Args::new("reverse", &kwargs, &[])?;
    if let Some(items) = value.as_array() {
        return Ok(items.iter().rev().cloned().collect::<Vec<_>>().into());
    }
    if let Some(text) = value.as_str() {
        return Ok(text.chars().rev().collect::<String>().into());
    }
    Err(Error::message(format!(
        "reverse: expected a list or a string, got {}",
        value.name()
    )))
}

/// The filtered list, or an error naming the filter.
fn list<'v>(what: &str, value: &'v Value) -> TeraResult<&'v [Value]> {
    value
        .as_array()
        .ok_or_else(|| Error::message(format!("{what}: expected a list, got {}", value.name())))
}

fn sort_by_length(value: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    Args::new("sortByLength", &kwargs, &[])?;
    let mut items: Vec<&str> = list("sortByLength", &value)?
        .iter()
        .map(|v| {
            v.as_str().ok_or_else(|| {
                Error::message(format!(
                    "sortByLength: expected a list of strings, found {}",
                    v.name()
                ))
            })
        })
        .collect::<TeraResult<_>>()?;
    confd::sort_by_len(&mut items, |s| s.len());
    Ok(items.into())
}

fn sort_kv_by_length(value: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    Args::new("sortKVByLength", &kwargs, &[])?;
    let mut items: Vec<(&str, &Value)> = list("sortKVByLength", &value)?
        .iter()
        .map(|v| {
            v.get_from_path("key")
                .and_then(Value::as_str)
                .map(|k| (k, v))
                .ok_or_else(|| {
                    Error::message(format!(
                        "sortKVByLength: expected a list of {{key, value}} (as from gets), found {v}"
                    ))
                })
        })
        .collect::<TeraResult<_>>()?;
    confd::sort_by_len(&mut items, |(k, _)| k.len());
    Ok(items
        .into_iter()
        .map(|(_, v)| v.clone())
        .collect::<Vec<_>>()
        .into())
}

#[cfg(test)]
mod tests {
    use crate::render::testutil::{render, try_render};

    fn r(tpl: &str) -> String {
        render(tpl, &[])
    }

    fn err(tpl: &str) -> String {
        try_render(tpl, &[]).unwrap_err()
    }

    #[test]
    fn base_and_dir_filters() {
        assert_eq!(r("{{ \"/etc/app/app.conf\" | base }} {{ \"/etc/app/app.conf\" | dir }} {{ \"a\" | dir }}"), "app.conf /etc/app .");
        assert!(err("{{ 1 | base }}").contains("base: expected a string, got i64"));
    }

    #[test]
    fn json_parses_objects() {
        let tpl =
            r#"{% set o = getv(key="/j") | json %}{{ o.name }} {{ o.ports[1] }} {{ o.nested.ok }}"#;
        assert_eq!(
            render(
                tpl,
                &[(
                    "/j",
                    r#"{"name":"x","ports":[80,443],"nested":{"ok":true}}"#
                )]
            ),
            "x 443 true"
        );
        // The documented way to iterate a map in a stable order.
        let tpl = r#"{% set m = getv(key="/j") | json %}{% for k in m | keys | sort %}{{ k }}={{ m[k] }};{% endfor %}"#;
        assert_eq!(
            render(tpl, &[("/j", r#"{"b":1,"c":3,"a":2}"#)]),
            "a=2;b=1;c=3;"
        );
        let e = try_render(r#"{{ getv(key="/j") | json }}"#, &[("/j", "[1]")]).unwrap_err();
        assert!(
            e.contains("json: expected a JSON object, got an array"),
            "{e}"
        );
        let e = try_render(r#"{{ getv(key="/j") | json }}"#, &[("/j", "{nope")]).unwrap_err();
        assert!(
            e.contains("json: invalid JSON: key must be a string at line 1 column 2"),
            "{e}"
        );
    }

    #[test]
    fn json_array_parses_arrays() {
        let tpl = r#"{% for x in getv(key="/j") | jsonArray %}{{ x.h }},{% endfor %}"#;
        assert_eq!(render(tpl, &[("/j", r#"[{"h":"a"},{"h":"b"}]"#)]), "a,b,");
        let e = try_render(r#"{{ getv(key="/j") | jsonArray }}"#, &[("/j", "{}")]).unwrap_err();
        assert!(
            e.contains("jsonArray: expected a JSON array, got an object"),
            "{e}"
        );
    }

    #[test]
    fn base64_round_trip() {
        assert_eq!(r("{{ \"hello?\" | base64Encode }}"), "aGVsbG8/");
        assert_eq!(r("{{ \"aGVsbG8/\" | base64Decode }}"), "hello?");
        assert!(err("{{ \"!!\" | base64Decode }}").contains("base64Decode: invalid base64"));
        assert!(err("{{ \"/w==\" | base64Decode }}").contains("not UTF-8"));
    }

    #[test]
    fn parse_bool_like_go() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(r(&format!("{{{{ \"{t}\" | parseBool }}}}")), "true");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(r(&format!("{{{{ \"{f}\" | parseBool }}}}")), "false");
        }
        assert_eq!(r("{% if \"t\" | parseBool %}yes{% endif %}"), "yes");
        assert!(err("{{ \"yes\" | parseBool }}").contains("parseBool: `yes` is not a boolean"));
    }

    #[test]
    fn atoi_parses_integers() {
        assert_eq!(
            r("{{ \"42\" | atoi + 1 }} {{ \"-7\" | atoi }} {{ \"+3\" | atoi }}"),
            "43 -7 3"
        );
        assert!(err("{{ \"4x\" | atoi }}").contains("atoi: `4x` is not an integer"));
        assert!(err("{{ \" 4\" | atoi }}").contains("atoi"));
    }

    #[test]
    fn trim_prefix_and_suffix() {
        assert_eq!(
            r("{{ \"app.conf.conf\" | trimSuffix(suffix=\".conf\") }} {{ \"/p/x\" | trimPrefix(prefix=\"/p\") }} {{ \"x\" | trimPrefix(prefix=\"y\") }}"),
            "app.conf /x x"
        );
        assert!(err("{{ \"x\" | trimSuffix }}").contains("trimSuffix: missing argument `suffix`"));
        assert!(err("{{ \"x\" | trimSuffix(sufix=\"x\") }}").contains("unknown argument `sufix`"));
    }

    #[test]
    fn case_filters() {
        assert_eq!(
            r("{{ \"MiXé ß\" | toUpper }} {{ \"MiXÉ\" | toLower }}"),
            // Go's strings.ToUpper: `ß` has no one-character upper case.
            "MIXÉ ß mixé"
        );
    }

    #[test]
    fn contains_filter_works_as_filter() {
        assert_eq!(
            r("{{ \"abc\" | contains(substring=\"b\") }} {{ \"abc\" | contains(substring=\"d\") }}"),
            "true false"
        );
        assert_eq!(
            r("{% if \"abc\" | contains(substring=\"a\") %}y{% endif %}"),
            "y"
        );
        // Tera's own `containing` test is still there.
        assert_eq!(
            r("{% if \"abc\" is containing(pat=\"a\") %}y{% endif %}"),
            "y"
        );
    }

    #[test]
    fn reverse_is_ours() {
        assert_eq!(
            r("{{ [1, 2, 3] | reverse | join(sep=\",\") }} {{ \"abé\" | reverse }}"),
            "3,2,1 éba"
        );
        // Tera's built-in reverse would say "Value of type map/struct cannot be reversed".
        let e = err("{{ {\"a\": 1} | reverse }}");
        assert!(
            e.contains("reverse: expected a list or a string, got map/struct"),
            "{e}"
        );
    }

    #[test]
    fn sort_by_length_then_text() {
        assert_eq!(
            r("{{ [\"ccc\", \"b\", \"aa\", \"a\", \"bb\"] | sortByLength | join(sep=\",\") }}"),
            // Stable, as confd's: equal lengths keep their order.
            "b,a,aa,bb,ccc"
        );
        assert!(
            err("{{ [1] | sortByLength }}").contains("sortByLength: expected a list of strings")
        );
        assert!(
            err("{{ \"x\" | sortByLength }}").contains("sortByLength: expected a list, got string")
        );
    }

    #[test]
    fn sort_kv_by_key_length() {
        let keys = [
            ("/u/bbb", "1"),
            ("/u/a", "2"),
            ("/u/cc", "3"),
            ("/u/b", "4"),
        ];
        assert_eq!(
            render(
                "{% for kv in gets(pattern=\"/u/*\") | sortKVByLength %}{{ kv.key }}={{ kv.value }};{% endfor %}",
                &keys
            ),
            "/u/a=2;/u/b=4;/u/cc=3;/u/bbb=1;"
        );
        assert!(err("{{ [\"x\"] | sortKVByLength }}")
            .contains("sortKVByLength: expected a list of {key, value}"));
    }

    #[test]
    fn confd_semantics_tera_already_has() {
        // Go's strings.Split of "" is [""].
        assert_eq!(r("{{ \"\" | split(pat=\",\") | length }}"), "1");
    }

    #[test]
    fn filters_reject_arguments_they_do_not_take() {
        assert!(err("{{ \"x\" | toUpper(x=1) }}")
            .contains("toUpper: unknown argument `x` (takes no arguments)"));
    }
}
