//! The well-known PROXY v2 TLVs trustip understands, and how each raw value (as Envoy stores it
//! in filter state) is decoded into the text that policies compare and headers carry.

use std::fmt::Write as _;

/// A TLV the policy may name; the key is also the filter-state key Envoy's proxy_protocol
/// listener filter must store it under (`rules: [{tlv_type: 234, on_tlv_present: {key: aws_vpce_id}}]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlvKey {
    /// 0xEA, AWS VPC endpoint id: subtype byte 0x01, then the ASCII id.
    AwsVpceId,
    /// 0xEE, Azure Private Link id: subtype 0x01, then a u32 little-endian; compared as decimal.
    AzureLinkId,
    /// 0xE0, GCP Private Service Connect connection id: u64 big-endian; compared as decimal.
    GcpPscConnectionId,
    /// 0x02, PP2_TYPE_AUTHORITY: the host name the client asked for.
    Authority,
    /// 0x05, PP2_TYPE_UNIQUE_ID: opaque bytes, written as lowercase hex.
    UniqueId,
}

impl TlvKey {
    pub const ALL: [TlvKey; 5] = [
        TlvKey::AwsVpceId,
        TlvKey::AzureLinkId,
        TlvKey::GcpPscConnectionId,
        TlvKey::Authority,
        TlvKey::UniqueId,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TlvKey::AwsVpceId => "aws_vpce_id",
            TlvKey::AzureLinkId => "azure_link_id",
            TlvKey::GcpPscConnectionId => "gcp_psc_connection_id",
            TlvKey::Authority => "authority",
            TlvKey::UniqueId => "unique_id",
        }
    }

    /// The PROXY v2 TLV type byte.
    pub fn tlv_type(self) -> u8 {
        match self {
            TlvKey::AwsVpceId => 0xEA,
            TlvKey::AzureLinkId => 0xEE,
            TlvKey::GcpPscConnectionId => 0xE0,
            TlvKey::Authority => 0x02,
            TlvKey::UniqueId => 0x05,
        }
    }

    pub fn from_name(name: &str) -> Option<TlvKey> {
        TlvKey::ALL.into_iter().find(|key| key.name() == name)
    }

    /// Position in per-key arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How Envoy's proxy_protocol filter stored TLV values in filter state: its per-key
/// `value_string_encoding`. The default (`SANITIZED_UTF8`) replaces every byte that is not
/// valid UTF-8 with `!`, which destroys binary values (Azure and GCP ids); `BASE64` keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlvEncoding {
    /// Envoy's default: the value as it arrived, if it was valid UTF-8.
    #[default]
    Raw,
    /// `value_string_encoding: BASE64`.
    Base64,
}

