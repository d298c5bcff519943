//! The built-in functions: the ones ops people use most in Terraform configurations.

use crate::diag::{Diagnostic, Loc};
use crate::eval::Scope;
use crate::value::{convert, format_number, Type, Value};
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

/// Every function name, for suggestions.
pub const NAMES: &[&str] = &[
    "abs",
    "alltrue",
    "anytrue",
    "base64decode",
    "base64encode",
    "can",
    "ceil",
    "chomp",
    "cidrhost",
    "cidrnetmask",
    "cidrsubnet",
    "cidrsubnets",
    "coalesce",
    "coalescelist",
    "compact",
    "concat",
    "contains",
    "distinct",
    "element",
    "endswith",
    "file",
    "fileexists",
    "flatten",
    "floor",
    "format",
    "formatlist",
    "index",
    "join",
    "jsondecode",
    "jsonencode",
    "keys",
    "length",
    "lookup",
    "lower",
    "max",
    "merge",
    "min",
    "nonsensitive",
    "one",
    "range",
    "replace",
    "reverse",
    "sensitive",
    "setunion",
    "sha256",
    "slice",
    "sort",
    "split",
    "startswith",
    "strrev",
    "substr",
    "sum",
    "templatefile",
    "title",
    "tobool",
    "tolist",
    "tomap",
    "tonumber",
    "toset",
    "tostring",
    "trim",
    "trimprefix",
    "trimspace",
    "trimsuffix",
    "try",
    "upper",
    "values",
    "zipmap",
];

/// Calls function `name`. Unknown arguments give an unknown result.
pub fn call(name: &str, args: Vec<Value>, ctx: &CallCtx) -> Result<Value, Diagnostic> {
    let f = Call { name, args, ctx };
    if !NAMES.contains(&name) {
        return Err(Diagnostic::at(
            ctx.loc,
            format!(
                "call to unknown function \"{name}\".{}",
                crate::diag::did_you_mean(name, NAMES.iter().copied())
            ),
        ));
    }
    if f.args.iter().any(Value::has_unknown)
        && !matches!(name, "length" | "coalesce" | "concat" | "merge")
    {
        return Ok(Value::Unknown);
    }
    f.run()
}

