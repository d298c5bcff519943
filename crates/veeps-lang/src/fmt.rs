//! `veeps fmt`: the canonical layout of configuration files (two-space indents, aligned
//! `=` in runs of attributes), as `terraform fmt` does it. Comments are kept.

/// Formats `src`. Returns `None` if the text does not parse (it is then left alone).
pub fn format_source(src: &str) -> Option<String> {
    hcl_edit::parser::parse_body(src).ok()?;
    let lines: Vec<&str> = src.lines().collect();
    let mut out: Vec<(usize, String, bool)> = Vec::new(); // (depth, text, verbatim)
                                                          // As `terraform fmt` does: a line opening brackets indents what follows by one level
                                                          // however many it opens; closing them all again takes that level back.
    let mut indents: Vec<i64> = Vec::new();
    let mut st = Scan::default();
    for line in lines {
        if st.heredoc.is_some() || st.in_block_comment {
            let verbatim_line = line.trim_end().to_string();
            let ends = st
                .heredoc
                .as_ref()
                .map(|d| line.trim() == d)
                .unwrap_or(false);
            st.scan(line);
            let _ = ends;
            out.push((0, verbatim_line, true));
            continue;
        }
        let trimmed = line.trim();
        let net = st.scan(line);
        if net > 0 {
            out.push((indents.len(), trimmed.to_string(), false));
            indents.push(net);
            continue;
        }
        let mut closed = -net;
        while closed > 0 {
            let Some(top) = indents.last_mut() else { break };
            if closed >= *top {
                closed -= *top;
                indents.pop();
            } else {
                *top -= closed;
                closed = 0;
            }
        }
        out.push((indents.len(), trimmed.to_string(), false));
    }
    // Align `=` in runs of single-line attributes at one depth.
    let mut result: Vec<String> = Vec::with_capacity(out.len());
    let mut i = 0;
    while i < out.len() {
        let (d, ref text, verbatim) = out[i];
        if verbatim {
            result.push(text.clone());
            i += 1;
            continue;
        }
        if attr_key(text).is_some() && balanced(text) {
            let mut j = i;
            while j < out.len()
                && !out[j].2
                && out[j].0 == d
                && attr_key(&out[j].1).is_some()
                && balanced(&out[j].1)
            {
                j += 1;
            }
            let width = out[i..j]
                .iter()
                .map(|(_, t, _)| attr_key(t).map(|(k, _)| k.chars().count()).unwrap_or(0))
                .max()
                .unwrap_or(0);
            for (dd, t, _) in &out[i..j] {
                let (k, v) = attr_key(t).expect("checked above");
                result.push(format!(
                    "{}{}{} = {}",
                    "  ".repeat(*dd),
                    k,
                    " ".repeat(width - k.chars().count()),
                    v
                ));
            }
            i = j;
            continue;
        }
        result.push(if text.is_empty() {
            String::new()
        } else {
            format!("{}{}", "  ".repeat(d), text)
        });
        i += 1;
    }
    let mut s = result.join("\n");
    while s.ends_with("\n\n") {
        s.pop();
    }
    if !s.ends_with('\n') {
        s.push('\n');
    }
    // Never change meaning: the result must still parse.
    hcl_edit::parser::parse_body(&s).ok()?;
    Some(s)
}

fn attr_key(line: &str) -> Option<(&str, &str)> {
    let eq = line.find('=')?;
    let key = line[..eq].trim_end();
    let rest = &line[eq + 1..];
    if rest.starts_with('=')
        || key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '"')
    {
        return None;
    }
    Some((key, rest.trim()))
}

fn balanced(line: &str) -> bool {
    let mut st = Scan::default();
    st.scan(line) == 0 && st.heredoc.is_none() && !st.in_block_comment
}

#[derive(Default)]
struct Scan {
    heredoc: Option<String>,
    in_block_comment: bool,
}

impl Scan {
    /// Scans one line, returning the change in bracket depth.
    fn scan(&mut self, line: &str) -> i64 {
        if let Some(d) = &self.heredoc {
            if line.trim() == d {
                self.heredoc = None;
            }
            return 0;
        }
        let b = line.as_bytes();
        let mut i = 0;
        let mut delta = 0i64;
        // Stack of string/interpolation contexts within the line.
        let mut in_string = false;
        let mut interp_depth: Vec<i64> = vec![];
        while i < b.len() {
            let c = b[i];
            if self.in_block_comment {
                if c == b'*' && b.get(i + 1) == Some(&b'/') {
                    self.in_block_comment = false;
                    i += 2;
                    continue;
                }
                i += 1;
                continue;
            }
            if in_string {
                match c {
                    b'\\' => i += 1,
                    b'"' => in_string = false,
                    b'$' | b'%' if b.get(i + 1) == Some(&b'{') => {
                        in_string = false;
                        interp_depth.push(0);
                        i += 1;
                    }
                    _ => {}
                }
                i += 1;
                continue;
            }
            match c {
                b'"' => in_string = true,
                b'#' => break,
                b'/' if b.get(i + 1) == Some(&b'/') => break,
                b'/' if b.get(i + 1) == Some(&b'*') => {
                    self.in_block_comment = true;
                    i += 1;
                }
                b'<' if b.get(i + 1) == Some(&b'<') => {
                    let rest = &line[i + 2..];
                    let rest = rest.strip_prefix('-').unwrap_or(rest);
                    let id: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !id.is_empty() {
                        self.heredoc = Some(id);
                        return delta;
                    }
                }
                b'{' | b'[' | b'(' => {
                    if let Some(d) = interp_depth.last_mut() {
                        *d += 1;
                    } else {
                        delta += 1;
                    }
                }
                b'}' | b']' | b')' => {
                    if let Some(d) = interp_depth.last_mut() {
                        if *d == 0 && c == b'}' {
                            interp_depth.pop();
                            in_string = true;
                        } else {
                            *d -= 1;
                        }
                    } else {
                        delta -= 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::format_source;

    #[test]
    fn indents_and_aligns() {
        let src = "resource \"random_id\" \"x\" {\nbyte_length=4\n    prefix = \"a{\"\n  keepers = {\n a = \"${var.x}\"\n  }\n}\n\n\n";
        let want = "resource \"random_id\" \"x\" {\n  byte_length = 4\n  prefix      = \"a{\"\n  keepers = {\n    a = \"${var.x}\"\n  }\n}\n";
        assert_eq!(format_source(src).unwrap(), want);
        assert_eq!(format_source(want).unwrap(), want, "idempotent");
    }

    #[test]
    fn keeps_heredocs_and_comments() {
        let src = "locals {\n  # note\n  x = <<EOT\n  keep   this\nEOT\n}\n";
        assert_eq!(format_source(src).unwrap(), src);
        assert!(format_source("locals {").is_none());
    }
}
