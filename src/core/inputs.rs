//! A [`Host`] over given values, for `explain`, the tests and the benchmark: what Envoy would
//! hand the filter, held in memory. It counts every read, so the per-request host-call budget
//! is checked without Envoy.

use crate::core::headers::HeaderList;
use crate::core::tlv::TlvKey;
use crate::core::verdict::Host;

/// One read the core made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    DirectPeer,
    Source,
    Header(String),
    Tlv(TlvKey),
}

#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The direct-peer filter-state value (`None`: absent).
    pub direct_peer: Option<Vec<u8>>,
    /// `source.address` (`None`: absent).
    pub source: Option<Vec<u8>>,
    pub headers: HeaderList,
    /// TLVs as Envoy stores them, by [`TlvKey::index`].
    pub tlvs: [Option<Vec<u8>>; 5],
    /// Every read, in order.
    pub reads: Vec<Read>,
}

impl Inputs {
    /// D and P as Envoy's set_filter_state records them with the rendered format string (one
    /// value, two words), and P as `source.address`.
    pub fn with_peers(direct: &str, source: &str) -> Inputs {
        Inputs {
            direct_peer: Some(format!("{direct} {source}").into_bytes()),
            source: Some(source.as_bytes().to_vec()),
            ..Inputs::default()
        }
    }

    pub fn header(mut self, name: &str, value: &[u8]) -> Inputs {
        self.headers.append(name, value);
        self
    }

    pub fn tlv(mut self, key: TlvKey, stored: &[u8]) -> Inputs {
        if let Some(slot) = self.tlvs.get_mut(key.index()) {
            *slot = Some(stored.to_vec());
        }
        self
    }

    /// How many times this input was read.
    pub fn count(&self, read: &Read) -> usize {
        self.reads.iter().filter(|r| *r == read).count()
    }
}

impl Host for Inputs {
    fn direct_peer(&mut self, _key: &str) -> Option<Vec<u8>> {
        self.reads.push(Read::DirectPeer);
        self.direct_peer.clone()
    }

    fn source(&mut self) -> Option<Vec<u8>> {
        self.reads.push(Read::Source);
        self.source.clone()
    }

    fn header(&mut self, name: &str) -> Option<Vec<u8>> {
        self.reads.push(Read::Header(name.to_string()));
        self.headers.get(name)
    }

    fn tlv(&mut self, key: TlvKey) -> Option<Vec<u8>> {
        self.reads.push(Read::Tlv(key));
        self.tlvs.get(key.index()).cloned().flatten()
    }
}
