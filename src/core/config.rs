//! The plugin configuration: its JSON description (serde, unknown fields refused, documented
//! defaults) and the one validating step that compiles it into an immutable [`Policy`].

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::core::cidr::{Cidr, CidrTable};
use crate::core::tlv::{TlvEncoding, TlvKey};

/// A configuration error: the JSON path of the field, the offending value when there is one,
/// and what is wrong. Displayed as `rules[0].from[0]: "10.0.0.0/33": prefix length 33 > 32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub value: Option<String>,
    pub message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, value: Option<&str>, message: impl fmt::Display) -> Self {
        ConfigError {
            path: path.into(),
            value: value.map(str::to_string),
            message: message.to_string(),
        }
    }
}

/// `text` in double quotes, with quotes, backslashes and control characters escaped, so that an
/// error stays on one line. (Lighter in the wasm module than `{:?}`, whose Unicode tables are
/// large.)
pub fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}: {}: {}", self.path, quoted(value), self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------
// The JSON, as written by users.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Rejections are enforced.
    #[default]
    Enforce,
    /// Rejections are counted and logged; the request proceeds with C = D.
    Shadow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IfMissing {
    /// No direct peer in filter state: reject (fail closed).
    #[default]
    Reject,
    /// No direct peer: take the PROXY-derived source as the direct peer (only for listeners
    /// nobody but the load balancer can reach).
    TrustSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    Require,
    Use,
    Ignore,
    Reject,
    Deny,
}

impl ProxyProtocol {
    pub fn name(self) -> &'static str {
        match self {
            ProxyProtocol::Require => "require",
            ProxyProtocol::Use => "use",
            ProxyProtocol::Ignore => "ignore",
            ProxyProtocol::Reject => "reject",
            ProxyProtocol::Deny => "deny",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XffMode {
    #[default]
    Overwrite,
    Append,
    Preserve,
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedMode {
    #[default]
    None,
    Overwrite,
    Append,
}

#[derive(Debug, Default)]
struct RawConfig {
    mode: Mode,
    direct_peer: RawDirectPeer,
    rules: Vec<RawRule>,
    xff: RawXff,
    headers: RawHeaders,
    reject_status: Option<u64>,
    tlv_encoding: TlvEncoding,
}

#[derive(Debug)]
struct RawDirectPeer {
    filter_state: String,
    if_missing: IfMissing,
}

impl Default for RawDirectPeer {
    fn default() -> Self {
        RawDirectPeer {
            filter_state: DEFAULT_DIRECT_PEER_KEY.to_string(),
            if_missing: IfMissing::Reject,
        }
    }
}

#[derive(Debug)]
struct RawRule {
    from: Vec<String>,
    proxy_protocol: ProxyProtocol,
    tlvs: BTreeMap<TlvKey, Vec<String>>,
}

#[derive(Debug)]
struct RawXff {
    trusted: Vec<String>,
    max_entries: u64,
}

impl Default for RawXff {
    fn default() -> Self {
        RawXff {
            trusted: Vec::new(),
            max_entries: DEFAULT_MAX_ENTRIES as u64,
        }
    }
}

#[derive(Debug)]
struct RawHeaders {
    x_forwarded_for: XffMode,
    forwarded: ForwardedMode,
    set: Vec<String>,
    strip: Vec<String>,
    tlv: BTreeMap<TlvKey, String>,
}

impl Default for RawHeaders {
    fn default() -> Self {
        RawHeaders {
            x_forwarded_for: XffMode::Overwrite,
            forwarded: ForwardedMode::None,
            set: DEFAULT_SET.iter().map(|s| s.to_string()).collect(),
            strip: DEFAULT_STRIP.iter().map(|s| s.to_string()).collect(),
            tlv: BTreeMap::new(),
        }
    }
}

pub const DEFAULT_MAX_ENTRIES: usize = 32;
/// Upper bound on `xff.max_entries`: a walk never examines more elements than this.
pub const MAX_MAX_ENTRIES: u64 = 1024;
pub const DEFAULT_REJECT_STATUS: u16 = 403;
pub use crate::core::names::{DEFAULT_DIRECT_PEER_KEY, DEFAULT_SET, DEFAULT_STRIP};

// ---------------------------------------------------------------------------------------
// The compiled policy.

/// One rule, validated.
#[derive(Debug, Clone)]
pub struct Rule {
    pub from: Vec<Cidr>,
    pub proxy_protocol: ProxyProtocol,
    /// Allowed decoded values per TLV key.
    pub tlvs: Vec<(TlvKey, Vec<String>)>,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from: Vec<String> = self.from.iter().map(Cidr::to_string).collect();
        write!(
            f,
            "from [{}] proxy_protocol {}",
            from.join(", "),
            self.proxy_protocol.name()
        )?;
        for (key, values) in &self.tlvs {
            write!(f, " {} in [{}]", key.name(), values.join(", "))?;
        }
        Ok(())
    }
}

/// Header rewriting, validated; names are lowercase.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    pub x_forwarded_for: XffMode,
    pub forwarded: ForwardedMode,
    pub set: Vec<String>,
    pub strip: Vec<String>,
    pub tlv: Vec<(TlvKey, String)>,
}

/// The immutable, compiled policy shared by every context of a VM.
#[derive(Debug, Clone)]
pub struct Policy {
    pub mode: Mode,
    pub direct_peer_key: String,
    pub if_missing: IfMissing,
    pub rules: Vec<Rule>,
    rule_table: CidrTable,
    xff_trusted: CidrTable,
    pub xff_trusted_count: usize,
    pub xff_max_entries: usize,
    pub headers: HeaderPolicy,
    pub reject_status: u16,
    /// How Envoy stored TLV values (must match the proxy_protocol rules' value_string_encoding).
    pub tlv_encoding: TlvEncoding,
    /// TLV keys the policy reads at all (rules' allowlists and header mappings).
    pub tlv_keys_used: Vec<TlvKey>,
}

impl Policy {
    /// Parses and validates the plugin configuration. Empty bytes mean `{}` (all defaults).
    pub fn from_json(bytes: &[u8]) -> Result<Policy, ConfigError> {
        let raw = if bytes.trim_ascii().is_empty() {
            RawConfig::default()
        } else {
            let value: Value =
                serde_json::from_slice(bytes).map_err(|err| ConfigError::new(".", None, err))?;
            read_config(&value)?
        };
        compile(raw)
    }

