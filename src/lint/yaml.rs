//! YAML documents with the line of every node, for `file:line` findings. Built from the events
//! of `granit-parser` (serde-saphyr's own parser), because serde values carry no positions.
//! Aliases are resolved to a copy of their anchor's node; tags are ignored; plain scalars are
//! typed by the YAML 1.2 core schema when converted to JSON ([`Node::to_json`]).

use granit_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::Value;

/// One YAML node and the 1-based line it starts on.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub line: usize,
    pub kind: NodeKind,
}

/// What a [`Node`] holds.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// A scalar as written (escapes processed); `plain` when unquoted and not a block scalar,
    /// `literal` for a `|` block (the node's line is then that of its first content line).
    Scalar {
        text: String,
        plain: bool,
        literal: bool,
    },
    Seq(Vec<Node>),
    /// Entries in source order: key node (its line is the field's line), value node.
    Map(Vec<(Node, Node)>),
}

/// A YAML syntax error: its 1-based line and the parser's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// Every document of a YAML stream (empty documents dropped), or the first syntax error.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut events = Parser::new_from_str(text).filter(|e| {
        !matches!(
            e,
            Ok((Event::StreamStart | Event::StreamEnd | Event::Anchor(..), _))
        ) && !matches!(e, Ok((ev, _)) if is_comment(ev))
    });
    let mut anchors: Vec<(usize, Node)> = vec![];
    let mut docs = vec![];
    while let Some(next) = events.next() {
        let (event, span) = next.map_err(syntax)?;
        match event {
            Event::DocumentStart(..) | Event::DocumentEnd => {}
            event => {
                let node = build(event, span, &mut events, &mut anchors)?;
                if !node.is_null() {
                    docs.push(node);
                }
            }
        }
    }
    Ok(docs)
}

fn is_comment(e: &Event<'_>) -> bool {
    !e.is_node()
        && !matches!(
            e,
            Event::DocumentStart(..)
                | Event::DocumentEnd
                | Event::SequenceEnd
                | Event::MappingEnd
                | Event::StreamStart
                | Event::StreamEnd
        )
}

fn syntax(e: granit_parser::ScanError) -> SyntaxError {
    SyntaxError {
        line: e.marker().line(),
        message: e.info(),
    }
}

fn build<'a>(
    event: Event<'a>,
    span: Span,
    events: &mut impl Iterator<Item = Result<(Event<'a>, Span), granit_parser::ScanError>>,
    anchors: &mut Vec<(usize, Node)>,
) -> Result<Node, SyntaxError> {
    let line = span.start.line();
    let unexpected = |what: &str| SyntaxError {
        line,
        message: format!("unexpected {what}"),
    };
    let (node, anchor) = match event {
        Event::Scalar(text, style, anchor, _) => (
            Node {
                line,
                kind: NodeKind::Scalar {
                    text: text.into_owned(),
                    plain: style == ScalarStyle::Plain,
                    literal: style == ScalarStyle::Literal,
                },
            },
            anchor,
        ),
        Event::SequenceStart(_, anchor, _) => {
            let mut items = vec![];
            loop {
                let (ev, sp) = events
                    .next()
                    .ok_or_else(|| unexpected("end"))?
                    .map_err(syntax)?;
                if ev == Event::SequenceEnd {
                    break;
                }
                items.push(build(ev, sp, events, anchors)?);
            }
            (
                Node {
                    line,
                    kind: NodeKind::Seq(items),
                },
                anchor,
            )
        }
        Event::MappingStart(_, anchor, _) => {
            let mut entries = vec![];
            loop {
                let (ev, sp) = events
                    .next()
                    .ok_or_else(|| unexpected("end"))?
                    .map_err(syntax)?;
                if ev == Event::MappingEnd {
                    break;
                }
                let key = build(ev, sp, events, anchors)?;
                let (ev, sp) = events
                    .next()
                    .ok_or_else(|| unexpected("end"))?
                    .map_err(syntax)?;
                entries.push((key, build(ev, sp, events, anchors)?));
            }
            (
                Node {
                    line,
                    kind: NodeKind::Map(entries),
                },
                anchor,
            )
        }
        Event::Alias(id) => {
            let node = anchors
                .iter()
                .rev()
                .find(|(a, _)| *a == id)
                .map(|(_, n)| n.clone())
                .ok_or_else(|| unexpected("alias"))?;
            (node, 0)
        }
        _ => return Err(unexpected("event")),
    };
    if anchor != 0 {
        anchors.push((anchor, node.clone()));
    }
    Ok(node)
}

