//! The built-in functions: the ones ops people use most in Terraform configurations.

mod collections;
mod conversion;
mod encoding;
mod files;
mod marks;
mod networks;
mod numbers;
mod strings;
pub mod time;
mod yaml;

use crate::diag::{Diagnostic, Loc};
use crate::eval::Scope;
use crate::number::Number;
use crate::value::{convert, Type, Value};
use base64::Engine as _;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use sha2::Digest;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Where a call is, for errors.
pub struct CallCtx<'a> {
    /// The whole call.
    pub loc: &'a Loc,
    /// Each argument.
    pub arg_locs: &'a [Loc],
    /// The scope, for `file()`.
    pub scope: &'a dyn Scope,
}

/// What a function is about, for the documentation's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Numbers.
    Numbers,
    /// Strings.
    Strings,
    /// Collections.
    Collections,
    /// Conversion.
    Conversion,
    /// Encoding.
    Encoding,
    /// Files.
    Files,
    /// Networks.
    Networks,
    /// Errors.
    Errors,
    /// Marks.
    Marks,
    /// Dates and times.
    Time,
}

impl Category {
    /// Its heading in `docs/language.md`.
    pub fn title(self) -> &'static str {
        match self {
            Category::Numbers => "Numbers",
            Category::Strings => "Strings",
            Category::Collections => "Collections",
            Category::Conversion => "Conversion",
            Category::Encoding => "Encoding",
            Category::Files => "Files",
            Category::Networks => "Networks",
            Category::Errors => "Errors",
            Category::Marks => "Marks",
            Category::Time => "Date and time",
        }
    }
}

/// A function's implementation.
type Eval = fn(&Call) -> Result<Value, Diagnostic>;

/// One built-in function.
pub struct Function {
    /// Its name.
    pub name: &'static str,
    /// What it is about.
    pub category: Category,
    /// Its implementation; `None` for `try` and `can`, which the evaluator handles since
    /// they see their argument's errors.
    eval: Option<Eval>,
    /// It is called even with unknown arguments (its result can be known anyway).
    unknown_ok: bool,
    /// What it gives, in one line, for the documentation's list.
    pub doc: &'static str,
}

