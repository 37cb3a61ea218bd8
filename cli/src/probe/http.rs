//! Reading a reply: the HTTP response head (with `httparse`), the body (chunked framing
//! removed), and what the body tells about the request the upstream got.

use memchr::memmem;
use serde_json::Value;

use super::classify::{Outcome, Planted, Reply};

/// Header slots tried first; a response with more is parsed again with more slots.
const HEADER_SLOTS: usize = 64;
/// No response the probe cares about has more headers than this.
const MAX_HEADER_SLOTS: usize = 4096;

/// The HTTP head (status, headers) and where the body starts.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) status: u16,
    /// Names lowercased, values trimmed (bytes that are not UTF-8 replaced).
    headers: Vec<(String, String)>,
    pub(super) body_start: usize,
}

impl Head {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    /// The body that arrived after the head, chunked framing removed.
    pub(super) fn body(&self, raw: &[u8]) -> Vec<u8> {
        let raw_body = raw.get(self.body_start..).unwrap_or_default();
        if self.chunked() {
            dechunk(raw_body).0
        } else {
            raw_body.to_vec()
        }
    }
}

/// The head of the response in `raw`, if `raw` holds a whole head of an HTTP/1.x response.
/// Header lines that are not valid are skipped (the probe reads what it can).
pub(super) fn parse_head(raw: &[u8]) -> Option<Head> {
    let mut slots = HEADER_SLOTS;
    loop {
        let mut headers = vec![httparse::EMPTY_HEADER; slots];
        let mut response = httparse::Response::new(&mut headers);
        let parsed = httparse::ParserConfig::default()
            .allow_spaces_after_header_name_in_responses(true)
            .allow_obsolete_multiline_headers_in_responses(true)
            .ignore_invalid_headers_in_responses(true)
            .parse_response(&mut response, raw);
        match parsed {
            Ok(httparse::Status::Complete(body_start)) => {
                return Some(Head {
                    status: response.code?,
                    headers: response
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).trim().to_string(),
                            )
                        })
                        .collect(),
                    body_start,
                })
            }
            Ok(httparse::Status::Partial) => return None,
            Err(httparse::Error::TooManyHeaders) if slots < MAX_HEADER_SLOTS => slots *= 4,
            Err(_) => return None,
        }
    }
}

/// Removes chunked framing (best effort: a truncated body gives what arrived). Also says
/// whether the last chunk and the trailer section arrived.
fn dechunk(mut body: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Ok(httparse::Status::Complete((start, size))) = httparse::parse_chunk_size(body) else {
            return (out, false);
        };
        let rest = body.get(start..).unwrap_or_default();
        if size == 0 {
            // Trailer fields, if any, then an empty line.
            let done = rest.starts_with(b"\r\n") || memmem::find(rest, b"\r\n\r\n").is_some();
            return (out, done);
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        match rest.get(..size) {
            Some(chunk) => out.extend_from_slice(chunk),
            None => {
                out.extend_from_slice(rest);
                return (out, false);
            }
        }
        body = rest
            .get(size..)
            .and_then(|after| after.strip_prefix(b"\r\n"))
            .unwrap_or_default();
    }
}

/// Whether `raw` already holds a whole response (no need to wait for the close).
pub(super) fn complete(raw: &[u8]) -> bool {
    let Some(head) = parse_head(raw) else {
        return false;
    };
    let body = raw.get(head.body_start..).unwrap_or_default();
    if head.chunked() {
        return dechunk(body).1;
    }
    match head
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(length) => body.len() >= length,
        None => false,
    }
}

/// How the connection ended, as far as the reply goes.
pub(super) struct Ended {
    /// No close before the deadline.
    pub(super) timed_out: bool,
    /// Reset by the peer (while sending or reading).
    pub(super) reset: bool,
}

/// What one connection gave, from the bytes that came back: the outcome, and for each planted
/// value that reached the upstream, the header names it was echoed in.
pub(super) fn interpret(
    raw: &[u8],
    ended: &Ended,
    token: &str,
    planted: &[(Planted, String)],
) -> (Outcome, Vec<(Planted, Vec<String>)>) {
    let Some(head) = parse_head(raw) else {
        let outcome = if raw.is_empty() && ended.timed_out {
            Outcome::Timeout
        } else if raw.is_empty() && ended.reset {
            Outcome::Reset
        } else if raw.is_empty() {
            Outcome::Closed
        } else if ended.timed_out && raw.starts_with(b"HTTP/") {
            Outcome::Timeout
        } else {
            Outcome::NotHttp
        };
        return (outcome, Vec::new());
    };
    let body = head.body(raw);
    let echoes = memmem::find(&body, token.as_bytes()).is_some();
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    let mut seen = Vec::new();
    let mut seen_in = Vec::new();
    for (what, value) in planted {
        if echoes && memmem::find(&body, value.as_bytes()).is_some() {
            seen.push(*what);
            let names = json
                .as_ref()
                .map(|j| headers_containing(j, value))
                .unwrap_or_default();
            seen_in.push((*what, names));
        }
    }
    let reply = Reply {
        status: head.status,
        trustip_reject: head.header("x-trustip-reject").map(str::to_string),
        echoes,
        seen,
    };
    (Outcome::Response(reply), seen_in)
}

