//! Row digests as map keys: a 16-byte keyhash or nonkeyhash read as a `u128`, a hash map
//! that uses the digest's own bits as its hash (digests are uniformly distributed already), and
//! that map behind a filter for scans that look up every stored row ([`FilteredMap`]).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A row digest as an integer map key.
pub type Key = u128;

/// Reads a 16-byte digest as a [`Key`]; shorter values (not written by Tributary) are zero-padded.
pub fn key(bytes: &[u8]) -> Key {
    let mut b = [0u8; 16];
    let n = bytes.len().min(16);
    b[..n].copy_from_slice(&bytes[..n]);
    u128::from_le_bytes(b)
}

/// Digests are uniformly distributed already: use 64 of their bits as the map hash.
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64 ^ (v >> 64) as u64;
    }
}

/// A hash map keyed by digests.
pub type DigestMap<V> = HashMap<Key, V, BuildHasherDefault<DigestHasher>>;

/// Slots of a [`KeyFilter`] per key it holds, at least (rounded up to a power of two, so 16 to
/// 32; at least [`MIN_FILTER_SLOTS`]): 3% to 6% of the keys it does not hold pass it
/// (`1 - e^(-keys/slots)`).
const FILTER_SLOTS_PER_KEY: usize = 16;
/// Fewest slots of a [`KeyFilter`] (8 KiB).
const MIN_FILTER_SLOTS: usize = 1 << 16;

/// A set of digests as one bit per slot (a Bloom filter with one hash function: the digest's
/// top bits, uniformly distributed already): a key whose bit is clear is not in the set; one
/// whose bit is set may be. 2 to 4 bytes per key: 909,091 keys take 2 MiB, where a
/// [`DigestMap`] of them takes tens of MiB and a lookup of a key it does not hold still
/// reads its control bytes and, often enough, a bucket. Digests shorter than 16 bytes (not
/// Tributary's) are zero-padded by [`key`] and share slot 0: still answered right, only not
/// filtered.
#[derive(Debug)]
pub struct KeyFilter {
    bits: Vec<u64>,
    /// 128 less the number of index bits.
    shift: u32,
}

impl KeyFilter {
    /// The filter of `keys`.
    pub fn of<'a>(keys: impl ExactSizeIterator<Item = &'a Key>) -> Self {
        // past 2^63 slots (never: 2^59 keys) a filter of the least size, which passes all
        let slots = (keys.len().saturating_mul(FILTER_SLOTS_PER_KEY))
            .checked_next_power_of_two()
            .unwrap_or(0)
            .max(MIN_FILTER_SLOTS);
        let mut filter = KeyFilter {
            bits: vec![0; slots / 64],
            shift: 128 - slots.trailing_zeros(),
        };
        for &k in keys {
            let slot = filter.slot(k);
            filter.bits[slot / 64] |= 1 << (slot % 64);
        }
        filter
    }

    fn slot(&self, k: Key) -> usize {
        (k >> self.shift) as usize
    }

    /// False when `k` is not in the set; true when it may be.
    #[inline]
    pub fn may_contain(&self, k: Key) -> bool {
        let slot = self.slot(k);
        (self.bits[slot / 64] >> (slot % 64)) & 1 == 1
    }
}

/// A [`DigestMap`] behind its [`KeyFilter`], for scans that look up every stored row's
/// `keyhash` in the keys a run changes: most of those rows hold no changed key, and their
/// lookups stop at the filter (measured on 10M rows against 909,091 keys: bench/RESULTS.md,
/// "a filter in front of the key set").
#[derive(Debug)]
pub struct FilteredMap<V> {
    map: DigestMap<V>,
    filter: KeyFilter,
}

impl<V> FilteredMap<V> {
    /// `map` with its filter.
    pub fn new(map: DigestMap<V>) -> Self {
        let filter = KeyFilter::of(map.keys());
        FilteredMap { map, filter }
    }

    /// The value of `k`, as the map holds it.
    #[inline]
    pub fn get(&self, k: Key) -> Option<&V> {
        match self.filter.may_contain(k) {
            true => self.map.get(&k),
            false => None,
        }
    }

    /// Whether the map holds `k`.
    #[inline]
    pub fn contains_key(&self, k: Key) -> bool {
        self.get(k).is_some()
    }

    /// Keys in the map.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map holds no key.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The filtered map answers as its map for keys it holds and keys it does not.
        #[test]
        fn a_filtered_map_answers_as_its_map(
            held in proptest::collection::vec(any::<u128>(), 0..2000),
            others in proptest::collection::vec(any::<u128>(), 0..2000),
        ) {
            let map: DigestMap<usize> = held.iter().enumerate().map(|(i, &k)| (k, i)).collect();
            let filtered = FilteredMap::new(map.clone());
            prop_assert_eq!(filtered.len(), map.len());
            for k in held.iter().chain(&others) {
                prop_assert_eq!(filtered.get(*k), map.get(k));
                prop_assert_eq!(filtered.contains_key(*k), map.contains_key(k));
            }
        }
    }

    #[test]
    fn the_filter_keeps_every_key_and_passes_few_others() {
        // digests are uniform: xorshift stands in for them
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = || {
            let mut half = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            (u128::from(half()) << 64) | u128::from(half())
        };
        let held: Vec<Key> = (0..100_000).map(|_| next()).collect();
        let filter = KeyFilter::of(held.iter());
        // 100,000 keys: 2^21 slots (2,097,152 bits, 256 KiB)
        assert_eq!(filter.bits.len() * 64, 1 << 21);
        assert!(held.iter().all(|&k| filter.may_contain(k)));
        let passed = (0..100_000).filter(|_| filter.may_contain(next())).count();
        // 1 - e^(-100,000 / 2^21) = 4.7%
        assert!(
            (3_000..6_500).contains(&passed),
            "{passed} of 100,000 passed"
        );
        // an empty set passes nothing
        let empty = KeyFilter::of(std::iter::empty());
        assert!((0..1000).all(|_| !empty.may_contain(next())));
    }
}
