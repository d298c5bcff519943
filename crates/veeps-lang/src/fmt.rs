//! `veeps fmt`: the canonical layout of configuration files, as `terraform fmt` makes it.
//!
//! The file is cut into tokens as HCL's scanner cuts it; only the space before each token
//! changes, in three passes as HCL's own formatter makes them: indentation by the brackets
//! a line opens and closes, the space between tokens by their kinds, and alignment of `=`
//! and trailing comments over runs of lines. Before that, Terraform's clean-ups of
//! configurations written for 0.11: `"${x}"` becomes `x`, a quoted type constraint (`type =
//! "list"`) its 0.12 form, and bare block labels are quoted.

use unicode_segmentation::UnicodeSegmentation;

/// Formats `src`. Returns `None` if the text does not parse (it is then left alone).
pub fn format_source(src: &str) -> Option<String> {
    hcl_edit::parser::parse_body(src).ok()?;
    let tokens = cleanup(lex(src)?);
    let mut lines = lines_of(tokens);
    indent(&mut lines);
    spaces(&mut lines);
    cells(&mut lines);
    let mut out = String::with_capacity(src.len() + src.len() / 8);
    for line in &lines {
        for t in line.lead.iter().chain(&line.assign).chain(&line.comment) {
            for _ in 0..t.sp {
                out.push(' ');
            }
            out.push_str(&t.text);
        }
    }
    // Never change meaning: the result must still parse.
    hcl_edit::parser::parse_body(&out).ok()?;
    Some(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum K {
    Ident,
    Number,
    OQuote,
    CQuote,
    QuotedLit,
    OHeredoc,
    CHeredoc,
    StringLit,
    Interp,
    Control,
    SeqEnd,
    OBrace,
    CBrace,
    OBrack,
    CBrack,
    OParen,
    CParen,
    Comma,
    Dot,
    Ellipsis,
    Equal,
    Op,
    Minus,
    Bang,
    Question,
    Colon,
    DoubleColon,
    Comment,
    Newline,
}

#[derive(Clone, Debug)]
struct Tok {
    k: K,
    text: String,
    /// Spaces before it.
    sp: usize,
}

impl Tok {
    fn new(k: K, text: impl Into<String>) -> Tok {
        Tok {
            k,
            text: text.into(),
            sp: 0,
        }
    }

    /// Ends a line: a newline, or a line comment (which holds its newline).
    fn ends_line(&self) -> bool {
        self.k == K::Newline || (self.k == K::Comment && self.text.ends_with('\n'))
    }

    fn bracket(&self) -> i64 {
        match self.k {
            K::OBrace | K::OBrack | K::OParen | K::Interp | K::Control => 1,
            K::CBrace | K::CBrack | K::CParen | K::SeqEnd => -1,
            _ => 0,
        }
    }
}

enum Mode {
    /// Expressions and structure; inside a template sequence, with its open braces.
    Code { seq: bool, braces: usize },
    /// A quoted string's content.
    Quoted,
    /// A heredoc's content, with its closing marker; `line_start` at the start of a line.
    Heredoc { delim: String, line_start: bool },
}

/// Cuts `src` into HCL's tokens. `None` for text it cannot cut (left alone).
fn lex(src: &str) -> Option<Vec<Tok>> {
    let b = src.as_bytes();
    let mut out: Vec<Tok> = vec![];
    let mut modes = vec![Mode::Code {
        seq: false,
        braces: 0,
    }];
    let mut i = 0;
    let ident_start = |c: char| c.is_alphabetic() || c == '_';
    let ident_char = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    while i < b.len() {
        let rest = &src[i..];
        match modes.last_mut()? {
            Mode::Code { seq, braces } => {
                let c = rest.chars().next()?;
                let (k, len) = match c {
                    ' ' | '\t' => {
                        i += 1;
                        continue;
                    }
                    '\r' if rest.starts_with("\r\n") => (K::Newline, 2),
                    '\n' => (K::Newline, 1),
                    '#' => (K::Comment, line_len(rest)),
                    '/' if rest.starts_with("//") => (K::Comment, line_len(rest)),
                    '/' if rest.starts_with("/*") => (K::Comment, rest.find("*/")? + 2),
                    '"' => {
                        out.push(Tok::new(K::OQuote, "\""));
                        modes.push(Mode::Quoted);
                        i += 1;
                        continue;
                    }
                    '<' if rest.starts_with("<<") => {
                        let after = &rest[2..];
                        let flush = after.starts_with('-');
                        let id_part = if flush { &after[1..] } else { after };
                        let id: String = id_part.chars().take_while(|c| ident_char(*c)).collect();
                        if id.is_empty() {
                            (K::Op, if rest.starts_with("<=") { 2 } else { 1 })
                        } else {
                            let head = 2 + flush as usize + id.len();
                            let nl = if rest[head..].starts_with("\r\n") {
                                2
                            } else if rest[head..].starts_with('\n') {
                                1
                            } else {
                                return None;
                            };
                            out.push(Tok::new(K::OHeredoc, &rest[..head + nl]));
                            modes.push(Mode::Heredoc {
                                delim: id,
                                line_start: true,
                            });
                            i += head + nl;
                            continue;
                        }
                    }
                    '0'..='9' => (K::Number, number_len(rest)),
                    c if ident_start(c) => {
                        let n: usize = rest
                            .chars()
                            .take_while(|c| ident_char(*c))
                            .map(char::len_utf8)
                            .sum();
                        (K::Ident, n)
                    }
                    '{' => {
                        *braces += 1;
                        (K::OBrace, 1)
                    }
                    '}' if *seq && *braces == 0 => {
                        out.push(Tok::new(K::SeqEnd, "}"));
                        modes.pop();
                        i += 1;
                        continue;
                    }
                    '~' if *seq && *braces == 0 && rest.starts_with("~}") => {
                        out.push(Tok::new(K::SeqEnd, "~}"));
                        modes.pop();
                        i += 2;
                        continue;
                    }
                    '}' => {
                        *braces = braces.saturating_sub(1);
                        (K::CBrace, 1)
                    }
                    '[' => (K::OBrack, 1),
                    ']' => (K::CBrack, 1),
                    '(' => (K::OParen, 1),
                    ')' => (K::CParen, 1),
                    ',' => (K::Comma, 1),
                    '.' if rest.starts_with("...") => (K::Ellipsis, 3),
                    '.' => (K::Dot, 1),
                    ':' if rest.starts_with("::") => (K::DoubleColon, 2),
                    ':' => (K::Colon, 1),
                    '?' => (K::Question, 1),
                    '-' => (K::Minus, 1),
                    '!' if rest.starts_with("!=") => (K::Op, 2),
                    '!' => (K::Bang, 1),
                    '=' if rest.starts_with("==") || rest.starts_with("=>") => (K::Op, 2),
                    '=' => (K::Equal, 1),
                    '<' | '>' if rest[1..].starts_with('=') => (K::Op, 2),
                    '&' if rest.starts_with("&&") => (K::Op, 2),
                    '|' if rest.starts_with("||") => (K::Op, 2),
                    '<' | '>' | '+' | '*' | '/' | '%' => (K::Op, 1),
                    _ => return None,
                };
                out.push(Tok::new(k, &rest[..len]));
                i += len;
            }
            Mode::Quoted => {
                if rest.starts_with('"') {
                    out.push(Tok::new(K::CQuote, "\""));
                    modes.pop();
                    i += 1;
                    continue;
                }
                if let Some((k, len)) = sequence_start(rest) {
                    out.push(Tok::new(k, &rest[..len]));
                    modes.push(Mode::Code {
                        seq: true,
                        braces: 0,
                    });
                    i += len;
                    continue;
                }
                let mut j = 0;
                let rb = rest.as_bytes();
                while j < rb.len() {
                    match rb[j] {
                        b'"' | b'\n' => break,
                        b'\\' => j += 2,
                        b'$' | b'%'
                            if rb.get(j + 1) == Some(&rb[j]) && rb.get(j + 2) == Some(&b'{') =>
                        {
                            j += 3
                        }
                        b'$' | b'%' if rb.get(j + 1) == Some(&b'{') => break,
                        _ => j += 1,
                    }
                }
                let j = j.min(rb.len());
                if j == 0 {
                    return None;
                }
                out.push(Tok::new(K::QuotedLit, &rest[..j]));
                i += j;
            }
            Mode::Heredoc { delim, line_start } => {
                if *line_start {
                    let line = &rest[..line_len(rest)];
                    let content = line.trim_end_matches(['\n', '\r']);
                    if content.trim() == delim {
                        out.push(Tok::new(K::CHeredoc, content));
                        modes.pop();
                        i += content.len();
                        continue;
                    }
                }
                if let Some((k, len)) = sequence_start(rest) {
                    out.push(Tok::new(k, &rest[..len]));
                    if let Some(Mode::Heredoc { line_start, .. }) = modes.last_mut() {
                        *line_start = false;
                    }
                    modes.push(Mode::Code {
                        seq: true,
                        braces: 0,
                    });
                    i += len;
                    continue;
                }
                let rb = rest.as_bytes();
                let mut j = 0;
                let mut ends_line = false;
                while j < rb.len() {
                    match rb[j] {
                        b'\n' => {
                            j += 1;
                            ends_line = true;
                            break;
                        }
                        b'$' | b'%'
                            if rb.get(j + 1) == Some(&rb[j]) && rb.get(j + 2) == Some(&b'{') =>
                        {
                            j += 3
                        }
                        b'$' | b'%' if rb.get(j + 1) == Some(&b'{') => break,
                        _ => j += 1,
                    }
                }
                out.push(Tok::new(K::StringLit, &rest[..j]));
                *line_start = ends_line;
                i += j;
            }
        }
    }
    match modes.as_slice() {
        [Mode::Code { seq: false, .. }] => Some(out),
        _ => None,
    }
}

/// `${`, `${~`, `%{`, `%{~` at the start of `s` (not their `$${` and `%%{` escapes).
fn sequence_start(s: &str) -> Option<(K, usize)> {
    let k = if s.starts_with("${") {
        K::Interp
    } else if s.starts_with("%{") {
        K::Control
    } else {
        return None;
    };
    Some((k, if s[2..].starts_with('~') { 3 } else { 2 }))
}

/// The length of the line at the start of `s`, with its newline.
fn line_len(s: &str) -> usize {
    s.find('\n').map_or(s.len(), |n| n + 1)
}

fn number_len(s: &str) -> usize {
    let b = s.as_bytes();
    let mut j = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if b.get(j) == Some(&b'.') && b.get(j + 1).is_some_and(u8::is_ascii_digit) {
        j += 1;
        j += b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
    }
    if matches!(b.get(j), Some(b'e' | b'E')) {
        let mut k = j + 1;
        if matches!(b.get(k), Some(b'+' | b'-')) {
            k += 1;
        }
        let d = b[k..].iter().take_while(|c| c.is_ascii_digit()).count();
        if d > 0 {
            j = k + d;
        }
    }
    j
}

/// Terraform's clean-ups (`terraform fmt`, not HCL's formatter): in every body, an
/// attribute's value that is a single interpolation loses its quotes, a `variable` block's
/// quoted or bare collection type gets its 0.12 form, and bare block labels are quoted.
fn cleanup(toks: Vec<Tok>) -> Vec<Tok> {
    let mut out = Vec::with_capacity(toks.len());
    body(&toks, 0, &mut out, &[]);
    out
}

/// The index just past an expression that starts at `i`: up to a line end, or a `}` or
/// `,` that it did not open, at its own depth.
fn expr_end(toks: &[Tok], mut i: usize) -> usize {
    let mut depth = 0i64;
    while i < toks.len() {
        let t = &toks[i];
        if depth == 0 && (t.ends_line() || t.k == K::CBrace || t.k == K::Comma) {
            return i;
        }
        depth += t.bracket();
        if depth < 0 {
            return i;
        }
        i += 1;
    }
    i
}

/// Copies the body starting at `i` into `out`, cleaned, up to its closing `}` (not
/// copied) or the end; returns where it stopped.
fn body(toks: &[Tok], mut i: usize, out: &mut Vec<Tok>, blocks: &[String]) -> usize {
    while i < toks.len() {
        let t = &toks[i];
        match t.k {
            K::CBrace => return i,
            K::Ident if toks.get(i + 1).is_some_and(|n| n.k == K::Equal) => {
                let name = t.text.clone();
                out.push(t.clone());
                out.push(toks[i + 1].clone());
                let end = expr_end(toks, i + 2);
                let value = &toks[i + 2..end];
                let cleaned = if blocks.len() == 1 && blocks[0] == "variable" && name == "type" {
                    type_expr(value)
                } else {
                    value_expr(value)
                };
                out.extend(cleaned);
                i = end;
            }
            K::Ident => {
                // A block: its type, labels, then its body in braces.
                let mut j = i + 1;
                let mut labels: Vec<Tok> = vec![];
                loop {
                    match toks.get(j).map(|t| t.k) {
                        Some(K::Ident) => {
                            labels.push(Tok::new(K::OQuote, "\""));
                            labels.push(Tok::new(K::QuotedLit, toks[j].text.clone()));
                            labels.push(Tok::new(K::CQuote, "\""));
                            j += 1;
                        }
                        Some(K::OQuote)
                            if toks.get(j + 1).is_some_and(|t| t.k == K::QuotedLit)
                                && toks.get(j + 2).is_some_and(|t| t.k == K::CQuote) =>
                        {
                            labels.extend(toks[j..j + 3].iter().cloned());
                            j += 3;
                        }
                        Some(K::OQuote) if toks.get(j + 1).is_some_and(|t| t.k == K::CQuote) => {
                            labels.extend(toks[j..j + 2].iter().cloned());
                            j += 2;
                        }
                        _ => break,
                    }
                }
                if toks.get(j).is_some_and(|t| t.k == K::OBrace) {
                    out.push(t.clone());
                    out.extend(labels);
                    out.push(toks[j].clone());
                    let mut inner = blocks.to_vec();
                    inner.push(t.text.clone());
                    let end = body(toks, j + 1, out, &inner);
                    if end < toks.len() {
                        out.push(toks[end].clone());
                    }
                    i = end + 1;
                } else {
                    // Not a block after all: leave it as it is.
                    out.push(t.clone());
                    i += 1;
                }
            }
            _ => {
                out.push(t.clone());
                i += 1;
            }
        }
    }
    i
}

/// `"${ x }"` is `x` (in parentheses when it spans lines), as `terraform fmt` unwraps it.
fn value_expr(toks: &[Tok]) -> Vec<Tok> {
    let n = toks.len();
    if n < 5
        || toks[0].k != K::OQuote
        || toks[1].k != K::Interp
        || toks[n - 2].k != K::SeqEnd
        || toks[n - 1].k != K::CQuote
    {
        return toks.to_vec();
    }
    let inside = &toks[2..n - 2];
    let mut quotes = 0;
    for t in inside {
        match t.k {
            K::OQuote => quotes += 1,
            K::CQuote => quotes -= 1,
            _ if quotes > 0 => {}
            K::Interp | K::SeqEnd | K::QuotedLit => return toks.to_vec(),
            _ => {}
        }
    }
    let start = inside
        .iter()
        .position(|t| t.k != K::Newline)
        .unwrap_or(inside.len());
    let end = inside
        .iter()
        .rposition(|t| t.k != K::Newline)
        .map_or(start, |e| e + 1);
    let trimmed = &inside[start..end.max(start)];
    let multi = trimmed.iter().any(|t| t.k == K::Newline);
    let wrapped = trimmed.first().is_some_and(|t| t.k == K::OParen)
        && trimmed.last().is_some_and(|t| t.k == K::CParen);
    if multi && !wrapped {
        let mut v = vec![Tok::new(K::OParen, "(")];
        v.extend(trimmed.iter().cloned());
        v.push(Tok::new(K::CParen, ")"));
        return v;
    }
    trimmed.to_vec()
}

/// A variable's type constraint in its 0.12 form: `list` is `list(any)`, `"list"` is
/// `list(string)`, `"string"` is `string`.
fn type_expr(toks: &[Tok]) -> Vec<Tok> {
    let call = |name: &str, arg: &str| {
        vec![
            Tok::new(K::Ident, name),
            Tok::new(K::OParen, "("),
            Tok::new(K::Ident, arg),
            Tok::new(K::CParen, ")"),
        ]
    };
    match toks {
        [t] if t.k == K::Ident && matches!(t.text.as_str(), "list" | "map" | "set") => {
            call(&t.text, "any")
        }
        [o, s, c] if o.k == K::OQuote && s.k == K::QuotedLit && c.k == K::CQuote => {
            match s.text.as_str() {
                "string" => vec![Tok::new(K::Ident, "string")],
                "list" | "map" => call(&s.text, "string"),
                _ => toks.to_vec(),
            }
        }
        _ => toks.to_vec(),
    }
}

/// A line's tokens in HCL's three cells: everything, from the `=` of an attribute whose
/// value ends on the line, and a trailing comment.
#[derive(Default)]
struct Line {
    lead: Vec<Tok>,
    assign: Vec<Tok>,
    comment: Vec<Tok>,
}

fn lines_of(toks: Vec<Tok>) -> Vec<Line> {
    let mut lines = vec![];
    let mut cur = vec![];
    for t in toks {
        let ends = t.ends_line();
        cur.push(t);
        if ends {
            lines.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
        .into_iter()
        .map(|mut lead| {
            let mut line = Line::default();
            if lead.len() > 1 && lead.last().is_some_and(|t| t.k == K::Comment) {
                line.comment = lead.split_off(lead.len() - 1);
            }
            if let Some(eq) = lead
                .iter()
                .skip(1)
                .position(|t| t.k == K::Equal)
                .map(|p| p + 1)
            {
                if lead[eq..].iter().map(Tok::bracket).sum::<i64>() == 0 {
                    line.assign = lead.split_off(eq);
                }
            }
            line.lead = lead;
            line
        })
        .collect()
}

/// Indentation: a line that opens brackets indents what follows by one level however many
/// it opens; closing them takes the level back.
fn indent(lines: &mut [Line]) {
    let mut levels: Vec<i64> = vec![];
    for line in lines.iter_mut() {
        let Some(first) = line.lead.first() else {
            continue;
        };
        if first.k == K::Newline {
            line.lead[0].sp = 0;
            continue;
        }
        let mut net = 0;
        for t in &line.lead {
            net += t.bracket();
            if t.k == K::OHeredoc {
                break;
            }
        }
        net += line.assign.iter().map(Tok::bracket).sum::<i64>();
        if net > 0 {
            line.lead[0].sp = 2 * levels.len();
            levels.push(net);
        } else {
            let mut closed = -net;
            while closed > 0 {
                let Some(top) = levels.last_mut() else { break };
                if closed >= *top {
                    closed -= *top;
                    levels.pop();
                } else {
                    *top -= closed;
                    closed = 0;
                }
            }
            line.lead[0].sp = 2 * levels.len();
        }
    }
}

/// The space between tokens within each cell.
fn spaces(lines: &mut [Line]) {
    let none = Tok::new(K::Newline, "");
    for line in lines.iter_mut() {
        for (cell, first_spaced) in [(&mut line.lead, false), (&mut line.assign, true)] {
            if first_spaced {
                if let Some(t) = cell.first_mut() {
                    t.sp = 1;
                }
            }
            for i in 0..cell.len().saturating_sub(1) {
                let before = if i > 0 {
                    cell[i - 1].clone()
                } else {
                    none.clone()
                };
                let sp = space_after(&cell[i], &before, i == 0, &cell[i + 1]);
                cell[i + 1].sp = sp as usize;
            }
        }
    }
}

/// HCL's rule for a space between `subject` and `after` (`first`: `subject` starts the
/// cell, so nothing is before it).
fn space_after(subject: &Tok, before: &Tok, first: bool, after: &Tok) -> bool {
    use K::*;
    let (s, a) = (subject.k, after.k);
    if a == Newline {
        return false;
    }
    if s == Ident && a == OParen {
        return false;
    }
    if (s == Ident && a == DoubleColon) || (s == DoubleColon && a == Ident) {
        return false;
    }
    if s == Dot || a == Dot {
        return false;
    }
    if a == Comma || a == Ellipsis {
        return false;
    }
    if s == Comma {
        return true;
    }
    if matches!(s, QuotedLit | StringLit | OQuote | OHeredoc)
        || matches!(a, QuotedLit | StringLit | CQuote | CHeredoc)
    {
        return false;
    }
    if s == Ident && subject.text == "in" && !first && before.k == Ident {
        return true;
    }
    if a == OBrack && (s == Ident || s == Number || subject.bracket() < 0) {
        return false;
    }
    if s == Bang {
        return false;
    }
    if s == Minus {
        if first {
            return false;
        }
        return !matches!(
            before.k,
            OParen | OBrace | OBrack | Equal | Colon | Comma | Question | Op | Minus | Bang
        ) || (before.k == Op && before.text == "=>");
    }
    if s == OBrace || a == CBrace {
        return !(s == OBrace && a == CBrace);
    }
    if matches!(s, Interp | Control) && a == OBrace {
        return true;
    }
    if s == CBrace && a == SeqEnd {
        return true;
    }
    if s == SeqEnd && matches!(a, Interp | Control) {
        return false;
    }
    if subject.bracket() > 0 {
        return false;
    }
    if after.bracket() < 0 {
        return false;
    }
    true
}

fn columns(cell: &[Tok]) -> usize {
    cell.iter()
        .map(|t| t.sp + t.text.graphemes(true).count())
        .sum()
}

/// Aligns `=` over runs of lines with an assignment cell, then trailing comments over runs
/// of lines with one.
fn cells(lines: &mut [Line]) {
    let mut i = 0;
    while i < lines.len() {
        if lines[i].assign.is_empty() {
            i += 1;
            continue;
        }
        let start = i;
        while i < lines.len() && !lines[i].assign.is_empty() {
            i += 1;
        }
        let max = lines[start..i]
            .iter()
            .map(|l| columns(&l.lead))
            .max()
            .unwrap_or(0);
        for l in &mut lines[start..i] {
            let c = columns(&l.lead);
            l.assign[0].sp = max - c + 1;
        }
    }
    let mut i = 0;
    while i < lines.len() {
        if lines[i].comment.is_empty() {
            i += 1;
            continue;
        }
        let start = i;
        while i < lines.len() && !lines[i].comment.is_empty() {
            i += 1;
        }
        let width = |l: &Line| columns(&l.lead) + columns(&l.assign);
        let max = lines[start..i].iter().map(width).max().unwrap_or(0);
        for l in &mut lines[start..i] {
            let c = width(l);
            l.comment[0].sp = max - c + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::format_source;

    #[test]
    fn indents_aligns_and_spaces() {
        let src = "resource \"random_id\" \"x\" {\nbyte_length=4\n    prefix = \"a{\"\n  keepers = {\n a = \"${var.x}\"\n  }\n}\n\n\n";
        let want = "resource \"random_id\" \"x\" {\n  byte_length = 4\n  prefix      = \"a{\"\n  keepers = {\n    a = \"${var.x}\"\n  }\n}\n\n\n";
        assert_eq!(format_source(src).unwrap(), want);
        assert_eq!(format_source(want).unwrap(), want, "idempotent");
        let src = "locals {\nb = \"${var.x}\"\n  c= [1,2]  # hi\n  dd = {x=1, y = -1}\n}\nvariable \"v\" {\n  type = \"list\"\n}\nresource aws_x y {\n}\n";
        let want = "locals {\n  b  = var.x\n  c  = [1, 2] # hi\n  dd = { x = 1, y = -1 }\n}\nvariable \"v\" {\n  type = list(string)\n}\nresource \"aws_x\" \"y\" {\n}\n";
        assert_eq!(format_source(src).unwrap(), want);
    }

    #[test]
    fn keeps_heredocs_and_comments() {
        let src = "locals {\n  # note\n  x = <<EOT\n  keep   this ${a+1}\nEOT\n}\n";
        let want = "locals {\n  # note\n  x = <<EOT\n  keep   this ${a + 1}\nEOT\n}\n";
        assert_eq!(format_source(src).unwrap(), want);
        assert!(format_source("locals {").is_none());
        assert_eq!(format_source("a = 1").unwrap(), "a = 1", "no newline added");
        assert_eq!(format_source("").unwrap(), "");
    }
}
