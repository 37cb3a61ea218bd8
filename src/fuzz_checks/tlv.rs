//! Target `tlv`: PROXY v2 TLV values as Envoy stores them ([`crate::core::tlv`]).
//!
//! Input: a control line (byte 0 picks the TLV key), then the value: every byte after the
//! first `\n`, newlines included.
//!
//! Checked: decoding gives what the table of docs/configuration.md says (a reference decoder
//! per key), a decoded text is visible ASCII that encodes back to the same raw value, the raw
//! and base64 storage decode alike, base64 decodes as the reference decoder does and
//! round-trips the reference encoder's output, and encoding any text never panics and gives a
//! value that decodes back to that text.

use std::fmt::Write as _;

use super::reference::{base64_decode, base64_encode};
use super::{byte, ensure, pick, shown};
use crate::core::tlv::{decode, decode_base64, decode_stored, encode, TlvEncoding, TlvKey};

/// The table of docs/configuration.md, written out: the decoded text, or `None` when the raw
/// value is not one of that key's.
pub(crate) fn reference_decode(key: TlvKey, raw: &[u8]) -> Option<String> {
    let text = |bytes: &[u8]| {
        let visible = !bytes.is_empty()
            && bytes.len() <= 255
            && bytes.iter().all(|b| (0x21..=0x7e).contains(b));
        visible.then(|| String::from_utf8_lossy(bytes).into_owned())
    };
    match key {
        TlvKey::AwsVpceId => match raw.split_first() {
            Some((1, id)) => text(id),
            _ => None,
        },
        TlvKey::AzureLinkId => match raw {
            [1, a, b, c, d] => Some(u32::from_le_bytes([*a, *b, *c, *d]).to_string()),
            _ => None,
        },
        TlvKey::GcpPscConnectionId => {
            let bytes: [u8; 8] = raw.try_into().ok()?;
            Some(u64::from_be_bytes(bytes).to_string())
        }
        TlvKey::Authority => text(raw),
        TlvKey::UniqueId => (1..=128).contains(&raw.len()).then(|| {
            raw.iter().fold(String::new(), |mut hex, b| {
                let _ = write!(hex, "{b:02x}");
                hex
            })
        }),
    }
}

pub fn check(data: &[u8]) -> Result<(), String> {
    let (control, raw) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (
            data.get(..at).unwrap_or_default(),
            data.get(at + 1..).unwrap_or_default(),
        ),
        None => (data, &[][..]),
    };
    let key = pick(&TlvKey::ALL, byte(control, 0)).ok_or("no key")?;

    let decoded = decode(key, raw);
    let want = reference_decode(key, raw);
    ensure(decoded.as_ref().ok() == want.as_ref(), || {
        format!(
            "{} {}: core {decoded:?}, reference {want:?}",
            key.name(),
            shown(raw)
        )
    })?;
    if let Ok(text) = &decoded {
        ensure(
            !text.is_empty() && text.len() <= 256 && text.bytes().all(|b| b.is_ascii_graphic()),
            || format!("{} decoded to {text:?}", key.name()),
        )?;
        let back = encode(key, text);
        ensure(back.as_deref() == Ok(raw), || {
            format!(
                "{} {}: decoded {text:?}, encoded back {back:?}",
                key.name(),
                shown(raw)
            )
        })?;
    }

    // Stored raw, and stored as Envoy's BASE64 encoding writes it.
    let raw_stored = decode_stored(key, raw, TlvEncoding::Raw);
    ensure(raw_stored == decoded, || {
        format!("{} raw storage: {raw_stored:?} vs {decoded:?}", key.name())
    })?;
    let encoded = base64_encode(raw);
    let b64_stored = decode_stored(key, &encoded, TlvEncoding::Base64);
    ensure(b64_stored == decoded, || {
        format!(
            "{} base64 {}: {b64_stored:?} vs {decoded:?}",
            key.name(),
            shown(&encoded)
        )
    })?;

    // base64 against the reference, and the reference encoder's output round-trips.
    let ours = decode_base64(raw);
    let theirs = base64_decode(raw);
    ensure(ours == theirs, || {
        format!("base64 {}: core {ours:?}, reference {theirs:?}", shown(raw))
    })?;
    let round = decode_base64(&encoded);
    ensure(round.as_deref() == Some(raw), || {
        format!("base64 {} decoded to {round:?}", shown(&encoded))
    })?;
    if ours.is_none() {
        let refused = decode_stored(key, raw, TlvEncoding::Base64);
        ensure(refused.is_err(), || {
            format!("not base64 {} decoded as {refused:?}", shown(raw))
        })?;
    }

    // Any text the command line may be given (`--tlv KEY=VALUE`).
    let text = String::from_utf8_lossy(raw);
    if let Ok(value) = encode(key, &text) {
        let back = decode(key, &value);
        ensure(
            back.as_deref() == Ok(&*text) || back == Ok(text.to_ascii_lowercase()),
            || format!("{} {text:?} encoded, decodes to {back:?}", key.name()),
        )?;
    }
    Ok(())
}
