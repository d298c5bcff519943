//! Strings functions.

use super::*;

pub(super) fn upper(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        // Go's simple case mapping: one letter for one (ß stays ß).
        Value::String(simple_case(&c.str(0)?, true))
    })
}

pub(super) fn lower(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        Value::String(simple_case(&c.str(0)?, false))
    })
}

pub(super) fn title(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        let s = c.str(0)?;
        // Go's strings.Title: a word starts after a separator, which is any ASCII
        // character but a letter, digit or `_`, or a Unicode space.
        let separator = |c: char| {
            if c.is_ascii() {
                !(c.is_ascii_alphanumeric() || c == '_')
            } else {
                !c.is_alphanumeric() && c.is_whitespace()
            }
        };
        let mut out = String::new();
        let mut start = true;
        for c in s.chars() {
            if start {
                out.extend(c.to_uppercase());
            } else {
                out.push(c);
            }
            start = separator(c);
        }
        Value::String(out)
    })
}

pub(super) fn strrev(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        let text = c.str(0)?;
        Value::String(
            unicode_segmentation::UnicodeSegmentation::graphemes(text.as_str(), true)
                .rev()
                .collect(),
        )
    })
}

pub(super) fn trimspace(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        Value::String(c.str(0)?.trim().to_string())
    })
}

pub(super) fn chomp(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        Value::String(c.str(0)?.trim_end_matches(['\n', '\r']).to_string())
    })
}

pub(super) fn trim(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(2, 2)?;
        let cut: Vec<char> = c.str(1)?.chars().collect();
        Value::String(c.str(0)?.trim_matches(|c| cut.contains(&c)).to_string())
    })
}

pub(super) fn trimprefix(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(2, 2)?;
        let s = c.str(0)?;
        let p = c.str(1)?;
        Value::String(s.strip_prefix(&p).unwrap_or(&s).to_string())
    })
}

pub(super) fn trimsuffix(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(2, 2)?;
        let s = c.str(0)?;
        let p = c.str(1)?;
        Value::String(s.strip_suffix(&p).unwrap_or(&s).to_string())
    })
}

pub(super) fn startswith(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(2, 2)?;
        Value::Bool(c.str(0)?.starts_with(&c.str(1)?))
    })
}

pub(super) fn endswith(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(2, 2)?;
        Value::Bool(c.str(0)?.ends_with(&c.str(1)?))
    })
}

pub(super) fn replace(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(3, 3)?;
        let (s, from, to) = (c.str(0)?, c.str(1)?, c.str(2)?);
        // "/RE/" is a regular expression (RE2 syntax), `$1` and `${name}` naming groups.
        if let Some(pattern) = from
            .strip_prefix('/')
            .and_then(|f| f.strip_suffix('/'))
            .filter(|_| from.len() > 1)
        {
            let re = regex::RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| c.arg_err(1, format!("invalid regular expression: {e}")))?;
            return Ok(Value::String(re.replace_all(&s, to.as_str()).into_owned()));
        }
        if from.is_empty() {
            // As Go's strings.Replace: `to` before every character and at the end.
            let n = s.chars().count() + 1;
            if n.saturating_mul(to.len()).saturating_add(s.len()) > 64 << 20 {
                return Err(c.err("the result would be larger than 64 MiB"));
            }
            let mut out = to.clone();
            for ch in s.chars() {
                out.push(ch);
                out.push_str(&to);
            }
            return Ok(Value::String(out));
        }
        Value::String(s.replace(&from, &to))
    })
}

pub(super) fn substr(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(3, 3)?;
        // Counted in grapheme clusters (what a reader sees as one character), as
        // Terraform counts.
        let text = c.str(0)?;
        let s: Vec<&str> =
            unicode_segmentation::UnicodeSegmentation::graphemes(text.as_str(), true).collect();
        let mut off = c.int(1)?;
        let len = c.int(2)?;
        if off < 0 {
            off += s.len() as i64;
        }
        let off = off.clamp(0, s.len() as i64) as usize;
        let end = if len < 0 {
            s.len()
        } else {
            off.saturating_add(len as usize).min(s.len())
        };
        Value::String(s[off..end].concat())
    })
}