/// Every built-in function, by category (the order `docs/language.md` lists them in).
#[rustfmt::skip]
pub static FUNCTIONS: &[Function] = &[
    Function { name: "abs", category: Category::Numbers, eval: Some(numbers::abs), unknown_ok: false, doc: "the absolute value of a number" },
    Function { name: "ceil", category: Category::Numbers, eval: Some(numbers::ceil), unknown_ok: false, doc: "the least whole number at or above a number" },
    Function { name: "floor", category: Category::Numbers, eval: Some(numbers::floor), unknown_ok: false, doc: "the greatest whole number at or below a number" },
    Function { name: "max", category: Category::Numbers, eval: Some(numbers::max), unknown_ok: false, doc: "the greatest of numbers" },
    Function { name: "min", category: Category::Numbers, eval: Some(numbers::max), unknown_ok: false, doc: "the least of numbers" },
    Function { name: "sum", category: Category::Numbers, eval: Some(numbers::sum), unknown_ok: false, doc: "the sum of a list or set of numbers (not empty)" },
    Function { name: "signum", category: Category::Numbers, eval: Some(numbers::signum), unknown_ok: false, doc: "-1, 0 or 1: the sign of a whole number" },
    Function { name: "pow", category: Category::Numbers, eval: Some(numbers::pow), unknown_ok: false, doc: "a number raised to a power" },
    Function { name: "log", category: Category::Numbers, eval: Some(numbers::log), unknown_ok: false, doc: "the logarithm of a number in a base" },
    Function { name: "parseint", category: Category::Numbers, eval: Some(numbers::parseint), unknown_ok: false, doc: "a string of digits in a base (2 to 62) as a number" },
    Function { name: "format", category: Category::Strings, eval: Some(strings::format), unknown_ok: false, doc: "a string from a format (`%s`, `%d`, `%.2f`, `%v`, `%q`, `%[n]`...) and values" },
    Function { name: "formatlist", category: Category::Strings, eval: Some(strings::formatlist), unknown_ok: false, doc: "`format` over lists, element by element" },
    Function { name: "join", category: Category::Strings, eval: Some(strings::join), unknown_ok: false, doc: "list elements joined with a separator" },
    Function { name: "split", category: Category::Strings, eval: Some(strings::split), unknown_ok: false, doc: "a string cut at each separator" },
    Function { name: "lower", category: Category::Strings, eval: Some(strings::lower), unknown_ok: false, doc: "lower case (Unicode)" },
    Function { name: "upper", category: Category::Strings, eval: Some(strings::upper), unknown_ok: false, doc: "upper case (Unicode)" },
    Function { name: "title", category: Category::Strings, eval: Some(strings::title), unknown_ok: false, doc: "each word's first letter in upper case" },
    Function { name: "replace", category: Category::Strings, eval: Some(strings::replace), unknown_ok: false, doc: "every occurrence of a substring, or of a `/regex/`, replaced" },
    Function { name: "substr", category: Category::Strings, eval: Some(strings::substr), unknown_ok: false, doc: "part of a string, by character offset and length" },
    Function { name: "trim", category: Category::Strings, eval: Some(strings::trim), unknown_ok: false, doc: "given characters removed from both ends" },
    Function { name: "trimspace", category: Category::Strings, eval: Some(strings::trimspace), unknown_ok: false, doc: "white space removed from both ends" },
    Function { name: "trimprefix", category: Category::Strings, eval: Some(strings::trimprefix), unknown_ok: false, doc: "a prefix removed, if present" },
    Function { name: "trimsuffix", category: Category::Strings, eval: Some(strings::trimsuffix), unknown_ok: false, doc: "a suffix removed, if present" },
    Function { name: "chomp", category: Category::Strings, eval: Some(strings::chomp), unknown_ok: false, doc: "trailing newlines removed" },
    Function { name: "strrev", category: Category::Strings, eval: Some(strings::strrev), unknown_ok: false, doc: "the characters (grapheme clusters) in reverse" },
    Function { name: "startswith", category: Category::Strings, eval: Some(strings::startswith), unknown_ok: false, doc: "whether a string starts with a prefix" },
    Function { name: "endswith", category: Category::Strings, eval: Some(strings::endswith), unknown_ok: false, doc: "whether a string ends with a suffix" },
    Function { name: "strcontains", category: Category::Strings, eval: Some(strings::strcontains), unknown_ok: false, doc: "whether a string contains a substring" },
    Function { name: "regex", category: Category::Strings, eval: Some(strings::regex), unknown_ok: false, doc: "the first match of a regular expression (RE2), its groups as a list or named map" },
    Function { name: "regexall", category: Category::Strings, eval: Some(strings::regexall), unknown_ok: false, doc: "every match of a regular expression" },
    Function { name: "indent", category: Category::Strings, eval: Some(strings::indent), unknown_ok: false, doc: "every line but the first indented by spaces" },
    Function { name: "templatestring", category: Category::Strings, eval: Some(strings::templatestring), unknown_ok: false, doc: "a template held in a value, rendered with variables" },
    Function { name: "length", category: Category::Collections, eval: Some(collections::length), unknown_ok: true, doc: "elements of a collection, or characters of a string" },
    Function { name: "element", category: Category::Collections, eval: Some(collections::element), unknown_ok: false, doc: "the element at an index, wrapping around" },
    Function { name: "index", category: Category::Collections, eval: Some(collections::index), unknown_ok: false, doc: "the index of a value in a list" },
    Function { name: "contains", category: Category::Collections, eval: Some(collections::contains), unknown_ok: false, doc: "whether a collection holds a value" },
    Function { name: "lookup", category: Category::Collections, eval: Some(collections::lookup), unknown_ok: false, doc: "a map's value for a key, or a default" },
    Function { name: "merge", category: Category::Collections, eval: Some(collections::merge), unknown_ok: true, doc: "maps or objects merged, later keys winning" },
    Function { name: "concat", category: Category::Collections, eval: Some(collections::concat), unknown_ok: true, doc: "lists joined into one" },
    Function { name: "flatten", category: Category::Collections, eval: Some(collections::flatten), unknown_ok: false, doc: "nested lists made one flat list" },
    Function { name: "distinct", category: Category::Collections, eval: Some(collections::distinct), unknown_ok: false, doc: "a list without repeats, first occurrences kept" },
    Function { name: "compact", category: Category::Collections, eval: Some(collections::compact), unknown_ok: false, doc: "a list without empty strings and nulls" },
    Function { name: "reverse", category: Category::Collections, eval: Some(collections::reverse), unknown_ok: false, doc: "a list in reverse order" },
    Function { name: "sort", category: Category::Collections, eval: Some(collections::sort), unknown_ok: false, doc: "strings in lexical order" },
    Function { name: "slice", category: Category::Collections, eval: Some(collections::slice), unknown_ok: false, doc: "the elements from one index up to another" },
    Function { name: "one", category: Category::Collections, eval: Some(collections::one), unknown_ok: false, doc: "the only element of a list or set, or null for none" },
    Function { name: "keys", category: Category::Collections, eval: Some(collections::keys), unknown_ok: false, doc: "a map's keys, sorted" },
    Function { name: "values", category: Category::Collections, eval: Some(collections::values), unknown_ok: false, doc: "a map's values, in key order" },
    Function { name: "zipmap", category: Category::Collections, eval: Some(collections::zipmap), unknown_ok: false, doc: "a map from a list of keys and a list of values" },
    Function { name: "range", category: Category::Collections, eval: Some(collections::range), unknown_ok: false, doc: "a list of numbers from a start, up to a limit, by a step" },
    Function { name: "setunion", category: Category::Collections, eval: Some(collections::setunion), unknown_ok: false, doc: "the elements in any of several sets" },
    Function { name: "setintersection", category: Category::Collections, eval: Some(collections::setintersection), unknown_ok: false, doc: "the elements in every one of several sets" },
    Function { name: "setsubtract", category: Category::Collections, eval: Some(collections::setsubtract), unknown_ok: false, doc: "the elements of one set not in another" },
    Function { name: "setproduct", category: Category::Collections, eval: Some(collections::setproduct), unknown_ok: false, doc: "every combination of one element from each set" },
    Function { name: "transpose", category: Category::Collections, eval: Some(collections::transpose), unknown_ok: false, doc: "a map of lists turned inside out" },
    Function { name: "matchkeys", category: Category::Collections, eval: Some(collections::matchkeys), unknown_ok: false, doc: "the elements of a list whose keys (from a second list) are among given ones" },
    Function { name: "chunklist", category: Category::Collections, eval: Some(collections::chunklist), unknown_ok: false, doc: "a list cut into lists of a size" },
    Function { name: "coalesce", category: Category::Collections, eval: Some(collections::coalesce), unknown_ok: true, doc: "the first argument that is not null or empty" },
    Function { name: "coalescelist", category: Category::Collections, eval: Some(collections::coalescelist), unknown_ok: false, doc: "the first list that is not empty" },
    Function { name: "alltrue", category: Category::Collections, eval: Some(collections::alltrue), unknown_ok: false, doc: "whether every element is true" },
    Function { name: "anytrue", category: Category::Collections, eval: Some(collections::alltrue), unknown_ok: false, doc: "whether any element is true" },
    Function { name: "tostring", category: Category::Conversion, eval: Some(conversion::tostring), unknown_ok: false, doc: "a value as a string" },
    Function { name: "tonumber", category: Category::Conversion, eval: Some(conversion::tonumber), unknown_ok: false, doc: "a value as a number" },
    Function { name: "tobool", category: Category::Conversion, eval: Some(conversion::tobool), unknown_ok: false, doc: "a value as a bool" },
    Function { name: "tolist", category: Category::Conversion, eval: Some(conversion::tolist), unknown_ok: false, doc: "a value as a list" },
    Function { name: "toset", category: Category::Conversion, eval: Some(conversion::toset), unknown_ok: false, doc: "a value as a set (ordered as Terraform orders sets)" },
    Function { name: "tomap", category: Category::Conversion, eval: Some(conversion::tomap), unknown_ok: false, doc: "a value as a map" },
    Function { name: "jsonencode", category: Category::Encoding, eval: Some(encoding::jsonencode), unknown_ok: false, doc: "a value as JSON, as Terraform writes it" },
    Function { name: "jsondecode", category: Category::Encoding, eval: Some(encoding::jsondecode), unknown_ok: false, doc: "JSON as a value" },
    Function { name: "base64encode", category: Category::Encoding, eval: Some(encoding::base64encode), unknown_ok: false, doc: "a string in base64" },
    Function { name: "base64decode", category: Category::Encoding, eval: Some(encoding::base64decode), unknown_ok: false, doc: "base64 decoded to a string" },
    Function { name: "sha256", category: Category::Encoding, eval: Some(encoding::sha256), unknown_ok: false, doc: "SHA-256 of a string, in hex" },
    Function { name: "md5", category: Category::Encoding, eval: Some(encoding::md5), unknown_ok: false, doc: "MD5 of a string, in hex" },
    Function { name: "sha1", category: Category::Encoding, eval: Some(encoding::sha1), unknown_ok: false, doc: "SHA-1 of a string, in hex" },
    Function { name: "sha512", category: Category::Encoding, eval: Some(encoding::sha512), unknown_ok: false, doc: "SHA-512 of a string, in hex" },
    Function { name: "base64sha256", category: Category::Encoding, eval: Some(encoding::base64sha256), unknown_ok: false, doc: "SHA-256 of a string, in base64" },
    Function { name: "base64sha512", category: Category::Encoding, eval: Some(encoding::base64sha512), unknown_ok: false, doc: "SHA-512 of a string, in base64" },
    Function { name: "urlencode", category: Category::Encoding, eval: Some(encoding::urlencode), unknown_ok: false, doc: "a string escaped for a URL query" },
    Function { name: "textencodebase64", category: Category::Encoding, eval: Some(encoding::textencodebase64), unknown_ok: false, doc: "a string in another character encoding, in base64" },
    Function { name: "textdecodebase64", category: Category::Encoding, eval: Some(encoding::textdecodebase64), unknown_ok: false, doc: "base64 of text in a character encoding, decoded" },
    Function { name: "uuidv5", category: Category::Encoding, eval: Some(encoding::uuidv5), unknown_ok: false, doc: "a name-based (SHA-1) UUID in a namespace" },
    Function { name: "uuid", category: Category::Encoding, eval: Some(encoding::uuid), unknown_ok: false, doc: "a random UUID, new each apply (unknown during plan)" },
    Function { name: "base64gzip", category: Category::Encoding, eval: Some(encoding::base64gzip), unknown_ok: false, doc: "a string gzip-compressed, in base64" },
    Function { name: "bcrypt", category: Category::Encoding, eval: Some(encoding::bcrypt), unknown_ok: false, doc: "a bcrypt hash of a string (cost 10 unless given), new salt each evaluation" },
    Function { name: "rsadecrypt", category: Category::Encoding, eval: Some(encoding::rsadecrypt), unknown_ok: false, doc: "RSA (PKCS #1 v1.5) ciphertext in base64 decrypted with a PEM private key" },
    Function { name: "csvdecode", category: Category::Encoding, eval: Some(encoding::csvdecode), unknown_ok: false, doc: "CSV with a header row as a list of maps" },
    Function { name: "yamlencode", category: Category::Encoding, eval: Some(yaml::yamlencode), unknown_ok: false, doc: "a value as YAML, as Terraform writes it" },
    Function { name: "yamldecode", category: Category::Encoding, eval: Some(yaml::yamldecode), unknown_ok: false, doc: "YAML as a value" },
    Function { name: "file", category: Category::Files, eval: Some(files::file), unknown_ok: false, doc: "a file of the configuration, as a string" },
    Function { name: "fileexists", category: Category::Files, eval: Some(files::file), unknown_ok: false, doc: "whether a file is in the configuration" },
    Function { name: "templatefile", category: Category::Files, eval: Some(files::templatefile), unknown_ok: false, doc: "a template file rendered with variables (paths like `\"${path.module}/x.tpl\"`)" },
    Function { name: "basename", category: Category::Files, eval: Some(files::basename), unknown_ok: false, doc: "the last element of a path" },
    Function { name: "dirname", category: Category::Files, eval: Some(files::dirname), unknown_ok: false, doc: "a path without its last element" },
    Function { name: "filemd5", category: Category::Files, eval: Some(files::filehash), unknown_ok: false, doc: "MD5 of a file, in hex" },
    Function { name: "filesha1", category: Category::Files, eval: Some(files::filehash), unknown_ok: false, doc: "SHA-1 of a file, in hex" },
    Function { name: "filesha256", category: Category::Files, eval: Some(files::filehash), unknown_ok: false, doc: "SHA-256 of a file, in hex" },
    Function { name: "filesha512", category: Category::Files, eval: Some(files::filehash), unknown_ok: false, doc: "SHA-512 of a file, in hex" },
    Function { name: "filebase64", category: Category::Files, eval: Some(files::filehash), unknown_ok: false, doc: "a file's bytes in base64" },
    Function { name: "filebase64sha256", category: Category::Files, eval: Some(files::filehash), unknown_ok: false, doc: "SHA-256 of a file, in base64" },
    Function { name: "filebase64sha512", category: Category::Files, eval: Some(files::filehash), unknown_ok: false, doc: "SHA-512 of a file, in base64" },
    Function { name: "pathexpand", category: Category::Files, eval: Some(files::pathexpand), unknown_ok: false, doc: "a leading `~` replaced by the home directory of who ran the CLI" },
    Function { name: "abspath", category: Category::Files, eval: Some(files::abspath), unknown_ok: false, doc: "a path made absolute against where the CLI ran" },
    Function { name: "fileset", category: Category::Files, eval: Some(files::fileset), unknown_ok: false, doc: "the configuration's files under a directory matching a glob (`*`, `**`, `?`, `[...]`, `{a,b}`)" },
    Function { name: "cidrsubnet", category: Category::Networks, eval: Some(networks::cidrsubnet), unknown_ok: false, doc: "a subnet of a CIDR block, by added bits and number" },
    Function { name: "cidrsubnets", category: Category::Networks, eval: Some(networks::cidrsubnets), unknown_ok: false, doc: "consecutive subnets of a CIDR block, by added bits each" },
    Function { name: "cidrhost", category: Category::Networks, eval: Some(networks::cidrhost), unknown_ok: false, doc: "the address of a host number in a CIDR block" },
    Function { name: "cidrnetmask", category: Category::Networks, eval: Some(networks::cidrnetmask), unknown_ok: false, doc: "an IPv4 CIDR block's netmask" },
    Function { name: "formatdate", category: Category::Time, eval: Some(time::formatdate), unknown_ok: false, doc: "an RFC 3339 time in a format (`YYYY-MM-DD hh:mm`...)" },
    Function { name: "timeadd", category: Category::Time, eval: Some(time::timeadd), unknown_ok: false, doc: "an RFC 3339 time plus a duration (`1h30m`)" },
    Function { name: "timestamp", category: Category::Time, eval: Some(time::timestamp_now), unknown_ok: false, doc: "the time of apply (RFC 3339, UTC; unknown during plan)" },
    Function { name: "plantimestamp", category: Category::Time, eval: Some(time::timestamp_now), unknown_ok: false, doc: "the time of the plan (RFC 3339, UTC), known during plan" },
    Function { name: "timecmp", category: Category::Time, eval: Some(time::timecmp), unknown_ok: false, doc: "-1, 0 or 1: how two times compare" },
    Function { name: "try", category: Category::Errors, eval: None, unknown_ok: false, doc: "the first argument that evaluates without an error" },
    Function { name: "can", category: Category::Errors, eval: None, unknown_ok: false, doc: "whether an expression evaluates without an error" },
    Function { name: "sensitive", category: Category::Marks, eval: Some(marks::sensitive), unknown_ok: false, doc: "a value marked sensitive" },
    Function { name: "nonsensitive", category: Category::Marks, eval: Some(marks::sensitive), unknown_ok: false, doc: "a sensitive value unmarked" },
    Function { name: "issensitive", category: Category::Marks, eval: None, unknown_ok: false, doc: "whether a value is marked sensitive" },
    Function { name: "ephemeralasnull", category: Category::Marks, eval: Some(marks::ephemeralasnull), unknown_ok: false, doc: "a value (veeps has no ephemeral values)" },
];

