//! Tokens of the vsipioctl-style text.
//!
//! Words are runs of anything but whitespace and the punctuation `{ } ; , ' #`, so addresses
//! (`172.15.0.0/24`, `fe80::1`, `aa:bb:cc:dd:ee:ff`), UUIDs, port ranges (`1024-2048`) and type codes
//! (`3:4`) are single words that the parser splits further. `#` starts a comment to the end of the line,
//! except that a comment beginning `# internal #` marks the rule that follows on the same line.

use crate::diag::{Diagnostic, Span};

/// Kinds of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok<'a> {
    /// A word.
    Word(&'a str),
    /// `{`.
    Open,
    /// `}`.
    Close,
    /// `;`.
    Semi,
    /// `,`.
    Comma,
    /// A single-quoted string (content without the quotes).
    Quoted(&'a str),
    /// A comment; the text after `#`, trimmed.
    Comment(&'a str),
    /// The `# internal #` marker.
    Internal,
}

/// A token and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    /// The token.
    pub tok: Tok<'a>,
    /// Where.
    pub span: Span,
}

/// Splits `src` into tokens. Fails only on an unterminated quoted string, returning the tokens before it.
pub fn tokenize(src: &str) -> Result<Vec<Token<'_>>, (Vec<Token<'_>>, Diagnostic)> {
    let mut out = Vec::new();
    let mut line = 1u32;
    let mut line_start = 0usize;
    let bytes = src.as_bytes();
    let mut i = 0usize;
    let col_of = |pos: usize, line_start: usize| src[line_start..pos].chars().count() as u32 + 1;
    while i < bytes.len() {
        let c = bytes[i];
        let span_at = |start: usize, end: usize, line: u32, line_start: usize| Span {
            line,
            col: col_of(start, line_start),
            start,
            end,
        };
        match c {
            b'\n' => {
                i += 1;
                line += 1;
                line_start = i;
            }
            c if c.is_ascii_whitespace() => i += 1,
            b'{' | b'}' | b';' | b',' => {
                let tok = match c {
                    b'{' => Tok::Open,
                    b'}' => Tok::Close,
                    b';' => Tok::Semi,
                    _ => Tok::Comma,
                };
                out.push(Token { tok, span: span_at(i, i + 1, line, line_start) });
                i += 1;
            }
            b'#' => {
                let end = src[i..].find('\n').map_or(src.len(), |n| i + n);
                let text = &src[i + 1..end];
                let trimmed = text.trim_start();
                if let Some(rest) = trimmed.strip_prefix("internal") {
                    if let Some(after) = rest.trim_start().strip_prefix('#') {
                        out.push(Token { tok: Tok::Internal, span: span_at(i, end, line, line_start) });
                        i = end - after.len();
                        continue;
                    }
                }
                out.push(Token { tok: Tok::Comment(text.trim()), span: span_at(i, end, line, line_start) });
                i = end;
            }
            b'\'' => {
                let rest = &src[i + 1..];
                match rest.find(['\'', '\n']) {
                    Some(n) if rest.as_bytes()[n] == b'\'' => {
                        out.push(Token {
                            tok: Tok::Quoted(&rest[..n]),
                            span: span_at(i, i + n + 2, line, line_start),
                        });
                        i += n + 2;
                    }
                    _ => {
                        let d = Diagnostic::new(
                            span_at(i, i + 1, line, line_start),
                            "unterminated quoted string",
                        )
                        .with_hint("close it with ' on the same line");
                        return Err((out, d));
                    }
                }
            }
            _ => {
                let start = i;
                while i < bytes.len() {
                    let b = bytes[i];
                    if b.is_ascii_whitespace() || matches!(b, b'{' | b'}' | b';' | b',' | b'\'' | b'#') {
                        break;
                    }
                    i += 1;
                }
                // Multi-byte UTF-8 sequences never contain ASCII bytes, so `i` is on a char boundary.
                out.push(Token { tok: Tok::Word(&src[start..i]), span: span_at(start, i, line, line_start) });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_punctuation_comments_and_positions() {
        let toks = tokenize("ruleset x {\n  # generation number: 0\n  rule 1 at 1 tag 'a b';\n}").unwrap();
        let kinds: Vec<_> = toks.iter().map(|t| t.tok).collect();
        assert_eq!(
            kinds,
            vec![
                Tok::Word("ruleset"),
                Tok::Word("x"),
                Tok::Open,
                Tok::Comment("generation number: 0"),
                Tok::Word("rule"),
                Tok::Word("1"),
                Tok::Word("at"),
                Tok::Word("1"),
                Tok::Word("tag"),
                Tok::Quoted("a b"),
                Tok::Semi,
                Tok::Close
            ]
        );
        assert_eq!((toks[4].span.line, toks[4].span.col), (3, 3));
        assert_eq!((toks[9].span.line, toks[9].span.col), (3, 19));
    }

    #[test]
    fn internal_marker_and_unterminated_quote() {
        let toks = tokenize("# internal # rule 1").unwrap();
        assert_eq!(toks[0].tok, Tok::Internal);
        assert_eq!(toks[1].tok, Tok::Word("rule"));
        let (_, err) = tokenize("tag 'oops\n").unwrap_err();
        assert_eq!((err.span.line, err.span.col), (1, 5));
    }
}