    /// Index of the first rule whose `from` contains `ip`; `None` is the implicit last rule.
    pub fn rule_for(&self, ip: std::net::IpAddr) -> Option<usize> {
        self.rule_table
            .lookup(ip)
            .and_then(|i| usize::try_from(i).ok())
    }

    pub fn xff_trusts(&self, ip: std::net::IpAddr) -> bool {
        self.xff_trusted.contains(ip)
    }

    pub fn xff_table(&self) -> &CidrTable {
        &self.xff_trusted
    }
}

// ---------------------------------------------------------------------------------------
// Reading the JSON: a walk over `serde_json::Value` that names the path of every error. (A
// serde derive per struct, with a path-tracking wrapper, made the wasm module 100 KB larger.)

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn where_(path: &str) -> &str {
    if path.is_empty() {
        "."
    } else {
        path
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn invalid_type(path: &str, value: &Value, expected: &str) -> ConfigError {
    ConfigError::new(
        where_(path),
        None,
        format!("invalid type: {}, expected {expected}", kind(value)),
    )
}

/// An object whose keys must all be among `fields`.
fn object<'a>(
    path: &str,
    value: &'a Value,
    fields: &[&str],
) -> Result<&'a Map<String, Value>, ConfigError> {
    let Value::Object(map) = value else {
        return Err(invalid_type(path, value, "an object"));
    };
    if let Some(key) = map.keys().find(|key| !fields.contains(&key.as_str())) {
        return Err(ConfigError::new(
            join(path, key),
            None,
            format!("unknown field `{key}`, expected {}", one_of(fields)),
        ));
    }
    Ok(map)
}

fn one_of(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
    format!("one of {}", quoted.join(", "))
}

fn string<'a>(path: &str, value: &'a Value) -> Result<&'a str, ConfigError> {
    value
        .as_str()
        .ok_or_else(|| invalid_type(path, value, "a string"))
}

