//! The plugin configuration: its JSON description (read by [`crate::core::json`], unknown
//! fields refused, documented defaults) and the one validating step that compiles it into an
//! immutable [`Policy`].

use std::borrow::Cow;
use std::fmt;

use crate::core::cidr::{Cidr, CidrTable};
use crate::core::json::{self, Json};
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

/// Characters that must not reach a log line as they are: control characters (C0, DEL, C1: a
/// newline would start a forged, timestamp-less line), the Unicode line and paragraph
/// separators, and the bidirectional controls that make text display in another order.
fn unprintable(ch: char) -> bool {
    ch.is_control()
        || matches!(ch, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_char(out: &mut String, ch: char) {
    match ch {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\0' => out.push_str("\\0"),
        c => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
    }
}

/// `text` with quotes, backslashes and [unprintable] characters escaped (Rust's notation).
fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if unprintable(c) => escape_char(&mut out, c),
            c => out.push(c),
        }
    }
    out
}

/// `text` in double quotes, with quotes, backslashes and control characters escaped, so that an
/// error stays on one line. (Lighter in the wasm module than `{:?}`, whose Unicode tables are
/// large.)
pub fn quoted(text: &str) -> String {
    format!("\"{}\"", escaped(text))
}

/// The last guard of [ConfigError]'s one line: [unprintable] characters escaped, nothing else
/// (text escaped where it was put together stays as it is).
fn one_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unprintable) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for ch in text.chars() {
        if unprintable(ch) {
            escape_char(&mut out, ch);
        } else {
            out.push(ch);
        }
    }
    Cow::Owned(out)
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = one_line(&self.path);
        let message = one_line(&self.message);
        match &self.value {
            Some(value) => write!(f, "{path}: {}: {message}", quoted(value)),
            None => write!(f, "{path}: {message}"),
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
    upstream_proxy_protocol: bool,
    client_header: Option<RawClientHeader>,
}

#[derive(Debug)]
struct RawClientHeader {
    name: String,
    trusted: Vec<String>,
    fail_closed: bool,
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
    /// In [`TlvKey`] order.
    tlvs: Vec<(TlvKey, Vec<String>)>,
    health_check_paths: Option<Vec<String>>,
}

#[derive(Debug)]
struct RawXff {
    trusted: Vec<String>,
    max_entries: u64,
    trusted_hops: u64,
    source: XffSource,
}

impl Default for RawXff {
    fn default() -> Self {
        RawXff {
            trusted: Vec::new(),
            max_entries: DEFAULT_MAX_ENTRIES as u64,
            trusted_hops: 0,
            source: XffSource::XForwardedFor,
        }
    }
}

