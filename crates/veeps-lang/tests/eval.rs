//! Expressions and functions, data-driven: each case is an expression and what it evaluates
//! to (or the error it gives). `UPDATE_EXPECT=1 cargo test -p veeps-lang --test eval`
//! rewrites the expectations after a deliberate change.

use expect_test::{expect, Expect};
use std::sync::Arc;
use veeps_lang::config::{load_config, Bundle};
use veeps_lang::eval::{eval, EmptyScope};

/// Evaluates `expr` as `locals { x = EXPR }` with no references in scope.
fn check(expr: &str, want: Expect) {
    let bundle = Bundle {
        root: ".".into(),
        client: Default::default(),
        files: [(
            "main.tf".to_string(),
            format!("locals {{\n  x = {expr}\n}}\n"),
        )]
        .into(),
    };
    let got = match load_config(Arc::new(bundle)) {
        Err(d) => format!("parse error: {d}"),
        Ok(c) => {
            let x = &c.modules.values().next().unwrap().locals["x"];
            match eval(&x.expr, &EmptyScope) {
                Ok(v) => v.to_string(),
                Err(d) => format!("error: {}", d.summary),
            }
        }
    };
    want.assert_eq(&got);
}

#[test]
fn arithmetic_and_logic() {
    check("1 + 2 * 3", expect!["7"]);
    check("7 % 3", expect!["1"]);
    check("-5 / 2", expect!["-2.5"]);
    check("true && !false", expect!["true"]);
    check("1 < 2 ? \"yes\" : \"no\"", expect![[r#""yes""#]]);
    check("\"a\" == \"a\"", expect!["true"]);
}

#[test]
fn collections_and_for_expressions() {
    check("[for n in [1, 2, 3] : n * 2]", expect!["[2, 4, 6]"]);
    check(
        "{for k, v in {a = 1, b = 2} : k => v + 1}",
        expect!["{a = 2, b = 3}"],
    );
    check(
        "[for n in [1, 2, 3, 4] : n if n % 2 == 0]",
        expect!["[2, 4]"],
    );
    check("[{a = 1}, {a = 2}][*].a", expect!["[1, 2]"]);
    check("{a = [1, 2]}.a[1]", expect!["2"]);
}

#[test]
fn templates() {
    check(r#""x=${1 + 1}""#, expect![[r#""x=2""#]]);
    check(
        r#""%{for s in ["a", "b"]}${s};%{endfor}""#,
        expect![[r#""a;b;""#]],
    );
    check(r#""%{if true}yes%{else}no%{endif}""#, expect![[r#""yes""#]]);
}

#[test]
fn string_functions() {
    check(r#"upper("abc")"#, expect![[r#""ABC""#]]);
    check(r#"title("hello world")"#, expect![[r#""Hello World""#]]);
    check(r#"format("%s-%03d", "web", 7)"#, expect![[r#""web-007""#]]);
    check(r#"join(",", ["a", "b"])"#, expect![[r#""a,b""#]]);
    check(r#"split(",", "a,b")"#, expect![[r#"["a", "b"]"#]]);
    check(r#"substr("hello", 1, 3)"#, expect![[r#""ell""#]]);
    check(r#"trimprefix("v1.2", "v")"#, expect![[r#""1.2""#]]);
    check(r#"replace("a-b-c", "-", "_")"#, expect![[r#""a_b_c""#]]);
}

#[test]
fn collection_functions() {
    check("length([1, 2, 3])", expect!["3"]);
    check("concat([1], [2, 3])", expect!["[1, 2, 3]"]);
    check("flatten([[1], [2, [3]]])", expect!["[1, 2, 3]"]);
    check("distinct([1, 1, 2])", expect!["[1, 2]"]);
    check(r#"lookup({a = 1}, "b", 0)"#, expect!["0"]);
    check(r#"merge({a = 1}, {b = 2})"#, expect!["{a = 1, b = 2}"]);
    check(r#"keys({b = 1, a = 2})"#, expect![[r#"["a", "b"]"#]]);
    check("range(3)", expect!["[0, 1, 2]"]);
    check(r#"zipmap(["a", "b"], [1, 2])"#, expect!["{a = 1, b = 2}"]);
    check(r#"coalesce("", "x")"#, expect![[r#""x""#]]);
    check("element([1, 2, 3], 4)", expect!["2"]);
}

#[test]
fn numbers_encoding_and_networks() {
    check("max(1, 5, 3)", expect!["5"]);
    check("ceil(1.2)", expect!["2"]);
    check(
        r#"jsonencode({a = [1, true]})"#,
        expect![[r#""{\"a\":[1,true]}""#]],
    );
    check(r#"base64encode("hi")"#, expect![[r#""aGk=""#]]);
    check(
        r#"cidrsubnet("10.0.0.0/16", 8, 2)"#,
        expect![[r#""10.0.2.0/24""#]],
    );
    check(r#"cidrhost("10.0.1.0/24", 5)"#, expect![[r#""10.0.1.5""#]]);
    check(
        r#"cidrsubnets("10.0.0.0/16", 4, 4, 8)"#,
        expect![[r#"["10.0.0.0/20", "10.0.16.0/20", "10.0.32.0/24"]"#]],
    );
}

#[test]
fn errors_name_the_function_and_what_to_do() {
    check(
        "lenght([1])",
        expect![[r#"error: call to unknown function "lenght". Did you mean "length"?"#]],
    );
    check(
        "upper(1, 2)",
        expect!["error: upper(): expects 1 argument, got 2"],
    );
    check(
        r#"cidrsubnet("10.0.0.0/30", 8, 0)"#,
        expect!["error: cidrsubnet(): cannot extend prefix /30 by 8 bits"],
    );
    check(
        r#"try(upper(1, 2), "fallback")"#,
        expect![[r#""fallback""#]],
    );
    check(r#"can(cidrhost("x", 1))"#, expect!["false"]);
}

#[test]
fn refusals_of_the_newer_functions_name_what_is_wrong() {
    check(
        "signum(3.5)",
        expect!["error: signum(): argument 1: a whole number is required, got 3.5"],
    );
    check(
        r#"regex("[0-9]+", "abc")"#,
        expect!["error: regex(): the pattern did not match any part of the given string"],
    );
    check(
        r#"regex("(", "abc")"#,
        expect![[
            r#"error: regex(): argument 1: invalid regular expression: regex parse error:
    (
    ^
error: unclosed group"#
        ]],
    );
    check(
        r#"regex("(?P<a>x)(y)", "xy")"#,
        expect![
            "error: regex(): argument 1: a pattern may not mix named and unnamed capture groups"
        ],
    );
    check(
        r#"chunklist(["a"], -1)"#,
        expect!["error: chunklist(): argument 2: the size must be 0 or more"],
    );
    check(
        r#"parseint("12", 1)"#,
        expect!["error: parseint(): argument 2: the base must be from 2 to 62, got 1"],
    );
    check(
        r#"parseint("19", 8)"#,
        expect![[r#"error: parseint(): argument 1: cannot parse "19" as a base 8 integer"#]],
    );
    check(
        r#"timeadd("2024-01-01", "1h")"#,
        expect![[
            r#"error: timeadd(): argument 1: "2024-01-01" is not an RFC 3339 timestamp (like 2024-01-02T15:04:05Z): the 'separator' component could not be parsed"#
        ]],
    );
    check(
        r#"timeadd("2024-01-01T00:00:00Z", "1d")"#,
        expect![[
            r#"error: timeadd(): argument 2: "1d" is not a duration (like "1h30m" or "-10s")"#
        ]],
    );
    check(
        r#"formatdate("YYYY-MM-DDTHH", "2024-01-01T00:00:00Z")"#,
        expect![[
            r#"error: formatdate(): argument 1: invalid date format verb "T": quote literal letters, like 'T'"#
        ]],
    );
    check(
        r#"uuidv5("nope", "x")"#,
        expect![[
            r#"error: uuidv5(): argument 1: "nope" is not a UUID, nor dns, url, oid or x500"#
        ]],
    );
    check(
        r#"textencodebase64("x", "EBCDIC")"#,
        expect![[
            r#"error: textencodebase64(): argument 2: "EBCDIC" is not an encoding veeps knows: use UTF-8, UTF-16LE, UTF-16BE or ISO-8859-1"#
        ]],
    );
    check(
        r#"matchkeys(["a"], [], [])"#,
        expect!["error: matchkeys(): the values and keys lists must be the same length"],
    );
    check(
        "sum([])",
        expect!["error: sum(): argument 1: cannot sum an empty list"],
    );
    check(
        r#"tonumber(" 5")"#,
        expect![[
            r#"error: tonumber(): argument 1: a number is required, but " 5" is not a number"#
        ]],
    );
    check(
        r#"format("%d", 3.7)"#,
        expect!["error: format(): %d needs a whole number, got 3.7"],
    );
    check(
        r#"format("%[0]s", "a")"#,
        expect![[r#"error: format(): bad argument index "[0]""#]],
    );
    // A misspelt function inside can() or try() is an error, not false.
    check(
        r#"can(regx("a", "b"))"#,
        expect![[r#"error: call to unknown function "regx""#]],
    );
    check(
        r#"try(upperr("a"), "fallback")"#,
        expect![[r#"error: call to unknown function "upperr""#]],
    );
    check(r#"can(regex("z", "abc"))"#, expect!["false"]);
    check(
        r#"provider::aws::arn_parse("x")"#,
        expect![[
            r#"error: unknown function "provider::aws::arn_parse": veeps has no providers' functions (core::NAME is the built-in NAME)"#
        ]],
    );
    check(
        r#"csvdecode("a,b\n1\n")"#,
        expect!["error: csvdecode(): argument 1: line 2 has 1 fields, the header 2"],
    );
    check(
        r#"csvdecode("a\n\"x")"#,
        expect!["error: csvdecode(): argument 1: a quoted field is not closed"],
    );
    check(
        r#"yamldecode("a: 1\n---\nb: 2\n")"#,
        expect!["error: yamldecode(): argument 1: only one YAML document is allowed"],
    );
    check(r#"yamldecode("a: [1, 2")"#, expect!["error: yamldecode(): argument 1: invalid YAML: while parsing a flow sequence, expected ',' or ']' at byte 8 line 2 column 1"]);
    check(
        r#"yamldecode("")"#,
        expect!["error: yamldecode(): argument 1: invalid YAML: missing start of document"],
    );
    // Aliases repeating aliases (a billion laughs) are refused, not expanded.
    let mut bomb = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\\n");
    for i in 1..10 {
        let refs = vec![format!("*l{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("l{i}: &l{i} [{refs}]\\n"));
    }
    check(&format!("yamldecode(\"{bomb}\")"), expect!["error: yamldecode(): argument 1: invalid YAML: more than 1000000 values (aliases repeated too often)"]);
    check(
        r#"filemd5("nope.txt")"#,
        expect![[
            r#"error: filemd5(): argument 1: no file "nope.txt" in the configuration (paths are relative to where the command runs; use path.module)"#
        ]],
    );
}

/// Functions whose answer changes with each call, checked by property: `uuid`,
/// `timestamp`, `plantimestamp`; and `base64gzip`, whose bytes depend on the compressor,
/// by decompressing it.
#[test]
fn impure_and_compressing_functions_by_property() {
    let text = |e: &str| {
        let b = Bundle {
            root: "e".into(),
            client: Default::default(),
            files: [(
                "e/main.hcl".to_string(),
                format!("locals {{\n  x = {e}\n}}\n"),
            )]
            .into(),
        };
        let c = load_config(Arc::new(b)).unwrap();
        let v = eval(&c.root_module().locals["x"].expr, &EmptyScope).unwrap();
        v.as_str().unwrap().to_string()
    };
    let u = text("uuid()");
    let re =
        regex::Regex::new("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
            .unwrap();
    assert!(re.is_match(&u), "{u}");
    assert_ne!(u, text("uuid()"));
    for f in ["timestamp()", "plantimestamp()"] {
        let t = text(f);
        let parsed =
            time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                .unwrap();
        assert!(
            (time::OffsetDateTime::now_utc() - parsed)
                .whole_seconds()
                .abs()
                < 60,
            "{t}"
        );
        assert!(t.ends_with('Z') && !t.contains('.'), "{t}");
    }
    use base64::Engine;
    let gz = base64::engine::general_purpose::STANDARD
        .decode(text("base64gzip(\"hello, gzip\")"))
        .unwrap();
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain).unwrap();
    assert_eq!(plain, "hello, gzip");
}

/// `bcrypt` (a new salt each call) by verifying its hash; `abspath` and `pathexpand`
/// against the directory and home of the CLI that sent the configuration.
#[test]
fn salted_and_machine_dependent_functions_by_property() {
    struct S(Bundle);
    impl veeps_lang::eval::Scope for S {
        fn resolve(
            &self,
            root: &str,
            _: &[&str],
            loc: &veeps_lang::diag::Loc,
        ) -> Result<(veeps_lang::value::Value, usize), veeps_lang::diag::Diagnostic> {
            Err(veeps_lang::diag::Diagnostic::at(loc, format!("no {root}")))
        }
        fn read_file(&self, _: &str) -> Option<String> {
            None
        }
        fn bundle(&self) -> Option<&Bundle> {
            Some(&self.0)
        }
    }
    let text = |e: &str| {
        let b = Bundle {
            root: "e".into(),
            client: veeps_lang::config::Client {
                cwd: "/home/ops/live".into(),
                home: "/home/ops".into(),
            },
            files: [(
                "e/main.hcl".to_string(),
                format!("locals {{\n  x = {e}\n}}\n"),
            )]
            .into(),
        };
        let c = load_config(Arc::new(b.clone())).unwrap();
        match eval(&c.root_module().locals["x"].expr, &S(b)) {
            Ok(v) => v.as_str().unwrap().to_string(),
            Err(d) => format!("error: {}", d.summary),
        }
    };
    let h = text("bcrypt(\"s3cret\")");
    assert!(h.starts_with("$2a$10$") && h.len() == 60, "{h}");
    assert!(bcrypt::verify("s3cret", &h).unwrap());
    assert_ne!(h, text("bcrypt(\"s3cret\")"), "a new salt each time");
    let h = text("bcrypt(\"x\", 5)");
    assert!(
        h.starts_with("$2a$05$") && bcrypt::verify("x", &h).unwrap(),
        "{h}"
    );
    assert!(text(&format!("bcrypt(\"{}\")", "a".repeat(73))).starts_with("error:"));
    assert_eq!(
        text("abspath(\"stage/../prod/./x\")"),
        "/home/ops/live/prod/x"
    );
    assert_eq!(text("abspath(\"/a//b/\")"), "/a/b");
    assert_eq!(text("pathexpand(\"~/.ssh/id\")"), "/home/ops/.ssh/id");
    assert_eq!(text("pathexpand(\"~x/y\")"), "~x/y");
}
