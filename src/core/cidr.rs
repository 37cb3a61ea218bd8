//! CIDR blocks and the table that answers "which is the first rule whose block contains this
//! address?" in O(log n), however many blocks the policy lists.
//!
//! The blocks are turned, at configuration time, into sorted disjoint address ranges, each
//! labelled with the smallest rule index covering it; a lookup is one binary search. This is
//! equivalent to a prefix trie for longest-or-first match, with far less memory for 10,000
//! IPv6 blocks.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::core::addr::{canonical, push_ip};

/// Why a CIDR block was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("not an IP address or CIDR block")]
    InvalidAddress,
    #[error("prefix length is not a number")]
    InvalidPrefix,
    #[error("prefix length {prefix} > {max}")]
    PrefixTooLong { prefix: u32, max: u8 },
    #[error("host bits are set; did you mean {0}?")]
    HostBitsSet(String),
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`; a bare address is a /32 or /128.
/// IPv4-mapped IPv6 blocks (`::ffff:10.0.0.0/104`) are stored as the IPv4 block they cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

fn max_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The mask of the host part of a block, in the family's width.
fn host_mask(prefix: u8, width: u8) -> u128 {
    match u32::from(width.saturating_sub(prefix)) {
        0 => 0,
        host_bits if host_bits >= 128 => u128::MAX,
        host_bits => (1u128 << host_bits) - 1,
    }
}

impl Cidr {
    /// The first and last address of the block, as integers of the family's width.
    fn range(&self) -> (u128, u128) {
        let mask = host_mask(self.prefix, max_prefix(self.addr));
        let start = to_bits(self.addr) & !mask;
        (start, start | mask)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let (start, end) = self.range();
        (start..=end).contains(&to_bits(ip))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr = IpAddr::from_str(addr_text).map_err(|_| CidrError::InvalidAddress)?;
        let max = max_prefix(addr);
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 3 {
                    return Err(CidrError::InvalidPrefix);
                }
                let value: u32 = p.parse().map_err(|_| CidrError::InvalidPrefix)?;
                if value > u32::from(max) {
                    return Err(CidrError::PrefixTooLong { prefix: value, max });
                }
                // Checked just above: value <= max <= 128.
                u8::try_from(value).map_err(|_| CidrError::InvalidPrefix)?
            }
        };
        let mask = host_mask(prefix, max);
        let bits = to_bits(addr);
        if bits & mask != 0 {
            let network = Cidr {
                addr: from_bits(addr, bits & !mask),
                prefix,
            };
            return Err(CidrError::HostBitsSet(network.to_string()));
        }
        // An IPv4-mapped block is matched against canonical (IPv4) addresses.
        if let IpAddr::V6(v6) = addr {
            if prefix >= 96 {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return Ok(Cidr {
                        addr: IpAddr::V4(v4),
                        prefix: prefix - 96,
                    });
                }
            }
        }
        Ok(Cidr { addr, prefix })
    }
}

fn from_bits(like: IpAddr, bits: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(bits).unwrap_or(u32::MAX))),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

impl fmt::Display for Cidr {
    /// `addr/prefix`, the address as [`push_ip`] writes it (std's formatter stays out of the
    /// wasm module).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = Vec::with_capacity(44);
        push_ip(&mut text, self.addr);
        f.write_str(&String::from_utf8_lossy(&text))?;
        f.write_str("/")?;
        fmt::Display::fmt(&self.prefix, f)
    }
}

const NONE: u32 = u32::MAX;

/// Sorted disjoint ranges of one address family: `starts[i]..starts[i+1]` carries `labels[i]`.
/// IPv4 tables hold `u32` starts: half the memory and twice the cache reach of `u128`.
/// Large tables also get `index`: for each value of an address's top `INDEX_BITS` bits, the
/// first segment that can hold it, so a lookup searches a handful of segments, not all of them.
#[derive(Debug, Clone, Default)]
struct Ranges<T> {
    starts: Vec<T>,
    labels: Vec<u32>,
    index: Vec<u32>,
}

/// Below this many segments a plain binary search is as fast as the index.
const INDEX_FROM: usize = 64;

/// Bits of the index key: 4,097 entries (16 KiB) per family. With 10,000 blocks a bucket holds
/// a few segments; a larger index would cost memory in every VM for little gain.
const INDEX_BITS: u32 = 12;

/// An address type's top `INDEX_BITS` bits, the key of `Ranges::index`.
trait Top: Copy + Ord {
    fn top(self) -> usize;
    fn from_top(top: usize) -> Self;
}

impl Top for u32 {
    fn top(self) -> usize {
        (self >> (32 - INDEX_BITS)) as usize
    }
    fn from_top(top: usize) -> Self {
        (top as u32) << (32 - INDEX_BITS)
    }
}

impl Top for u128 {
    fn top(self) -> usize {
        (self >> (128 - INDEX_BITS)) as usize
    }
    fn from_top(top: usize) -> Self {
        (top as u128) << (128 - INDEX_BITS)
    }
}

impl Ranges<u32> {
    /// The IPv4 table: every start below 2^32 fits (a segment starting at 2^32, past the last
    /// address, can never match and is dropped).
    fn narrow(wide: Ranges<u128>) -> Ranges<u32> {
        let (starts, labels) = wide
            .starts
            .into_iter()
            .zip(wide.labels)
            .filter_map(|(start, label)| u32::try_from(start).ok().map(|s| (s, label)))
            .unzip();
        Ranges {
            starts,
            labels,
            index: Vec::new(),
        }
        .indexed()
    }
}

impl<T: Top> Ranges<T> {
    /// Adds the top-16-bit index when the table is large enough to profit.
    fn indexed(mut self) -> Self {
        if self.starts.len() >= INDEX_FROM {
            // index[top] = the segment holding the first address with these top bits.
            let buckets = 1usize << INDEX_BITS;
            self.index = (0..=buckets)
                .map(|top| {
                    let first = if top == buckets {
                        self.starts.len()
                    } else {
                        let at = T::from_top(top);
                        self.starts.partition_point(|start| *start <= at)
                    };
                    u32::try_from(first.saturating_sub(1)).unwrap_or(u32::MAX)
                })
                .collect();
        }
        self
    }

    fn lookup(&self, bits: T) -> u32 {
        let top = bits.top();
        let (from, to) = match (self.index.get(top), self.index.get(top + 1)) {
            (Some(&from), Some(&to)) => (from as usize, to as usize + 1),
            _ => (0, self.starts.len()),
        };
        let window = self
            .starts
            .get(from..to.min(self.starts.len()))
            .unwrap_or_default();
        let found = window.partition_point(|start| *start <= bits);
        (from + found)
            .checked_sub(1)
            .and_then(|i| self.labels.get(i))
            .copied()
            .unwrap_or(NONE)
    }
}

impl Ranges<u128> {
    fn build(mut blocks: Vec<(u128, u128, u32)>) -> Ranges<u128> {
        // Sweep over the block boundaries keeping the labels of the blocks that cover the
        // current point; each segment takes the smallest one.
        let mut events: Vec<(u128, bool, u32)> = Vec::with_capacity(blocks.len() * 2);
        for (start, end, label) in blocks.drain(..) {
            events.push((start, true, label));
            if let Some(after) = end.checked_add(1) {
                events.push((after, false, label));
            }
        }
        events.sort_unstable();
        let mut active: BTreeMap<u32, u32> = BTreeMap::new();
        let mut ranges = Ranges {
            starts: vec![0],
            labels: vec![NONE],
            index: Vec::new(),
        };
        for group in events.chunk_by(|a, b| a.0 == b.0) {
            let mut point = 0;
            for &(at, opens, label) in group {
                point = at;
                let count = active.entry(label).or_insert(0);
                if opens {
                    *count += 1;
                } else {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        active.remove(&label);
                    }
                }
            }
            let label = active.keys().next().copied().unwrap_or(NONE);
            ranges.push(point, label);
        }
        ranges.starts.shrink_to_fit();
        ranges.labels.shrink_to_fit();
        ranges
    }

    fn push(&mut self, start: u128, label: u32) {
        if self.labels.last() == Some(&label) {
            return;
        }
        if self.starts.last() == Some(&start) {
            if let Some(last) = self.labels.last_mut() {
                *last = label;
            }
            // Merging with the segment before may now be possible.
            if self.labels.len() >= 2 && self.labels.get(self.labels.len() - 2) == Some(&label) {
                self.starts.pop();
                self.labels.pop();
            }
            return;
        }
        self.starts.push(start);
        self.labels.push(label);
    }
}

/// Blocks labelled with a number (a rule index); `lookup` gives the smallest label among the
/// blocks that contain an address.
#[derive(Debug, Clone, Default)]
pub struct CidrTable {
    v4: Ranges<u32>,
    v6: Ranges<u128>,
}

impl CidrTable {
    /// Builds the table; each block comes with its label (e.g. the index of its rule).
    pub fn new(blocks: impl IntoIterator<Item = (Cidr, u32)>) -> CidrTable {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (cidr, label) in blocks {
            let (start, end) = cidr.range();
            if cidr.addr.is_ipv4() {
                v4.push((start, end, label));
            } else {
                v6.push((start, end, label));
            }
        }
        CidrTable {
            v4: Ranges::narrow(Ranges::build(v4)),
            v6: Ranges::build(v6).indexed(),
        }
    }

    /// The smallest label of the blocks containing `ip` (canonicalised first).
    pub fn lookup(&self, ip: IpAddr) -> Option<u32> {
        let label = match canonical(ip) {
            IpAddr::V4(v4) => self.v4.lookup(u32::from(v4)),
            IpAddr::V6(v6) => self.v6.lookup(u128::from(v6)),
        };
        (label != NONE).then_some(label)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.lookup(ip).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_refuses() {
        let cases: &[(&str, Result<&str, CidrError>)] = &[
            ("10.0.0.0/8", Ok("10.0.0.0/8")),
            ("10.1.2.3", Ok("10.1.2.3/32")),
            ("2001:db8::/32", Ok("2001:db8::/32")),
            ("::1", Ok("::1/128")),
            ("::ffff:10.0.0.0/104", Ok("10.0.0.0/8")),
            ("0.0.0.0/0", Ok("0.0.0.0/0")),
            ("::/0", Ok("::/0")),
            (
                "10.0.0.0/33",
                Err(CidrError::PrefixTooLong {
                    prefix: 33,
                    max: 32,
                }),
            ),
            (
                "2001:db8::/129",
                Err(CidrError::PrefixTooLong {
                    prefix: 129,
                    max: 128,
                }),
            ),
            ("10.0.0.0/", Err(CidrError::InvalidPrefix)),
            ("10.0.0.0/+8", Err(CidrError::InvalidPrefix)),
            ("10.0.0.0/8000", Err(CidrError::InvalidPrefix)),
            ("10.0.0/8", Err(CidrError::InvalidAddress)),
            ("fe80::1%eth0/64", Err(CidrError::InvalidAddress)),
            ("", Err(CidrError::InvalidAddress)),
            (
                "10.1.0.0/8",
                Err(CidrError::HostBitsSet("10.0.0.0/8".to_string())),
            ),
        ];
        for (input, want) in cases {
            let got = input.parse::<Cidr>().map(|c| c.to_string());
            assert_eq!(got, want.clone().map(str::to_string), "input {input}");
        }
    }

    #[test]
    fn contains_respects_family_and_mapping() {
        let block: Cidr = "203.0.113.0/24".parse().unwrap();
        assert!(block.contains(ip("203.0.113.9")));
        assert!(block.contains(ip("::ffff:203.0.113.9")));
        assert!(!block.contains(ip("203.0.114.1")));
        assert!(!block.contains(ip("2001:db8::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("255.255.255.255")));
    }

    #[test]
    fn table_gives_first_matching_label() {
        let table = CidrTable::new([
            ("10.0.0.0/8".parse().unwrap(), 2),
            ("10.1.0.0/16".parse().unwrap(), 0),
            ("10.1.2.0/24".parse().unwrap(), 1),
            ("2001:db8::/32".parse().unwrap(), 3),
            ("::/0".parse().unwrap(), 4),
            ("255.255.255.255/32".parse().unwrap(), 5),
        ]);
        let cases = [
            ("10.1.2.3", Some(0)),
            ("10.1.3.3", Some(0)),
            ("10.2.0.0", Some(2)),
            ("9.255.255.255", None),
            ("11.0.0.0", None),
            ("2001:db8:1::1", Some(3)),
            ("2001:db9::1", Some(4)),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(4)),
            ("::ffff:10.200.0.1", Some(2)),
            ("255.255.255.255", Some(5)),
        ];
        for (addr, want) in cases {
            assert_eq!(table.lookup(ip(addr)), want, "{addr}");
        }
    }

    #[test]
    fn table_agrees_with_linear_scan() {
        // Pseudo-random sets of blocks, small (binary search) and large (indexed), checked
        // against the obvious scan, for both families.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (count, indexed) in [(20u32, false), (3000, true)] {
            let mut blocks = Vec::new();
            for label in 0..count {
                let v6 = label % 2 == 1;
                let width = if v6 { 128 } else { 32 };
                let prefix = (4 + next() % u64::from(width - 3)) as u8;
                let raw = if v6 {
                    u128::from(next()) << 64 | u128::from(next())
                } else {
                    u128::from(next() as u32)
                };
                let bits = raw & !host_mask(prefix, width);
                let addr = from_bits(
                    if v6 {
                        "::".parse().unwrap()
                    } else {
                        "0.0.0.0".parse().unwrap()
                    },
                    bits,
                );
                blocks.push((Cidr { addr, prefix }, label));
            }
            let table = CidrTable::new(blocks.clone());
            assert_eq!(!table.v4.index.is_empty(), indexed, "{count} blocks");
            assert_eq!(!table.v6.index.is_empty(), indexed, "{count} blocks");
            for i in 0..8_000u32 {
                // Probe near block starts half of the time, so that hits are common.
                let probe = match blocks.get((next() % u64::from(count)) as usize) {
                    Some((cidr, _)) if i % 2 == 0 => match cidr.addr {
                        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(
                            u32::from(v4).wrapping_add((next() % 512) as u32),
                        )),
                        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(
                            u128::from(v6).wrapping_add(u128::from(next() % 512)),
                        )),
                    },
                    _ if i % 4 == 1 => IpAddr::V6(Ipv6Addr::from(u128::from(next()) << 64)),
                    _ => IpAddr::V4(Ipv4Addr::from(next() as u32)),
                };
                let want = blocks
                    .iter()
                    .filter(|(c, _)| c.contains(probe))
                    .map(|(_, l)| *l)
                    .min();
                assert_eq!(table.lookup(probe), want, "{probe}");
            }
        }
    }
}