/// Which request header the walk reads the hops from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XffSource {
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded`, its `for=` parameters.
    Forwarded,
}

impl XffSource {
    /// The request header the walk reads.
    pub fn header(self) -> &'static str {
        match self {
            XffSource::XForwardedFor => "x-forwarded-for",
            XffSource::Forwarded => "forwarded",
        }
    }
}

/// A CDN's client header, validated: when R is in `trusted`, R becomes the header's address.
#[derive(Debug, Clone)]
pub struct ClientHeader {
    /// Lowercase.
    pub name: String,
    pub trusted: CidrTable,
    pub trusted_count: usize,
    /// A missing or malformed value rejects (`client_header`) instead of keeping R.
    pub fail_closed: bool,
}

#[derive(Debug)]
struct RawHeaders {
    x_forwarded_for: XffMode,
    forwarded: ForwardedMode,
    set: Vec<String>,
    strip: Vec<String>,
    /// In [`TlvKey`] order.
    tlv: Vec<(TlvKey, String)>,
}

impl Default for RawHeaders {
    fn default() -> Self {
        RawHeaders {
            x_forwarded_for: XffMode::Overwrite,
            forwarded: ForwardedMode::None,
            set: DEFAULT_SET.iter().map(|s| s.to_string()).collect(),
            strip: DEFAULT_STRIP.iter().map(|s| s.to_string()).collect(),
            tlv: Vec::new(),
        }
    }
}

/// `headers.set`: every name is a header write on every request; 16 covers every framework's
/// client-address header several times over.
pub const MAX_SET: usize = 16;
/// `headers.strip`: every name is looked up (and removed) on every request from an untrusted
/// client; 64 is five times the default list.
pub const MAX_STRIP: usize = 64;
/// CIDR blocks in `rules[].from` (all rules together) and in `xff.trusted`: compiled in
/// O(n log n), looked up in O(log n); the cap bounds memory (a few MB), not time.
pub const MAX_CIDRS: usize = 100_000;
/// Values of one TLV allowlist (`rules[].tlvs.<key>`): compared one by one on each connection.
pub const MAX_TLV_VALUES: usize = 1_024;
/// `rules[].health_check_paths`: compared one by one on each health-check request; a load
/// balancer checks one or two paths.
pub const MAX_HEALTH_CHECK_PATHS: usize = 16;
/// Length of one health-check path.
pub const MAX_HEALTH_CHECK_PATH_LEN: usize = 256;

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
    /// Request paths (without query) the load balancer's health checks use: a connection from
    /// these peers without client information is admitted for these paths only (`require`
    /// rules only; empty: none).
    pub health_check_paths: Vec<String>,
}

impl Rule {
    /// `path` (the request's `:path`, query included) is one of the health-check paths.
    pub fn is_health_check_path(&self, path: &[u8]) -> bool {
        let end = path.iter().position(|b| *b == b'?').unwrap_or(path.len());
        let path = path.get(..end).unwrap_or_default();
        self.health_check_paths
            .iter()
            .any(|allowed| allowed.as_bytes() == path)
    }
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
        if !self.health_check_paths.is_empty() {
            write!(
                f,
                " health checks on [{}]",
                self.health_check_paths.join(", ")
            )?;
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
    /// Envoy sends PROXY upstream: a PROXY header the rules do not use would reach the
    /// upstream (Envoy forwards what its listener filter parsed), so it is refused.
    pub upstream_proxy_protocol: bool,
    /// `xff.trusted_hops`: 0 walks over trusted addresses; N > 0 takes the N-th element from
    /// the right (C being hop 1), as Envoy's `xff_num_trusted_hops`.
    pub xff_hops: usize,
    /// The header the walk reads.
    pub xff_source: XffSource,
    pub client_header: Option<ClientHeader>,
}

impl Policy {
    /// Parses and validates the plugin configuration. Empty bytes mean `{}` (all defaults).
    pub fn from_json(bytes: &[u8]) -> Result<Policy, ConfigError> {
        let raw = if bytes.trim_ascii().is_empty() {
            RawConfig::default()
        } else {
            let value = json::parse(bytes)?;
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
// Reading the JSON: a walk over the [`Json`] tree of [`json::parse`] (which refuses repeated
// keys) that names the path of every error. (A serde derive per struct, with a path-tracking
// wrapper, made the wasm module 100 KB larger; serde_json's `Value` 20 KB.)

/// `path.key`, or `path["key"]` (escaped) for a key that is not a plain word: the path stays
/// unambiguous and on one line whatever the key holds.
pub(crate) fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (plain, path.is_empty()) {
        (true, true) => key.to_string(),
        (true, false) => format!("{path}.{key}"),
        (false, _) => format!("{path}[{}]", quoted(key)),
    }
}

fn where_(path: &str) -> &str {
    if path.is_empty() {
        "."
    } else {
        path
    }
}

fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// The first of `keys` that is not `known`, in byte order (the order serde_json's maps kept,
/// so that of several unknown keys the same one is named).
fn first_unknown<'a>(
    keys: impl Iterator<Item = &'a str>,
    known: impl Fn(&str) -> bool,
) -> Option<&'a str> {
    keys.filter(|key| !known(key)).min()
}

fn invalid_type(path: &str, value: &Json, expected: &str) -> ConfigError {
    ConfigError::new(
        where_(path),
        None,
        format!("invalid type: {}, expected {expected}", kind(value)),
    )
}

/// An object whose keys must all be among `fields`.
fn object<'a>(path: &str, value: &'a Json, fields: &[&str]) -> Result<&'a Json, ConfigError> {
    let Json::Object(_) = value else {
        return Err(invalid_type(path, value, "an object"));
    };
    if let Some(key) = first_unknown(value.keys(), |key| fields.contains(&key)) {
        return Err(ConfigError::new(
            join(path, key),
            None,
            format!(
                "unknown field `{}`, expected {}",
                escaped(key),
                one_of(fields)
            ),
        ));
    }
    Ok(value)
}

fn one_of(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
    format!("one of {}", quoted.join(", "))
}

fn string<'a>(path: &str, value: &'a Json) -> Result<&'a str, ConfigError> {
    value
        .as_str()
        .ok_or_else(|| invalid_type(path, value, "a string"))
}

fn strings(path: &str, value: &Json) -> Result<Vec<String>, ConfigError> {
    let Json::Array(items) = value else {
        return Err(invalid_type(path, value, "an array of strings"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| string(&format!("{path}[{i}]"), item).map(str::to_string))
        .collect()
}

fn word<T: Copy>(path: &str, value: &Json, words: &[(&str, T)]) -> Result<T, ConfigError> {
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
                format!(
                    "unknown variant `{}`, expected {}",
                    escaped(text),
                    one_of(&names)
                ),
            )
        })
}

fn unsigned(path: &str, value: &Json) -> Result<u64, ConfigError> {
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
            format!(
                "unknown variant `{}`, expected {}",
                escaped(key),
                one_of(&names)
            ),
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
const XFF_SOURCES: &[(&str, XffSource)] = &[
    ("x-forwarded-for", XffSource::XForwardedFor),
    ("forwarded", XffSource::Forwarded),
];
const FORWARDED_MODES: &[(&str, ForwardedMode)] = &[
    ("none", ForwardedMode::None),
    ("overwrite", ForwardedMode::Overwrite),
    ("append", ForwardedMode::Append),
];

/// The top-level fields of a policy (`trustip lint` tells a policy file by them).
pub const POLICY_FIELDS: &[&str] = &[
    "mode",
    "direct_peer",
    "rules",
    "xff",
    "headers",
    "reject_status",
    "tlv_encoding",
    "upstream_proxy_protocol",
    "client_header",
];

fn read_config(value: &Json) -> Result<RawConfig, ConfigError> {
    let map = object("", value, POLICY_FIELDS).map_err(|err| match value {
        Json::Object(_) => err,
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
        let Json::Array(rules) = v else {
            return Err(invalid_type("rules", v, "an array of rules"));
        };
        for (r, rule) in rules.iter().enumerate() {
            raw.rules.push(read_rule(&format!("rules[{r}]"), rule)?);
        }
    }
    if let Some(v) = map.get("xff") {
        let xff = object(
            "xff",
            v,
            &["trusted", "max_entries", "trusted_hops", "source"],
        )?;
        if let Some(v) = xff.get("trusted") {
            raw.xff.trusted = strings("xff.trusted", v)?;
        }
        if let Some(v) = xff.get("max_entries") {
            raw.xff.max_entries = unsigned("xff.max_entries", v)?;
        }
        if let Some(v) = xff.get("trusted_hops") {
            raw.xff.trusted_hops = unsigned("xff.trusted_hops", v)?;
        }
        if let Some(v) = xff.get("source") {
            raw.xff.source = word("xff.source", v, XFF_SOURCES)?;
        }
    }
    if let Some(v) = map.get("client_header") {
        let header = object("client_header", v, &["name", "trusted", "fail_closed"])?;
        let missing = |field: &str| {
            ConfigError::new("client_header", None, format!("missing field `{field}`"))
        };
        raw.client_header = Some(RawClientHeader {
            name: string(
                "client_header.name",
                header.get("name").ok_or_else(|| missing("name"))?,
            )?
            .to_string(),
            trusted: strings(
                "client_header.trusted",
                header.get("trusted").ok_or_else(|| missing("trusted"))?,
            )?,
            fail_closed: match header.get("fail_closed") {
                None => false,
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| invalid_type("client_header.fail_closed", v, "a boolean"))?,
            },
        });
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
            let Json::Object(_) = v else {
                return Err(invalid_type("headers.tlv", v, "an object"));
            };
            if let Some(key) = first_unknown(v.keys(), |key| TlvKey::from_name(key).is_some()) {
                tlv_key(&join("headers.tlv", key), key)?;
            }
            for key in TlvKey::ALL {
                if let Some(name) = v.get(key.name()) {
                    let path = join("headers.tlv", key.name());
                    raw.headers
                        .tlv
                        .push((key, string(&path, name)?.to_string()));
                }
            }
        }
    }
    if let Some(v) = map.get("tlv_encoding") {
        raw.tlv_encoding = word("tlv_encoding", v, TLV_ENCODINGS)?;
    }
    if let Some(v) = map.get("reject_status") {
        raw.reject_status = Some(unsigned("reject_status", v)?);
    }
    if let Some(v) = map.get("upstream_proxy_protocol") {
        raw.upstream_proxy_protocol = v
            .as_bool()
            .ok_or_else(|| invalid_type("upstream_proxy_protocol", v, "a boolean"))?;
    }
    Ok(raw)
}

fn read_rule(path: &str, value: &Json) -> Result<RawRule, ConfigError> {
    let rule = object(
        path,
        value,
        &["from", "proxy_protocol", "tlvs", "health_check_paths"],
    )?;
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
    let mut tlvs = Vec::new();
    if let Some(v) = rule.get("tlvs") {
        let tlvs_path = join(path, "tlvs");
        let Json::Object(_) = v else {
            return Err(invalid_type(&tlvs_path, v, "an object"));
        };
        if let Some(key) = first_unknown(v.keys(), |key| TlvKey::from_name(key).is_some()) {
            tlv_key(&join(&tlvs_path, key), key)?;
        }
        for key in TlvKey::ALL {
            if let Some(values) = v.get(key.name()) {
                tlvs.push((key, strings(&join(&tlvs_path, key.name()), values)?));
            }
        }
    }
    let health_check_paths = match rule.get("health_check_paths") {
        Some(v) => Some(strings(&join(path, "health_check_paths"), v)?),
        None => None,
    };
    Ok(RawRule {
        from,
        proxy_protocol,
        tlvs,
        health_check_paths,
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

    let cidrs: usize = raw.rules.iter().map(|rule| rule.from.len()).sum();
    at_most("rules[].from (all rules)", cidrs, MAX_CIDRS)?;
    at_most("xff.trusted", raw.xff.trusted.len(), MAX_CIDRS)?;
    let mut rules = Vec::with_capacity(raw.rules.len());
    let mut labelled = Vec::with_capacity(cidrs);
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
            at_most(
                &format!("rules[{r}].tlvs.{}", key.name()),
                values.len(),
                MAX_TLV_VALUES,
            )?;
            if values.is_empty() {
                return Err(ConfigError::new(
                    format!("rules[{r}].tlvs.{}", key.name()),
                    None,
                    "empty allowlist would reject every connection; remove the key or list values",
                ));
            }
            tlvs.push((key, values));
        }
        let health_check_paths = match rule.health_check_paths {
            None => Vec::new(),
            Some(paths) => health_check_paths(r, rule.proxy_protocol, paths)?,
        };
        rules.push(Rule {
            from,
            proxy_protocol: rule.proxy_protocol,
            tlvs,
            health_check_paths,
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

    let xff_hops = usize::try_from(raw.xff.trusted_hops).unwrap_or(usize::MAX);
    if xff_hops > 0 && raw.xff.trusted.is_empty() {
        return Err(ConfigError::new(
            "xff.trusted_hops",
            None,
            "needs xff.trusted: the hops are counted only from a connection client trusted by address (list 0.0.0.0/0 and ::/0 to trust every peer, as Envoy's xff_num_trusted_hops does)",
        ));
    }
    if raw.xff.trusted_hops > raw.xff.max_entries {
        return Err(ConfigError::new(
            "xff.trusted_hops",
            Some(&raw.xff.trusted_hops.to_string()),
            "more than xff.max_entries, the elements the walk examines",
        ));
    }
    let client_header = match raw.client_header {
        None => None,
        Some(header) => {
            let name = header_name("client_header.name", &header.name, true)?;
            let written_by = if headers.set.contains(&name) {
                Some("headers.set")
            } else if headers.tlv.iter().any(|(_, n)| *n == name) {
                Some("headers.tlv")
            } else {
                None
            };
            if let Some(field) = written_by {
                return Err(ConfigError::new(
                    "client_header.name",
                    Some(&header.name),
                    format!("also written by {field}; trustip sets the client header to R itself when it gave R, and removes it otherwise"),
                ));
            }
            if header.trusted.is_empty() {
                return Err(ConfigError::new(
                    "client_header.trusted",
                    None,
                    "must list the CIDR blocks of the proxies that send the header",
                ));
            }
            at_most("client_header.trusted", header.trusted.len(), MAX_CIDRS)?;
            let mut blocks = Vec::with_capacity(header.trusted.len());
            for (i, text) in header.trusted.iter().enumerate() {
                blocks.push((parse_cidr(&format!("client_header.trusted[{i}]"), text)?, 0));
            }
            Some(ClientHeader {
                name,
                trusted_count: blocks.len(),
                trusted: CidrTable::new(blocks),
                fail_closed: header.fail_closed,
            })
        }
    };

    if raw.upstream_proxy_protocol && raw.mode == Mode::Shadow {
        return Err(ConfigError::new(
            "upstream_proxy_protocol",
            None,
            "cannot be combined with mode \"shadow\": Envoy would forward upstream the PROXY claims shadow mode lets through unverified; roll out with enforce",
        ));
    }

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
        upstream_proxy_protocol: raw.upstream_proxy_protocol,
        xff_hops,
        xff_source: raw.xff.source,
        client_header,
    })
}

/// Validates rule `r`'s `health_check_paths`: only on `require` rules, at least one and at
/// most [`MAX_HEALTH_CHECK_PATHS`] absolute paths without query or fragment, repeats counted
/// once.
fn health_check_paths(
    r: usize,
    words: ProxyProtocol,
    paths: Vec<String>,
) -> Result<Vec<String>, ConfigError> {
    let path = format!("rules[{r}].health_check_paths");
    if words != ProxyProtocol::Require {
        return Err(ConfigError::new(
            path,
            None,
            format!(
                "only on \"require\" rules (with {} a connection without PROXY information is not refused as missing_proxy, so there is nothing to admit)",
                quoted(words.name())
            ),
        ));
    }
    if paths.is_empty() {
        return Err(ConfigError::new(
            path,
            None,
            "empty list; remove the key or list the paths the load balancer checks",
        ));
    }
    at_most(&path, paths.len(), MAX_HEALTH_CHECK_PATHS)?;
    for (i, text) in paths.iter().enumerate() {
        let why = if !text.starts_with('/') {
            Some("must start with /")
        } else if text.len() > MAX_HEALTH_CHECK_PATH_LEN {
            Some("longer than 256 bytes")
        } else if text.bytes().any(|b| b == b'?' || b == b'#') {
            Some("the path only: a query (?) or fragment (#) is not compared")
        } else if !text.bytes().all(|b| b.is_ascii_graphic()) {
            Some("must be visible ASCII, without spaces (percent-encode other bytes)")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ConfigError::new(format!("{path}[{i}]"), Some(text), why));
        }
    }
    Ok(first_occurrences(paths))
}

/// Refuses a list longer than `limit`, naming its path, its length and the limit.
fn at_most(path: &str, count: usize, limit: usize) -> Result<(), ConfigError> {
    if count > limit {
        return Err(ConfigError::new(
            path,
            None,
            format!("{count} entries, more than the limit of {limit}"),
        ));
    }
    Ok(())
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

/// Headers that frame the message or belong to one hop (RFC 9110 7.6.1 and 7.8, RFC 9112 6,
/// `proxy-connection` and `keep-alive` by usage): set from R they would make the upstream see
/// a POST with both content-length and transfer-encoding, or re-route it (host); stripped from
/// an untrusted client they would break its requests. None carries a client address, so
/// trustip neither writes nor strips them.
const FRAMING: &[&str] = &[
    "transfer-encoding",
    "content-length",
    "host",
    "connection",
    "te",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "trailer",
];

fn header_name(path: &str, name: &str, reserve: bool) -> Result<String, ConfigError> {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with(':') {
        return Err(ConfigError::new(
            path,
            Some(name),
            "a pseudo-header (part of the request line); trustip neither writes nor strips it",
        ));
    }
    if FRAMING.contains(&lower.as_str()) {
        return Err(ConfigError::new(
            path,
            Some(name),
            "a framing or hop-by-hop header (no client address); trustip neither writes nor strips it",
        ));
    }
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

/// `names` without repeats, in the order of their first occurrence. Quadratic, on lists
/// already bounded by [`MAX_SET`] and [`MAX_STRIP`] (a tree set costs the wasm module more
/// than these few comparisons cost at configuration time).
fn first_occurrences(names: Vec<String>) -> Vec<String> {
    let mut kept: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        if !kept.contains(&name) {
            kept.push(name);
        }
    }
    kept
}

fn compile_headers(raw: RawHeaders) -> Result<HeaderPolicy, ConfigError> {
    at_most("headers.set", raw.set.len(), MAX_SET)?;
    at_most("headers.strip", raw.strip.len(), MAX_STRIP)?;
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
    Ok(HeaderPolicy {
        x_forwarded_for: raw.x_forwarded_for,
        forwarded: raw.forwarded,
        set: first_occurrences(set),
        strip: first_occurrences(strip),
        tlv,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

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
    fn health_check_paths_are_limited() {
        let paths: Vec<String> = (0..17).map(|i| format!("\"/h{i}\"")).collect();
        let json = format!(
            r#"{{"rules":[{{"from":["10.0.0.0/8"],"proxy_protocol":"require","health_check_paths":[{}]}}]}}"#,
            paths.join(",")
        );
        let err = Policy::from_json(json.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("rules[0].health_check_paths: 17 entries, more than the limit of 16"),
            "{err}"
        );
        let long = format!("/{}", "a".repeat(256));
        let json = format!(
            r#"{{"rules":[{{"from":["10.0.0.0/8"],"proxy_protocol":"require","health_check_paths":["{long}"]}}]}}"#
        );
        let err = Policy::from_json(json.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("longer than 256 bytes"), "{err}");
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
            (
                r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"use","health_check_paths":["/healthz"]}]}"#,
                r#"rules[0].health_check_paths: only on "require" rules"#,
            ),
            (
                r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"require","health_check_paths":[]}]}"#,
                "rules[0].health_check_paths: empty list",
            ),
            (
                r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"require","health_check_paths":["healthz"]}]}"#,
                r#"rules[0].health_check_paths[0]: "healthz": must start with /"#,
            ),
            (
                r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"require","health_check_paths":["/a","/ready?full=1"]}]}"#,
                r#"rules[0].health_check_paths[1]: "/ready?full=1": the path only"#,
            ),
            (
                r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"require","health_check_paths":["/a b"]}]}"#,
                r#"rules[0].health_check_paths[0]: "/a b": must be visible ASCII"#,
            ),
            (
                r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"require","health_check_paths":"/healthz"}]}"#,
                "rules[0].health_check_paths: invalid type: a string, expected an array of strings",
            ),
            (
                r#"{"mode":"shadow","upstream_proxy_protocol":true}"#,
                r#"upstream_proxy_protocol: cannot be combined with mode "shadow""#,
            ),
            (
                r#"{"upstream_proxy_protocol":"yes"}"#,
                "upstream_proxy_protocol: invalid type: a string, expected a boolean",
            ),
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

#[cfg(test)]
mod issue7_tests {
    //! Bugs found by fuzzing and a misconfiguration audit (issue 7).
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn refusal(json: &str) -> String {
        match Policy::from_json(json.as_bytes()) {
            Ok(_) => panic!("accepted: {json}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn duplicate_keys_are_refused_at_every_level_naming_the_path() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"rules":[{"from":["0.0.0.0/0"],"proxy_protocol":"reject","proxy_protocol":"use"}]}"#,
                "rules[0].proxy_protocol: duplicate key",
            ),
            (
                r#"{"mode":"shadow","mode":"enforce"}"#,
                "mode: duplicate key",
            ),
            (
                r#"{"mode":"enforce","mode":"enforce"}"#,
                "mode: duplicate key",
            ),
            (
                r#"{"mode":"shadow","\u006dode":"enforce"}"#,
                "mode: duplicate key",
            ),
            (
                r#"{"xff":{"trusted":["10.0.0.0/8"],"max_entries":3,"trusted":[]}}"#,
                "xff.trusted: duplicate key",
            ),
            (
                r#"{"direct_peer":{"if_missing":"reject","if_missing":"trust_source"}}"#,
                "direct_peer.if_missing: duplicate key",
            ),
            (
                r#"{"headers":{"tlv":{"authority":"x-a","authority":"x-b"}}}"#,
                "headers.tlv.authority: duplicate key",
            ),
            (
                r#"{"headers":{"strip":[],"set":["x-real-ip"],"strip":["x-a"]}}"#,
                "headers.strip: duplicate key",
            ),
            (
                r#"{"rules":[{"from":["1.2.3.4"],"proxy_protocol":"use"},
                    {"from":["10.0.0.0/8"],"proxy_protocol":"use","tlvs":{"authority":["a"],"authority":["b"]}}]}"#,
                "rules[1].tlvs.authority: duplicate key",
            ),
            (
                r#"{"rules":[{"from":["10.0.0.0/8"],"from":["0.0.0.0/0"],"proxy_protocol":"use"}]}"#,
                "rules[0].from: duplicate key",
            ),
            // Inside a value of the wrong type too: the duplicate is named first.
            (
                r#"{"rules":[{"from":[{"a":1,"a":2}],"proxy_protocol":"use"}]}"#,
                "rules[0].from[0].a: duplicate key",
            ),
            (r#"{"a b":1,"a b":2}"#, r#"["a b"]: duplicate key"#),
            (
                r#"{"headers":{"x\u000a":1,"x\n":2}}"#,
                r#"headers["x\n"]: duplicate key"#,
            ),
        ];
        for (json, want) in cases {
            let err = refusal(json);
            assert_eq!(&err, want, "{json}");
        }
    }

    #[test]
    fn the_same_key_in_different_objects_is_not_a_duplicate() {
        let json = br#"{"rules":[
            {"from":["10.0.0.0/8"],"proxy_protocol":"use","tlvs":{"authority":["a"]}},
            {"from":["192.168.0.0/16"],"proxy_protocol":"require","tlvs":{"authority":["b"]}}],
            "headers":{"tlv":{"authority":"x-authority"},"set":["x-real-ip","x-real-ip"]},
            "xff":{"trusted":["10.0.0.0/8","10.0.0.0/8"]}}"#;
        let policy = Policy::from_json(json).unwrap();
        assert_eq!(policy.rules.len(), 2);
        assert_eq!(policy.rules[1].proxy_protocol, ProxyProtocol::Require);
    }

    #[test]
    fn keys_are_compared_decoded_as_serde_json_decodes_them() {
        let mut texts: Vec<String> = (0u32..0x800)
            .chain((0x800..0x11_0000).step_by(97))
            .filter_map(char::from_u32)
            .map(|ch| format!("a{ch}\"\\/b"))
            .collect();
        texts.push("\u{1f600}\u{10ffff}\u{10000}".to_string());
        for text in &texts {
            // serde_json's own escaping, and every character as \uXXXX (surrogate pairs beyond
            // the BMP).
            let plain = serde_json::to_string(text).unwrap();
            let all: String = text
                .encode_utf16()
                .map(|unit| format!("\\u{unit:04X}"))
                .collect();
            for literal in [plain.clone(), format!("\"{all}\"")] {
                assert_eq!(
                    json::parse(literal.as_bytes()),
                    Ok(Json::String(text.clone())),
                    "{literal}"
                );
                let json = format!(r#"{{"headers":{{"tlv":{{{literal}:"x-a",{plain}:"x-b"}}}}}}"#);
                assert!(refusal(&json).ends_with(": duplicate key"), "{json}");
            }
        }
        // A lone surrogate is a syntax error, whatever the key.
        assert!(refusal(r#"{"\ud800":1}"#).starts_with(".: "));
        assert!(refusal(r#"{"\udc00x":1}"#).starts_with(".: "));
    }

    /// Characters that would break a log line, or make it display otherwise than it reads.
    fn breaks_a_line(ch: char) -> bool {
        ch.is_control()
            || matches!(ch, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }

    #[test]
    fn refusals_are_one_line_whatever_keys_and_values_hold() {
        // Every code point below U+0100 and in U+2000..U+2070 (C0, DEL, C1, the separators and
        // bidi controls), every 1021st beyond, alone and between other text, in every key and
        // value position.
        let specials = ['\u{feff}', '\u{fffd}', '\u{1f600}', '\u{10ffff}', '"', '\\'];
        let texts: Vec<String> = (0u32..0x100)
            .chain(0x2000..0x2070)
            .chain((0x100..0x11_0000).step_by(1021))
            .filter_map(char::from_u32)
            .chain(specials)
            .flat_map(|ch| [ch.to_string(), format!("k{ch}\r\n{ch}x")])
            .collect();
        let key_positions = [
            "{K:1}",
            r#"{"headers":{K:1}}"#,
            r#"{"direct_peer":{K:1}}"#,
            r#"{"xff":{K:1}}"#,
            r#"{"headers":{"tlv":{K:"x-a"}}}"#,
            r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"use","tlvs":{K:["a"]}}]}"#,
            r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"use",K:1}]}"#,
            r#"{K:1,K:2}"#,
            r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"use"},{K:{},K:{}}]}"#,
        ];
        let value_positions = [
            r#"{"mode":V}"#,
            r#"{"tlv_encoding":V}"#,
            r#"{"direct_peer":{"filter_state":V}}"#,
            r#"{"direct_peer":{"if_missing":V}}"#,
            r#"{"rules":[{"from":[V],"proxy_protocol":"use"}]}"#,
            r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":V}]}"#,
            r#"{"xff":{"trusted":["10.0.0.0/8",V]}}"#,
            r#"{"headers":{"x_forwarded_for":V}}"#,
            r#"{"headers":{"set":[V]}}"#,
            r#"{"headers":{"strip":["x-a",V]}}"#,
            r#"{"headers":{"tlv":{"authority":V}}}"#,
        ];
        let mut refused = 0;
        for text in &texts {
            let literal = serde_json::to_string(text).unwrap();
            let cases = key_positions
                .iter()
                .map(|t| t.replace('K', &literal))
                .chain(value_positions.iter().map(|t| t.replace('V', &literal)));
            for json in cases {
                let Err(err) = Policy::from_json(json.as_bytes()) else {
                    continue;
                };
                refused += 1;
                let line = err.to_string();
                assert!(!line.chars().any(breaks_a_line), "{json}\n  gives {line:?}");
            }
        }
        // Nearly every case is a refusal (a few texts are valid values, e.g. " " as a key is
        // not, but "use" would be): the assertion above did run.
        assert!(refused > texts.len() * 18, "{refused} refusals");
    }

    #[test]
    fn keys_and_values_are_escaped_where_they_are_named() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"a\nb":1}"#,
                r#"["a\nb"]: unknown field `a\nb`, expected one of"#,
            ),
            (
                r#"{"mode":"x\r\n[2026-01-01] forged"}"#,
                r#"mode: unknown variant `x\r\n[2026-01-01] forged`, expected"#,
            ),
            (
                r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"use","tlvs":{"x\u2028y\u0085":[]}}]}"#,
                r#"rules[0].tlvs["x\u{2028}y\u{85}"]: unknown variant `x\u{2028}y\u{85}`"#,
            ),
            (
                r#"{"headers":{"tlv":{"a.b\"c":"x"}}}"#,
                r#"headers.tlv["a.b\"c"]: unknown variant `a.b\"c`"#,
            ),
            (
                r#"{"headers":{"set":["x\u001b[31m"]}}"#,
                r#"headers.set[0]: "x\u{1b}[31m": not a valid HTTP header name"#,
            ),
        ];
        for (json, want) in cases {
            let err = refusal(json);
            assert!(err.contains(want), "{json}\n  got:  {err}\n  want: {want}");
        }
    }

    #[test]
    fn framing_hop_by_hop_and_pseudo_headers_are_refused() {
        // The issue's list, written independently of FRAMING, in mixed case.
        let framing = "transfer-encoding Content-Length HOST connection te upgrade keep-alive \
                       proxy-connection trailer"
            .split_whitespace();
        let pseudo = [":authority", ":path", ":method", ":scheme", ":status", ":"];
        for name in framing.chain(pseudo) {
            let literal = serde_json::to_string(name).unwrap();
            for (json, path) in [
                (
                    format!(r#"{{"headers":{{"set":["x-real-ip",{literal}]}}}}"#),
                    "headers.set[1]",
                ),
                (
                    format!(r#"{{"headers":{{"strip":[{literal}]}}}}"#),
                    "headers.strip[0]",
                ),
                (
                    format!(r#"{{"headers":{{"tlv":{{"unique_id":{literal}}}}}}}"#),
                    "headers.tlv.unique_id",
                ),
            ] {
                let err = refusal(&json);
                let what = if name.starts_with(':') {
                    "a pseudo-header"
                } else {
                    "a framing or hop-by-hop header"
                };
                let want = format!("{path}: {literal}: {what} (");
                assert!(err.starts_with(&want), "{json}: {err}");
            }
        }
        // Names that merely contain them are fine.
        let policy = Policy::from_json(
            br#"{"headers":{"set":["x-host","te-x"],"strip":["x-upgrade"],"tlv":{"authority":"x-content-length"}}}"#,
        )
        .unwrap();
        assert_eq!(policy.headers.set, ["x-host", "te-x"]);
    }

    fn names(prefix: &str, count: usize) -> String {
        let names: Vec<String> = (0..count).map(|i| format!("\"{prefix}{i}\"")).collect();
        format!("[{}]", names.join(","))
    }

    fn cidrs(count: usize) -> String {
        let blocks: Vec<String> = (0..count)
            .map(|i| format!("\"{}.{}.{}.0/24\"", 1 + i / 65536, (i / 256) % 256, i % 256))
            .collect();
        format!("[{}]", blocks.join(","))
    }

    #[test]
    fn header_lists_are_bounded() {
        assert_eq!((MAX_SET, MAX_STRIP), (16, 64));
        let set = |n| format!(r#"{{"headers":{{"set":{}}}}}"#, names("x-s", n));
        let strip = |n| format!(r#"{{"headers":{{"strip":{}}}}}"#, names("x-s", n));
        assert_eq!(
            Policy::from_json(set(16).as_bytes())
                .unwrap()
                .headers
                .set
                .len(),
            16
        );
        assert_eq!(
            refusal(&set(17)),
            "headers.set: 17 entries, more than the limit of 16"
        );
        assert_eq!(
            refusal(&set(100_000)),
            "headers.set: 100000 entries, more than the limit of 16"
        );
        assert_eq!(
            Policy::from_json(strip(64).as_bytes())
                .unwrap()
                .headers
                .strip
                .len(),
            64
        );
        assert_eq!(
            refusal(&strip(65)),
            "headers.strip: 65 entries, more than the limit of 64"
        );
    }

    #[test]
    fn large_cidr_lists_are_accepted_up_to_their_limit() {
        assert_eq!(MAX_CIDRS, 100_000);
        let policy = Policy::from_json(
            format!(
                r#"{{"xff":{{"trusted":{}}},"rules":[{{"from":{},"proxy_protocol":"use"}}]}}"#,
                cidrs(MAX_CIDRS),
                cidrs(MAX_CIDRS)
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(policy.xff_trusted_count, MAX_CIDRS);
        assert!(policy.xff_trusts("2.134.159.7".parse().unwrap())); // block 99,999
        assert_eq!(policy.rule_for("2.134.159.7".parse().unwrap()), Some(0));
        assert_eq!(
            refusal(&format!(
                r#"{{"xff":{{"trusted":{}}}}}"#,
                cidrs(MAX_CIDRS + 1)
            )),
            "xff.trusted: 100001 entries, more than the limit of 100000"
        );
        // Across rules: 60,000 + 40,001 blocks.
        let json = format!(
            r#"{{"rules":[{{"from":{},"proxy_protocol":"use"}},{{"from":{},"proxy_protocol":"use"}}]}}"#,
            cidrs(60_000),
            cidrs(40_001)
        );
        assert_eq!(
            refusal(&json),
            "rules[].from (all rules): 100001 entries, more than the limit of 100000"
        );
    }

    #[test]
    fn tlv_allowlists_are_bounded() {
        let json = |n| {
            format!(
                r#"{{"rules":[{{"from":["10.0.0.0/8"],"proxy_protocol":"use","tlvs":{{"aws_vpce_id":{}}}}}]}}"#,
                names("vpce-", n)
            )
        };
        assert!(Policy::from_json(json(MAX_TLV_VALUES).as_bytes()).is_ok());
        assert_eq!(
            refusal(&json(MAX_TLV_VALUES + 1)),
            "rules[0].tlvs.aws_vpce_id: 1025 entries, more than the limit of 1024"
        );
    }

    #[test]
    fn repeated_header_names_are_removed_keeping_the_first() {
        let policy = Policy::from_json(
            br#"{"headers":{"set":["x-a","x-b","X-A","x-c","x-b"],"strip":["x-1","x-2","x-1","X-2","x-3","x-1"]}}"#,
        )
        .unwrap();
        assert_eq!(policy.headers.set, ["x-a", "x-b", "x-c"]);
        assert_eq!(policy.headers.strip, ["x-1", "x-2", "x-3"]);
    }
}
