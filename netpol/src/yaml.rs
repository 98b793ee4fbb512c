//! A YAML document tree that remembers where every node was written, so that a problem found while
//! reading a Kubernetes object can name the line and column of the offending field.
//!
//! Built from `yaml-rust2`'s event parser. Aliases are expanded by copying the anchored node, with a
//! budget on the total number of nodes (a "billion laughs" document fails instead of exhausting
//! memory) and a limit on nesting depth (so walking the tree cannot overflow the stack).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a node starts: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl Mark {
    fn from_marker(m: Marker) -> Mark {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Mark { line: m.line().max(1), col: m.col() + 1 }
    }
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// A scalar, as written; `plain` is false for quoted and block scalars (which are always strings).
    Scalar {
        /// The text.
        text: String,
        /// Written without quotes.
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order (duplicate keys are kept so the reader can report them).
    Map(Vec<(Node, Node)>),
}

/// One node and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The content.
    pub value: Value,
    /// Where it starts.
    pub mark: Mark,
}

impl Node {
    /// The scalar text, if the node is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A short name of the node's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A document that is not well-formed YAML, or one too large or deep to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// Where.
    pub mark: Mark,
    /// What.
    pub message: String,
}

/// Deepest nesting accepted (Kubernetes objects nest a dozen levels at most).
pub const MAX_DEPTH: usize = 128;
/// Most nodes one stream may expand to, aliases included.
pub const MAX_NODES: usize = 4_000_000;

/// Reads every document of a YAML stream (`---`-separated). Empty documents are left out.
pub fn parse_stream(src: &str) -> Result<Vec<Node>, YamlError> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(src);
    let result = parser.load(&mut b, true);
    if let Some(e) = b.error {
        return Err(e);
    }
    if let Err(e) = result {
        return Err(YamlError { mark: Mark::from_marker(*e.marker()), message: e.info().to_string() });
    }
    Ok(b.docs.into_iter().filter(|d| d.value != Value::Null).collect())
}

enum Open {
    Seq(Node, usize),
    Map(Node, usize, Option<Node>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    docs: Vec<Node>,
    nodes: usize,
    error: Option<YamlError>,
}

fn count(n: &Node) -> usize {
    // Iterative, so that an alias of a deep node cannot overflow the stack here either.
    let mut total = 0;
    let mut todo = vec![n];
    while let Some(n) = todo.pop() {
        total += 1;
        match &n.value {
            Value::Seq(items) => todo.extend(items),
            Value::Map(pairs) => todo.extend(pairs.iter().flat_map(|(k, v)| [k, v])),
            _ => {}
        }
    }
    total
}

impl Builder {
    fn fail(&mut self, mark: Mark, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(YamlError { mark, message: message.into() });
        }
        self.stack.clear();
    }

    /// Attaches a finished node to the container being built (or ends a document).
    fn finish(&mut self, mut node: Node, anchor: usize) {
        // A block mapping's start event is marked after its first key has been scanned; the first key's
        // own mark is where the mapping really starts.
        if let Value::Map(pairs) = &node.value {
            if let Some((k, _)) = pairs.first() {
                if (k.mark.line, k.mark.col) < (node.mark.line, node.mark.col) {
                    node.mark = k.mark;
                }
            }
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Open::Seq(seq, _)) => {
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Open::Map(map, _, key)) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    if let Value::Map(pairs) = &mut map.value {
                        pairs.push((k, node));
                    }
                }
            },
        }
    }

    fn open(&mut self, open: Open, mark: Mark) {
        if self.stack.len() >= MAX_DEPTH {
            self.fail(mark, format!("nesting deeper than {MAX_DEPTH} levels"));
            return;
        }
        self.stack.push(open);
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, marker: Marker) {
        if self.error.is_some() {
            return;
        }
        let mark = Mark::from_marker(marker);
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            self.fail(mark, format!("more than {MAX_NODES} nodes"));
            return;
        }
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                let value = if plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
                    Value::Null
                } else {
                    Value::Scalar { text, plain }
                };
                self.finish(Node { value, mark }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                self.open(Open::Seq(Node { value: Value::Seq(Vec::new()), mark }, anchor), mark)
            }
            Event::MappingStart(anchor, _) => {
                self.open(Open::Map(Node { value: Value::Map(Vec::new()), mark }, anchor, None), mark)
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Open::Seq(node, anchor)) | Some(Open::Map(node, anchor, _)) => self.finish(node, anchor),
                None => self.fail(mark, "unbalanced end of a collection"),
            },
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(node) => {
                    let n = count(node);
                    self.nodes += n;
                    if self.nodes > MAX_NODES {
                        self.fail(mark, format!("aliases expand to more than {MAX_NODES} nodes"));
                        return;
                    }
                    let mut node = node.clone();
                    node.mark = mark;
                    self.finish(node, 0);
                }
                None => self.fail(mark, "alias to an unknown anchor"),
            },
            Event::DocumentStart
            | Event::DocumentEnd
            | Event::StreamStart
            | Event::StreamEnd
            | Event::Nothing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_types() {
        let docs = parse_stream("a: 1\nb:\n  - x\n  - 'y'\n---\n---\nc: ~\n").unwrap();
        assert_eq!(docs.len(), 2);
        let Value::Map(pairs) = &docs[0].value else { panic!("map") };
        assert_eq!(pairs[0].0.as_str(), Some("a"));
        assert_eq!(pairs[0].1.mark, Mark { line: 1, col: 4 });
        let Value::Seq(items) = &pairs[1].1.value else { panic!("seq") };
        assert_eq!(items[1].value, Value::Scalar { text: "y".into(), plain: false });
        assert_eq!(items[1].mark.line, 4);
        let Value::Map(pairs) = &docs[1].value else { panic!("map") };
        assert_eq!(pairs[0].1.value, Value::Null);
    }

    #[test]
    fn malformed_yaml_has_a_position() {
        let e = parse_stream("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.mark.line >= 1, "{e:?}");
        let e = parse_stream("a:\n  b: 1\n c: 2\n").unwrap_err();
        assert_eq!(e.mark.line, 3, "{e:?}");
    }

    #[test]
    fn depth_and_alias_bombs_fail_cleanly() {
        let deep = "[".repeat(10_000);
        assert!(parse_stream(&deep).is_err());
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..12 {
            let prev = if i == 0 { "a".to_string() } else { format!("l{}", i - 1) };
            bomb.push_str(&format!("l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let e = parse_stream(&bomb).unwrap_err();
        assert!(e.message.contains("nodes"), "{e:?}");
    }
}
