//! YAML text for the typed models: a value is serialised with serde (serde_json keeps the field
//! order of the structs), read back into an ordered tree, and printed in block style.
//!
//! Scalars are plain only when no YAML reader (PyYAML's 1.1, yaml-cpp's 1.2) can take them for
//! anything but that string; every other string is double-quoted with escapes, except a
//! multi-line string of printable ASCII, which becomes a literal block (`|`) so a policy stays
//! readable. Nothing is ever substituted into text: a policy or path cannot change the structure.

use std::fmt::Write as _;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;

/// A YAML node with the order of its mapping keys kept.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    /// A number as serde_json printed it.
    Number(String),
    String(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl Node {
    /// Any serde value as a node (through serde_json, which keeps struct field order).
    pub fn from_serialize<T: Serialize>(value: &T) -> Result<Node, serde_json::Error> {
        let text = serde_json::to_string(value)?;
        serde_json::from_str(&text)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Number(
            serde_json::Number::from_f64(v).map_or_else(|| "null".to_string(), |n| n.to_string()),
        ))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Node>()? {
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

/// Named nodes printed once with an anchor (`&name`) and then as aliases (`*name`), e.g. the
/// policy both roles of a sample share.
#[derive(Default)]
pub struct Anchors {
    named: Vec<(String, Node, bool)>,
}

impl Anchors {
    pub fn add(&mut self, name: &str, node: Node) {
        self.named.push((name.to_string(), node, false));
    }

    /// `Some((name, first))` when `node` is a named one.
    fn find(&mut self, node: &Node) -> Option<(String, bool)> {
        let (name, _, seen) = self.named.iter_mut().find(|(_, n, _)| n == node)?;
        let first = !*seen;
        *seen = true;
        Some((name.clone(), first))
    }
}

/// One YAML document (no `---`), block style.
pub fn document(node: &Node, anchors: &mut Anchors) -> String {
    let mut out = String::new();
    match node {
        Node::Map(entries) if !entries.is_empty() => map(&mut out, entries, 0, anchors),
        Node::Seq(items) if !items.is_empty() => seq(&mut out, items, 0, anchors),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

/// `# ` before every line of `text` (blank lines become `#`).
pub fn comment(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {line}");
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn map(out: &mut String, entries: &[(String, Node)], indent: usize, anchors: &mut Anchors) {
    for (i, (key, value)) in entries.iter().enumerate() {
        // The first key of a mapping inside a sequence follows the "- " directly.
        if i > 0 || !out.ends_with("- ") {
            pad(out, indent);
        }
        out.push_str(&string(key));
        out.push(':');
        value_after_key(out, value, indent, anchors);
    }
}

fn seq(out: &mut String, items: &[Node], indent: usize, anchors: &mut Anchors) {
    for item in items {
        pad(out, indent);
        out.push_str("- ");
        match item {
            Node::Map(entries) if !entries.is_empty() => map(out, entries, indent + 2, anchors),
            Node::Seq(inner) if !inner.is_empty() => {
                out.push('\n');
                seq(out, inner, indent + 2, anchors);
            }
            other => {
                out.push_str(&inline(other, indent + 2));
                out.push('\n');
            }
        }
    }
}

/// What follows `key:`: an anchor or alias, then a scalar on the same line or a block below.
/// Sequences are not indented under their key (as Envoy's documentation writes them).
fn value_after_key(out: &mut String, value: &Node, indent: usize, anchors: &mut Anchors) {
    if let Some((name, first)) = anchors.find(value) {
        if !first {
            let _ = writeln!(out, " *{name}");
            return;
        }
        let _ = write!(out, " &{name}");
    }
    match value {
        Node::Map(entries) if !entries.is_empty() => {
            out.push('\n');
            map(out, entries, indent + 2, anchors);
        }
        Node::Seq(items) if !items.is_empty() => {
            out.push('\n');
            seq(out, items, indent, anchors);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other, indent + 2));
            out.push('\n');
        }
    }
}

/// A scalar, an empty collection, or a literal block whose lines sit at `indent`.
fn inline(node: &Node, indent: usize) -> String {
    match node {
        Node::String(text) if literal_block_fits(text) => {
            let mut out = String::from(if text.ends_with('\n') { "|" } else { "|-" });
            for line in text.lines() {
                out.push('\n');
                if !line.is_empty() {
                    pad(&mut out, indent);
                    out.push_str(line);
                }
            }
            out
        }
        other => scalar(other),
    }
}

fn scalar(node: &Node) -> String {
    match node {
        Node::Null => "null".to_string(),
        Node::Bool(b) => b.to_string(),
        Node::Number(n) => n.clone(),
        Node::String(s) => string(s),
        Node::Seq(_) => "[]".to_string(),
        Node::Map(_) => "{}".to_string(),
    }
}

/// Several lines of printable ASCII, no line starting or ending with a space, ending in at
/// most one newline: what a literal block keeps exactly.
fn literal_block_fits(text: &str) -> bool {
    let body = text.strip_suffix('\n').unwrap_or(text);
    body.contains('\n')
        && !body.ends_with('\n')
        && !body.starts_with(' ')
        && body
            .bytes()
            .all(|b| b == b'\n' || (0x20..0x7f).contains(&b))
        && body.lines().all(|line| !line.ends_with(' '))
}

/// YAML 1.1 words that a reader takes for a boolean or null.
const RESERVED: &[&str] = &[
    "y", "yes", "n", "no", "true", "false", "on", "off", "null", "~",
];

/// A string plain when it can only be read back as itself, else double-quoted.
fn string(text: &str) -> String {
    let mut bytes = text.bytes();
    let plain = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'/')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_./-".contains(&b))
        && !RESERVED.contains(&text.to_ascii_lowercase().as_str());
    if plain {
        text.to_string()
    } else {
        quoted(text)
    }
}

/// A YAML double-quoted scalar: printable ASCII as is, everything else escaped (`\uXXXX` or
/// `\UXXXXXXXX`, which both YAML 1.1 and 1.2 readers decode; JSON's surrogate pairs are not
/// YAML).
pub fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08X}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(value: serde_json::Value) -> String {
        document(
            &Node::from_serialize(&value).unwrap(),
            &mut Anchors::default(),
        )
    }

    #[test]
    fn plain_only_when_unambiguous() {
        assert_eq!(
            string("envoy.filters.network.wasm"),
            "envoy.filters.network.wasm"
        );
        assert_eq!(string("target/x.wasm"), "target/x.wasm");
        for text in [
            "",
            "yes",
            "No",
            "ON",
            "null",
            "~",
            "0.0.0.0",
            "10",
            "1e3",
            "@type",
            "a: b",
            "a b",
            "-x",
            ".inf",
            "%X%",
            "#c",
            "a#b",
            "x,y",
            "[a]",
            "{a}",
            "*a",
            "&a",
            "!a",
            "|",
            ">",
            "'",
            "\"",
            "a\nb",
            "WASM_PATH ",
        ] {
            assert!(string(text).starts_with('"'), "{text:?} must be quoted");
        }
    }

    #[test]
    fn quoting_escapes_everything_outside_printable_ascii() {
        assert_eq!(quoted("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            quoted("\u{7f}\u{2028}é\u{1F600}\r"),
            r#""\u007F\u2028\u00E9\U0001F600\u000D""#
        );
    }

    #[test]
    fn block_layout() {
        let text = yaml(serde_json::json!({
            "a": {"b": 1, "c": [{"d": "x", "e": [1, 2]}, "z", "y", []], "f": {}},
            "g": "line 1\nline 2\n",
            "h": "line 1\n line 2",
            "i": "trailing \nspace",
        }));
        assert_eq!(
            text,
            "a:\n  b: 1\n  c:\n  - d: x\n    e:\n    - 1\n    - 2\n  - z\n  - \"y\"\n  - []\n  f: {}\n\
             g: |\n  line 1\n  line 2\nh: |-\n  line 1\n   line 2\ni: \"trailing \\nspace\"\n"
        );
    }

    #[test]
    fn anchors_then_aliases() {
        let shared = Node::from_serialize(&serde_json::json!({"v": 1})).unwrap();
        let mut anchors = Anchors::default();
        anchors.add("p", shared);
        let node =
            Node::from_serialize(&serde_json::json!([{"x": {"v": 1}}, {"x": {"v": 1}}])).unwrap();
        assert_eq!(
            document(&node, &mut anchors),
            "- x: &p\n    v: 1\n- x: *p\n"
        );
    }

    #[test]
    fn comment_lines() {
        assert_eq!(comment("a\n\nb"), "# a\n#\n# b\n");
    }
}