/// The function called `name`.
pub fn function(name: &str) -> Option<&'static Function> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

/// The functions section of `docs/language.md`, generated from [`FUNCTIONS`]: a table per
/// category, each function with what it gives.
pub fn markdown() -> String {
    let mut out = String::new();
    let mut cat: Option<Category> = None;
    for f in FUNCTIONS {
        if cat != Some(f.category) {
            if cat.is_some() {
                out.push('\n');
            }
            out.push_str(&format!(
                "**{}**\n\n| function | gives |\n| --- | --- |\n",
                f.category.title()
            ));
            cat = Some(f.category);
        }
        out.push_str(&format!(
            "| `{}` | {} |\n",
            f.name,
            f.doc.replace('|', "\\|")
        ));
    }
    out.trim_end().to_string()
}

/// Calls function `name`. Unknown arguments give an unknown result.
pub fn call(name: &str, args: Vec<Value>, ctx: &CallCtx) -> Result<Value, Diagnostic> {
    let f = Call { name, args, ctx };
    let Some(func) = function(name) else {
        return Err(Diagnostic::at(
            ctx.loc,
            format!(
                "call to unknown function \"{name}\".{}",
                crate::diag::did_you_mean(name, FUNCTIONS.iter().map(|f| f.name))
            ),
        ));
    };
    if !func.unknown_ok && f.args.iter().any(Value::has_unknown) {
        return Ok(Value::Unknown);
    }
    match func.eval {
        Some(eval) => eval(&f),
        None => Err(f.err("is evaluated by the language itself")),
    }
}

