//! Reading the files `lint` is given: JSON, or YAML with any number of documents (Kubernetes
//! manifests), anchors and merge keys (Envoy bootstraps), each document turned into a
//! `serde_json::Value` so that every check reads one data model and names JSON paths.

use serde::Deserialize;
use serde_json::{Map, Number, Value};

/// One document of one input file.
pub struct Document {
    pub value: Value,
}

/// The most a file may hold: a larger one (or an endless one, `/dev/zero`) is refused rather
/// than read into memory. Parsed, a configuration takes some 16 times its size.
const MAX_BYTES: u64 = 256 << 20;

/// `-` reads standard input.
pub fn read_text(file: &str) -> Result<String, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let read = if file == "-" {
        std::io::stdin().take(MAX_BYTES + 1).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(MAX_BYTES + 1).read_to_end(&mut bytes))
    };
    let name = if file == "-" { "standard input" } else { file };
    read.map_err(|err| format!("cannot read {name}: {err}"))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!(
            "{name}: larger than {} MiB, more than lint reads",
            MAX_BYTES >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{file}: not UTF-8 text"))
}

/// More `[` and `{` open at once than this is refused before parsing.
const MAX_OPEN_BRACKETS: usize = 1000;

/// The documents of a file's text: JSON when it parses as JSON, YAML otherwise (JSON is YAML,
/// but serde_json's errors name the line and column of a broken JSON file). Empty YAML
/// documents (`---` with nothing after it) are left out.
pub fn documents(text: &str) -> Result<Vec<Document>, String> {
    // The YAML scanner keeps a possible key per open flow collection and checks them all at
    // every token: time grows with depth times length (a 240 KB `{"a":{"a":...` took half a
    // minute) before the parser's own limit of 128 levels refuses it. Brackets counted
    // anywhere (strings and comments too) overestimate the depth, so the bound is well above
    // any configuration's.
    let mut depth = 0usize;
    for byte in text.bytes() {
        match byte {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_OPEN_BRACKETS {
            return Err(format!(
                "more than {MAX_OPEN_BRACKETS} brackets open at once: nested too deeply"
            ));
        }
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        if let Ok(value) = serde_json::from_str::<Value>(text) {
            return Ok(vec![Document { value }]);
        }
    }
    let mut out = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let mut value = serde_norway::Value::deserialize(document)
            .map_err(|err| format!("YAML document {}: {err}", index + 1))?;
        value
            .apply_merge()
            .map_err(|err| format!("YAML document {}: {err}", index + 1))?;
        let value = to_json(value);
        if !value.is_null() {
            out.push(Document { value });
        }
    }
    Ok(out)
}

/// A YAML value as JSON: tags are dropped (the tagged value kept), mapping keys that are not
/// strings are written as their YAML scalar text.
fn to_json(value: serde_norway::Value) -> Value {
    use serde_norway::Value as Yaml;
    match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Number(i.into())
            } else if let Some(u) = n.as_u64() {
                Value::Number(u.into())
            } else {
                n.as_f64()
                    .and_then(Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Yaml::Mapping(mapping) => {
            let mut object = Map::new();
            for (key, value) in mapping {
                let key = match to_json(key) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                object.insert(key, to_json(value));
            }
            Value::Object(object)
        }
        Yaml::Tagged(tagged) => to_json(tagged.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_anchors_merge_keys_and_documents() {
        let text = "a: &x {k: 1}\nb: *x\nc:\n  <<: *x\n  m: 2\n---\n---\nkind: Thing\n";
        let docs = documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value["b"]["k"], 1);
        assert_eq!(docs[0].value["c"]["k"], 1);
        assert_eq!(docs[0].value["c"]["m"], 2);
        assert_eq!(docs[1].value["kind"], "Thing");
    }

    /// Deep flow nesting is refused at once, not after a scan quadratic in the depth; a
    /// configuration's brackets (a policy in a block scalar included) pass.
    #[test]
    fn deep_nesting_is_refused_quickly() {
        let deep = format!("{}1{}", "{\"a\":".repeat(40_000), "}".repeat(40_000));
        let started = std::time::Instant::now();
        let err = documents(&deep).err().unwrap();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{err}"
        );
        assert!(err.contains("nested too deeply"), "{err}");
        let err = documents(&format!("a: {}", "[".repeat(5_000)))
            .err()
            .unwrap();
        assert!(err.contains("nested too deeply"), "{err}");
        let policy = format!(
            "v: |\n  {}\n",
            "{\"rules\": [{\"from\": [\"10.0.0.0/8\"]}]}".repeat(500)
        );
        assert!(documents(&policy).is_ok());
    }

    /// An endless or huge file is refused after MAX_BYTES, not read until memory runs out.
    #[test]
    fn endless_input_is_refused() {
        let err = read_text("/dev/zero").err().unwrap();
        assert!(err.contains("larger than 256 MiB"), "{err}");
        let err = read_text("/").err().unwrap();
        assert!(err.starts_with("cannot read /: "), "{err}");
    }

    #[test]
    fn json_and_broken_input() {
        assert_eq!(documents("{\"a\": [1]}").unwrap()[0].value["a"][0], 1);
        assert!(documents("a: [1\n").is_err());
    }
}