fn strings(path: &str, value: &Value) -> Result<Vec<String>, ConfigError> {
    let Value::Array(items) = value else {
        return Err(invalid_type(path, value, "an array of strings"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| string(&format!("{path}[{i}]"), item).map(str::to_string))
        .collect()
}

fn word<T: Copy>(path: &str, value: &Value, words: &[(&str, T)]) -> Result<T, ConfigError> {
    let text = string(path, value)?;
    words
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, word)| *word)
        .ok_or_else(|| {
            let names: Vec<&str> = words.iter().map(|(name, _)| *name).collect();
            ConfigError::new(
                path,
                None,
                format!("unknown variant `{text}`, expected {}", one_of(&names)),
            )
        })
}

fn unsigned(path: &str, value: &Value) -> Result<u64, ConfigError> {
    value
        .as_u64()
        .ok_or_else(|| invalid_type(path, value, "a non-negative integer"))
}

fn tlv_key(path: &str, key: &str) -> Result<TlvKey, ConfigError> {
    TlvKey::from_name(key).ok_or_else(|| {
        let names: Vec<&str> = TlvKey::ALL.iter().map(|k| k.name()).collect();
        ConfigError::new(
            path,
            None,
            format!("unknown variant `{key}`, expected {}", one_of(&names)),
        )
    })
}

const TLV_ENCODINGS: &[(&str, TlvEncoding)] =
    &[("raw", TlvEncoding::Raw), ("base64", TlvEncoding::Base64)];
const MODES: &[(&str, Mode)] = &[("enforce", Mode::Enforce), ("shadow", Mode::Shadow)];
const IF_MISSING: &[(&str, IfMissing)] = &[
    ("reject", IfMissing::Reject),
    ("trust_source", IfMissing::TrustSource),
];
const WORDS: &[(&str, ProxyProtocol)] = &[
    ("require", ProxyProtocol::Require),
    ("use", ProxyProtocol::Use),
    ("ignore", ProxyProtocol::Ignore),
    ("reject", ProxyProtocol::Reject),
    ("deny", ProxyProtocol::Deny),
];
const XFF_MODES: &[(&str, XffMode)] = &[
    ("overwrite", XffMode::Overwrite),
    ("append", XffMode::Append),
    ("preserve", XffMode::Preserve),
    ("remove", XffMode::Remove),
];
const FORWARDED_MODES: &[(&str, ForwardedMode)] = &[
    ("none", ForwardedMode::None),
    ("overwrite", ForwardedMode::Overwrite),
    ("append", ForwardedMode::Append),
];

