//! A strict JSON reader (RFC 8259) for the plugin configuration: the document as a [`Json`]
//! tree, duplicate keys refused at any depth naming their path (a parser that keeps the last
//! value, as serde_json does, would make `"proxy_protocol":"reject", ..."proxy_protocol":"use"`
//! read as one thing and act as another). Keys are compared decoded: `"mode"` and `"\u006dode"`
//! are one key.
//!
//! Repeated keys aside, it accepts exactly the documents serde_json accepts (as a `Value`), and
//! refuses the others with serde_json's message (`trailing characters at line 1 column 20`),
//! except invalid UTF-8, refused as such before anything else is read. (serde_json's parser, its
//! `Value` and the B-tree behind its maps cost the wasm module about 20 KB.) Numbers keep only
//! what the configuration reads: the value of a non-negative integer that fits a `u64`; a number
//! out of `f64`'s range is refused as serde_json refuses it.
//!
//! Linear in the input: nesting is bounded by [`MAX_DEPTH`] as in serde_json, and each key is
//! compared with at most [`SEEN_KEYS`] others of its object.

use crate::core::config::{join, ConfigError};

/// A JSON value. Object members are in document order (a repeated key is refused by [`parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Json {
    Null,
    Bool(bool),
    /// A number: its value when it is a non-negative integer written without fraction or
    /// exponent that fits a `u64`, `None` for every other number.
    Number(Option<u64>),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(text) => Some(text),
            _ => None,
        }
    }

    /// A non-negative integer that fits a `u64` (`1.0`, `1e2`, `-0` are other numbers).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Number(value) => *value,
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(value) => Some(*value),
            _ => None,
        }
    }

    /// The value of an object's member `key`.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value),
            _ => None,
        }
    }

    /// An object's keys in document order (none for other values).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        let members = match self {
            Json::Object(members) => members.as_slice(),
            _ => &[],
        };
        members.iter().map(|(name, _)| name.as_str())
    }
}

/// How deep arrays and objects may nest: serde_json's default limit (127 levels accepted).
pub const MAX_DEPTH: usize = 128;

/// How many keys of one object the duplicate check remembers: every object of the
/// configuration has fewer distinct fields, so a longer one holds an unknown field (refused by
/// the reader) or repeats one of its first keys (refused here).
pub const SEEN_KEYS: usize = 64;

const EOF_LIST: &str = "EOF while parsing a list";
const EOF_OBJECT: &str = "EOF while parsing an object";
const EOF_STRING: &str = "EOF while parsing a string";
const EOF_VALUE: &str = "EOF while parsing a value";
const EXPECTED_COLON: &str = "expected `:`";
const EXPECTED_LIST_COMMA: &str = "expected `,` or `]`";
const EXPECTED_OBJECT_COMMA: &str = "expected `,` or `}`";
const EXPECTED_IDENT: &str = "expected ident";
const EXPECTED_VALUE: &str = "expected value";
const INVALID_ESCAPE: &str = "invalid escape";
const INVALID_NUMBER: &str = "invalid number";
const OUT_OF_RANGE: &str = "number out of range";
const CONTROL: &str = "control character (\\u0000-\\u001F) found while parsing a string";
const KEY_NOT_STRING: &str = "key must be a string";
const LONE_SURROGATE: &str = "lone leading surrogate in hex escape";
const TRAILING_COMMA: &str = "trailing comma";
const TRAILING: &str = "trailing characters";
const END_OF_HEX: &str = "unexpected end of hex escape";
const TOO_DEEP: &str = "recursion limit exceeded";

/// Parses one JSON document (surrounded by JSON whitespace at most). Errors are one line: a
/// syntax error (path `.`) with its line and column, or the path of the first repeated key
/// (`rules[0].proxy_protocol: duplicate key`; keys are compared decoded), reported only when
/// the document is otherwise well-formed.
pub fn parse(bytes: &[u8]) -> Result<Json, ConfigError> {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => {
            let at = err.valid_up_to().saturating_add(1);
            return Err(syntax(bytes, "invalid UTF-8", at.min(bytes.len())));
        }
    };
    let mut parser = Parser {
        text,
        bytes,
        pos: 0,
        depth: MAX_DEPTH,
        duplicate: None,
    };
    let value = parser.value(&Step::Root)?;
    if parser.skip_whitespace().is_some() {
        return parser.peek_error(TRAILING);
    }
    match parser.duplicate {
        Some(path) => Err(ConfigError {
            path,
            value: None,
            message: "duplicate key".to_string(),
        }),
        None => Ok(value),
    }
}