impl Node {
    /// A plain empty, `~` or `null` scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { text, plain: true, .. }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The scalar's text (any style), `None` for a collection or a null.
    pub fn str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } if !self.is_null() => Some(text),
            _ => None,
        }
    }

    /// The entry `key` of a mapping: (the key's line, the value).
    pub fn field(&self, key: &str) -> Option<(usize, &Node)> {
        match &self.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.str() == Some(key))
                .map(|(k, v)| (k.line, v)),
            _ => None,
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.field(key).map(|(_, v)| v)
    }

    /// The value at a path of mapping keys.
    pub fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |n, k| n.get(k))
    }

    /// The line of the field at a path of mapping keys (the last key's line).
    pub fn line_of(&self, path: &[&str]) -> Option<usize> {
        let (last, parent) = path.split_last()?;
        self.at(parent)?.field(last).map(|(line, _)| line)
    }

    /// The scalar text at a path.
    pub fn str_at(&self, path: &[&str]) -> Option<&str> {
        self.at(path).and_then(Node::str)
    }

    /// The items of a sequence (empty for anything else).
    pub fn items(&self) -> &[Node] {
        match &self.kind {
            NodeKind::Seq(items) => items,
            _ => &[],
        }
    }

    /// The entries of a mapping (empty for anything else).
    pub fn entries(&self) -> &[(Node, Node)] {
        match &self.kind {
            NodeKind::Map(entries) => entries,
            _ => &[],
        }
    }

    /// JSON, plain scalars typed by the YAML 1.2 core schema (null, booleans, integers,
    /// floats); mapping keys as their text.
    pub fn to_json(&self) -> Value {
        match &self.kind {
            NodeKind::Scalar {
                text, plain: false, ..
            } => Value::String(text.clone()),
            NodeKind::Scalar {
                text, plain: true, ..
            } => plain_scalar(text),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let key = match &k.kind {
                            NodeKind::Scalar { text, .. } => text.clone(),
                            _ => k.to_json().to_string(),
                        };
                        (key, v.to_json())
                    })
                    .collect(),
            ),
        }
    }
}

fn plain_scalar(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let int = |digits: &str, radix| i64::from_str_radix(digits, radix).ok().map(Value::from);
    let number = if let Some(hex) = s.strip_prefix("0x") {
        int(hex, 16)
    } else if let Some(oct) = s.strip_prefix("0o") {
        int(oct, 8)
    } else if s
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'-' || b == b'+')
        && s.bytes().skip(1).all(|b| b.is_ascii_digit())
    {
        s.parse::<i64>().ok().map(Value::from)
    } else if s
        .bytes()
        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        && s.bytes().any(|b| b.is_ascii_digit())
    {
        s.parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
    } else {
        None
    };
    number.unwrap_or_else(|| Value::String(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nodes_carry_their_lines_across_documents() {
        let docs = parse_documents(
            "# comment\napiVersion: v1\nkind: Secret\ndata:\n  a: b\n---\n---\nkind: X\nspec:\n  - 1\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line_of(&["kind"]), Some(3));
        assert_eq!(docs[0].line_of(&["data", "a"]), Some(5));
        assert_eq!(docs[1].line_of(&["kind"]), Some(8));
        assert_eq!(docs[1].get("spec").unwrap().items()[0].line, 10);
    }

    #[test]
    fn a_literal_block_starts_on_its_first_content_line() {
        let docs = parse_documents("a:\n  s: |\n    one\n    two\n").unwrap();
        let s = docs[0].at(&["a", "s"]).unwrap();
        assert_eq!((s.line, docs[0].line_of(&["a", "s"])), (3, Some(2)));
        assert!(matches!(s.kind, NodeKind::Scalar { literal: true, .. }));
    }

    #[test]
    fn json_types_plain_scalars_only() {
        let docs = parse_documents(
            "a: 1\nb: '1'\nc: true\nd: ~\ne: 1.5\nf: 0x10\ng: 1h\nh: &x {k: v}\ni: *x\nj: |\n  t\n",
        )
        .unwrap();
        assert_eq!(
            docs[0].to_json(),
            json!({"a": 1, "b": "1", "c": true, "d": null, "e": 1.5, "f": 16, "g": "1h",
                   "h": {"k": "v"}, "i": {"k": "v"}, "j": "t\n"})
        );
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let e = parse_documents("a: b\nc: [d\n").unwrap_err();
        assert!(e.line >= 2, "{e:?}");
    }
}