fn read_config(value: &Value) -> Result<RawConfig, ConfigError> {
    let map = object(
        "",
        value,
        &[
            "mode",
            "direct_peer",
            "rules",
            "xff",
            "headers",
            "reject_status",
            "tlv_encoding",
        ],
    )
    .map_err(|err| match value {
        Value::Object(_) => err,
        _ => ConfigError::new(".", None, "the configuration must be a JSON object"),
    })?;
    let mut raw = RawConfig::default();
    if let Some(v) = map.get("mode") {
        raw.mode = word("mode", v, MODES)?;
    }
    if let Some(v) = map.get("direct_peer") {
        let peer = object("direct_peer", v, &["filter_state", "if_missing"])?;
        if let Some(v) = peer.get("filter_state") {
            raw.direct_peer.filter_state = string("direct_peer.filter_state", v)?.to_string();
        }
        if let Some(v) = peer.get("if_missing") {
            raw.direct_peer.if_missing = word("direct_peer.if_missing", v, IF_MISSING)?;
        }
    }
    if let Some(v) = map.get("rules") {
        let Value::Array(rules) = v else {
            return Err(invalid_type("rules", v, "an array of rules"));
        };
        for (r, rule) in rules.iter().enumerate() {
            raw.rules.push(read_rule(&format!("rules[{r}]"), rule)?);
        }
    }
    if let Some(v) = map.get("xff") {
        let xff = object("xff", v, &["trusted", "max_entries"])?;
        if let Some(v) = xff.get("trusted") {
            raw.xff.trusted = strings("xff.trusted", v)?;
        }
        if let Some(v) = xff.get("max_entries") {
            raw.xff.max_entries = unsigned("xff.max_entries", v)?;
        }
    }
    if let Some(v) = map.get("headers") {
        let headers = object(
            "headers",
            v,
            &["x_forwarded_for", "forwarded", "set", "strip", "tlv"],
        )?;
        if let Some(v) = headers.get("x_forwarded_for") {
            raw.headers.x_forwarded_for = word("headers.x_forwarded_for", v, XFF_MODES)?;
        }
        if let Some(v) = headers.get("forwarded") {
            raw.headers.forwarded = word("headers.forwarded", v, FORWARDED_MODES)?;
        }
        if let Some(v) = headers.get("set") {
            raw.headers.set = strings("headers.set", v)?;
        }
        if let Some(v) = headers.get("strip") {
            raw.headers.strip = strings("headers.strip", v)?;
        }
        if let Some(v) = headers.get("tlv") {
            let Value::Object(tlv) = v else {
                return Err(invalid_type("headers.tlv", v, "an object"));
            };
            for (key, name) in tlv {
                let path = format!("headers.tlv.{key}");
                let key = tlv_key(&path, key)?;
                raw.headers
                    .tlv
                    .insert(key, string(&path, name)?.to_string());
            }
        }
    }
    if let Some(v) = map.get("tlv_encoding") {
        raw.tlv_encoding = word("tlv_encoding", v, TLV_ENCODINGS)?;
    }
    if let Some(v) = map.get("reject_status") {
        raw.reject_status = Some(unsigned("reject_status", v)?);
    }
    Ok(raw)
}

fn read_rule(path: &str, value: &Value) -> Result<RawRule, ConfigError> {
    let rule = object(path, value, &["from", "proxy_protocol", "tlvs"])?;
    let missing = |field: &str| ConfigError::new(path, None, format!("missing field `{field}`"));
    let from = strings(
        &join(path, "from"),
        rule.get("from").ok_or_else(|| missing("from"))?,
    )?;
    let proxy_protocol = word(
        &join(path, "proxy_protocol"),
        rule.get("proxy_protocol")
            .ok_or_else(|| missing("proxy_protocol"))?,
        WORDS,
    )?;
    let mut tlvs = BTreeMap::new();
    if let Some(v) = rule.get("tlvs") {
        let tlvs_path = join(path, "tlvs");
        let Value::Object(map) = v else {
            return Err(invalid_type(&tlvs_path, v, "an object"));
        };
        for (key, values) in map {
            let key_path = format!("{tlvs_path}.{key}");
            let key = tlv_key(&key_path, key)?;
            tlvs.insert(key, strings(&key_path, values)?);
        }
    }
    Ok(RawRule {
        from,
        proxy_protocol,
        tlvs,
    })
}

