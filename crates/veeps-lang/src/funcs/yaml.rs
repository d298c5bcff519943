//! `yamlencode`, in the style Terraform writes YAML (go-yaml v2 as go-cty-yaml drives it):
//! block collections, every string and key double-quoted (folded past column 80), strings
//! with line breaks as literal blocks, sequences inside mappings not indented, and a lone
//! plain scalar closed with `...`.

use super::*;

/// The widest a double-quoted line grows before it folds at a space.
const WIDTH: usize = 80;

fn is_printable(ch: char) -> bool {
    let c = ch as u32;
    c == 0x0A
        || (0x20..=0x7E).contains(&c)
        || c == 0x85
        || (0xA0..=0xD7FF).contains(&c)
        || ((0xE000..=0xFFFD).contains(&c) && c != 0xFEFF)
        || (0x10000..=0x10FFFF).contains(&c)
}

/// `s` double-quoted, starting at column `col`; folded lines start at `indent`.
fn quoted(s: &str, mut col: usize, indent: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::from("\"");
    col += 1;
    let mut spaces = false;
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        let brk = matches!(ch, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}');
        if !is_printable(ch) || ch == '\u{FEFF}' || brk || ch == '"' || ch == '\\' {
            let esc = match ch {
                '\0' => "\\0".to_string(),
                '\u{7}' => "\\a".to_string(),
                '\u{8}' => "\\b".to_string(),
                '\t' => "\\t".to_string(),
                '\n' => "\\n".to_string(),
                '\u{b}' => "\\v".to_string(),
                '\u{c}' => "\\f".to_string(),
                '\r' => "\\r".to_string(),
                '\u{1b}' => "\\e".to_string(),
                '"' => "\\\"".to_string(),
                '\\' => "\\\\".to_string(),
                '\u{85}' => "\\N".to_string(),
                '\u{a0}' => "\\_".to_string(),
                '\u{2028}' => "\\L".to_string(),
                '\u{2029}' => "\\P".to_string(),
                c if (c as u32) <= 0xFF => format!("\\x{:02X}", c as u32),
                c if (c as u32) <= 0xFFFF => format!("\\u{:04X}", c as u32),
                c => format!("\\U{:08X}", c as u32),
            };
            col += esc.chars().count();
            out.push_str(&esc);
            spaces = false;
        } else if ch == ' ' {
            if !spaces && col > WIDTH && i != 0 && i != chars.len() - 1 {
                out.push('\n');
                out.push_str(&" ".repeat(indent));
                col = indent;
                if chars.get(i + 1) == Some(&' ') {
                    out.push('\\');
                    col += 1;
                }
            } else {
                out.push(' ');
                col += 1;
            }
            spaces = true;
        } else {
            out.push(ch);
            col += 1;
            spaces = false;
        }
        i += 1;
    }
    out.push('"');
    out
}

/// A string with line breaks as a literal block (`|-`, `|` or `|+` by its trailing
/// breaks), its lines at `indent`.
fn literal(s: &str, indent: usize) -> String {
    let trailing = s.len() - s.trim_end_matches('\n').len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let body = s.trim_end_matches('\n');
    let pad = " ".repeat(indent);
    let mut out = format!("|{chomp}\n");
    for line in body.split('\n') {
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
        out.push('\n');
    }
    for _ in 1..trailing {
        out.push('\n');
    }
    out
}

/// A scalar after something on its line (at column `col`), inside a block at `indent`;
/// ends with a newline.
fn scalar(v: &Value, col: usize, indent: usize) -> String {
    match v {
        Value::String(s) if s.contains('\n') => literal(s, indent + 2),
        Value::String(s) => format!("{}\n", quoted(s, col, indent + 2)),
        Value::Number(n) => format!("{}\n", n.text()),
        Value::Bool(b) => format!("{b}\n"),
        _ => "null\n".into(),
    }
}

