//! End-to-end tests: parse and execute, expected strings taken from Go's
//! documented behaviour and `text/template/exec_test.go`.

use crate::{Error, Funcs, Function, Template, Value};
use std::time::Instant;

/// Data shaped like exec_test.go's `tVal`, as maps and lists.
fn tval() -> Value {
    Value::map([
        ("True", Value::from(true)),
        ("I", Value::from(17)),
        ("X", Value::from("x")),
        ("FloatZero", Value::from(0.0)),
        ("U", Value::map([("V", "v")])),
        ("SI", Value::list([3, 4, 5])),
        ("SIEmpty", Value::list(Vec::<Value>::new())),
        ("SB", Value::list([true, false])),
        ("MSI", Value::map([("one", 1), ("two", 2), ("three", 3)])),
        ("MSIone", Value::map([("one", 1)])),
        ("MSIEmpty", Value::map(Vec::<(String, Value)>::new())),
        (
            "SMSI",
            Value::list([
                Value::map([("one", 1), ("two", 2)]),
                Value::map([("eleven", 11), ("twelve", 12)]),
            ]),
        ),
        ("Empty0", Value::Nil),
        ("Empty3", Value::list([7, 8])),
        ("Empty4", Value::map([("V", "UinEmpty")])),
        ("PS", Value::from("a string")),
        (
            "BinaryFunc",
            Value::Func(Function::new(|a: &[Value]| match a {
                [Value::String(x), Value::String(y)] => Ok(Value::from(format!("[{x}={y}]"))),
                _ => Err("want two strings".into()),
            })),
        ),
        (
            "VariadicFunc",
            Value::Func(Function::new(|a: &[Value]| {
                let parts: Vec<String> = a.iter().map(|v| v.to_string()).collect();
                Ok(Value::from(format!("<{}>", parts.join("+"))))
            })),
        ),
    ])
}

/// Test functions like exec_test.go's.
fn funcs() -> Funcs {
    Funcs::new()
        .with("add", |a: &[Value]| {
            let mut sum = 0;
            for v in a {
                match v {
                    Value::Int(i) => sum += i,
                    v => return Err(format!("add of {}", v.type_name())),
                }
            }
            Ok(Value::Int(sum))
        })
        .with("echo", |a: &[Value]| {
            Ok(a.first().cloned().unwrap_or_default())
        })
        .with("makemap", |a: &[Value]| {
            let pairs: Vec<(String, Value)> = a
                .chunks(2)
                .map(|c| (c[0].to_string(), c.get(1).cloned().unwrap_or_default()))
                .collect();
            Ok(Value::map(pairs))
        })
        .with("mapOfThree", |_: &[Value]| Ok(Value::map([("three", 3)])))
        .with("oneArg", |a: &[Value]| match a {
            [Value::String(s)] => Ok(Value::from(format!("oneArg={s}"))),
            _ => Err("oneArg wants one string".into()),
        })
        .with("fail", |_: &[Value]| Err("it failed".into()))
        .with("typeOf", |a: &[Value]| {
            Ok(Value::from(a.first().map_or("<nil>", Value::type_name)))
        })
}

fn render(input: &str, data: &Value) -> Result<String, Error> {
    Template::parse_with("t", input, funcs())?.execute(data)
}

fn ok(input: &str, data: &Value) -> String {
    match render(input, data) {
        Ok(s) => s,
        Err(e) => panic!("{input:?}: unexpected error: {e}"),
    }
}