/// A call being evaluated: the function's name, its arguments, where it is.
pub struct Call<'a> {
    name: &'a str,
    args: Vec<Value>,
    ctx: &'a CallCtx<'a>,
}

impl Call<'_> {
    fn err(&self, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::at(self.ctx.loc, format!("{}(): {}", self.name, msg.into()))
    }
    fn arg_err(&self, i: usize, msg: impl Into<String>) -> Diagnostic {
        let loc = self.ctx.arg_locs.get(i).unwrap_or(self.ctx.loc);
        Diagnostic::at(
            loc,
            format!("{}(): argument {}: {}", self.name, i + 1, msg.into()),
        )
    }
    fn arity(&self, min: usize, max: usize) -> Result<(), Diagnostic> {
        let n = self.args.len();
        if n < min || n > max {
            let want = if min == max {
                format!("{min}")
            } else if max == usize::MAX {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(self.err(format!(
                "expects {want} argument{}, got {n}",
                if max == 1 { "" } else { "s" }
            )));
        }
        Ok(())
    }
    fn arg(&self, i: usize) -> &Value {
        &self.args[i]
    }
    fn str(&self, i: usize) -> Result<String, Diagnostic> {
        match convert(self.arg(i), &Type::String).map_err(|e| self.arg_err(i, e))? {
            Value::String(s) => Ok(s),
            _ => Err(self.arg_err(i, "a string is required, got null")),
        }
    }
    fn num(&self, i: usize) -> Result<Number, Diagnostic> {
        match convert(self.arg(i), &Type::Number).map_err(|e| self.arg_err(i, e))? {
            Value::Number(n) => Ok(n),
            _ => Err(self.arg_err(i, "a number is required, got null")),
        }
    }
    /// A number argument as a float64 (for the functions Terraform computes in float64).
    fn f64(&self, i: usize) -> Result<f64, Diagnostic> {
        Ok(self.num(i)?.to_f64())
    }
    fn int(&self, i: usize) -> Result<i64, Diagnostic> {
        let n = self.num(i)?;
        if !n.is_integer() {
            return Err(self.arg_err(i, format!("a whole number is required, got {}", n.text())));
        }
        n.to_i64().ok_or_else(|| {
            self.arg_err(
                i,
                format!("{} is out of range for a whole number here", n.text()),
            )
        })
    }
    fn list(&self, i: usize) -> Result<Vec<Value>, Diagnostic> {
        match self.arg(i) {
            Value::List(l) => Ok(l.clone()),
            v => Err(self.arg_err(i, format!("a list is required, got {}", v.type_name()))),
        }
    }
    fn obj(&self, i: usize) -> Result<BTreeMap<String, Value>, Diagnostic> {
        match self.arg(i) {
            Value::Object(o) => Ok(o.clone()),
            v => Err(self.arg_err(i, format!("a map is required, got {}", v.type_name()))),
        }
    }
    fn strings(&self, i: usize) -> Result<Vec<String>, Diagnostic> {
        self.list(i)?
            .iter()
            .map(|v| match convert(v, &Type::String) {
                Ok(Value::String(s)) => Ok(s),
                _ => Err(self.arg_err(
                    i,
                    format!("a list of strings is required, found a {}", v.type_name()),
                )),
            })
            .collect()
    }

    fn cidr(&self, i: usize) -> Result<IpNet, Diagnostic> {
        let s = self.str(i)?;
        s.parse::<IpNet>().map_err(|_| {
            self.arg_err(
                i,
                format!("\"{s}\" is not a CIDR block like \"10.0.0.0/16\""),
            )
        })
    }

    fn format(&self, fmt: &str, args: &[Value]) -> Result<String, Diagnostic> {
        let mut out = String::new();
        let mut it = fmt.chars().peekable();
        let mut next = 0usize;
        while let Some(c) = it.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let mut flags = String::new();
            loop {
                match it.peek() {
                    Some(&f) if "+-# 0123456789.".contains(f) => {
                        flags.push(f);
                        it.next();
                    }
                    // `%[n]`: the nth argument (from 1), and those after it next.
                    Some('[') => {
                        it.next();
                        let mut n = String::new();
                        for d in it.by_ref() {
                            if d == ']' {
                                break;
                            }
                            n.push(d);
                        }
                        match n.parse::<usize>() {
                            Ok(i) if i >= 1 => next = i - 1,
                            _ => return Err(self.err(format!("bad argument index \"[{n}]\""))),
                        }
                    }
                    _ => break,
                }
            }
            let verb = it
                .next()
                .ok_or_else(|| self.err("the format string ends with \"%\""))?;
            if verb == '%' {
                out.push('%');
                continue;
            }
            let v = args.get(next).ok_or_else(|| {
                self.err(format!(
                    "not enough arguments for the format string (needs more than {next})"
                ))
            })?;
            next += 1;
            let width: usize = flags
                .trim_start_matches(['-', '+', '0', '#', ' '])
                .split('.')
                .next()
                .and_then(|w| w.parse().ok())
                .unwrap_or(0usize)
                .min(4096);
            let precision: Option<usize> = flags
                .split_once('.')
                .and_then(|(_, p)| p.parse().ok())
                .map(|p: usize| p.min(100));
            let plus = flags.starts_with('+') || flags.contains("0+");
            let sign = |n: f64, body: String| {
                if plus && n >= 0.0 {
                    format!("+{body}")
                } else {
                    body
                }
            };
            let number = |v: &Value| {
                convert(v, &Type::Number)
                    .ok()
                    .and_then(|v| v.as_f64())
                    .ok_or_else(|| {
                        self.err(format!("%{verb} needs a number, got {}", v.type_name()))
                    })
            };
            let s = match verb {
                // Collections as JSON, as Terraform's %v writes them.
                'v' => match v {
                    Value::String(s) => s.clone(),
                    Value::List(_) | Value::Object(_) => {
                        serde_json::to_string(&v.to_json()).unwrap_or_default()
                    }
                    v => v.to_template_string().unwrap_or_else(|| v.to_string()),
                },
                'e' | 'E' => {
                    let n = number(v)?;
                    let body = go_exp(&format!("{:.*e}", precision.unwrap_or(6), n));
                    sign(
                        n,
                        if verb == 'E' {
                            body.to_uppercase()
                        } else {
                            body
                        },
                    )
                }
                'g' | 'G' => {
                    let n = number(v)?;
                    let body = match precision {
                        Some(p) => go_exp(&format!("{:.*e}", p.saturating_sub(1), n)),
                        None => go_shortest(n),
                    };
                    sign(
                        n,
                        if verb == 'G' {
                            body.to_uppercase()
                        } else {
                            body
                        },
                    )
                }
                's' => convert(v, &Type::String)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .ok_or_else(|| self.err(format!("%s needs a string, got {}", v.type_name())))?,
                'd' => {
                    let n = convert(v, &Type::Number)
                        .ok()
                        .and_then(|v| v.as_number().cloned())
                        .ok_or_else(|| {
                            self.err(format!("%d needs a number, got {}", v.type_name()))
                        })?;
                    let whole =
                        n.is_integer()
                            .then(|| n.trunc_int())
                            .flatten()
                            .ok_or_else(|| {
                                self.err(format!("%d needs a whole number, got {}", n.text()))
                            })?;
                    let f = if n.is_negative() { -1.0 } else { 1.0 };
                    sign(f, whole.to_string())
                }
                'f' => {
                    let n = convert(v, &Type::Number)
                        .ok()
                        .and_then(|v| v.as_f64())
                        .ok_or_else(|| {
                            self.err(format!("%f needs a number, got {}", v.type_name()))
                        })?;
                    sign(n, format!("{:.*}", precision.unwrap_or(6), n))
                }
                'x' | 'X' | 'o' | 'b' => {
                    let n = convert(v, &Type::Number)
                        .ok()
                        .and_then(|v| v.as_f64())
                        .ok_or_else(|| self.err(format!("%{verb} needs a number")))?
                        as i64;
                    match verb {
                        'x' => format!("{n:x}"),
                        'X' => format!("{n:X}"),
                        'o' => format!("{n:o}"),
                        _ => format!("{n:b}"),
                    }
                }
                'q' => serde_json::Value::String(
                    convert(v, &Type::String)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                )
                .to_string(),
                't' => convert(v, &Type::Bool)
                    .ok()
                    .and_then(|v| v.as_bool())
                    .map(|b| b.to_string())
                    .ok_or_else(|| self.err("%t needs a bool"))?,
                other => return Err(self.err(format!("unsupported format verb \"%{other}\""))),
            };
            let pad_zero = flags.starts_with('0') && verb != 's';
            if s.chars().count() < width {
                let pad = width - s.chars().count();
                if flags.starts_with('-') {
                    out.push_str(&s);
                    out.push_str(&" ".repeat(pad));
                } else if pad_zero && (s.starts_with('-') || s.starts_with('+')) {
                    // Zeros go after the sign: -0042.
                    out.push_str(&s[..1]);
                    out.push_str(&"0".repeat(pad));
                    out.push_str(&s[1..]);
                } else {
                    out.push_str(&(if pad_zero { "0" } else { " " }).repeat(pad));
                    out.push_str(&s);
                }
            } else {
                out.push_str(&s);
            }
        }
        Ok(out)
    }
}