/// Where in a JSON echo (httpbin's `{"headers": {name: value | [values]}}` or a list of
/// `[name, value]` pairs) a value occurs: the header names, lowercased.
fn headers_containing(body: &Value, needle: &str) -> Vec<String> {
    let contains = |v: &Value| match v {
        Value::String(s) => s.contains(needle),
        Value::Array(items) => items
            .iter()
            .any(|i| i.as_str().is_some_and(|s| s.contains(needle))),
        _ => false,
    };
    let mut names = Vec::new();
    match body.get("headers") {
        Some(Value::Object(map)) => {
            for (name, value) in map {
                if contains(value) {
                    names.push(name.to_ascii_lowercase());
                }
            }
        }
        Some(Value::Array(pairs)) => {
            for pair in pairs {
                if let (Some(name), Some(value)) = (pair.get(0), pair.get(1)) {
                    if let (Some(name), true) = (name.as_str(), contains(value)) {
                        names.push(name.to_ascii_lowercase());
                    }
                }
            }
        }
        _ => {}
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nX-Trustip-Reject: tlv\r\n\r\nhello";
        let head = parse_head(raw).unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.header("x-trustip-reject"), Some("tlv"));
        assert_eq!(head.body(raw), b"hello");
        assert!(complete(raw));
        assert!(!complete(&raw[..raw.len() - 1]));
        assert!(parse_head(&raw[..20]).is_none(), "a partial head");
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_none());
        assert!(!complete(
            b"HTTP/1.1 200 OK\r\n\r\nno length, read to the close"
        ));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        assert!(complete(chunked));
        assert!(!complete(&chunked[..chunked.len() - 2]));
        let head = parse_head(chunked).unwrap();
        assert_eq!(head.body(chunked), b"hello world");
        // Cut inside a chunk: what arrived.
        assert_eq!(head.body(&chunked[..chunked.len() - 10]), b"hello wo");
        // Trailers after the last chunk.
        let trailers =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\nx-t: 1\r\n\r\n";
        assert!(complete(trailers));
        assert!(!complete(&trailers[..trailers.len() - 2]));
    }

    #[test]
    fn lenient_heads() {
        // A header line without a colon is skipped, as is a space before the colon allowed.
        let raw =
            b"HTTP/1.1 403 Forbidden\r\nnonsense\r\nX-Trustip-Reject : untrusted_proxy\r\n\r\n";
        let head = parse_head(raw).unwrap();
        assert_eq!(
            (head.status, head.header("x-trustip-reject")),
            (403, Some("untrusted_proxy"))
        );
        // Many headers.
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..300 {
            many.extend_from_slice(format!("x-h{i}: {i}\r\n").as_bytes());
        }
        many.extend_from_slice(b"x-last: yes\r\n\r\n");
        assert_eq!(parse_head(&many).unwrap().header("x-last"), Some("yes"));
    }

    fn ended(timed_out: bool, reset: bool) -> Ended {
        Ended { timed_out, reset }
    }

    #[test]
    fn outcomes() {
        let none: &[(Planted, String)] = &[];
        let outcome = |raw: &[u8], e: Ended| interpret(raw, &e, "tok", none).0;
        assert_eq!(outcome(b"", ended(true, false)), Outcome::Timeout);
        assert_eq!(outcome(b"", ended(false, true)), Outcome::Reset);
        assert_eq!(outcome(b"", ended(false, false)), Outcome::Closed);
        assert_eq!(
            outcome(b"HTTP/1.1 200 OK\r\nx: ", ended(true, false)),
            Outcome::Timeout
        );
        assert_eq!(
            outcome(b"HTTP/1.1 200 OK\r\nx: ", ended(false, false)),
            Outcome::NotHttp
        );
        assert_eq!(outcome(b"garbage", ended(false, true)), Outcome::NotHttp);

        let planted = [
            (Planted::ProxySource, "203.0.113.77".to_string()),
            (Planted::XRealIp, "192.0.2.78".to_string()),
        ];
        let body = br#"{"headers": {"X-Trustip-Probe": ["tok"], "X-Envoy-External-Address": ["203.0.113.77"]}}"#;
        let mut raw =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
        raw.extend_from_slice(body);
        let (outcome, seen_in) = interpret(&raw, &ended(false, false), "tok", &planted);
        assert_eq!(
            outcome,
            Outcome::Response(Reply {
                status: 200,
                trustip_reject: None,
                echoes: true,
                seen: vec![Planted::ProxySource],
            })
        );
        assert_eq!(
            seen_in,
            vec![(
                Planted::ProxySource,
                vec!["x-envoy-external-address".to_string()]
            )]
        );
        // Without the token the body is not an echo: planted values in it mean nothing.
        let (outcome, seen_in) = interpret(&raw, &ended(false, false), "other", &planted);
        assert!(
            matches!(outcome, Outcome::Response(Reply { echoes: false, ref seen, .. }) if seen.is_empty())
        );
        assert!(seen_in.is_empty());
    }

    #[test]
    fn echoed_header_names() {
        let httpbin: Value = serde_json::from_str(
            r#"{"headers": {"X-Forwarded-For": ["192.0.2.77, 10.0.0.1"], "X-Real-Ip": ["192.0.2.78"], "Host": ["h"]}}"#,
        )
        .unwrap();
        assert_eq!(
            headers_containing(&httpbin, "192.0.2.77"),
            vec!["x-forwarded-for"]
        );
        let pairs: Value =
            serde_json::from_str(r#"{"headers": [["x-envoy-external-address", "203.0.113.77"], ["x-forwarded-for", "203.0.113.77"]]}"#)
                .unwrap();
        assert_eq!(
            headers_containing(&pairs, "203.0.113.77"),
            vec!["x-envoy-external-address", "x-forwarded-for"]
        );
    }
}
