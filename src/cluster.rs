//! Redis Cluster slots, computed in Rust (7.0 exports no slot function): CRC16
//! (XMODEM) of the key or of its hash tag, modulo 16384; and the set of slots
//! this node serves, as read from CLUSTER SLOTS.

pub const SLOTS: usize = 16384;

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster uses for key slots.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of a key that is hashed: the first `{...}` with something inside,
/// else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The cluster slot of a key.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOTS as u16 - 1)
}

/// The slots one node serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotSet {
    owned: Vec<bool>,
}

impl SlotSet {
    /// Every slot: what a node outside cluster mode serves.
    pub fn all() -> SlotSet {
        SlotSet {
            owned: vec![true; SLOTS],
        }
    }

    /// From inclusive ranges, as CLUSTER SLOTS lists them.
    pub fn from_ranges(ranges: &[(u16, u16)]) -> SlotSet {
        let mut owned = vec![false; SLOTS];
        for &(start, end) in ranges {
            for slot in start..=end.min(SLOTS as u16 - 1) {
                owned[slot as usize] = true;
            }
        }
        SlotSet { owned }
    }

    pub fn owns(&self, slot: u16) -> bool {
        self.owned.get(slot as usize).copied().unwrap_or(false)
    }

    pub fn owns_key(&self, key: &[u8]) -> bool {
        self.owns(key_slot(key))
    }

    pub fn is_all(&self) -> bool {
        self.owned.iter().all(|&o| o)
    }

    /// A hash tag (`{n}` with the smallest n) whose keys land on a slot this
    /// node owns: module writes such as the audit stream must stay local.
    pub fn local_tag(&self) -> Option<String> {
        (0..200_000u32)
            .map(|n| n.to_string())
            .find(|tag| self.owns(key_slot(tag.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_cluster_spec_vector() {
        // The Redis Cluster specification's test vector.
        assert_eq!(crc16(b"123456789"), 0x31c3);
    }

    #[test]
    fn slots_of_known_keys() {
        // Values Redis's CLUSTER KEYSLOT returns for these keys.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"user:{4}:cost_weekly"), key_slot(b"4"));
        assert_eq!(
            key_slot(b"user:{4}:cost_weekly"),
            key_slot(b"user:{4}:cost_monthly")
        );
    }

    #[test]
    fn hash_tags_follow_redis_rules() {
        assert_eq!(hash_tag(b"a{b}c"), b"b");
        assert_eq!(
            hash_tag(b"a{}c{d}"),
            b"a{}c{d}",
            "an empty first tag hashes the whole key"
        );
        assert_eq!(hash_tag(b"a{b{c}d}"), b"b{c");
        assert_eq!(hash_tag(b"a{bc"), b"a{bc");
        assert_eq!(hash_tag(b"}{x}"), b"x");
    }

    #[test]
    fn slot_sets_and_local_tags() {
        let set = SlotSet::from_ranges(&[(0, 5460)]);
        assert!(set.owns(0) && set.owns(5460) && !set.owns(5461));
        assert!(!set.is_all());
        assert!(SlotSet::all().is_all());
        let tag = set.local_tag().unwrap();
        assert!(set.owns(key_slot(format!("consistency:audit{{{tag}}}").as_bytes())));
        assert_eq!(SlotSet::from_ranges(&[]).local_tag(), None);
    }
}