/// Rust's `1.5e3` as Go writes it: `1.5e+03` (a sign, at least two exponent digits).
fn go_exp(rust: &str) -> String {
    match rust.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => rust.to_string(),
    }
}

/// Go's `%g` with no precision: the shortest digits, in exponent form when the exponent is
/// below -4 or 6 and above (as Go decides for shortest formatting).
fn go_shortest(n: f64) -> String {
    let e = format!("{n:e}");
    let exp: i32 = e
        .split_once('e')
        .and_then(|(_, x)| x.parse().ok())
        .unwrap_or(0);
    if !(-4..6).contains(&exp) {
        go_exp(&e)
    } else {
        format!("{n}")
    }
}

/// The `num`th subnet of `net` with `bits` more prefix bits (`cidrsubnet`).
pub fn cidr_subnet(net: &IpNet, bits: i64, num: i64) -> Result<IpNet, String> {
    let total = net.max_prefix_len() as i64;
    let new_len = net.prefix_len() as i64 + bits;
    if bits < 0 || new_len > total {
        return Err(format!(
            "cannot extend prefix /{} by {bits} bits",
            net.prefix_len()
        ));
    }
    if num < 0 || (bits < 63 && num >= (1i64 << bits)) {
        return Err(format!(
            "prefix extension of {bits} bits cannot hold network number {num}"
        ));
    }
    match net {
        IpNet::V4(n) => {
            let base = u32::from(n.network()) as u64;
            let addr = base | ((num as u64) << (total - new_len));
            Ok(IpNet::V4(
                Ipv4Net::new((addr as u32).into(), new_len as u8).map_err(|e| e.to_string())?,
            ))
        }
        IpNet::V6(n) => {
            let base = u128::from(n.network());
            let shifted = (num as u128)
                .checked_shl((total - new_len) as u32)
                .filter(|_| total - new_len < 128)
                .unwrap_or(0);
            let addr = base | shifted;
            Ok(IpNet::V6(
                Ipv6Net::new(addr.into(), new_len as u8).map_err(|e| e.to_string())?,
            ))
        }
    }
}