/// A syntax error after `at` bytes: serde_json's position (the line, and the column of byte
/// `at`, counting bytes from 1).
fn syntax(bytes: &[u8], what: &str, at: usize) -> ConfigError {
    let before = bytes.get(..at).unwrap_or(bytes);
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let line = 1 + before.iter().filter(|b| **b == b'\n').count();
    ConfigError {
        path: ".".to_string(),
        value: None,
        message: format!("{what} at line {line} column {}", at - line_start),
    }
}

/// Where a value sits, built on the stack while parsing; rendered only for a repeated key.
enum Step<'a> {
    Root,
    Key(&'a Step<'a>, &'a str),
    Index(&'a Step<'a>, usize),
}

impl Step<'_> {
    fn path(&self) -> String {
        match self {
            Step::Root => String::new(),
            Step::Key(parent, key) => join(&parent.path(), key),
            Step::Index(parent, i) => format!("{}[{i}]", parent.path()),
        }
    }
}

/// 1e289 to 1e308: a `u64` significand times a smaller power of ten is below `f64::MAX`.
const LARGE_POWERS: [f64; 20] = [
    1e289, 1e290, 1e291, 1e292, 1e293, 1e294, 1e295, 1e296, 1e297, 1e298, 1e299, 1e300, 1e301,
    1e302, 1e303, 1e304, 1e305, 1e306, 1e307, 1e308,
];

