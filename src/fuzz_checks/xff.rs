//! Target `xff`: X-Forwarded-For elements and the walk, against [`reference`].
//!
//! Input: a control line, then the header lines. Control bytes: 0 the trusted blocks (one of
//! four sets, or the blocks written after byte 3 separated by spaces), 1 the connection client
//! C, 2 `max_entries`, 3 `trusted_hops`.

use std::net::IpAddr;
use std::str::FromStr;

use super::reference::{self, Block, End};
use super::{byte, ensure, fields, pick, shown};
use crate::core::cidr::{Cidr, CidrError, CidrTable};
use crate::core::xff::{
    count_hops, elements_rev, parse_element, parse_element_text, walk_elements, WalkEnd,
};

const TRUSTED: [&[&str]; 4] = [
    &["10.0.0.0/8", "2001:db8::/32"],
    &["0.0.0.0/0", "::/0"],
    &[],
    &[
        "::ffff:192.0.2.0/120",
        "198.51.100.0/24",
        "2001:db8:1::/48",
        "10.1.2.3",
    ],
];
const CLIENTS: [&str; 6] = [
    "10.0.0.1",
    "203.0.113.9",
    "2001:db8::7",
    "192.0.2.1",
    "10.1.2.3",
    "2001:db8:1::1",
];
const MAX_ENTRIES: [usize; 6] = [1, 2, 3, 8, 32, 1024];

/// The trusted blocks for the core and for the reference. Blocks written in the input are
/// compared first: the core's CIDR parser and the reference agree on what is a block (the core
/// also refuses host bits).
fn trusted(control: &[u8]) -> Result<(CidrTable, Vec<Block>), String> {
    let selector = byte(control, 0);
    let texts: Vec<String> = if usize::from(selector) % 5 == 4 {
        let written = control.get(4..).unwrap_or_default();
        String::from_utf8_lossy(written)
            .split(' ')
            .filter(|t| !t.is_empty())
            .take(16)
            .map(str::to_string)
            .collect()
    } else {
        pick(&TRUSTED, selector)
            .unwrap_or_default()
            .iter()
            .map(|t| t.to_string())
            .collect()
    };
    let (mut cidrs, mut blocks) = (Vec::new(), Vec::new());
    for text in &texts {
        let ours = Cidr::from_str(text);
        let theirs = Block::parse(text);
        match (&ours, theirs) {
            (Ok(cidr), Some(block)) => {
                cidrs.push((*cidr, 0));
                blocks.push(block);
            }
            (Err(CidrError::HostBitsSet(_)), Some(_)) | (Err(_), None) => {}
            _ => {
                return Err(format!(
                    "CIDR {text:?}: core {ours:?}, reference {theirs:?}"
                ))
            }
        }
    }
    Ok((CidrTable::new(cidrs), blocks))
}

/// The address's canonical text, as std writes it (not the core's writer under test).
fn text(ip: IpAddr) -> Vec<u8> {
    reference::canonical(ip).to_string().into_bytes()
}

pub fn check(data: &[u8]) -> Result<(), String> {
    let mut parts = fields(data);
    let control = if parts.is_empty() {
        &[][..]
    } else {
        parts.remove(0)
    };
    let lines = parts;
    let (table, blocks) = trusted(control)?;
    let c = pick(&CLIENTS, byte(control, 1))
        .and_then(|t| IpAddr::from_str(t).ok())
        .ok_or("no client")?;
    let max_entries = pick(&MAX_ENTRIES, byte(control, 2)).unwrap_or(32);
    let hops = usize::from(byte(control, 3) % 5);

    // The elements, right to left.
    let ours: Vec<&[u8]> = elements_rev(&lines).collect();
    let theirs = reference::elements_rev(&lines);
    ensure(ours == theirs, || {
        format!(
            "elements {:?}, reference {:?}",
            ours.iter().map(|e| shown(e)).collect::<Vec<_>>(),
            theirs.iter().map(|e| shown(e)).collect::<Vec<_>>()
        )
    })?;

    // Each element: the same address as std's parsers give, or malformed for both; a copied
    // text is the address's own canonical text; the table agrees with the blocks.
    for raw in &ours {
        let got = parse_element(raw);
        let trimmed = raw.trim_ascii();
        if trimmed.len() <= reference::MAX_ELEMENT {
            let want = reference::element(raw);
            ensure(got == want, || {
                format!("element {}: core {got:?}, reference {want:?}", shown(raw))
            })?;
        } else {
            ensure(got.is_none(), || {
                format!("element of {} bytes accepted: {got:?}", trimmed.len())
            })?;
        }
        if let Some((ip, Some(copied))) = parse_element_text(raw) {
            ensure(copied == text(ip).as_slice(), || {
                format!("element {} copied as {}", shown(raw), shown(copied))
            })?;
        }
        if let Some(ip) = got {
            let (core, model) = (table.contains(ip), reference::any_contains(&blocks, ip));
            ensure(core == model, || {
                format!("{ip} trusted: core {core}, reference {model}")
            })?;
        }
    }

    // The walk over trusted blocks.
    let walk = walk_elements(c, &mut ours.iter().copied(), &table, max_entries);
    let (client, chain, end) = reference::walk(c, &theirs, &blocks, max_entries);
    let end_core = match walk.end {
        WalkEnd::Untrusted => Some(End::Untrusted),
        WalkEnd::AllTrusted => Some(End::AllTrusted),
        WalkEnd::Malformed => Some(End::Malformed),
        WalkEnd::Limit => Some(End::Limit),
        _ => None,
    };
    ensure(
        walk.client == client && walk.chain == chain && end_core == Some(end),
        || {
            format!(
                "walk from {c} (max {max_entries}): core {:?} {:?} {:?}, reference {client} {chain:?} {end:?}",
                walk.client, walk.chain, walk.end
            )
        },
    )?;
    ensure(walk.texts.len() == walk.chain.len(), || {
        format!("{} texts for {} hops", walk.texts.len(), walk.chain.len())
    })?;
    for (ip, copied) in walk.chain.iter().zip(&walk.texts) {
        if let Some(copied) = copied {
            ensure(*copied == text(*ip).as_slice(), || {
                format!("chain entry {ip} written as {}", shown(copied))
            })?;
        }
    }

    // Counted hops.
    if hops > 0 {
        let counted = count_hops(c, &mut ours.iter().copied(), hops);
        let (client, chain, end) = reference::count_hops(c, &theirs, hops);
        let end_core = match counted.end {
            WalkEnd::Counted => Some(End::Counted),
            WalkEnd::Short => Some(End::Short),
            WalkEnd::Malformed => Some(End::Malformed),
            _ => None,
        };
        ensure(
            counted.client == client && counted.chain == chain && end_core == Some(end),
            || {
                format!(
                    "{hops} hops from {c}: core {:?} {:?} {:?}, reference {client} {chain:?} {end:?}",
                    counted.client, counted.chain, counted.end
                )
            },
        )?;
    }
    Ok(())
}