struct Call<'a> {
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
    fn num(&self, i: usize) -> Result<f64, Diagnostic> {
        match convert(self.arg(i), &Type::Number).map_err(|e| self.arg_err(i, e))? {
            Value::Number(n) => Ok(n),
            _ => Err(self.arg_err(i, "a number is required, got null")),
        }
    }
    fn int(&self, i: usize) -> Result<i64, Diagnostic> {
        let n = self.num(i)?;
        if n.fract() != 0.0 {
            return Err(self.arg_err(
                i,
                format!("a whole number is required, got {}", format_number(n)),
            ));
        }
        Ok(n as i64)
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

    fn run(&self) -> Result<Value, Diagnostic> {
        let a = &self.args;
        Ok(match self.name {
            "sensitive" | "nonsensitive" => {
                self.arity(1, 1)?;
                a[0].clone()
            }
            "abs" => {
                self.arity(1, 1)?;
                Value::Number(self.num(0)?.abs())
            }
            "ceil" => {
                self.arity(1, 1)?;
                Value::Number(self.num(0)?.ceil())
            }
            "floor" => {
                self.arity(1, 1)?;
                Value::Number(self.num(0)?.floor())
            }
            "max" | "min" => {
                self.arity(1, usize::MAX)?;
                let mut nums = Vec::new();
                for i in 0..a.len() {
                    nums.push(self.num(i)?);
                }
                let r = if self.name == "max" {
                    nums.iter().cloned().fold(f64::MIN, f64::max)
                } else {
                    nums.iter().cloned().fold(f64::MAX, f64::min)
                };
                Value::Number(r)
            }
            "sum" => {
                self.arity(1, 1)?;
                let mut s = 0.0;
                for v in self.list(0)? {
                    s += convert(&v, &Type::Number)
                        .ok()
                        .and_then(|v| v.as_f64())
                        .ok_or_else(|| self.arg_err(0, "a list of numbers is required"))?;
                }
                Value::Number(s)
            }
            "alltrue" | "anytrue" => {
                self.arity(1, 1)?;
                let mut bools = Vec::new();
                for v in self.list(0)? {
                    bools.push(
                        convert(&v, &Type::Bool)
                            .ok()
                            .and_then(|v| v.as_bool())
                            .ok_or_else(|| self.arg_err(0, "a list of bools is required"))?,
                    );
                }
                Value::Bool(if self.name == "alltrue" {
                    bools.iter().all(|b| *b)
                } else {
                    bools.iter().any(|b| *b)
                })
            }
            "upper" => {
                self.arity(1, 1)?;
                Value::String(self.str(0)?.to_uppercase())
            }
            "lower" => {
                self.arity(1, 1)?;
                Value::String(self.str(0)?.to_lowercase())
            }
            "title" => {
                self.arity(1, 1)?;
                let s = self.str(0)?;
                let mut out = String::new();
                let mut start = true;
                for c in s.chars() {
                    if start && c.is_alphabetic() {
                        out.extend(c.to_uppercase());
                    } else {
                        out.push(c);
                    }
                    start = !c.is_alphanumeric();
                }
                Value::String(out)
            }
            "strrev" => {
                self.arity(1, 1)?;
                Value::String(self.str(0)?.chars().rev().collect())
            }
            "trimspace" => {
                self.arity(1, 1)?;
                Value::String(self.str(0)?.trim().to_string())
            }
            "chomp" => {
                self.arity(1, 1)?;
                Value::String(self.str(0)?.trim_end_matches(['\n', '\r']).to_string())
            }
            "trim" => {
                self.arity(2, 2)?;
                let cut: Vec<char> = self.str(1)?.chars().collect();
                Value::String(self.str(0)?.trim_matches(|c| cut.contains(&c)).to_string())
            }
            "trimprefix" => {
                self.arity(2, 2)?;
                let s = self.str(0)?;
                let p = self.str(1)?;
                Value::String(s.strip_prefix(&p).unwrap_or(&s).to_string())
            }
            "trimsuffix" => {
                self.arity(2, 2)?;
                let s = self.str(0)?;
                let p = self.str(1)?;
                Value::String(s.strip_suffix(&p).unwrap_or(&s).to_string())
            }
            "startswith" => {
                self.arity(2, 2)?;
                Value::Bool(self.str(0)?.starts_with(&self.str(1)?))
            }
            "endswith" => {
                self.arity(2, 2)?;
                Value::Bool(self.str(0)?.ends_with(&self.str(1)?))
            }
            "replace" => {
                self.arity(3, 3)?;
                let (s, from, to) = (self.str(0)?, self.str(1)?, self.str(2)?);
                if from.is_empty() {
                    return Err(self.arg_err(1, "the substring to replace must not be empty"));
                }
                Value::String(s.replace(&from, &to))
            }
            "substr" => {
                self.arity(3, 3)?;
                let s: Vec<char> = self.str(0)?.chars().collect();
                let mut off = self.int(1)?;
                let len = self.int(2)?;
                if off < 0 {
                    off += s.len() as i64;
                }
                let off = off.clamp(0, s.len() as i64) as usize;
                let end = if len < 0 {
                    s.len()
                } else {
                    off.saturating_add(len as usize).min(s.len())
                };
                Value::String(s[off..end].iter().collect())
            }
            "format" => {
                self.arity(1, usize::MAX)?;
                Value::String(self.format(&self.str(0)?, &a[1..])?)
            }
            "formatlist" => {
                self.arity(1, usize::MAX)?;
                let fmt = self.str(0)?;
                let n = a[1..]
                    .iter()
                    .filter_map(|v| v.as_list().map(Vec::len))
                    .max()
                    .unwrap_or(0);
                let mut out = Vec::new();
                for i in 0..n {
                    let row: Vec<Value> = a[1..]
                        .iter()
                        .map(|v| match v {
                            Value::List(l) => l.get(i).cloned().unwrap_or(Value::Null),
                            v => v.clone(),
                        })
                        .collect();
                    out.push(Value::String(self.format(&fmt, &row)?));
                }
                Value::List(out)
            }
            "join" => {
                self.arity(2, usize::MAX)?;
                let sep = self.str(0)?;
                let mut parts = Vec::new();
                for i in 1..a.len() {
                    parts.extend(self.strings(i)?);
                }
                Value::String(parts.join(&sep))
            }
            "split" => {
                self.arity(2, 2)?;
                let sep = self.str(0)?;
                let s = self.str(1)?;
                if s.is_empty() {
                    Value::List(vec![])
                } else if sep.is_empty() {
                    Value::List(s.chars().map(|c| Value::String(c.to_string())).collect())
                } else {
                    Value::List(s.split(sep.as_str()).map(Value::string).collect())
                }
            }
            "length" => {
                self.arity(1, 1)?;
                match &a[0] {
                    Value::Unknown => Value::Unknown,
                    Value::String(s) => Value::Number(s.chars().count() as f64),
                    Value::List(l) => Value::Number(l.len() as f64),
                    Value::Object(o) => Value::Number(o.len() as f64),
                    v => {
                        return Err(self.arg_err(
                            0,
                            format!("a string, list or map is required, got {}", v.type_name()),
                        ))
                    }
                }
            }
            "element" => {
                self.arity(2, 2)?;
                let l = self.list(0)?;
                if l.is_empty() {
                    return Err(self.arg_err(0, "cannot use element() with an empty list"));
                }
                let i = self.int(1)?;
                if i < 0 {
                    return Err(self.arg_err(1, "the index must not be negative"));
                }
                l[i as usize % l.len()].clone()
            }
            "index" => {
                self.arity(2, 2)?;
                let l = self.list(0)?;
                match l.iter().position(|v| v == &a[1]) {
                    Some(i) => Value::Number(i as f64),
                    None => return Err(self.err(format!("the list does not contain {}", a[1]))),
                }
            }
            "contains" => {
                self.arity(2, 2)?;
                Value::Bool(self.list(0)?.contains(&a[1]))
            }
            "lookup" => {
                self.arity(2, 3)?;
                let m = self.obj(0)?;
                let k = self.str(1)?;
                match m.get(&k) {
                    Some(v) => v.clone(),
                    None if a.len() == 3 => a[2].clone(),
                    None => {
                        return Err(self.arg_err(
                            1,
                            format!("the map has no key \"{k}\" and no default was given"),
                        ))
                    }
                }
            }
            "merge" => {
                let mut out = BTreeMap::new();
                for (i, v) in a.iter().enumerate() {
                    match v {
                        Value::Null => {}
                        Value::Unknown => return Ok(Value::Unknown),
                        Value::Object(o) => out.extend(o.clone()),
                        v => {
                            return Err(self.arg_err(
                                i,
                                format!("a map or object is required, got {}", v.type_name()),
                            ))
                        }
                    }
                }
                Value::Object(out)
            }
            "concat" => {
                let mut out = Vec::new();
                for (i, v) in a.iter().enumerate() {
                    match v {
                        Value::Unknown => return Ok(Value::Unknown),
                        Value::List(l) => out.extend(l.clone()),
                        v => {
                            return Err(self
                                .arg_err(i, format!("a list is required, got {}", v.type_name())))
                        }
                    }
                }
                Value::List(out)
            }
            "flatten" => {
                self.arity(1, 1)?;
                fn flat(v: &[Value], out: &mut Vec<Value>) {
                    for x in v {
                        match x {
                            Value::List(l) => flat(l, out),
                            x => out.push(x.clone()),
                        }
                    }
                }
                let mut out = Vec::new();
                flat(&self.list(0)?, &mut out);
                Value::List(out)
            }
            "distinct" => {
                self.arity(1, 1)?;
                let mut out: Vec<Value> = Vec::new();
                for v in self.list(0)? {
                    if !out.contains(&v) {
                        out.push(v);
                    }
                }
                Value::List(out)
            }
            "compact" => {
                self.arity(1, 1)?;
                Value::List(
                    self.list(0)?
                        .into_iter()
                        .filter(|v| !v.is_null() && v.as_str() != Some(""))
                        .collect(),
                )
            }
            "reverse" => {
                self.arity(1, 1)?;
                Value::List(self.list(0)?.into_iter().rev().collect())
            }
            "sort" => {
                self.arity(1, 1)?;
                let mut s = self.strings(0)?;
                s.sort();
                Value::List(s.into_iter().map(Value::String).collect())
            }
            "slice" => {
                self.arity(3, 3)?;
                let l = self.list(0)?;
                let (s, e) = (self.int(1)?, self.int(2)?);
                if s < 0 || e < s || e as usize > l.len() {
                    return Err(self.err(format!(
                        "the range {s}..{e} is not within a list of {} elements",
                        l.len()
                    )));
                }
                Value::List(l[s as usize..e as usize].to_vec())
            }
            "one" => {
                self.arity(1, 1)?;
                let l = self.list(0)?;
                match l.len() {
                    0 => Value::Null,
                    1 => l[0].clone(),
                    n => {
                        return Err(self.arg_err(
                            0,
                            format!("a list of at most one element is required, got {n}"),
                        ))
                    }
                }
            }
            "setunion" => {
                self.arity(1, usize::MAX)?;
                let mut out: Vec<Value> = Vec::new();
                for i in 0..a.len() {
                    for v in self.list(i)? {
                        if !out.contains(&v) {
                            out.push(v);
                        }
                    }
                }
                Value::List(out)
            }
            "keys" => {
                self.arity(1, 1)?;
                Value::List(self.obj(0)?.into_keys().map(Value::String).collect())
            }
            "values" => {
                self.arity(1, 1)?;
                Value::List(self.obj(0)?.into_values().collect())
            }
            "zipmap" => {
                self.arity(2, 2)?;
                let k = self.strings(0)?;
                let v = self.list(1)?;
                if k.len() != v.len() {
                    return Err(self.err(format!(
                        "the lists must have the same length ({} keys, {} values)",
                        k.len(),
                        v.len()
                    )));
                }
                Value::Object(k.into_iter().zip(v).collect())
            }
            "range" => {
                self.arity(1, 3)?;
                let (start, end, step) = match a.len() {
                    1 => (0.0, self.num(0)?, 1.0),
                    2 => (self.num(0)?, self.num(1)?, 1.0),
                    _ => (self.num(0)?, self.num(1)?, self.num(2)?),
                };
                if step == 0.0 {
                    return Err(self.err("the step must not be zero"));
                }
                let mut out = Vec::new();
                let mut x = start;
                while (step > 0.0 && x < end) || (step < 0.0 && x > end) {
                    out.push(Value::Number(x));
                    x += step;
                    if out.len() > 1_048_576 {
                        return Err(self.err("the range has more than 1048576 elements"));
                    }
                }
                Value::List(out)
            }
            "coalesce" => {
                for v in a {
                    match v {
                        Value::Unknown => return Ok(Value::Unknown),
                        Value::Null => {}
                        Value::String(s) if s.is_empty() => {}
                        v => return Ok(v.clone()),
                    }
                }
                return Err(self.err("no non-null, non-empty argument"));
            }
            "coalescelist" => {
                for (i, _) in a.iter().enumerate() {
                    let l = self.list(i)?;
                    if !l.is_empty() {
                        return Ok(Value::List(l));
                    }
                }
                Value::List(vec![])
            }
            "tostring" => {
                self.arity(1, 1)?;
                convert(&a[0], &Type::String).map_err(|e| self.arg_err(0, e))?
            }
            "tonumber" => {
                self.arity(1, 1)?;
                convert(&a[0], &Type::Number).map_err(|e| self.arg_err(0, e))?
            }
            "tobool" => {
                self.arity(1, 1)?;
                convert(&a[0], &Type::Bool).map_err(|e| self.arg_err(0, e))?
            }
            "tolist" => {
                self.arity(1, 1)?;
                convert(&a[0], &Type::List(Box::new(Type::Any))).map_err(|e| self.arg_err(0, e))?
            }
            "toset" => {
                self.arity(1, 1)?;
                convert(&a[0], &Type::Set(Box::new(Type::Any))).map_err(|e| self.arg_err(0, e))?
            }
            "tomap" => {
                self.arity(1, 1)?;
                convert(&a[0], &Type::Map(Box::new(Type::Any))).map_err(|e| self.arg_err(0, e))?
            }
            "jsonencode" => {
                self.arity(1, 1)?;
                Value::String(serde_json::to_string(&a[0].to_json()).unwrap_or_default())
            }
            "jsondecode" => {
                self.arity(1, 1)?;
                let s = self.str(0)?;
                let j: serde_json::Value = serde_json::from_str(&s)
                    .map_err(|e| self.arg_err(0, format!("invalid JSON: {e}")))?;
                Value::from_json(&j)
            }
            "base64encode" => {
                self.arity(1, 1)?;
                Value::String(base64::engine::general_purpose::STANDARD.encode(self.str(0)?))
            }
            "base64decode" => {
                self.arity(1, 1)?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(self.str(0)?)
                    .map_err(|e| self.arg_err(0, format!("invalid base64: {e}")))?;
                Value::String(
                    String::from_utf8(bytes)
                        .map_err(|_| self.arg_err(0, "the decoded bytes are not UTF-8"))?,
                )
            }
            "sha256" => {
                self.arity(1, 1)?;
                Value::String(hex::encode(sha2::Sha256::digest(self.str(0)?.as_bytes())))
            }
            "file" | "fileexists" => {
                self.arity(1, 1)?;
                let p = self.str(0)?;
                let content = self.ctx.scope.read_file(&crate::config::normalize_path(&p));
                if self.name == "fileexists" {
                    Value::Bool(content.is_some())
                } else {
                    Value::String(content.ok_or_else(|| self.arg_err(0, format!("no file \"{p}\" in the configuration (paths are relative to where the command runs; use path.module)")))?)
                }
            }
            "templatefile" => {
                self.arity(2, 2)?;
                let p = self.str(0)?;
                let vars = self.obj(1)?;
                let text = self
                    .ctx
                    .scope
                    .read_file(&crate::config::normalize_path(&p))
                    .ok_or_else(|| {
                        self.arg_err(0, format!("no file \"{p}\" in the configuration"))
                    })?;
                crate::eval::eval_template_text(&text, &p, vars, &crate::eval::EmptyScope)?
            }
            "cidrhost" => {
                self.arity(2, 2)?;
                let net = self.cidr(0)?;
                let n = self.int(1)?;
                Value::String(
                    cidr_host(&net, n)
                        .map_err(|e| self.arg_err(1, e))?
                        .to_string(),
                )
            }
            "cidrnetmask" => {
                self.arity(1, 1)?;
                match self.cidr(0)? {
                    IpNet::V4(n) => Value::String(n.netmask().to_string()),
                    IpNet::V6(_) => {
                        return Err(self.arg_err(0, "only IPv4 prefixes have a netmask"))
                    }
                }
            }
            "cidrsubnet" => {
                self.arity(3, 3)?;
                let net = self.cidr(0)?;
                let bits = self.int(1)?;
                let num = self.int(2)?;
                Value::String(
                    cidr_subnet(&net, bits, num)
                        .map_err(|e| self.err(e))?
                        .to_string(),
                )
            }
            "cidrsubnets" => {
                self.arity(1, usize::MAX)?;
                let net = self.cidr(0)?;
                let mut out = Vec::new();
                let mut next: u128 = 0;
                let total = net.max_prefix_len();
                for i in 1..a.len() {
                    let bits = self.int(i)?;
                    let new_len = net.prefix_len() as i64 + bits;
                    if bits < 1 || new_len > total as i64 {
                        return Err(self.arg_err(
                            i,
                            format!("cannot extend /{} by {bits} bits", net.prefix_len()),
                        ));
                    }
                    let size: u128 = 1u128
                        .checked_shl((total as i64 - new_len) as u32)
                        .filter(|_| total as i64 - new_len < 128)
                        .unwrap_or(u128::MAX);
                    let aligned = next.div_ceil(size).saturating_mul(size);
                    let idx = aligned / size;
                    let sub =
                        cidr_subnet(&net, bits, idx as i64).map_err(|e| self.arg_err(i, e))?;
                    out.push(Value::String(sub.to_string()));
                    next = aligned.saturating_add(size);
                }
                Value::List(out)
            }
            other => return Err(self.err(format!("function \"{other}\" is not implemented"))),
        })
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
            while let Some(&f) = it.peek() {
                if "+-# 0123456789.".contains(f) {
                    flags.push(f);
                    it.next();
                } else {
                    break;
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
            let s = match verb {
                'v' => match v {
                    Value::String(s) => s.clone(),
                    v => v.to_template_string().unwrap_or_else(|| v.to_string()),
                },
                's' => convert(v, &Type::String)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .ok_or_else(|| self.err(format!("%s needs a string, got {}", v.type_name())))?,
                'd' => {
                    let n = convert(v, &Type::Number)
                        .ok()
                        .and_then(|v| v.as_f64())
                        .ok_or_else(|| {
                            self.err(format!("%d needs a number, got {}", v.type_name()))
                        })?;
                    format!("{}", n.trunc() as i64)
                }
                'f' => {
                    let n = convert(v, &Type::Number)
                        .ok()
                        .and_then(|v| v.as_f64())
                        .ok_or_else(|| {
                            self.err(format!("%f needs a number, got {}", v.type_name()))
                        })?;
                    format!("{:.*}", precision.unwrap_or(6), n)
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