/// Renders each `(input, expected)` pair on `tval()` and reports every
/// mismatch at once.
fn check_table(cases: &[(&str, &str)]) {
    let data = tval();
    let mut failures = Vec::new();
    for (input, want) in cases {
        match render(input, &data) {
            Ok(got) if got == *want => {}
            Ok(got) => failures.push(format!("{input:?}: want {want:?}, got {got:?}")),
            Err(e) => failures.push(format!("{input:?}: error {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn exec_trivial_cases() {
    // Trivial cases.
    check_table(&[("", ""), ("some text", "some text")]);
}

#[test]
fn exec_fields() {
    // Fields.
    check_table(&[
        ("-{{.X}}-", "-x-"),
        ("-{{.U.V}}-", "-v-"),
        ("{{.MSI.one}}", "1"),
        ("{{.MSI.two}}", "2"),
        ("{{.MSI.NO}}", "<no value>"),
        ("{{.Nope.Deeper}}", "<no value>"),
        ("{{.Empty0}}", "<nil>"),
        ("{{.Empty3}}", "[7 8]"),
        ("{{.Empty4}}", "map[V:UinEmpty]"),
        ("{{.Empty4.V}}", "UinEmpty"),
    ]);
}

#[test]
fn exec_variables() {
    // Variables.
    check_table(&[
        ("{{$.I}}", "17"),
        ("{{$.U.V}}", "v"),
        ("{{$x := $.U.V}}{{$x}}", "v"),
        ("{{$x := 1}}{{$x = 2}}{{$x}}", "2"),
        ("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}", "2"),
        ("{{$x := 1}}{{if true}}{{$x := 2}}{{$x}}{{end}}{{$x}}", "21"),
        ("{{$x := 0}}{{range .SI}}{{$x = .}}{{end}}{{$x}}", "5"),
        ("{{with $x := .I}}{{$x}}{{end}}", "17"),
        ("{{with $x := $}}{{$x.U.V}}{{end}}", "v"),
        ("{{with $x := $}}{{$y := $.U.V}}{{$y}}{{end}}", "v"),
        (
            "{{if $x := true}}{{with $y := .I}}{{$x}},{{$y}}{{end}}{{end}}",
            "true,17",
        ),
        (
            "{{if $x := true}}{{with $x := .I}}{{$x}},{{end}}{{$x}}{{end}}",
            "17,true",
        ),
        ("{{$x := .MSI.NO}}{{$x}}", "<no value>"),
    ]);
}

#[test]
fn exec_parens_and_chains() {
    // Parens and chains.
    check_table(&[
        (
            "{{printf `%d %d %d` (1) (2 | add 3) (add 4 (add 5 6))}}",
            "1 5 15",
        ),
        ("{{($).X}}", "x"),
        ("{{($ | echo).X}}", "x"),
        (r#"{{(makemap "up" "down" "left" "right").left}}"#, "right"),
        ("{{mapOfThree.three}}-{{(mapOfThree).three}}", "3-3"),
        ("{{print (.U).V}}", "v"),
    ]);
}

#[test]
fn exec_pipelines() {
    // Pipelines.
    check_table(&[
        ("{{.X | printf \"%s!\"}}", "x!"),
        ("{{\"aaa\" | oneArg}}", "oneArg=aaa"),
        ("{{1 | printf \"%d-%d\" 2}}", "2-1"),
        ("{{\"aaa\"|printf }}", "aaa"),
    ]);
}

#[test]
fn exec_literals() {
    // Literals.
    check_table(&[
        (
            "{{1}} {{-2}} {{0x1F}} {{0o17}} {{0b11}} {{1_000}}",
            "1 -2 31 15 3 1000",
        ),
        (
            "{{1.5}} {{1e6}} {{1e-7}} {{2.0}} {{100000.0}}",
            "1.5 1e+06 1e-07 2 100000",
        ),
        ("{{'a'}} {{'\\n'}}", "97 10"),
        ("{{\"a\\tb\"}} {{`raw\\n`}}", "a\tb raw\\n"),
        ("{{true}} {{false}}", "true false"),
        (
            "{{typeOf 3}} {{typeOf 1.0}} {{typeOf 1e1}} {{typeOf 0xef}} {{typeOf 'x'}}",
            "int float64 float64 int int",
        ),
    ]);
}

#[test]
fn exec_if() {
    // If.
    check_table(&[
        ("{{if true}}TRUE{{end}}", "TRUE"),
        ("{{if false}}TRUE{{else}}FALSE{{end}}", "FALSE"),
        ("{{if 1}}NON-ZERO{{else}}ZERO{{end}}", "NON-ZERO"),
        ("{{if 0}}NON-ZERO{{else}}ZERO{{end}}", "ZERO"),
        ("{{if 1.5}}NON-ZERO{{else}}ZERO{{end}}", "NON-ZERO"),
        ("{{if .FloatZero}}NON-ZERO{{else}}ZERO{{end}}", "ZERO"),
        ("{{if ``}}NON-EMPTY{{else}}EMPTY{{end}}", "EMPTY"),
        (
            "{{if `notempty`}}NON-EMPTY{{else}}EMPTY{{end}}",
            "NON-EMPTY",
        ),
        ("{{if .SIEmpty}}NON-EMPTY{{else}}EMPTY{{end}}", "EMPTY"),
        ("{{if .SI}}NON-EMPTY{{else}}EMPTY{{end}}", "NON-EMPTY"),
        ("{{if .MSIEmpty}}NON-EMPTY{{else}}EMPTY{{end}}", "EMPTY"),
        ("{{if .MSI}}NON-EMPTY{{else}}EMPTY{{end}}", "NON-EMPTY"),
        ("{{if .MSI.none}}NON-ZERO{{else}}ZERO{{end}}", "ZERO"),
        ("{{if not .MSI.none}}ZERO{{else}}NON-ZERO{{end}}", "ZERO"),
        ("{{if .Empty0}}non-nil{{else}}nil{{end}}", "nil"),
        ("{{if false}}FALSE{{else if true}}TRUE{{end}}", "TRUE"),
        (
            "{{if eq 1 3}}1{{else if eq 2 3}}2{{else if eq 3 3}}3{{end}}",
            "3",
        ),
        (
            "{{if eq 1 3}}1{{else if eq 2 3}}2{{else}}none{{end}}",
            "none",
        ),
    ]);
}

#[test]
fn exec_with() {
    // With.
    check_table(&[
        ("{{with true}}{{.}}{{end}}", "true"),
        ("{{with false}}{{.}}{{else}}FALSE{{end}}", "FALSE"),
        ("{{with 1}}{{.}}{{else}}ZERO{{end}}", "1"),
        ("{{with 0}}{{.}}{{else}}ZERO{{end}}", "ZERO"),
        ("{{with 1.5}}{{.}}{{else}}ZERO{{end}}", "1.5"),
        ("{{with ``}}{{.}}{{else}}EMPTY{{end}}", "EMPTY"),
        ("{{with .SI}}{{.}}{{else}}EMPTY{{end}}", "[3 4 5]"),
        ("{{with .MSIone}}{{.}}{{else}}EMPTY{{end}}", "map[one:1]"),
        ("{{with .Empty4}}{{.V}}{{end}}", "UinEmpty"),
        (
            "{{with .SIEmpty}}x{{else with .SI}}{{index . 0}}{{end}}",
            "3",
        ),
        ("{{with 0}}x{{else with ``}}y{{else}}z{{end}}", "z"),
    ]);
}

#[test]
fn exec_range() {
    // Range.
    check_table(&[
        ("{{range .SI}}-{{.}}-{{end}}", "-3--4--5-"),
        ("{{range .SIEmpty}}-{{.}}-{{end}}", ""),
        ("{{range .SI}}-{{.}}-{{else}}EMPTY{{end}}", "-3--4--5-"),
        ("{{range .SIEmpty}}-{{.}}-{{else}}EMPTY{{end}}", "EMPTY"),
        ("{{range .SB}}-{{.}}-{{end}}", "-true--false-"),
        ("{{range .MSI}}-{{.}}-{{end}}", "-1--3--2-"),
        ("{{range .MSIEmpty}}-{{.}}-{{else}}EMPTY{{end}}", "EMPTY"),
        ("{{range .Empty3}}-{{.}}-{{else}}EMPTY{{end}}", "-7--8-"),
        ("{{range .Empty0}}-{{.}}-{{end}}", ""),
        ("{{range .Missing}}-{{.}}-{{else}}none{{end}}", "none"),
        ("{{range $x := .SI}}<{{$x}}>{{end}}", "<3><4><5>"),
        (
            "{{range $x, $y := .SI}}<{{$x}}={{$y}}>{{end}}",
            "<0=3><1=4><2=5>",
        ),
        ("{{range $x := .MSIone}}<{{$x}}>{{end}}", "<1>"),
        (
            "{{range $x, $y := .MSIone}}<{{$x}}={{$y}}>{{end}}",
            "<one=1>",
        ),
        (
            "{{range $k, $v := .MSI}}{{$k}}={{$v}};{{end}}",
            "one=1;three=3;two=2;",
        ),
        (
            "{{range $x := .SI}}<{{$foo:=$x}}{{$x}}>{{end}}",
            "<3><4><5>",
        ),
        (
            "{{range .SMSI}}[{{.one}}{{.eleven}}]{{end}}",
            "[1<no value>][<no value>11]",
        ),
        ("{{range 3}}{{.}}{{end}}", "012"),
        ("{{range $i := 3}}{{$i}}{{end}}", "012"),
        ("{{range 0}}x{{else}}none{{end}}", "none"),
        (
            "{{range .SI}}{{if eq . 4}}{{break}}{{end}}{{.}}{{end}}",
            "3",
        ),
        (
            "{{range .SI}}{{if eq . 4}}{{continue}}{{end}}{{.}}{{end}}",
            "35",
        ),
        (
            "{{range .SI}}{{range .}}{{if eq . 1}}{{break}}{{end}}{{.}}{{end}};{{end}}",
            "0;0;0;",
        ),
        (
            "{{range $i, $v := .SI}}{{if $i}},{{end}}{{$v}}{{end}}",
            "3,4,5",
        ),
        ("{{range .MSIone}}{{if $.U.V}}{{$.U.V}}{{end}}{{end}}", "v"),
        ("{{range .SI}}{{$.X}}{{end}}", "xxx"),
        ("{{$x := 0}}{{range $x = .SI}}{{end}}{{$x}}", "5"),
        (
            "{{$i := 0}}{{$v := 0}}{{range $i, $v = .SI}}{{end}}{{$i}}-{{$v}}",
            "2-5",
        ),
        ("{{range $x := .SIEmpty}}{{else}}{{$x}}{{end}}", "[]"),
        ("{{with $x := 0}}a{{else}}{{$x}}{{end}}", "0"),
        (
            "{{range .SI}}{{with .}}{{if eq . 4}}{{break}}{{end}}{{end}}{{.}}{{end}}",
            "3",
        ),
        (
            "{{range $i, $v := .SI}}{{if eq $i 1}}{{continue}}{{end}}{{$v}}{{else}}none{{end}}",
            "35",
        ),
    ]);
}

#[test]
fn exec_booleans() {
    // Booleans.
    check_table(&[
        ("{{not true}} {{not false}}", "false true"),
        (
            "{{and false 0}} {{and 1 0}} {{and 0 true}} {{and 1 1}}",
            "false 0 0 1",
        ),
        (
            "{{or 0 0}} {{or 1 0}} {{or 0 true}} {{or 1 1}}",
            "0 1 true 1",
        ),
        ("{{if and true 1 `hi`}}TRUE{{else}}FALSE{{end}}", "TRUE"),
        (
            "{{if and true 1 `hi` | not}}TRUE{{else}}FALSE{{end}}",
            "FALSE",
        ),
        ("{{or .SI \"slice is empty\"}}", "[3 4 5]"),
        ("{{or .SIEmpty \"slice is empty\"}}", "slice is empty"),
    ]);
}

#[test]
fn exec_short_circuit() {
    // Short-circuit: the failing function is never called.
    check_table(&[
        ("{{and false fail}} {{or true fail}}", "false true"),
        ("{{or .MSI.nokey \"default\"}}", "default"),
        ("{{and 1 2 | printf \"%v\"}}", "2"),
    ]);
}

#[test]
fn exec_comparisons() {
    // Comparisons.
    check_table(&[
        (
            "{{eq 1 1}} {{eq 1 2}} {{eq \"a\" \"a\"}} {{eq .X \"x\" \"y\"}}",
            "true false true true",
        ),
        (
            "{{ne 1 2}} {{lt 1 2}} {{le 2 2}} {{gt 3 2}} {{ge 1 2}}",
            "true true true true false",
        ),
        (
            "{{lt 1.5 2.5}} {{lt \"a\" \"b\"}} {{eq true true}}",
            "true true true",
        ),
        ("{{eq .Empty0 \"x\"}} {{eq .MSI.nokey 1}}", "false false"),
    ]);
}

#[test]
fn exec_indexing() {
    // Indexing.
    check_table(&[
        ("{{index .SI 0}}", "3"),
        ("{{index .SI 1}}", "4"),
        ("{{index .MSI `one`}}", "1"),
        ("{{index .MSI `XXX`}}", "<nil>"),
        ("{{index .SMSI 1 `eleven`}}", "11"),
        ("{{index \"hi\" 0}}", "104"),
        (
            "{{slice .SI 1}} {{slice .SI 1 2}} {{slice .SI}}",
            "[4 5] [4] [3 4 5]",
        ),
        ("{{slice \"hello\" 1 3}}", "el"),
        ("{{len .SI}} {{len .MSI}} {{len \"abc\"}}", "3 3 3"),
    ]);
}

#[test]
fn exec_printing() {
    // Printing.
    check_table(&[
        ("{{print \"hello, print\"}}", "hello, print"),
        ("{{print 1 2 3}}", "1 2 3"),
        ("{{print nil}}", "<nil>"),
        ("{{print \"a\" 1 2 \"b\"}}", "a1 2b"),
        ("{{println 1 2 3}}", "1 2 3\n"),
        ("{{printf \"%04x\" 127}}", "007f"),
        ("{{printf \"%g\" 3.5}}", "3.5"),
        ("{{printf \"%s\" \"hello\"}}", "hello"),
        ("{{printf \"%s\" .U.V}}", "v"),
        ("{{with .I}}{{printf \"%d\" .}}{{end}}", "17"),
        (
            "{{printf \"%5d|%-5s|%.2f|%t|%q|%v\" 42 \"ab\" 3.14159 true \"q\" .SI}}",
            "   42|ab   |3.14|true|\"q\"|[3 4 5]",
        ),
        ("{{printf \"%v %v\" .MSI.nokey nil}}", "<nil> <nil>"),
        ("{{printf \"%d\" \"x\"}}", "%!d(string=x)"),
        ("{{printf \"%T\" 0xef}}", "int"),
        (
            "{{printf \"%x %X %o %e %c %U %%\" 255 255 8 1234.5 65 65}}",
            "ff FF 10 1.234500e+03 A U+0041 %",
        ),
        ("{{.MSI}}", "map[one:1 three:3 two:2]"),
        ("{{.SMSI}}", "[map[one:1 two:2] map[eleven:11 twelve:12]]"),
    ]);
}

#[test]
fn exec_html_js_url() {
    // HTML, JS, URL.
    check_table(&[
        (
            "{{html \"<script>alert(\\\"XSS\\\");</script>\"}}",
            "&lt;script&gt;alert(&#34;XSS&#34;);&lt;/script&gt;",
        ),
        (
            "{{printf \"<script>alert(\\\"XSS\\\");</script>\" | html}}",
            "&lt;script&gt;alert(&#34;XSS&#34;);&lt;/script&gt;",
        ),
        ("{{html .PS}}", "a string"),
        ("{{js \"It'd be nice.\"}}", "It\\'d be nice."),
        (
            "{{\"http://www.example.org/\"|urlquery}}",
            "http%3A%2F%2Fwww.example.org%2F",
        ),
        ("{{urlquery \"a b\" 1}}", "a+b1"),
    ]);
}

#[test]
fn exec_call() {
    // call.
    check_table(&[
        ("{{call .BinaryFunc `1` `2`}}", "[1=2]"),
        ("{{call .VariadicFunc}}", "<>"),
        ("{{call .VariadicFunc `he` `llo`}}", "<he+llo>"),
        (
            "{{call .VariadicFunc `llo` | call .VariadicFunc `he` }}",
            "<he+<llo>>",
        ),
        (
            "{{if .BinaryFunc}}{{call .BinaryFunc `1` `2`}}{{end}}",
            "[1=2]",
        ),
    ]);
}

#[test]
fn exec_trimming() {
    // Trimming.
    check_table(&[
        ("a  {{- 1 -}}  b", "a1b"),
        ("a \n\t{{- 1}} \n b", "a1 \n b"),
        ("a {{1 -}}\n\n\tb", "a 1b"),
        ("{{- /* comment */ -}}  x", "x"),
        ("a {{/* comment */}} b", "a  b"),
        ("a {{- /* multi\nline */}} b", "a b"),
        ("{{-3}}", "-3"),
        (
            "x\n{{- range .SI}}\n  {{.}}\n{{- end}}\n",
            "x\n  3\n  4\n  5\n",
        ),
        ("{{ .X }}", "x"),
        ("a\r\n{{- .X -}}\r\n\tb", "axb"),
        ("{{if true -}}\n  yes\n{{- else -}}\n  no\n{{- end}}", "yes"),
        ("{{if false -}}\n  yes\n{{- else -}}\n  no\n{{- end}}", "no"),
        ("{{range .SI -}} {{.}} {{- end}}", "345"),
        ("{{- /* only a comment */ -}}", ""),
        ("a{{/* no trim */}}b", "ab"),
        ("{{\n.X\n}}", "x"),
    ]);
}

/// (input, expected error) pairs on `tval()`.
const EXEC_ERR: &[(&str, &str)] = &[
    ("{{nil}}", "template: t:1:2: executing \"t\" at <nil>: nil is not a command"),
    ("{{if nil}}x{{end}}", "template: t:1:5: executing \"t\" at <nil>: nil is not a command"),
    ("{{.MSI.one 1}}", "template: t:1:6: executing \"t\" at <.MSI.one>: one is not a method but has arguments"),
    ("{{.X.Y}}", "template: t:1:4: executing \"t\" at <.X.Y>: can't evaluate field Y in type string"),
    ("{{.I.Y}}", "template: t:1:4: executing \"t\" at <.I.Y>: can't evaluate field Y in type int"),
    ("{{.Empty0.Y}}", "template: t:1:9: executing \"t\" at <.Empty0.Y>: nil pointer evaluating interface {}.Y"),
    ("{{index .SI 10}}", "template: t:1:2: executing \"t\" at <index .SI 10>: error calling index: index out of range: 10"),
    ("{{index .SI `hello`}}", "template: t:1:2: executing \"t\" at <index .SI `hello`>: error calling index: cannot index slice/array with type string"),
    ("{{index .SI nil}}", "template: t:1:2: executing \"t\" at <index .SI nil>: error calling index: cannot index slice/array with nil"),
    ("{{index .MSI 10}}", "template: t:1:2: executing \"t\" at <index .MSI 10>: error calling index: value has type int; should be string"),
    ("{{index nil 1}}", "template: t:1:2: executing \"t\" at <index nil 1>: error calling index: index of untyped nil"),
    ("{{len 3}}", "template: t:1:2: executing \"t\" at <len 3>: error calling len: len of type int"),
    ("{{len .Empty0}}", "template: t:1:2: executing \"t\" at <len .Empty0>: error calling len: len of nil pointer"),
    ("{{len 1 2}}", "template: t:1:2: executing \"t\" at <len>: wrong number of args for len: want 1 got 2"),
    ("{{not}}", "template: t:1:2: executing \"t\" at <not>: wrong number of args for not: want 1 got 0"),
    ("{{and}}", "template: t:1:2: executing \"t\" at <and>: wrong number of args for and: want at least 1 got 0"),
    ("{{eq 1}}", "template: t:1:2: executing \"t\" at <eq 1>: error calling eq: missing argument for comparison"),
    ("{{eq 1 \"a\"}}", "template: t:1:2: executing \"t\" at <eq 1 \"a\">: error calling eq: incompatible types for comparison"),
    ("{{lt 1 1.5}}", "template: t:1:2: executing \"t\" at <lt 1 1.5>: error calling lt: incompatible types for comparison"),
    ("{{lt true false}}", "template: t:1:2: executing \"t\" at <lt true false>: error calling lt: invalid type for comparison"),
    ("{{1|printf}}", "template: t:1:4: executing \"t\" at <printf>: error calling printf: wrong type for value; expected string; got int"),
    ("{{3 2}}", "template: t:1:2: executing \"t\" at <3>: can't give argument to non-function 3"),
    ("{{$x := 1}}{{$x 2}}", "template: t:1:13: executing \"t\" at <$x>: can't give argument to non-function $x"),
    ("{{(nil).True}}", "template: t:1:3: executing \"t\" at <nil>: nil is not a command"),
    ("{{call nil}}", "template: t:1:2: executing \"t\" at <call nil>: error calling call: call of nil"),
    ("{{call .I}}", "template: t:1:2: executing \"t\" at <call .I>: error calling call: non-function of type int"),
    ("{{call .BinaryFunc `1`}}", "template: t:1:2: executing \"t\" at <call .BinaryFunc `1`>: error calling call: want two strings"),
    ("{{range .X}}{{end}}", "template: t:1:8: executing \"t\" at <.X>: range can't iterate over x"),
    ("{{range $i, $v := 3}}{{end}}", "template: t:1:8: executing \"t\" at <$i, $v := 3>: can't use 3 to iterate over more than one variable"),
    ("{{template \"nope\"}}", "template: t:1:11: executing \"t\" at <{{template \"nope\"}}>: template \"nope\" not defined"),
    ("a\nb{{fail 1 .X}}", "template: t:2:3: executing \"t\" at <fail 1 .X>: error calling fail: it failed"),
    ("{{.BinaryFunc}}", "template: t:1:2: executing \"t\" at <{{.BinaryFunc}}>: can't print {{.BinaryFunc}} of type func(...interface {}) (interface {}, error)"),
    ("{{slice .SI 2 1}}", "template: t:1:2: executing \"t\" at <slice .SI 2 1>: error calling slice: invalid slice index: 2 > 1"),
    ("{{printf \"%d\" (fail)}}", "template: t:1:15: executing \"t\" at <fail>: error calling fail: it failed"),
];

#[test]
fn exec_errors() {
    let data = tval();
    let mut failures = Vec::new();
    for (input, want) in EXEC_ERR {
        match render(input, &data) {
            Ok(got) => failures.push(format!(
                "{input:?}: want error {want:?}, got output {got:?}"
            )),
            Err(e) if e.to_string() == *want => {}
            Err(e) => failures.push(format!("{input:?}:\n   want {want}\n    got {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn nested_template_error_matches_go() {
    // exec_test.go's TestExecError.
    let text = "line 1\nline 2\nline 3\n{{template \"one\" .}}\n{{define \"one\"}}{{template \"two\" .}}{{end}}\n{{define \"two\"}}{{template \"three\" .}}{{end}}\n{{define \"three\"}}{{index \"hi\" $}}{{end}}";
    let e = render(text, &Value::from(5)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "template: top:7:20: executing \"three\" at <index \"hi\" $>: error calling index: index out of range: 5"
            .replace("top", "t")
    );
    assert_eq!(e.line(), Some(7));
    assert_eq!(e.column(), Some(20));
    assert_eq!(e.name(), Some("t"));
    assert_eq!(e.message(), "error calling index: index out of range: 5");
}

#[test]
fn parse_errors_carry_position() {
    let e = Template::parse("conf", "a\nb\n{{if .X}}\n{{nofunc}}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "template: conf:4: function \"nofunc\" not defined"
    );
    assert_eq!(e.line(), Some(4));
    assert_eq!(e.column(), Some(2));
    assert!(matches!(e, Error::Parse { .. }));
    let e = Template::parse("conf", "{{range .}}\n{{end}}{{end}}").unwrap_err();
    assert_eq!(e.to_string(), "template: conf:2: unexpected {{end}}");
}

#[test]
fn define_template_block() {
    let data = tval();
    assert_eq!(
        ok(
            "{{define \"a\"}}A{{.}}{{end}}{{template \"a\" .X}}-{{template \"a\"}}",
            &data
        ),
        "Ax-A<no value>"
    );
    // $ inside a called template is its dot.
    assert_eq!(
        ok("{{define \"a\"}}{{$}}{{end}}{{template \"a\" .I}}", &data),
        "17"
    );
    // Variables of the caller are not visible.
    assert!(render("{{$x := 1}}{{define \"a\"}}{{$x}}{{end}}", &data).is_err());
    // Block defines and runs in place; a later definition overrides it.
    assert_eq!(ok("<{{block \"b\" .U}}{{.V}}{{end}}>", &data), "<v>");
    let mut t = Template::parse("main", "<{{block \"b\" .U}}{{.V}}{{end}}>").unwrap();
    t.add("over", "{{define \"b\"}}[{{.V}}]{{end}}").unwrap();
    assert_eq!(t.execute(&data).unwrap(), "<[v]>");
    // Recursion: a tree walk.
    let tree = Value::map([
        ("Val", Value::from(1)),
        (
            "Kids",
            Value::list([
                Value::map([
                    ("Val", Value::from(2)),
                    ("Kids", Value::list(Vec::<Value>::new())),
                ]),
                Value::map([
                    ("Val", Value::from(3)),
                    ("Kids", Value::list(Vec::<Value>::new())),
                ]),
            ]),
        ),
    ]);
    let text = "{{define \"tree\"}}[{{.Val}}{{range .Kids}}{{template \"tree\" .}}{{end}}]{{end}}{{template \"tree\" .}}";
    assert_eq!(ok(text, &tree), "[1[2][3]]");
    // The tree test of exec_test.go with trimming.
    let text = "\n\t{{- define \"tree\" -}}\n\t[\n\t\t{{- .Val -}}\n\t\t{{- range .Kids -}}\n\t\t\t{{- template \"tree\" . -}}\n\t\t{{- end -}}\n\t]\n\t{{- end -}}\n{{- template \"tree\" . -}}";
    assert_eq!(ok(text, &tree), "[1[2][3]]");
}

#[test]
fn template_set_api() {
    let mut t = Template::parse("main", "{{template \"part\" .}}!").unwrap();
    assert_eq!(
        t.execute(&Value::Nil).unwrap_err().to_string(),
        "template: main:1:11: executing \"main\" at <{{template \"part\" .}}>: template \"part\" not defined"
    );
    t.add("part", "part {{.}}").unwrap();
    assert_eq!(t.execute(&Value::from(1)).unwrap(), "part 1!");
    assert_eq!(
        t.execute_template("part", &Value::from(2)).unwrap(),
        "part 2"
    );
    assert_eq!(t.names(), ["main", "part"]);
    assert!(t.has("part"));
    assert_eq!(t.name(), "main");
    assert_eq!(
        t.execute_template("zz", &Value::Nil)
            .unwrap_err()
            .to_string(),
        "template: no template \"zz\" associated with template \"main\""
    );
    // An empty body does not replace a defined one.
    t.add("part", "  {{define \"other\"}}o{{end}} ").unwrap();
    assert_eq!(
        t.execute_template("part", &Value::from(3)).unwrap(),
        "part 3"
    );
    assert_eq!(t.execute_template("other", &Value::Nil).unwrap(), "o");
    let empty = Template::new("e", Funcs::new());
    assert_eq!(
        empty.execute(&Value::Nil).unwrap_err().to_string(),
        "template: e: \"e\" is an incomplete or empty template"
    );
    // execute_to keeps partial output.
    let t = Template::parse_with("p", "ok {{fail}}", funcs()).unwrap();
    let mut out = String::from(">");
    assert!(t.execute_to(&mut out, &Value::Nil).is_err());
    assert_eq!(out, ">ok ");
}

#[test]
fn host_functions() {
    let f = Funcs::new().with("getv", |a: &[Value]| match a {
        [Value::String(k)] if &**k == "/a" => Ok(Value::from("1")),
        [Value::String(k)] => Err(format!("key not found: {k}")),
        _ => Err("getv wants a key".into()),
    });
    let t =
        Template::parse_with("conf", "a={{getv \"/a\"}}\nb={{getv \"/b\"}}", f.clone()).unwrap();
    let e = t.execute(&Value::Nil).unwrap_err();
    assert_eq!(
        e.to_string(),
        "template: conf:2:4: executing \"conf\" at <getv \"/b\">: error calling getv: key not found: /b"
    );
    // Functions are checked at parse time.
    assert_eq!(
        Template::parse("conf", "{{getv \"/a\"}}")
            .unwrap_err()
            .to_string(),
        "template: conf:1: function \"getv\" not defined"
    );
    // Render-time functions override the parse-time ones.
    let t = Template::parse_with("conf", "{{getv \"/b\"}}", f).unwrap();
    let now = Funcs::new().with("getv", |_: &[Value]| Ok(Value::from("fresh")));
    assert_eq!(t.execute_with(&Value::Nil, &now).unwrap(), "fresh");
    // A host function shadows a builtin.
    let f = Funcs::new().with("len", |_: &[Value]| Ok(Value::from(42)));
    assert_eq!(
        Template::parse_with("t", "{{len 1}}", f)
            .unwrap()
            .execute(&Value::Nil)
            .unwrap(),
        "42"
    );
    // Missing values reach functions as nil.
    let f = Funcs::new().with("show", |a: &[Value]| Ok(Value::from(format!("{:?}", a))));
    let t = Template::parse_with("t", "{{show .nope}}", f).unwrap();
    assert_eq!(t.execute(&Value::map([("a", 1)])).unwrap(), "[Nil]");
}

#[test]
fn deep_recursion_is_an_error_not_a_crash() {
    let t = Template::parse(
        "t",
        "{{define \"r\"}}{{template \"r\" .}}{{end}}{{template \"r\" .}}",
    )
    .unwrap();
    // Run on a thread with Rust's default 2 MiB test stack.
    let e = std::thread::spawn(move || t.execute(&Value::Nil).unwrap_err())
        .join()
        .unwrap();
    assert!(
        e.to_string()
            .ends_with("exceeded maximum template depth (200)"),
        "{e}"
    );
}

#[test]
fn values_are_shared_not_copied() {
    // A template is Send + Sync and reusable.
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Template>();
    let t = Template::parse("t", "{{.a}}").unwrap();
    let data = Value::map([("a", "x")]);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let t = t.clone();
            let d = data.clone();
            std::thread::spawn(move || t.execute(&d).unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), "x");
    }
}

/// confd's shape: `{{range gets "/x/*"}}{{.Key}}={{.Value}}{{end}}` over
/// 10,000 entries. Run with
/// `cargo test -p sidekick-gotemplate --release -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_range_10k() {
    let entries: Vec<Value> = (0..10_000)
        .map(|i| {
            Value::map([
                ("Key", Value::from(format!("/x/key{i:05}"))),
                ("Value", Value::from(format!("value-{i}"))),
            ])
        })
        .collect();
    let list = Value::from(entries);
    let gets_list = list.clone();
    let f = Funcs::new().with("gets", move |_: &[Value]| Ok(gets_list.clone()));
    let t = Template::parse_with(
        "bench",
        "{{range gets \"/x/*\"}}{{.Key}}={{.Value}}\n{{end}}",
        f,
    )
    .unwrap();
    let mut times = Vec::new();
    let mut len = 0;
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    for _ in 0..iters {
        let start = Instant::now();
        len = t.execute(&Value::Nil).unwrap().len();
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "render 10,000 entries ({len} bytes): median {:?}, min {:?}, p90 {:?}",
        times[times.len() / 2],
        times[0],
        times[times.len() * 9 / 10]
    );
}

#[test]
#[ignore]
fn measure_stack_per_level() {
    let f = Funcs::new().with("sp", |_: &[Value]| {
        let probe = 0u8;
        Ok(Value::Int(std::hint::black_box(&probe) as *const u8 as i64))
    });
    let t = Template::parse_with(
        "t",
        "{{define \"r\"}}{{if .}}{{sp}} {{template \"r\" (slice . 1)}}{{end}}{{end}}{{template \"r\" .}}",
        f,
    )
    .unwrap();
    let out = t.execute(&Value::list(vec![Value::Int(1); 100])).unwrap();
    let sps: Vec<i64> = out.split_whitespace().map(|s| s.parse().unwrap()).collect();
    println!(
        "stack per template level: {} bytes",
        (sps[0] - sps[99]) / 99
    );
}

#[test]
fn confd_style_template() {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    let store: Arc<BTreeMap<String, String>> = Arc::new(
        [
            ("/app/upstream/a", "10.0.0.1:80"),
            ("/app/upstream/b", "10.0.0.2:80"),
            ("/app/name", "web"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    let (s1, s2, s3) = (store.clone(), store.clone(), store);
    let funcs = Funcs::new()
        .with("getv", move |a: &[Value]| match a {
            [Value::String(k)] => s1
                .get(&**k)
                .map(|v| Value::from(v.as_str()))
                .ok_or_else(|| format!("key does not exist: {k}")),
            [Value::String(k), default] => Ok(s1
                .get(&**k)
                .map_or_else(|| default.clone(), |v| Value::from(v.as_str()))),
            _ => Err("getv wants a key".into()),
        })
        .with("gets", move |a: &[Value]| {
            let prefix = a
                .first()
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim_end_matches('*');
            Ok(Value::list(
                s2.iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| Value::map([("Key", k.as_str()), ("Value", v.as_str())])),
            ))
        })
        .with("lsdir", move |a: &[Value]| {
            let dir = a.first().and_then(Value::as_str).unwrap_or("/");
            let mut names: Vec<&str> = s3
                .keys()
                .filter_map(|k| k.strip_prefix(dir)?.strip_prefix('/')?.split('/').next())
                .collect();
            names.dedup();
            Ok(Value::list(names))
        })
        .with("base", |a: &[Value]| {
            let p = a.first().and_then(Value::as_str).unwrap_or("");
            Ok(Value::from(p.rsplit('/').next().unwrap_or(p)))
        });
    let text = r#"# {{getv "/app/name"}} ({{getv "/app/missing" "none"}})
upstream {{getv "/app/name"}} {
{{- range gets "/app/upstream/*"}}
    server {{.Value}}; # {{base .Key}}
{{- end}}
}
{{- range $i, $d := lsdir "/app"}}
{{$i}}: {{$d}}
{{- end}}
"#;
    let t = Template::parse_with("nginx.conf.tmpl", text, funcs).unwrap();
    assert_eq!(
        t.execute(&Value::Nil).unwrap(),
        "# web (none)\nupstream web {\n    server 10.0.0.1:80; # a\n    server 10.0.0.2:80; # b\n}\n0: name\n1: upstream\n"
    );
    let t2 = Template::parse_with("x.tmpl", "ok\n{{getv \"/nope\"}}", t.funcs.clone()).unwrap();
    assert_eq!(
        t2.execute(&Value::Nil).unwrap_err().to_string(),
        "template: x.tmpl:2:2: executing \"x.tmpl\" at <getv \"/nope\">: error calling getv: key does not exist: /nope"
    );
}

#[test]
fn methods_and_stringers_of_host_values() {
    // A map holding functions acts as a value with methods: `.Format "x"`
    // calls its `Format` with the arguments (and a piped value); a `String`
    // function is how it prints, as fmt's Stringer.
    let t = Value::map([
        (
            "Format",
            Value::Func(Function::new(|a: &[Value]| {
                Ok(Value::from(format!("fmt({})", a.len())))
            })),
        ),
        (
            "String",
            Value::Func(Function::new(|_: &[Value]| Ok(Value::from("T!")))),
        ),
    ]);
    let data = Value::map([("T", t)]);
    let run = |src: &str| Template::parse("t", src).unwrap().execute(&data).unwrap();
    assert_eq!(run("{{.T.Format \"x\"}}"), "fmt(1)");
    assert_eq!(run("{{\"y\" | .T.Format \"x\"}}"), "fmt(2)");
    assert_eq!(run("{{$t := .T}}{{$t.Format 1}}"), "fmt(1)");
    assert_eq!(
        run("{{.T}} {{printf \"%v|%s\" .T .T}} {{print .T}}"),
        "T! T!|T! T!"
    );
    let err = Template::parse("t", "{{.T.String.X 1}}")
        .unwrap()
        .execute(&data)
        .unwrap_err()
        .to_string();
    assert!(err.contains("can't evaluate field X"), "{err}");
}

/// A struct shaped like confd's `memkv.KVPair`.
fn pair(key: &str, value: &str) -> Value {
    Value::from(crate::Struct {
        type_name: "memkv.KVPair",
        names: &["Key", "Value"],
        values: Box::new([Value::from(key), Value::from(value)]),
    })
}

#[test]
fn exec_structs() {
    let data = Value::map([
        ("P", pair("/a", "1")),
        ("Q", pair("/a", "1")),
        ("R", pair("/b", "2")),
    ]);
    assert_eq!(ok("{{.P.Key}}={{.P.Value}}", &data), "/a=1");
    assert_eq!(ok("{{.P}}", &data), "{/a 1}");
    assert_eq!(ok("{{printf \"%+v\" .P}}", &data), "{Key:/a Value:1}");
    assert_eq!(ok("{{printf \"%T\" .P}}", &data), "memkv.KVPair");
    assert_eq!(ok("{{with .P}}{{.Key}}{{end}}", &data), "/a");
    assert_eq!(ok("{{eq .P .Q}} {{eq .P .R}}", &data), "true false");
    let e = render("{{.P.Nope}}", &data).unwrap_err().to_string();
    assert!(
        e.contains("can't evaluate field Nope in type memkv.KVPair"),
        "{e}"
    );
    let e = render("{{len .P}}", &data).unwrap_err().to_string();
    assert!(e.contains("len of type memkv.KVPair"), "{e}");
}

#[test]
fn limits_stop_a_runaway_render() {
    let t = Template::parse_with("t", "{{range .}}xxxxxxxxxx{{end}}", funcs()).unwrap();
    let data = Value::Int(1_000_000_000);
    let limits = crate::Limits {
        max_bytes: 1000,
        deadline: None,
    };
    let e = t.execute_limited(&data, None, limits).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Limit {
                reached: Some(_),
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("passed 1000 bytes"), "{e}");

    // An empty body still stops on time.
    let t = Template::parse_with("t", "{{range .}}{{end}}", funcs()).unwrap();
    let start = Instant::now();
    let limits = crate::Limits {
        max_bytes: usize::MAX,
        deadline: Some(Instant::now() + std::time::Duration::from_millis(50)),
    };
    let e = t.execute_limited(&data, None, limits).unwrap_err();
    assert!(e.to_string().contains("time limit"), "{e}");
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    // Within bounds, the same output as execute.
    let small = Value::Int(3);
    let t = Template::parse_with("t", "{{range .}}x{{end}}", funcs()).unwrap();
    assert_eq!(
        t.execute_limited(&small, None, crate::Limits::default())
            .unwrap(),
        "xxx"
    );
}
