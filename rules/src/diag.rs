//! Positions in rule text and the diagnostics that point at them.

use std::fmt;

/// A region of source text: 1-based line and column (in characters) plus byte offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Span {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub col: u32,
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The text cannot be used.
    Error,
    /// The text is usable but probably not what was meant.
    Warning,
}

/// One problem found in rule or policy text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where.
    pub span: Span,
    /// What is wrong, in one sentence.
    pub message: String,
    /// How to fix it, when dfw can tell.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error without a hint.
    pub fn new(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Error, span, message: message.into(), hint: None }
    }

    /// A warning without a hint.
    pub fn warning(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, span, message: message.into(), hint: None }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The one-line form `file:line:col: error: message (hint)`.
    pub fn one_line(&self, file: &str) -> String {
        format!("{file}:{self}")
    }

    /// The compiler-style form: the one-line header, then the source line with the offending text
    /// underlined and the hint beside the underline.
    pub fn render(&self, file: &str, src: &str) -> String {
        let mut out = format!(
            "{file}:{}:{}: {}: {}\n",
            self.span.line,
            self.span.col,
            self.severity_word(),
            self.message
        );
        let line_text = src.lines().nth(self.span.line.saturating_sub(1) as usize).unwrap_or("");
        let gutter = self.span.line.to_string();
        let pad = " ".repeat(gutter.len());
        // The underline covers the span's characters on its first line (at least one caret).
        let col = self.span.col.max(1) as usize - 1;
        let span_text = src.get(self.span.start..self.span.end).unwrap_or("");
        let width = span_text.lines().next().map_or(0, |l| l.chars().count()).max(1);
        let indent: String =
            line_text.chars().take(col).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
        out.push_str(&format!("{pad} |\n{gutter} | {line_text}\n{pad} | {indent}{}", "^".repeat(width)));
        if let Some(h) = &self.hint {
            out.push(' ');
            out.push_str(h);
        }
        out.push('\n');
        out
    }

    fn severity_word(&self) -> &'static str {
        match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}: {}", self.span.line, self.span.col, self.severity_word(), self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Every diagnostic of one text, sorted by position.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// True when any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    /// One line per diagnostic, `file:line:col: severity: message (hint)`.
    pub fn one_line(&self, file: &str) -> String {
        self.0.iter().map(|d| d.one_line(file)).collect::<Vec<_>>().join("\n")
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The keyword among `candidates` closest to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keywords_only() {
        assert_eq!(did_you_mean("acept", &["accept", "drop", "reject", "punt"]), Some("accept"));
        assert_eq!(did_you_mean("failclosed", &["failClosed", "failOpen"]), Some("failClosed"));
        assert_eq!(did_you_mean("banana", &["accept", "drop"]), None);
    }

    #[test]
    fn render_underlines_the_span() {
        let src = "a\n  rule 1 at 1 acept;\n";
        let start = src.find("acept").unwrap();
        let d = Diagnostic::new(Span { line: 2, col: 14, start, end: start + 5 }, "unexpected 'acept'")
            .with_hint("did you mean 'accept'?");
        assert_eq!(
            d.render("p.dfw", src),
            "p.dfw:2:14: error: unexpected 'acept'\n  |\n2 |   rule 1 at 1 acept;\n  |              ^^^^^ did you mean 'accept'?\n"
        );
    }
}