fn compile(raw: RawConfig) -> Result<Policy, ConfigError> {
    if raw.direct_peer.filter_state.trim().is_empty() {
        return Err(ConfigError::new(
            "direct_peer.filter_state",
            Some(&raw.direct_peer.filter_state),
            "must name a filter-state object",
        ));
    }

    let mut rules = Vec::with_capacity(raw.rules.len());
    let mut labelled = Vec::new();
    for (r, rule) in raw.rules.into_iter().enumerate() {
        if rule.from.is_empty() {
            return Err(ConfigError::new(
                format!("rules[{r}].from"),
                None,
                "must list at least one address or CIDR block",
            ));
        }
        let mut from = Vec::with_capacity(rule.from.len());
        for (i, text) in rule.from.iter().enumerate() {
            let cidr = parse_cidr(&format!("rules[{r}].from[{i}]"), text)?;
            from.push(cidr);
            labelled.push((cidr, u32::try_from(r).unwrap_or(u32::MAX - 1)));
        }
        let uses_proxy = matches!(
            rule.proxy_protocol,
            ProxyProtocol::Require | ProxyProtocol::Use
        );
        if !rule.tlvs.is_empty() && !uses_proxy {
            return Err(ConfigError::new(
                format!("rules[{r}].tlvs"),
                None,
                format!(
                    "TLVs are only checked when the rule uses PROXY information (require or use), not with {}",
                    quoted(rule.proxy_protocol.name())
                ),
            ));
        }
        let mut tlvs = Vec::new();
        for (key, values) in rule.tlvs {
            if values.is_empty() {
                return Err(ConfigError::new(
                    format!("rules[{r}].tlvs.{}", key.name()),
                    None,
                    "empty allowlist would reject every connection; remove the key or list values",
                ));
            }
            tlvs.push((key, values));
        }
        rules.push(Rule {
            from,
            proxy_protocol: rule.proxy_protocol,
            tlvs,
        });
    }

    let mut trusted = Vec::with_capacity(raw.xff.trusted.len());
    for (i, text) in raw.xff.trusted.iter().enumerate() {
        trusted.push((parse_cidr(&format!("xff.trusted[{i}]"), text)?, 0));
    }
    if raw.xff.max_entries == 0 || raw.xff.max_entries > MAX_MAX_ENTRIES {
        return Err(ConfigError::new(
            "xff.max_entries",
            Some(&raw.xff.max_entries.to_string()),
            format!("must be between 1 and {MAX_MAX_ENTRIES}"),
        ));
    }

    let headers = compile_headers(raw.headers)?;

    let reject_status = match raw.reject_status {
        None => DEFAULT_REJECT_STATUS,
        Some(status) => match u16::try_from(status) {
            Ok(status) if (400..=599).contains(&status) => status,
            _ => {
                return Err(ConfigError::new(
                    "reject_status",
                    Some(&status.to_string()),
                    "must be an HTTP error status between 400 and 599",
                ))
            }
        },
    };

    let mut tlv_keys_used: Vec<TlvKey> = rules
        .iter()
        .flat_map(|rule| rule.tlvs.iter().map(|(key, _)| *key))
        .chain(headers.tlv.iter().map(|(key, _)| *key))
        .collect();
    tlv_keys_used.sort_unstable();
    tlv_keys_used.dedup();

    Ok(Policy {
        mode: raw.mode,
        direct_peer_key: raw.direct_peer.filter_state,
        if_missing: raw.direct_peer.if_missing,
        rules,
        rule_table: CidrTable::new(labelled),
        xff_trusted_count: trusted.len(),
        xff_trusted: CidrTable::new(trusted),
        xff_max_entries: usize::try_from(raw.xff.max_entries).unwrap_or(DEFAULT_MAX_ENTRIES),
        headers,
        reject_status,
        tlv_encoding: raw.tlv_encoding,
        tlv_keys_used,
    })
}

fn parse_cidr(path: &str, text: &str) -> Result<Cidr, ConfigError> {
    text.trim()
        .parse()
        .map_err(|err| ConfigError::new(path, Some(text), err))
}

/// Headers trustip writes through its own modes; naming them elsewhere would fight those modes.
const RESERVED: &[(&str, &str)] = &[
    ("x-forwarded-for", "headers.x_forwarded_for"),
    ("forwarded", "headers.forwarded"),
];

fn header_name(path: &str, name: &str, reserve: bool) -> Result<String, ConfigError> {
    let lower = name.to_ascii_lowercase();
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if lower.is_empty() || !lower.bytes().all(token) {
        return Err(ConfigError::new(
            path,
            Some(name),
            "not a valid HTTP header name",
        ));
    }
    if reserve {
        if let Some((_, field)) = RESERVED.iter().find(|(reserved, _)| *reserved == lower) {
            return Err(ConfigError::new(
                path,
                Some(name),
                format!("this header is written by {field}"),
            ));
        }
    }
    Ok(lower)
}