pub(super) fn format(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(1, usize::MAX)?;
        Value::String(c.format(&c.str(0)?, &a[1..])?)
    })
}

pub(super) fn formatlist(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(1, usize::MAX)?;
        let fmt = c.str(0)?;
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
            out.push(Value::String(c.format(&fmt, &row)?));
        }
        Value::List(out)
    })
}

pub(super) fn join(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(2, usize::MAX)?;
        let sep = c.str(0)?;
        let mut parts = Vec::new();
        for i in 1..a.len() {
            parts.extend(c.strings(i)?);
        }
        Value::String(parts.join(&sep))
    })
}

pub(super) fn split(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(2, 2)?;
        let sep = c.str(0)?;
        let s = c.str(1)?;
        // Terraform (Go's strings.Split): split(",", "") is [""].
        if sep.is_empty() {
            Value::List(s.chars().map(|c| Value::String(c.to_string())).collect())
        } else {
            Value::List(s.split(sep.as_str()).map(Value::string).collect())
        }
    })
}

pub(super) fn strcontains(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(2, 2)?;
    Ok(Value::Bool(c.str(0)?.contains(&c.str(1)?)))
}

/// `indent(n, s)`: every line but the first gains `n` spaces.
pub(super) fn indent(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(2, 2)?;
    let n = c.int(0)?;
    let pad = " ".repeat(usize::try_from(n).unwrap_or(0).min(1024));
    let s = c.str(1)?;
    Ok(Value::String(s.replace('\n', &format!("\n{pad}"))))
}

fn compile(c: &Call) -> Result<regex::Regex, Diagnostic> {
    let pattern = c.str(0)?;
    regex::RegexBuilder::new(&pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| c.arg_err(0, format!("invalid regular expression: {e}")))
}

/// One match as Terraform gives it: the matched text without capture groups, a list of
/// the groups, or an object of named groups.
fn captured(c: &Call, re: &regex::Regex, caps: &regex::Captures) -> Result<Value, Diagnostic> {
    let names: Vec<Option<&str>> = re.capture_names().skip(1).collect();
    let text = |i: usize| {
        caps.get(i)
            .map(|m| Value::string(m.as_str()))
            .unwrap_or(Value::Null)
    };
    if names.is_empty() {
        return Ok(text(0));
    }
    match (
        names.iter().all(|n| n.is_some()),
        names.iter().any(|n| n.is_some()),
    ) {
        (true, _) => Ok(Value::Object(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.unwrap_or_default().to_string(), text(i + 1)))
                .collect(),
        )),
        (false, false) => Ok(Value::List((1..=names.len()).map(text).collect())),
        (false, true) => {
            Err(c.arg_err(0, "a pattern may not mix named and unnamed capture groups"))
        }
    }
}

pub(super) fn regex(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(2, 2)?;
    let re = compile(c)?;
    let s = c.str(1)?;
    match re.captures(&s) {
        Some(caps) => captured(c, &re, &caps),
        None => Err(c.err("the pattern did not match any part of the given string")),
    }
}

pub(super) fn regexall(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(2, 2)?;
    let re = compile(c)?;
    let s = c.str(1)?;
    re.captures_iter(&s)
        .map(|caps| captured(c, &re, &caps))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::List)
}

/// `templatestring(template, vars)`: a template held in a string, rendered as
/// `templatefile` renders a file's.
pub(super) fn templatestring(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(2, 2)?;
    let text = c.str(0)?;
    let vars = c.obj(1)?;
    crate::eval::eval_template_text(&text, "templatestring", vars, &crate::eval::EmptyScope)
}

/// Each letter to its upper (or lower) case when that is one letter, as Go's
/// `unicode.ToUpper` maps them; left as it is otherwise.
fn simple_case(s: &str, upper: bool) -> String {
    s.chars()
        .map(|ch| {
            let mut m: Vec<char> = if upper {
                ch.to_uppercase().collect()
            } else {
                ch.to_lowercase().collect()
            };
            if m.len() == 1 {
                m.pop().unwrap_or(ch)
            } else {
                ch
            }
        })
        .collect()
}
