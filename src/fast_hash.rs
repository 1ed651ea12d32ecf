//! A fast hasher for the check's working maps. Their keys are ids and key names
//! from our own cache and database, not from an attacker choosing collisions, and
//! SipHash was the largest single cost of a 300k-key check.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-rotate hashing over 8-byte words.
#[derive(Default, Clone, Copy)]
pub struct WordHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl WordHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        // A multiply leaves the low bits depending on the low input bits only, and
        // the table indexes by low bits: mix the high bits down (splitmix64).
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<WordHasher>>;
pub type FastSet<K> = HashSet<K, BuildHasherDefault<WordHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash_of<T: Hash>(v: T) -> u64 {
        BuildHasherDefault::<WordHasher>::default().hash_one(v)
    }

    #[test]
    fn distinct_ids_hash_apart() {
        let hashes: FastSet<u64> = (0..100_000u32).map(|i| hash_of(i.to_string())).collect();
        assert_eq!(hashes.len(), 100_000);
        assert_ne!(hash_of("ab"), hash_of("ba"));
        assert_ne!(hash_of(b"a".as_slice()), hash_of(b"a\0".as_slice()));
    }

    #[test]
    fn low_bits_spread_for_numeric_ids() {
        // Tables index by the low bits: ids sharing a prefix must not pile up.
        let buckets: FastSet<u64> = (100_000..200_000u32)
            .map(|i| hash_of(i.to_string()) & 0xffff)
            .collect();
        assert!(
            buckets.len() > 50_000,
            "only {} of 65536 buckets used",
            buckets.len()
        );
    }

    #[test]
    fn maps_work_as_maps() {
        let mut m: FastMap<String, u32> = FastMap::default();
        m.insert("user:4".into(), 4);
        assert_eq!(m.get("user:4"), Some(&4));
        assert_eq!(m.get("user:5"), None);
    }
}