fn map(m: &BTreeMap<String, Value>, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    for (k, v) in m {
        let key = quoted(k, indent, indent + 2);
        out.push_str(&pad);
        out.push_str(&key);
        out.push(':');
        match v {
            Value::Object(o) if o.is_empty() => out.push_str(" {}\n"),
            Value::List(l) if l.is_empty() => out.push_str(" []\n"),
            Value::Object(o) => {
                out.push('\n');
                out.push_str(&map(o, indent + 2));
            }
            Value::List(l) => {
                out.push('\n');
                out.push_str(&list(l, indent));
            }
            other => {
                out.push(' ');
                let col = indent + key.chars().count() + 2;
                out.push_str(&scalar(other, col, indent));
            }
        }
    }
    out
}

fn list(l: &[Value], indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    for v in l {
        match v {
            Value::Object(o) if o.is_empty() => out.push_str(&format!("{pad}- {{}}\n")),
            Value::List(x) if x.is_empty() => out.push_str(&format!("{pad}- []\n")),
            // The item's block, its first line after the dash.
            Value::Object(o) => out.push_str(&after_dash(&map(o, indent + 2), indent)),
            Value::List(x) => out.push_str(&after_dash(&list(x, indent + 2), indent)),
            other => {
                out.push_str(&pad);
                out.push_str("- ");
                out.push_str(&scalar(other, indent + 2, indent));
            }
        }
    }
    out
}

fn after_dash(block: &str, indent: usize) -> String {
    format!("{}- {}", " ".repeat(indent), &block[indent + 2..])
}

pub(super) fn yamlencode(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 1)?;
    Ok(Value::String(match c.arg(0) {
        Value::Object(o) if o.is_empty() => "{}\n".into(),
        Value::List(l) if l.is_empty() => "[]\n".into(),
        Value::Object(o) => map(o, 0),
        Value::List(l) => list(l, 0),
        Value::String(s) if s.contains('\n') => literal(s, 2),
        Value::String(s) => format!("{}\n", quoted(s, 0, 2)),
        Value::Unknown => return Ok(Value::Unknown),
        other => format!("{}...\n", scalar(other, 0, 0)),
    }))
}

/// Most values one `yamldecode` builds (aliases can repeat a subtree many times over).
const MAX_NODES: usize = 1_000_000;

struct Events(Vec<yaml_rust2::Event>);

impl yaml_rust2::parser::EventReceiver for Events {
    fn on_event(&mut self, ev: yaml_rust2::Event) {
        self.0.push(ev);
    }
}

/// A plain scalar resolved as Terraform's YAML reader does: null, YAML 1.1's booleans
/// (`yes`, `on`, `y`, ...), integers (decimal, `0x` and `0o`), floats; else a string.
fn resolve_plain(s: &str) -> Result<Value, String> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
            return Ok(Value::Bool(true))
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            return Ok(Value::Bool(false))
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => {
            return Err(format!("{s} is not a number Terraform's values can hold"))
        }
        _ => {}
    }
    // Hexadecimal and octal unsigned, with a lower-case prefix; decimal with a sign (a
    // leading 0 is still decimal); no underscores, no binary.
    let radix = |prefix: &str, r: u32| {
        s.strip_prefix(prefix)
            .filter(|d| !d.is_empty())
            .and_then(|d| u64::from_str_radix(d, r).ok())
            .map(|n| (false, n))
    };
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let int = radix("0x", 16).or_else(|| radix("0o", 8)).or_else(|| {
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<u64>().ok().map(|n| (neg, n)))
            .flatten()
    });
    let plain = s;
    if let Some((neg, n)) = int {
        let n = crate::number::Number::from_bigint(&num_bigint::BigInt::from(n));
        return Ok(Value::Number(if neg { n.neg() } else { n }));
    }
    let float = {
        let b = digits.as_bytes();
        let mut i = 0;
        let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
        i += int_digits;
        let mut frac_digits = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            i += frac_digits;
        }
        let mantissa = int_digits > 0 || frac_digits > 0;
        if mantissa && matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let e = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            i += if e > 0 { e } else { b.len() + 1 };
        }
        mantissa && i == b.len()
    };
    if float {
        if let Ok(n) = crate::number::Number::parse(plain) {
            return Ok(Value::Number(n));
        }
    }
    Ok(Value::String(s.to_string()))
}