/// Standard base64 with padding, as Envoy writes it. `None` for anything else.
pub fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    fn sextet(byte: u8) -> Option<u32> {
        match byte {
            b'A'..=b'Z' => Some(u32::from(byte - b'A')),
            b'a'..=b'z' => Some(u32::from(byte - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(byte - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let chunks = text.len() / 4;
    for (i, chunk) in text.chunks(4).enumerate() {
        let padding = chunk.iter().rev().take_while(|b| **b == b'=').count();
        if padding > 2 || (padding > 0 && i + 1 != chunks) {
            return None;
        }
        let mut bits: u32 = 0;
        for &byte in chunk.iter().take(4 - padding) {
            bits = bits << 6 | sextet(byte)?;
        }
        bits <<= 6 * padding as u32;
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(bytes.get(1..4 - padding).unwrap_or_default());
    }
    Some(out)
}

/// Why a present TLV value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlvError {
    #[error("{key}: expected subtype byte 0x01")]
    WrongSubtype { key: &'static str },
    #[error("{key}: expected {expected} bytes, got {got}")]
    WrongLength {
        key: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{key}: not printable ASCII")]
    NotText { key: &'static str },
    #[error("{key}: not base64 (the policy says tlv_encoding base64)")]
    NotBase64 { key: &'static str },
}

/// Longest text value accepted (an authority is a host name; ids are short).
const MAX_TEXT: usize = 255;

fn printable(key: TlvKey, bytes: &[u8]) -> Result<String, TlvError> {
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_TEXT
        && bytes.iter().all(|b| (0x21..=0x7e).contains(b));
    if !ok {
        return Err(TlvError::NotText { key: key.name() });
    }
    // Printable ASCII is valid UTF-8.
    String::from_utf8(bytes.to_vec()).map_err(|_| TlvError::NotText { key: key.name() })
}

fn after_subtype(key: TlvKey, raw: &[u8]) -> Result<&[u8], TlvError> {
    match raw.split_first() {
        Some((0x01, rest)) => Ok(rest),
        _ => Err(TlvError::WrongSubtype { key: key.name() }),
    }
}

fn exact<const N: usize>(key: TlvKey, bytes: &[u8]) -> Result<[u8; N], TlvError> {
    <[u8; N]>::try_from(bytes).map_err(|_| TlvError::WrongLength {
        key: key.name(),
        expected: N,
        got: bytes.len(),
    })
}

/// Decodes a TLV value as Envoy stored it, per `encoding`, into its canonical text.
pub fn decode_stored(
    key: TlvKey,
    stored: &[u8],
    encoding: TlvEncoding,
) -> Result<String, TlvError> {
    match encoding {
        TlvEncoding::Raw => decode(key, stored),
        TlvEncoding::Base64 => {
            let raw = decode_base64(stored).ok_or(TlvError::NotBase64 { key: key.name() })?;
            decode(key, &raw)
        }
    }
}

/// Decodes a raw TLV value into its canonical text.
pub fn decode(key: TlvKey, raw: &[u8]) -> Result<String, TlvError> {
    match key {
        TlvKey::AwsVpceId => printable(key, after_subtype(key, raw)?),
        TlvKey::AzureLinkId => {
            let bytes = exact::<4>(key, after_subtype(key, raw)?)?;
            Ok(u32::from_le_bytes(bytes).to_string())
        }
        TlvKey::GcpPscConnectionId => Ok(u64::from_be_bytes(exact::<8>(key, raw)?).to_string()),
        TlvKey::Authority => printable(key, raw),
        TlvKey::UniqueId => {
            if raw.is_empty() || raw.len() > 128 {
                return Err(TlvError::WrongLength {
                    key: key.name(),
                    expected: 128,
                    got: raw.len(),
                });
            }
            let mut hex = String::with_capacity(raw.len() * 2);
            for byte in raw {
                let _ = write!(hex, "{byte:02x}");
            }
            Ok(hex)
        }
    }
}

/// Why a text value cannot be turned into a TLV (command-line `--tlv KEY=VALUE`, tests).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {value:?} is not {expected}")]
pub struct TlvEncodeError {
    pub key: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// The inverse of [`decode`]: the raw TLV value Envoy would store for a decoded text.
pub fn encode(key: TlvKey, text: &str) -> Result<Vec<u8>, TlvEncodeError> {
    let err = |expected| TlvEncodeError {
        key: key.name(),
        value: text.to_string(),
        expected,
    };
    let raw = match key {
        TlvKey::AwsVpceId => [&[0x01u8][..], text.as_bytes()].concat(),
        TlvKey::AzureLinkId => {
            let id: u32 = text.parse().map_err(|_| err("a decimal u32"))?;
            [&[0x01u8][..], &id.to_le_bytes()].concat()
        }
        TlvKey::GcpPscConnectionId => {
            let id: u64 = text.parse().map_err(|_| err("a decimal u64"))?;
            id.to_be_bytes().to_vec()
        }
        TlvKey::Authority => text.as_bytes().to_vec(),
        TlvKey::UniqueId => {
            if !text.len().is_multiple_of(2) {
                return Err(err("hex bytes"));
            }
            let mut raw = Vec::with_capacity(text.len() / 2);
            for pair in text.as_bytes().chunks(2) {
                let pair = std::str::from_utf8(pair).map_err(|_| err("hex bytes"))?;
                raw.push(u8::from_str_radix(pair, 16).map_err(|_| err("hex bytes"))?);
            }
            raw
        }
    };
    // Only values the filter would accept round-trip.
    match decode(key, &raw) {
        Ok(decoded) if decoded == text.to_ascii_lowercase() || decoded == text => Ok(raw),
        _ => Err(err("a valid value for this TLV")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn decodes_well_known_values() {
        let cases: &[(TlvKey, &[u8], Result<&str, ()>)] = &[
            (
                TlvKey::AwsVpceId,
                b"\x01vpce-08d2bf15fb1a2b3c4",
                Ok("vpce-08d2bf15fb1a2b3c4"),
            ),
            (TlvKey::AwsVpceId, b"vpce-08d2bf15fb1a2b3c4", Err(())),
            (TlvKey::AwsVpceId, b"\x01vpce\r\nx", Err(())),
            (TlvKey::AwsVpceId, b"\x01", Err(())),
            (TlvKey::AwsVpceId, b"", Err(())),
            (TlvKey::AzureLinkId, b"\x01\x2a\x00\x00\x00", Ok("42")),
            (
                TlvKey::AzureLinkId,
                b"\x01\xff\xff\xff\xff",
                Ok("4294967295"),
            ),
            (TlvKey::AzureLinkId, b"\x01\x2a\x00\x00", Err(())),
            (TlvKey::AzureLinkId, b"\x02\x2a\x00\x00\x00", Err(())),
            (
                TlvKey::GcpPscConnectionId,
                b"\x00\x00\x00\x00\x00\x00\x01\x00",
                Ok("256"),
            ),
            (TlvKey::GcpPscConnectionId, b"\x01", Err(())),
            (TlvKey::Authority, b"api.example.com", Ok("api.example.com")),
            (TlvKey::Authority, b"bad host", Err(())),
            (TlvKey::UniqueId, b"\x00\xab\x10", Ok("00ab10")),
            (TlvKey::UniqueId, b"", Err(())),
        ];
        for (key, raw, want) in cases {
            let got = decode(*key, raw).map_err(|_| ());
            assert_eq!(got.as_deref(), want.as_deref(), "{key:?} {raw:?}");
        }
    }

    #[test]
    fn encode_inverts_decode() {
        let cases = [
            (TlvKey::AwsVpceId, "vpce-0a1b2c3d4e5f60718"),
            (TlvKey::AzureLinkId, "42"),
            (TlvKey::GcpPscConnectionId, "18446744073709551615"),
            (TlvKey::Authority, "api.example.com"),
            (TlvKey::UniqueId, "00ab10"),
        ];
        for (key, text) in cases {
            let raw = encode(key, text).unwrap();
            assert_eq!(decode(key, &raw).unwrap(), text);
        }
        assert!(encode(TlvKey::AzureLinkId, "-1").is_err());
        assert!(encode(TlvKey::UniqueId, "abc").is_err());
        assert!(encode(TlvKey::AwsVpceId, "has space").is_err());
    }

    #[test]
    fn base64_as_envoy_writes_it() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"", Some(b"")),
            (b"AQ==", Some(b"\x01")),
            (b"AQI=", Some(b"\x01\x02")),
            (b"AQID", Some(b"\x01\x02\x03")),
            (b"EjRWeJCrze8=", Some(b"\x12\x34\x56\x78\x90\xab\xcd\xef")),
            (b"AQ=", None),
            (b"A===", None),
            (b"AQ==AQ==", None),
            (b"A!Q=", None),
        ];
        for (text, want) in cases {
            assert_eq!(decode_base64(text).as_deref(), *want, "{text:?}");
        }
        // A GCP id whose bytes are not UTF-8 survives only in base64.
        assert_eq!(
            decode_stored(
                TlvKey::GcpPscConnectionId,
                b"EjRWeJCrze8=",
                TlvEncoding::Base64
            )
            .unwrap(),
            "1311768467294899695"
        );
        assert!(decode_stored(TlvKey::GcpPscConnectionId, b"\x12", TlvEncoding::Base64).is_err());
    }

    #[test]
    fn names_round_trip() {
        for key in TlvKey::ALL {
            assert_eq!(TlvKey::from_name(key.name()), Some(key));
            assert_eq!(TlvKey::ALL[key.index()], key);
        }
    }
}
