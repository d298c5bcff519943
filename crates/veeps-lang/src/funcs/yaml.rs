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
        Value::Number(n) => format!("{}\n", format_number(*n)),
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