/// serde_json's `f64_from_parts` refuses `significand` × 10^`exponent` as out of range:
/// when the product, rounded as serde_json rounds it, is infinite.
fn out_of_range(significand: u64, exponent: i32) -> bool {
    match exponent {
        ..=288 => false,
        289..=308 => {
            let power = usize::try_from(exponent - 289)
                .ok()
                .and_then(|i| LARGE_POWERS.get(i));
            power.is_some_and(|power| (significand as f64 * power).is_infinite())
        }
        _ => significand != 0,
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Levels of nesting still allowed.
    depth: usize,
    /// The path of the first repeated key.
    duplicate: Option<String>,
}

impl Parser<'_> {
    /// serde_json's `error`: at the last byte read.
    fn error<T>(&self, what: &str) -> Result<T, ConfigError> {
        Err(syntax(self.bytes, what, self.pos))
    }

    /// serde_json's `peek_error`: at the next byte.
    fn peek_error<T>(&self, what: &str) -> Result<T, ConfigError> {
        Err(syntax(
            self.bytes,
            what,
            self.pos.saturating_add(1).min(self.bytes.len()),
        ))
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// The next byte that is not JSON whitespace (not consumed).
    fn skip_whitespace(&mut self) -> Option<u8> {
        while let Some(b) = self.peek() {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    /// The value of the next digit (not consumed).
    fn digit(&self) -> Option<u64> {
        match self.peek() {
            Some(b @ b'0'..=b'9') => Some(u64::from(b - b'0')),
            _ => None,
        }
    }

    fn value(&mut self, at: &Step<'_>) -> Result<Json, ConfigError> {
        let Some(first) = self.skip_whitespace() else {
            return self.peek_error(EOF_VALUE);
        };
        match first {
            b'n' => self.literal(b"null", Json::Null),
            b't' => self.literal(b"true", Json::Bool(true)),
            b'f' => self.literal(b"false", Json::Bool(false)),
            b'-' => {
                self.pos += 1;
                self.number(false)
            }
            b'0'..=b'9' => self.number(true),
            b'"' => {
                self.pos += 1;
                self.string().map(Json::String)
            }
            b'[' | b'{' => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 0 {
                    return self.peek_error(TOO_DEEP);
                }
                self.pos += 1;
                let value = if first == b'[' {
                    self.array(at)
                } else {
                    self.object(at)
                };
                self.depth += 1;
                value
            }
            _ => self.peek_error(EXPECTED_VALUE),
        }
    }

    /// `word` (its first byte already seen).
    fn literal(&mut self, word: &[u8], value: Json) -> Result<Json, ConfigError> {
        self.pos += 1;
        for expected in word.iter().skip(1) {
            let Some(b) = self.peek() else {
                return self.error(EOF_VALUE);
            };
            self.pos += 1;
            if b != *expected {
                return self.error(EXPECTED_IDENT);
            }
        }
        Ok(value)
    }

    /// After `[`.
    fn array(&mut self, at: &Step<'_>) -> Result<Json, ConfigError> {
        let mut items = Vec::new();
        loop {
            match self.skip_whitespace() {
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                Some(b',') if !items.is_empty() => {
                    self.pos += 1;
                    match self.skip_whitespace() {
                        Some(b']') => return self.peek_error(TRAILING_COMMA),
                        None => return self.peek_error(EOF_VALUE),
                        Some(_) => {}
                    }
                }
                Some(_) if items.is_empty() => {}
                Some(_) => return self.peek_error(EXPECTED_LIST_COMMA),
                None => return self.peek_error(EOF_LIST),
            }
            let item = self.value(&Step::Index(at, items.len()))?;
            items.push(item);
        }
    }

    /// After `{`.
    fn object(&mut self, at: &Step<'_>) -> Result<Json, ConfigError> {
        let mut members: Vec<(String, Json)> = Vec::new();
        loop {
            let next = match self.skip_whitespace() {
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Object(members));
                }
                Some(b',') if !members.is_empty() => {
                    self.pos += 1;
                    self.skip_whitespace()
                }
                Some(b) if members.is_empty() => Some(b),
                Some(_) => return self.peek_error(EXPECTED_OBJECT_COMMA),
                None => return self.peek_error(EOF_OBJECT),
            };
            match next {
                Some(b'"') => self.pos += 1,
                Some(b'}') => return self.peek_error(TRAILING_COMMA),
                Some(_) => return self.peek_error(KEY_NOT_STRING),
                None => return self.peek_error(EOF_VALUE),
            }
            let key = self.string()?;
            match self.skip_whitespace() {
                Some(b':') => self.pos += 1,
                Some(_) => return self.peek_error(EXPECTED_COLON),
                None => return self.peek_error(EOF_OBJECT),
            }
            let step = Step::Key(at, &key);
            if self.duplicate.is_none()
                && members.iter().take(SEEN_KEYS).any(|(seen, _)| *seen == key)
            {
                self.duplicate = Some(step.path());
            }
            let value = self.value(&step)?;
            members.push((key, value));
        }
    }

    /// After the opening quote: the decoded string, the closing quote consumed.
    fn string(&mut self) -> Result<String, ConfigError> {
        let mut out = String::new();
        let mut start = self.pos;
        loop {
            let Some(b) = self.peek() else {
                return self.error(EOF_STRING);
            };
            match b {
                b'"' | b'\\' => {
                    // Both ASCII: the text before is whole characters.
                    out.push_str(self.text.get(start..self.pos).unwrap_or_default());
                    self.pos += 1;
                    if b == b'"' {
                        return Ok(out);
                    }
                    self.escape(&mut out)?;
                    start = self.pos;
                }
                0..=0x1f => {
                    self.pos += 1;
                    return self.error(CONTROL);
                }
                _ => self.pos += 1,
            }
        }
    }

    /// After a backslash.
    fn escape(&mut self, out: &mut String) -> Result<(), ConfigError> {
        let Some(b) = self.peek() else {
            return self.error(EOF_STRING);
        };
        self.pos += 1;
        let ch = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => self.unicode_escape()?,
            _ => return self.error(INVALID_ESCAPE),
        };
        out.push(ch);
        Ok(())
    }

    /// After `\u`: one code point, a surrogate pair being two escapes.
    fn unicode_escape(&mut self) -> Result<char, ConfigError> {
        let high = self.hex4()?;
        let code = match high {
            0xdc00..=0xdfff => return self.error(LONE_SURROGATE),
            0xd800..=0xdbff => {
                for expected in [b'\\', b'u'] {
                    match self.peek() {
                        None => return self.error(EOF_STRING),
                        Some(b) => {
                            self.pos += 1;
                            if b != expected {
                                return self.error(END_OF_HEX);
                            }
                        }
                    }
                }
                let low = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&low) {
                    return self.error(LONE_SURROGATE);
                }
                0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00)
            }
            _ => high,
        };
        Ok(char::from_u32(code).unwrap_or('\u{fffd}'))
    }

    /// Four hexadecimal digits.
    fn hex4(&mut self) -> Result<u32, ConfigError> {
        let Some(digits) = self.bytes.get(self.pos..self.pos + 4) else {
            self.pos = self.bytes.len();
            return self.error(EOF_STRING);
        };
        self.pos += 4;
        let mut value = 0;
        for digit in digits {
            match char::from(*digit).to_digit(16) {
                Some(d) => value = value << 4 | d,
                None => return self.error(INVALID_ESCAPE),
            }
        }
        Ok(value)
    }

    /// A number, after its sign. The significand and exponent are serde_json's (digits beyond
    /// a `u64` significand are dropped, counted in the exponent), so that what it refuses as
    /// out of range is refused alike.
    fn number(&mut self, positive: bool) -> Result<Json, ConfigError> {
        let Some(first) = self.peek() else {
            return self.error(EOF_VALUE);
        };
        self.pos += 1;
        let mut significand = 0;
        let mut exponent: i32 = 0;
        let mut long = false;
        match first {
            b'0' => {
                if self.digit().is_some() {
                    return self.peek_error(INVALID_NUMBER);
                }
            }
            b'1'..=b'9' => {
                significand = u64::from(first - b'0');
                while let Some(digit) = self.digit() {
                    self.pos += 1;
                    if long {
                        exponent = exponent.saturating_add(1);
                        continue;
                    }
                    match significand
                        .checked_mul(10)
                        .and_then(|s| s.checked_add(digit))
                    {
                        Some(more) => significand = more,
                        None => {
                            long = true;
                            exponent = 1;
                        }
                    }
                }
            }
            _ => return self.error(INVALID_NUMBER),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let mut digits = false;
            let mut dropping = false;
            while let Some(digit) = self.digit() {
                digits = true;
                self.pos += 1;
                if dropping {
                    continue;
                }
                match significand
                    .checked_mul(10)
                    .and_then(|s| s.checked_add(digit))
                {
                    Some(more) => {
                        significand = more;
                        exponent = exponent.saturating_sub(1);
                    }
                    None => dropping = true,
                }
            }
            if !digits {
                return match self.peek() {
                    Some(_) => self.peek_error(INVALID_NUMBER),
                    None => self.peek_error(EOF_VALUE),
                };
            }
            long = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            let exp_positive = match self.peek() {
                Some(b'+') => {
                    self.pos += 1;
                    true
                }
                Some(b'-') => {
                    self.pos += 1;
                    false
                }
                _ => true,
            };
            let Some(first) = self.peek() else {
                return self.error(EOF_VALUE);
            };
            self.pos += 1;
            let mut exp: i32 = match first {
                b'0'..=b'9' => i32::from(first - b'0'),
                _ => return self.error(INVALID_NUMBER),
            };
            while let Some(digit) = self.digit() {
                self.pos += 1;
                let more = i32::try_from(digit)
                    .ok()
                    .and_then(|d| exp.checked_mul(10)?.checked_add(d));
                match more {
                    Some(more) => exp = more,
                    None => {
                        // serde_json: an exponent beyond i32 is infinity (refused) or zero.
                        if significand != 0 && exp_positive {
                            return self.error(OUT_OF_RANGE);
                        }
                        while self.digit().is_some() {
                            self.pos += 1;
                        }
                        return Ok(Json::Number(None));
                    }
                }
            }
            exponent = if exp_positive {
                exponent.saturating_add(exp)
            } else {
                exponent.saturating_sub(exp)
            };
            long = true;
        }
        if !long {
            return Ok(Json::Number(positive.then_some(significand)));
        }
        if out_of_range(significand, exponent) {
            return self.error(OUT_OF_RANGE);
        }
        Ok(Json::Number(None))
    }
}