/// Host number `num` of `net` (`cidrhost`); negative numbers count from the end.
pub fn cidr_host(net: &IpNet, num: i64) -> Result<IpAddr, String> {
    let host_bits = (net.max_prefix_len() - net.prefix_len()) as u32;
    if host_bits >= 127 {
        return Err(format!("{net} is too large for cidrhost"));
    }
    let size: i128 = 1i128 << host_bits;
    let n = if num < 0 {
        size + num as i128
    } else {
        num as i128
    };
    if n < 0 || n >= size {
        return Err(format!("host number {num} does not fit in {net}"));
    }
    Ok(match net {
        IpNet::V4(v) => IpAddr::V4((u32::from(v.network()) + n as u32).into()),
        IpNet::V6(v) => IpAddr::V6((u128::from(v.network()) + n as u128).into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/language.md` lists exactly the functions there are, by category. Run with
    /// `VEEPS_UPDATE_DOCS=1` to rewrite the list from the table.
    #[test]
    fn the_documented_list_is_the_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/language.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let start = doc.find("## Functions\n\n").unwrap() + "## Functions\n\n".len();
        let end = start + doc[start..].find("\n\n## ").unwrap();
        let want = markdown();
        if std::env::var_os("VEEPS_UPDATE_DOCS").is_some() {
            std::fs::write(&path, format!("{}{want}{}", &doc[..start], &doc[end..])).unwrap();
            return;
        }
        assert_eq!(
            &doc[start..end],
            want,
            "docs/language.md's function list differs from the table; run this test with VEEPS_UPDATE_DOCS=1"
        );
    }

    #[test]
    fn every_name_is_listed_once() {
        let mut names: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