struct Builder<'a> {
    events: &'a [yaml_rust2::Event],
    at: usize,
    anchors: std::collections::HashMap<usize, Value>,
    nodes: usize,
}

impl Builder<'_> {
    fn node(&mut self) -> Result<Value, String> {
        use yaml_rust2::Event;
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(format!(
                "more than {MAX_NODES} values (aliases repeated too often)"
            ));
        }
        let ev = self.events.get(self.at).ok_or("the document ends early")?;
        self.at += 1;
        let (v, anchor) = match ev {
            Event::Scalar(s, style, anchor, tag) => {
                let tag = tag.as_ref().map(|t| t.suffix.as_str());
                let v = match (tag, style) {
                    (Some("str"), _) => Value::String(s.clone()),
                    (Some("null"), _) => Value::Null,
                    (Some("bool" | "int" | "float"), _) => resolve_plain(s)?,
                    (_, yaml_rust2::scanner::TScalarStyle::Plain) => resolve_plain(s)?,
                    _ => Value::String(s.clone()),
                };
                (v, *anchor)
            }
            Event::Alias(id) => {
                let v = self
                    .anchors
                    .get(id)
                    .cloned()
                    .ok_or("an alias refers to no anchor")?;
                self.nodes += count(&v);
                if self.nodes > MAX_NODES {
                    return Err(format!(
                        "more than {MAX_NODES} values (aliases repeated too often)"
                    ));
                }
                return Ok(v);
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = vec![];
                while !matches!(self.events.get(self.at), Some(Event::SequenceEnd) | None) {
                    items.push(self.node()?);
                }
                self.at += 1;
                (Value::List(items), *anchor)
            }
            Event::MappingStart(anchor, _) => {
                let mut m = BTreeMap::new();
                while !matches!(self.events.get(self.at), Some(Event::MappingEnd) | None) {
                    let k = match self.node()? {
                        Value::String(s) => s,
                        Value::Number(n) => n.text(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => "null".into(),
                        _ => return Err("a mapping's key must be a scalar".into()),
                    };
                    let v = self.node()?;
                    m.insert(k, v);
                }
                self.at += 1;
                (Value::Object(m), *anchor)
            }
            other => return Err(format!("unexpected {other:?}")),
        };
        if anchor > 0 {
            self.anchors.insert(anchor, v.clone());
        }
        Ok(v)
    }
}

fn count(v: &Value) -> usize {
    match v {
        Value::List(l) => 1 + l.iter().map(count).sum::<usize>(),
        Value::Object(o) => 1 + o.values().map(count).sum::<usize>(),
        _ => 1,
    }
}

/// `yamldecode(s)`: one YAML document, read as Terraform reads it.
pub(super) fn yamldecode(c: &Call) -> Result<Value, Diagnostic> {
    use yaml_rust2::Event;
    c.arity(1, 1)?;
    let text = c.str(0)?;
    let mut events = Events(vec![]);
    yaml_rust2::parser::Parser::new_from_str(&text)
        .load(&mut events, true)
        .map_err(|e| c.arg_err(0, format!("invalid YAML: {e}")))?;
    let docs = events
        .0
        .iter()
        .filter(|e| matches!(e, Event::DocumentStart))
        .count();
    if docs > 1 {
        return Err(c.arg_err(0, "only one YAML document is allowed"));
    }
    let body: Vec<Event> = events
        .0
        .into_iter()
        .filter(|e| {
            !matches!(
                e,
                Event::StreamStart
                    | Event::StreamEnd
                    | Event::DocumentStart
                    | Event::DocumentEnd
                    | Event::Nothing
            )
        })
        .collect();
    if body.is_empty() {
        return Err(c.arg_err(0, "invalid YAML: missing start of document"));
    }
    let mut b = Builder {
        events: &body,
        at: 0,
        anchors: Default::default(),
        nodes: 0,
    };
    b.node()
        .map_err(|e| c.arg_err(0, format!("invalid YAML: {e}")))
}