/// serde_json's tree beside ours, for the differential tests (the unit tests and the fuzz
/// target `config`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod serde_tree {
    use super::Json;

    /// serde_json's tree as ours: numbers by their `u64` value or none, object members in key
    /// order (serde_json's maps are sorted; [`sorted`] puts ours in the same order).
    pub(crate) fn from_serde(value: &serde_json::Value) -> Json {
        match value {
            serde_json::Value::Null => Json::Null,
            serde_json::Value::Bool(b) => Json::Bool(*b),
            serde_json::Value::Number(n) => Json::Number(n.as_u64()),
            serde_json::Value::String(s) => Json::String(s.clone()),
            serde_json::Value::Array(items) => Json::Array(items.iter().map(from_serde).collect()),
            serde_json::Value::Object(map) => Json::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), from_serde(v)))
                    .collect(),
            ),
        }
    }

    /// Object members in key order.
    pub(crate) fn sorted(value: Json) -> Json {
        match value {
            Json::Array(items) => Json::Array(items.into_iter().map(sorted).collect()),
            Json::Object(members) => {
                let mut members: Vec<(String, Json)> =
                    members.into_iter().map(|(k, v)| (k, sorted(v))).collect();
                members.sort_by(|a, b| a.0.cmp(&b.0));
                Json::Object(members)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::serde_tree::{from_serde, sorted};
    use crate::core::proptests::check;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Agreement {
        BothAccept,
        BothRefuse,
        /// serde_json accepts, and keeps the last value of a repeated key; we refuse it.
        Duplicate,
    }

    /// Our parser against serde_json on `bytes`: the same documents accepted, the same trees,
    /// the same syntax errors (message, line and column; invalid UTF-8 has its own message).
    fn agree(bytes: &[u8]) -> Result<Agreement, String> {
        let ours = parse(bytes);
        let theirs = serde_json::from_slice::<serde_json::Value>(bytes);
        let shown = String::from_utf8_lossy(bytes);
        match (ours, theirs) {
            (Ok(ours), Ok(theirs)) => {
                if sorted(ours.clone()) != from_serde(&theirs) {
                    return Err(format!("{shown:?}: ours {ours:?}, serde_json {theirs:?}"));
                }
                Ok(Agreement::BothAccept)
            }
            (Err(ours), Ok(_)) if ours.message == "duplicate key" && ours.path != "." => {
                Ok(Agreement::Duplicate)
            }
            (Err(ours), Err(theirs)) => {
                let utf8 = std::str::from_utf8(bytes).is_ok();
                let same = if utf8 {
                    ours.message == theirs.to_string()
                } else {
                    ours.message.starts_with("invalid UTF-8 at line ")
                };
                if ours.path != "." || ours.value.is_some() || !same {
                    return Err(format!("{shown:?}: ours {ours}, serde_json {theirs}"));
                }
                Ok(Agreement::BothRefuse)
            }
            (ours, theirs) => Err(format!("{shown:?}: ours {ours:?}, serde_json {theirs:?}")),
        }
    }

    /// The generator's decisions, read from bytes proptest draws (0 once they run out): a
    /// byte of 0 is always the simplest, valid choice, so shrinking the bytes simplifies the
    /// document. (One strategy, `Vec<u8>`, instead of a tree of combinators: the test module
    /// stays small.)
    struct Choices<'a> {
        bytes: &'a [u8],
        pos: usize,
    }

    impl Choices<'_> {
        fn byte(&mut self) -> usize {
            let byte = self.bytes.get(self.pos).copied().unwrap_or(0);
            self.pos += 1;
            usize::from(byte)
        }

        /// An index below `n`.
        fn pick(&mut self, n: usize) -> usize {
            self.byte() % n
        }

        /// One of `items`.
        fn one<'b>(&mut self, items: &[&'b str]) -> &'b str {
            items[self.pick(items.len())]
        }

        /// True about `percent` times in 100 (never for a byte of 0).
        fn chance(&mut self, percent: usize) -> bool {
            self.byte() * 100 >= 256 * (100 - percent)
        }
    }

    /// Scalars: numbers at the edges of `u64` and `f64`, literals, the empty string.
    const VALID: &[&str] = &[
        "0",
        "-0",
        "7",
        "-12",
        "1.5",
        "-0.25e-3",
        "1E+2",
        "0e999999999999",
        "1e-400",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "184467440737095516190.1",
        "1.7976931348623157e308",
        "17976931348623157e292",
        "true",
        "false",
        "null",
        "\"\"",
    ];
    const INVALID: &[&str] = &[
        "1e400",
        "-1e400",
        "1.7976931348623159e308",
        "01",
        "-01",
        "+1",
        ".5",
        "1.",
        "1.e5",
        "-",
        "1e",
        "1e+",
        "0x10",
        "NaN",
        "Infinity",
        "nul",
        "True",
        "nulll",
        "'a'",
    ];
    /// Pieces of strings.
    const PLAIN: &[&str] = &["a", "z", " ", "é", "\u{1f600}", "\u{7f}", "\u{2028}"];
    const ESCAPES: &[&str] = &[
        "\\n",
        "\\\"",
        "\\\\",
        "\\/",
        "\\b",
        "\\f",
        "\\r",
        "\\t",
        "\\u0041",
        "\\u00E9",
        "\\u2028",
        "\\ud83d\\ude00",
        "\\uDBFF\\uDFFF",
    ];
    const BAD_PIECES: &[&str] = &[
        "\\ud800",
        "\\udc00",
        "\\ud800\\u0041",
        "\\ud800x",
        "\\ud800\\n",
        "\\x",
        "\\'",
        "\\u12G4",
        "\\u12",
        "\u{1}",
        "\t",
    ];
    /// Keys that often repeat (`"a"` and `"\u0061"` are one key).
    const KEYS: &[&str] = &["\"a\"", "\"\\u0061\""];
    const OTHER_KEYS: &[&str] = &[
        "\"mode\"", "\"b c\"", "\"\\n\"", "\"d\"", "\"e\"", "\"f\"", "\"g\"", "\"h\"",
    ];
    const BAD_KEYS: &[&str] = &["1", "'k'", "k"];
    const COMMAS: &[&str] = &[",", ", ", "\n,\t"];
    const BAD_COMMAS: &[&str] = &[",,", "", ";"];
    const COLONS: &[&str] = &[":", " : "];
    const BAD_COLONS: &[&str] = &["", "=", "::"];
    /// Bytes inserted into a document (invalid UTF-8 among them).
    const INSERTED: &[u8] = &[
        b'"', b',', b'[', b'{', b'}', b']', b':', b'\\', b'0', b'-', b'.', b'e', b' ', b'\n', b'x',
        0x01, 0xff, 0xc3,
    ];

    fn scalar(c: &mut Choices<'_>, out: &mut String) {
        if c.chance(4) {
            out.push_str(c.one(INVALID));
            return;
        }
        match c.pick(4) {
            0 => out.push_str(c.one(VALID)),
            1 => {
                // -?(0|[1-9][0-9]{0,22})(\.[0-9]{1,4})?([eE][+-]?[0-9]{1,2})?
                if c.chance(30) {
                    out.push('-');
                }
                let digits = c.pick(24);
                for i in 0..digits.max(1) {
                    let low = if i == 0 && digits > 0 { 1 } else { 0 };
                    let digit = if digits == 0 {
                        0
                    } else {
                        low + c.pick(10 - low)
                    };
                    out.push(char::from(b'0' + digit as u8));
                }
                if c.chance(30) {
                    out.push('.');
                    for _ in 0..1 + c.pick(4) {
                        out.push(char::from(b'0' + c.pick(10) as u8));
                    }
                }
                if c.chance(25) {
                    out.push_str(c.one(&["e", "E", "e+", "e-", "E-"]));
                    for _ in 0..1 + c.pick(2) {
                        out.push(char::from(b'0' + c.pick(10) as u8));
                    }
                }
            }
            _ => {
                out.push('"');
                for _ in 0..c.pick(4) {
                    let piece = if c.chance(3) {
                        c.one(BAD_PIECES)
                    } else if c.pick(4) == 3 {
                        c.one(ESCAPES)
                    } else {
                        c.one(PLAIN)
                    };
                    out.push_str(piece);
                }
                out.push('"');
            }
        }
    }

    fn value(c: &mut Choices<'_>, out: &mut String, depth: usize) {
        let kind = if depth < 4 { c.pick(5) } else { 0 };
        if kind < 3 {
            return scalar(c, out);
        }
        let (open, close) = if kind == 3 { ('[', ']') } else { ('{', '}') };
        out.push(open);
        let count = c.pick(5);
        for i in 0..count {
            if i > 0 {
                let comma = if c.chance(3) {
                    c.one(BAD_COMMAS)
                } else {
                    c.one(COMMAS)
                };
                out.push_str(comma);
            }
            if kind == 4 {
                let key = if c.chance(3) {
                    c.one(BAD_KEYS)
                } else if c.pick(3) == 2 {
                    c.one(KEYS)
                } else {
                    c.one(OTHER_KEYS)
                };
                out.push_str(key);
                let colon = if c.chance(3) {
                    c.one(BAD_COLONS)
                } else {
                    c.one(COLONS)
                };
                out.push_str(colon);
            }
            value(c, out, depth + 1);
        }
        if c.chance(4) {
            out.push(',');
        } else if c.chance(15) {
            out.push(' ');
        }
        out.push(close);
    }

    /// A document from `bytes`, sometimes damaged: truncated, a byte deleted or inserted,
    /// wrapped in whitespace or followed by more.
    fn input(bytes: &[u8]) -> Vec<u8> {
        let mut c = Choices { bytes, pos: 0 };
        let mut text = String::new();
        value(&mut c, &mut text, 0);
        let mut doc = text.into_bytes();
        let at = (c.byte() << 8 | c.byte()) % (doc.len() + 1);
        match c.pick(10) {
            5 => doc.truncate(at),
            6 if at < doc.len() => {
                doc.remove(at);
            }
            7 => doc.insert(at, INSERTED[c.pick(INSERTED.len())]),
            8 => {
                doc.splice(0..0, *b" \r\n\t");
                doc.extend_from_slice(b"\n ");
            }
            9 => doc.extend_from_slice(b" 1"),
            _ => {}
        }
        doc
    }

    #[test]
    fn accepts_and_refuses_as_serde_json_does() {
        let choices = prop::collection::vec(any::<u8>(), 0..400);
        let seen = check(4000, choices, |bytes| {
            agree(&input(&bytes)).map_err(TestCaseError::fail)
        });
        let count = |what| seen.iter().filter(|seen| **seen == what).count();
        let total = seen.len();
        let share = |count: usize, percent: usize, what: &str| {
            assert!(
                count * 100 >= total * percent,
                "only {count} of {total} generated cases {what} (wanted {percent}%)"
            );
        };
        share(count(Agreement::BothAccept), 30, "were accepted by both");
        share(count(Agreement::BothRefuse), 30, "were refused by both");
        share(count(Agreement::Duplicate), 2, "repeated a key");
    }

    #[test]
    fn refusals() {
        let cases: &[(&[u8], &str)] = &[
            (b"01", "invalid number at line 1 column 2"),
            (b"[-01]", "invalid number at line 1 column 4"),
            (b"+1", "expected value at line 1 column 1"),
            (b".5", "expected value at line 1 column 1"),
            (b"1.", "EOF while parsing a value at line 1 column 2"),
            (b"[1.]", "invalid number at line 1 column 4"),
            (b"1e", "EOF while parsing a value at line 1 column 2"),
            (b"[1e]", "invalid number at line 1 column 4"),
            (b"NaN", "expected value at line 1 column 1"),
            (b"[Infinity]", "expected value at line 1 column 2"),
            (b"1e400", "number out of range at line 1 column 5"),
            (b"-1e400", "number out of range at line 1 column 6"),
            (b"1e99999999999", "number out of range at line 1 column 12"),
            (b"'a'", "expected value at line 1 column 1"),
            (b"{'a':1}", "key must be a string at line 1 column 2"),
            (b"{a:1}", "key must be a string at line 1 column 2"),
            (b"{\"a\" 1}", "expected `:` at line 1 column 6"),
            (b"[1 // one\n]", "expected `,` or `]` at line 1 column 4"),
            (b"/* c */ {}", "expected value at line 1 column 1"),
            (b"[1,]", "trailing comma at line 1 column 4"),
            (b"{\"a\":1,}", "trailing comma at line 1 column 8"),
            (b"[1,,2]", "expected value at line 1 column 4"),
            (b"{\"a\":1 \"b\":2}", "expected `,` or `}` at line 1 column 8"),
            (b"{} {}", "trailing characters at line 1 column 4"),
            (b"{\n\"mode\":\"x\"}\nx", "trailing characters at line 3 column 1"),
            (b"\"a\x01\"", "control character (\\u0000-\\u001F) found while parsing a string at line 1 column 3"),
            (b"\"a\nb\"", "control character (\\u0000-\\u001F) found while parsing a string at line 2 column 0"),
            (b"\"\\x\"", "invalid escape at line 1 column 3"),
            (b"\"\\u12g4\"", "invalid escape at line 1 column 7"),
            (b"\"\\u12\"", "EOF while parsing a string at line 1 column 6"),
            (b"\"\\ud800\"", "unexpected end of hex escape at line 1 column 8"),
            (b"\"\\ud800\\n\"", "unexpected end of hex escape at line 1 column 9"),
            (b"\"\\ud800\\u0041\"", "lone leading surrogate in hex escape at line 1 column 13"),
            (b"\"\\udc00\"", "lone leading surrogate in hex escape at line 1 column 7"),
            (b"\"abc", "EOF while parsing a string at line 1 column 4"),
            (b"[1", "EOF while parsing a list at line 1 column 2"),
            (b"{\"a\":1", "EOF while parsing an object at line 1 column 6"),
            (b"{\"a\"", "EOF while parsing an object at line 1 column 4"),
            (b"", "EOF while parsing a value at line 1 column 0"),
            (b"nul", "EOF while parsing a value at line 1 column 3"),
            (b"nulx", "expected ident at line 1 column 4"),
            (b"tru e", "expected ident at line 1 column 4"),
            (b"\"\xff\"", "invalid UTF-8 at line 1 column 2"),
            (b"{\"a\":\"\xc3\"}", "invalid UTF-8 at line 1 column 7"),
            (b"\xed\xa0\x80", "invalid UTF-8 at line 1 column 1"),
        ];
        for (bytes, want) in cases {
            let text = String::from_utf8_lossy(bytes);
            let err = parse(bytes).unwrap_err();
            assert_eq!(
                (err.path.as_str(), err.message.as_str()),
                (".", *want),
                "{text:?}"
            );
            // serde_json says the same (but for invalid UTF-8, which it names differently).
            if let (Ok(_), Err(theirs)) = (
                std::str::from_utf8(bytes),
                serde_json::from_slice::<serde_json::Value>(bytes),
            ) {
                assert_eq!(err.message, theirs.to_string(), "{text:?}");
            } else {
                assert!(want.starts_with("invalid UTF-8"), "{text:?}");
            }
        }
    }

    #[test]
    fn accepted() {
        let cases: &[(&str, Json)] = &[
            ("0", Json::Number(Some(0))),
            (" 18446744073709551615 ", Json::Number(Some(u64::MAX))),
            ("18446744073709551616", Json::Number(None)),
            ("-0", Json::Number(None)),
            ("-3", Json::Number(None)),
            ("1.0", Json::Number(None)),
            ("1e2", Json::Number(None)),
            ("1e-400", Json::Number(None)),
            ("0e99999999999", Json::Number(None)),
            ("1.7976931348623157e308", Json::Number(None)),
            (
                "\"\\ud83d\\ude00\\u00e9\\/\"",
                Json::String("\u{1f600}é/".into()),
            ),
            ("\"\u{7f}\u{2028}\"", Json::String("\u{7f}\u{2028}".into())),
            (
                "{\"b\":[true,false,null],\"a\":{}}",
                Json::Object(vec![
                    (
                        "b".into(),
                        Json::Array(vec![Json::Bool(true), Json::Bool(false), Json::Null]),
                    ),
                    ("a".into(), Json::Object(Vec::new())),
                ]),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text.as_bytes()).as_ref(), Ok(want), "{text}");
            assert_eq!(agree(text.as_bytes()), Ok(Agreement::BothAccept), "{text}");
        }
    }

    #[test]
    fn nesting_is_bounded_as_in_serde_json() {
        for depth in [MAX_DEPTH - 1, MAX_DEPTH, 100_000] {
            for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
                let text = format!("{}0{}", open.repeat(depth), close.repeat(depth));
                let outcome = agree(text.as_bytes());
                let want = if depth < MAX_DEPTH {
                    Agreement::BothAccept
                } else {
                    Agreement::BothRefuse
                };
                assert_eq!(outcome, Ok(want), "depth {depth} {open}");
            }
        }
        let err = parse("[".repeat(200).as_bytes()).unwrap_err();
        assert_eq!(err.message, "recursion limit exceeded at line 1 column 128");
    }

    #[test]
    fn repeated_keys_are_refused_once_the_document_is_well_formed() {
        let cases: &[(&str, &str)] = &[
            (r#"{"a":1,"a":2}"#, "a: duplicate key"),
            (r#"{"a":1,"\u0061":2}"#, "a: duplicate key"),
            (
                r#"[{},{"x":[{"k":1,"j":2,"k":3}]}]"#,
                "[1].x[0].k: duplicate key",
            ),
            (r#"{"a":{"b":1,"b":1},"a":2}"#, "a.b: duplicate key"),
            (r#"{"a b":1,"a b":2}"#, r#"["a b"]: duplicate key"#),
            // A syntax error anywhere is reported first.
            (
                r#"{"a":1,"a":2} x"#,
                ".: trailing characters at line 1 column 15",
            ),
            (
                r#"{"a":1,"a":2"#,
                ".: EOF while parsing an object at line 1 column 12",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse(text.as_bytes()).unwrap_err().to_string(),
                *want,
                "{text}"
            );
        }
        // The same key in different objects, and keys differing after decoding, are not
        // repeated.
        assert!(parse(br#"[{"a":1},{"a":2},{"a":{"a":3}},{"a":1,"A":2,"a ":3}]"#).is_ok());
        // Beyond the first SEEN_KEYS keys only these are compared (an object that long is
        // refused by the reader anyway).
        let mut keys: Vec<String> = (0..SEEN_KEYS).map(|i| format!("\"k{i}\":0")).collect();
        keys.push("\"x\":0".into());
        keys.push("\"x\":0".into());
        assert!(parse(format!("{{{}}}", keys.join(",")).as_bytes()).is_ok());
        keys.push("\"k0\":0".into());
        assert_eq!(
            parse(format!("{{{}}}", keys.join(",")).as_bytes())
                .unwrap_err()
                .to_string(),
            "k0: duplicate key"
        );
    }
}
