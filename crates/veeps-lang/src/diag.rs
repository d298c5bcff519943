//! Diagnostics: errors that name `file:line:col`, show the source line and say what to do.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// One source file of a configuration, as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The path shown to users (relative to where the command ran, or a module source).
    pub path: String,
    /// The file's text.
    pub text: String,
}

/// A location in a source file: the file and a byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    /// The file the range is in.
    pub file: Arc<SourceFile>,
    /// Byte offsets of the range.
    pub span: Range<usize>,
}

impl Loc {
    /// A location covering `span` of `file`.
    pub fn new(file: &Arc<SourceFile>, span: Option<Range<usize>>) -> Loc {
        Loc {
            file: file.clone(),
            span: span.unwrap_or(0..0),
        }
    }

    /// One-based line and column of the start of the range.
    pub fn line_col(&self) -> (usize, usize) {
        line_col(&self.file.text, self.span.start)
    }

    /// `file:line:col`.
    pub fn position(&self) -> String {
        let (l, c) = self.line_col();
        format!("{}:{}:{}", self.file.path, l, c)
    }
}

/// One-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// An error in a configuration, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// What is wrong, in one line.
    pub summary: String,
    /// Where it is, when known.
    pub loc: Option<Loc>,
    /// More detail: why, and what to do.
    pub detail: Option<String>,
}

impl Diagnostic {
    /// An error at `loc`.
    pub fn new(summary: impl Into<String>, loc: Option<Loc>) -> Diagnostic {
        Diagnostic {
            summary: summary.into(),
            loc,
            detail: None,
        }
    }

    /// An error at `loc`.
    pub fn at(loc: &Loc, summary: impl Into<String>) -> Diagnostic {
        Diagnostic::new(summary, Some(loc.clone()))
    }

    /// Adds detail (why, what to do).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Diagnostic {
        self.detail = Some(detail.into());
        self
    }

    /// Sets the location if none is set yet.
    pub fn or_at(mut self, loc: &Loc) -> Diagnostic {
        if self.loc.is_none() {
            self.loc = Some(loc.clone());
        }
        self
    }

    /// `file:line:col` of the error, if it has a location.
    pub fn position(&self) -> Option<String> {
        self.loc.as_ref().map(Loc::position)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.loc {
            Some(loc) => {
                let (line, col) = loc.line_col();
                writeln!(f, "Error: {}", self.summary)?;
                writeln!(f, "  --> {}:{}:{}", loc.file.path, line, col)?;
                if let Some(src) = loc.file.text.lines().nth(line - 1) {
                    let gutter = line.to_string();
                    let pad = " ".repeat(gutter.len());
                    let start = floor_char_boundary(&loc.file.text, loc.span.start);
                    let end = floor_char_boundary(&loc.file.text, loc.span.end.max(start));
                    let width = loc.file.text[start..end]
                        .lines()
                        .next()
                        .map(|s| s.chars().count())
                        .unwrap_or(0)
                        .max(1);
                    let width = width.min(src.chars().count().saturating_sub(col - 1).max(1));
                    writeln!(f, "{pad} |")?;
                    writeln!(f, "{gutter} | {src}")?;
                    write!(f, "{pad} | {}{}", " ".repeat(col - 1), "^".repeat(width))?;
                }
            }
            None => write!(f, "Error: {}", self.summary)?,
        }
        if let Some(d) = &self.detail {
            write!(f, "\n\n{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Several diagnostics, reported together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// True when there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Adds one.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d)
    }
    /// `Err(self)` when not empty.
    pub fn into_result(self) -> Result<(), Diagnostics> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The name among `candidates` nearest to `name`, if one is close enough to suggest.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(name, c);
        if score > 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// ` Did you mean "x"?` or nothing.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match suggest(name, candidates) {
        Some(s) => format!(" Did you mean \"{s}\"?"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_excerpt() {
        let file = Arc::new(SourceFile {
            path: "main.hcl".into(),
            text: "a = 1\nbb = oops\n".into(),
        });
        let d = Diagnostic::at(&Loc { file, span: 11..15 }, "bad");
        assert_eq!(d.position().unwrap(), "main.hcl:2:6");
        let s = d.to_string();
        assert!(s.contains("2 | bb = oops"), "{s}");
        assert!(s.contains("^^^^"), "{s}");
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("random_pasword", ["random_password", "random_id"]).as_deref(),
            Some("random_password")
        );
        assert_eq!(suggest("zzz", ["random_password"]), None);
    }
}
