//! Native micro-benchmark of the core decision: `evaluate` for the HTTP role, the work the
//! filter does per request between reading its inputs and writing its headers.
//! Run: `cargo bench --bench decision` (criterion). Host calls are not part of this figure.
//! `xffN`: N entries, every one but the leftmost trusted, so the walk examines all N (worst case).
//! `xff32_client_3rd_from_right`: 32 entries of which the walk examines 3 (the usual case: the
//! client's own claims left of the first untrusted address are never parsed).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use trustip::core::config::Policy;
use trustip::core::decision::Role;
use trustip::core::tlv::TlvKey;
use trustip::core::verdict::{evaluate, Host};

/// Stands in for Envoy: D and P in one filter-state value, X-Forwarded-For present, the TLV.
struct Envoy<'a> {
    peers: &'a [u8],
    xff: &'a [u8],
    tlv: &'a [u8],
}

impl Host for Envoy<'_> {
    fn direct_peer(&mut self, _key: &str) -> Option<Vec<u8>> {
        Some(self.peers.to_vec())
    }
    fn source(&mut self) -> Option<Vec<u8>> {
        None
    }
    fn header(&mut self, name: &str) -> Option<Vec<u8>> {
        (name == "x-forwarded-for").then(|| self.xff.to_vec())
    }
    fn tlv(&mut self, _key: TlvKey) -> Option<Vec<u8>> {
        Some(self.tlv.to_vec())
    }
}

/// Deterministic pseudo-random numbers (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `count` trusted blocks, half IPv4 /16-/28, half IPv6 /32-/64, plus the hops used below.
fn trusted_blocks(count: usize) -> Vec<String> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut blocks = vec!["10.0.0.0/8".to_string(), "2001:db8::/32".to_string()];
    while blocks.len() < count {
        if blocks.len() % 2 == 0 {
            let prefix = 16 + (rng.next() % 13) as u32;
            let bits = (rng.next() as u32) & (u32::MAX << (32 - prefix));
            blocks.push(format!("{}/{prefix}", Ipv4Addr::from(bits)));
        } else {
            let prefix = 32 + (rng.next() % 33) as u32;
            let bits = (u128::from(rng.next()) << 64) & (u128::MAX << (128 - prefix));
            blocks.push(format!("{}/{prefix}", Ipv6Addr::from(bits)));
        }
    }
    blocks
}

fn policy(trusted: &[String]) -> Policy {
    let json = serde_json::json!({
        "rules": [
            {"from": ["127.0.0.5", "::5"], "proxy_protocol": "require",
             "tlvs": {"aws_vpce_id": ["vpce-0a1b2c3d4e5f60718"]}},
            {"from": ["192.168.0.0/16"], "proxy_protocol": "use"}
        ],
        "xff": {"trusted": trusted, "max_entries": 32},
        "headers": {"set": ["x-envoy-external-address", "x-real-ip"]}
    });
    match Policy::from_json(json.to_string().as_bytes()) {
        Ok(policy) => policy,
        Err(err) => panic!("bench policy: {err}"),
    }
}

/// An XFF of `entries` addresses: one untrusted client, then trusted hops.
fn xff(entries: usize, v6: bool) -> String {
    let mut parts = Vec::with_capacity(entries);
    parts.push(if v6 {
        "2a00:1450::7".to_string()
    } else {
        "203.0.113.7".to_string()
    });
    for i in 1..entries {
        parts.push(if v6 {
            format!("2001:db8::{i:x}")
        } else {
            format!("10.0.{}.{}", i / 250, i % 250 + 1)
        });
    }
    parts.join(", ")
}

/// A 32-entry XFF as a real edge sees it: whatever the client sent (not walked), the client as
/// the first proxy saw it, then two trusted hops. The walk stops after three elements.
fn xff_spoofed_prefix(v6: bool) -> String {
    let mut parts: Vec<String> = (0..29)
        .map(|i| {
            if v6 {
                format!("2a00:1450::{:x}", i + 100)
            } else {
                format!("198.18.0.{}", i + 1)
            }
        })
        .collect();
    parts.push(if v6 {
        "2a00:1450::7".to_string()
    } else {
        "203.0.113.7".to_string()
    });
    parts.push(if v6 {
        "2001:db8::2".to_string()
    } else {
        "10.0.0.2".to_string()
    });
    parts.push(if v6 {
        "2001:db8::3".to_string()
    } else {
        "10.0.0.3".to_string()
    });
    parts.join(", ")
}

fn bench(c: &mut Criterion) {
    let small = policy(&trusted_blocks(4));
    let large = policy(&trusted_blocks(10_000));
    let tlv = b"\x01vpce-0a1b2c3d4e5f60718".to_vec();
    let mut group = c.benchmark_group("decision");
    for (name, policy) in [("small", &small), ("10k_cidrs", &large)] {
        for v6 in [false, true] {
            let (direct, source) = if v6 {
                ("[::5]:40000", "[2001:db8::1]:5555")
            } else {
                ("127.0.0.5:40000", "10.0.0.1:5555")
            };
            let peers = format!("{direct} {source}");
            let cases = [
                ("xff1", xff(1, v6)),
                ("xff8", xff(8, v6)),
                ("xff32", xff(32, v6)),
                ("xff32_client_3rd_from_right", xff_spoofed_prefix(v6)),
            ];
            for (label, header) in cases {
                let id = BenchmarkId::new(
                    format!("{name}/{}", if v6 { "ipv6" } else { "ipv4" }),
                    label,
                );
                group.bench_with_input(id, &header, |b, header| {
                    b.iter(|| {
                        let mut host = Envoy {
                            peers: peers.as_bytes(),
                            xff: header.as_bytes(),
                            tlv: &tlv,
                        };
                        black_box(evaluate(policy, Role::Http, &mut host))
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
