//! Row digests as map keys: a 16-byte keyhash or nonkeyhash read as a `u128`, and a hash map
//! that uses the digest's own bits as its hash (digests are uniformly distributed already).

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