fn compile_headers(raw: RawHeaders) -> Result<HeaderPolicy, ConfigError> {
    let mut set = Vec::with_capacity(raw.set.len());
    for (i, name) in raw.set.iter().enumerate() {
        set.push(header_name(&format!("headers.set[{i}]"), name, true)?);
    }
    let mut strip = Vec::with_capacity(raw.strip.len());
    for (i, name) in raw.strip.iter().enumerate() {
        strip.push(header_name(&format!("headers.strip[{i}]"), name, false)?);
    }
    let mut tlv = Vec::with_capacity(raw.tlv.len());
    for (key, name) in &raw.tlv {
        tlv.push((
            *key,
            header_name(&format!("headers.tlv.{}", key.name()), name, true)?,
        ));
    }
    set.dedup();
    strip.dedup();
    Ok(HeaderPolicy {
        x_forwarded_for: raw.x_forwarded_for,
        forwarded: raw.forwarded,
        set,
        strip,
        tlv,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_compiles() {
        let json = br#"{
          "mode": "enforce",
          "direct_peer": {"filter_state": "trustip.direct_peer", "if_missing": "reject"},
          "rules": [
            {"from": ["10.0.0.0/8"], "proxy_protocol": "require", "tlvs": {"aws_vpce_id": ["vpce-0a1b2c3d4e5f60718"]}},
            {"from": ["192.168.10.5/32"], "proxy_protocol": "use"}
          ],
          "xff": {"trusted": ["173.245.48.0/20", "2400:cb00::/32"], "max_entries": 32},
          "headers": {
            "x_forwarded_for": "overwrite",
            "forwarded": "none",
            "set": ["x-envoy-external-address", "x-real-ip"],
            "strip": ["true-client-ip", "cf-connecting-ip"],
            "tlv": {"aws_vpce_id": "x-amzn-vpce-id"}
          },
          "reject_status": 403
        }"#;
        let policy = Policy::from_json(json).unwrap();
        assert_eq!(policy.rules.len(), 2);
        assert_eq!(policy.rule_for("10.2.3.4".parse().unwrap()), Some(0));
        assert_eq!(policy.rule_for("192.168.10.5".parse().unwrap()), Some(1));
        assert_eq!(policy.rule_for("192.168.10.6".parse().unwrap()), None);
        assert!(policy.xff_trusts("2400:cb00::1".parse().unwrap()));
        assert_eq!(policy.tlv_keys_used, vec![TlvKey::AwsVpceId]);
        assert_eq!(
            policy.rules[0].to_string(),
            "from [10.0.0.0/8] proxy_protocol require aws_vpce_id in [vpce-0a1b2c3d4e5f60718]"
        );
    }

    #[test]
    fn quoted_agrees_with_debug_on_ascii_and_stays_on_one_line() {
        for text in [
            "",
            "10.0.0.0/33",
            "a\"b",
            "back\\slash",
            "tab\tnew\nline",
            "nul\u{0}",
            "é",
        ] {
            let ours = quoted(text);
            assert!(!ours.contains('\n'));
            if text.is_ascii() {
                assert_eq!(ours, format!("{text:?}"));
            }
        }
    }

    #[test]
    fn defaults() {
        for input in [&b""[..], b"{}", b"  \n"] {
            let policy = Policy::from_json(input).unwrap();
            assert_eq!(policy.mode, Mode::Enforce);
            assert_eq!(policy.direct_peer_key, "trustip.direct_peer");
            assert_eq!(policy.if_missing, IfMissing::Reject);
            assert!(policy.rules.is_empty());
            assert_eq!(policy.xff_max_entries, 32);
            assert_eq!(policy.headers.x_forwarded_for, XffMode::Overwrite);
            assert_eq!(policy.headers.forwarded, ForwardedMode::None);
            assert_eq!(policy.headers.set, vec!["x-envoy-external-address"]);
            assert_eq!(policy.headers.strip, DEFAULT_STRIP);
            assert_eq!(policy.reject_status, 403);
        }
    }

    #[test]
    fn errors_name_the_field_and_value() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"rules":[{"from":["10.0.0.0/33"],"proxy_protocol":"use"}]}"#,
                r#"rules[0].from[0]: "10.0.0.0/33": prefix length 33 > 32"#,
            ),
            (
                r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"maybe"}]}"#,
                "rules[0].proxy_protocol: unknown variant `maybe`",
            ),
            (
                r#"{"rules":[{"from":["1.2.3.4"],"proxy_protocol":"use"},{"from":["nope"],"proxy_protocol":"use"}]}"#,
                r#"rules[1].from[0]: "nope": not an IP address or CIDR block"#,
            ),
            (r#"{"modes":"shadow"}"#, "modes: unknown field `modes`"),
            (r#"{"mode":"audit"}"#, "mode: unknown variant `audit`"),
            (
                r#"{"xff":{"trusted":["10.0.0.0/8","2001:db8::/200"]}}"#,
                r#"xff.trusted[1]: "2001:db8::/200": prefix length 200 > 128"#,
            ),
            (
                r#"{"xff":{"max_entries":0}}"#,
                r#"xff.max_entries: "0": must be"#,
            ),
            (
                r#"{"reject_status":200}"#,
                r#"reject_status: "200": must be"#,
            ),
            (
                r#"{"reject_status":70000}"#,
                r#"reject_status: "70000": must be"#,
            ),
            (
                r#"{"headers":{"set":["x real ip"]}}"#,
                r#"headers.set[0]: "x real ip": not a valid HTTP header name"#,
            ),
            (
                r#"{"headers":{"set":["X-Forwarded-For"]}}"#,
                r#"headers.set[0]: "X-Forwarded-For": this header is written by headers.x_forwarded_for"#,
            ),
            (
                r#"{"headers":{"tlv":{"aws_vpc":"x"}}}"#,
                "unknown variant `aws_vpc`",
            ),
            (
                r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"reject","tlvs":{"authority":["a"]}}]}"#,
                "rules[0].tlvs: TLVs are only checked",
            ),
            (
                r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"use","tlvs":{"authority":[]}}]}"#,
                "rules[0].tlvs.authority: empty allowlist",
            ),
            (
                r#"{"rules":[{"from":[],"proxy_protocol":"use"}]}"#,
                "rules[0].from: must list",
            ),
            (
                r#"{"rules":[{"proxy_protocol":"use"}]}"#,
                "rules[0]: missing field `from`",
            ),
            (r#"{"mode":"enforce"} x"#, "trailing characters"),
            (r#"[1,2]"#, ".: the configuration must be a JSON object"),
            (r#"{"rules":{}}"#, "rules: invalid type: an object, expected an array of rules"),
            (r#"{"rules":[{"from":"10.0.0.0/8","proxy_protocol":"use"}]}"#, "rules[0].from: invalid type: a string"),
            (r#"{"rules":[{"from":["10.0.0.0/8",7],"proxy_protocol":"use"}]}"#, "rules[0].from[1]: invalid type: a number"),
            (r#"{"rules":[{"from":["10.0.0.0/8"]}]}"#, "rules[0]: missing field `proxy_protocol`"),
            (r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"use","tls":{}}]}"#, "rules[0].tls: unknown field `tls`"),
            (r#"{"direct_peer":{"if_missing":"allow"}}"#, "direct_peer.if_missing: unknown variant `allow`"),
            (r#"{"xff":{"max_entries":-1}}"#, "xff.max_entries: invalid type"),
            (r#"{"tlv_encoding":"hex"}"#, "tlv_encoding: unknown variant `hex`, expected one of `raw`, `base64`"),
            (r#"{"headers":{"forwarded":"rfc7239"}}"#, "headers.forwarded: unknown variant `rfc7239`, expected one of `none`, `overwrite`, `append`"),
            ("{\"mode\":\"\u{0}\"}", ".: control character"),
        ];
        for (json, want) in cases {
            let err = Policy::from_json(json.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{json}\n  got:  {err}\n  want: {want}");
        }
    }
}
