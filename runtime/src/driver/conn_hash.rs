//! The hash of the driver's connection map.

use std::hash::{BuildHasher, Hasher};

/// The hash of the driver's maps keyed by a [`ConnId`]: a multiplicative
/// hash instead of SipHash. The connection map is looked up once per
/// connection for every frame a conversation's connections get. Its keys are
/// the server's own sequential numbers, never a client's choice, so there is
/// no flooding to defend against.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct U64Hash;

impl BuildHasher for U64Hash {
    type Hasher = U64Hasher;

    fn build_hasher(&self) -> U64Hasher {
        U64Hasher(0)
    }
}

#[derive(Debug)]
pub(super) struct U64Hasher(u64);

impl U64Hasher {
    /// 2^64 / φ: spreads sequential numbers over the high bits too (the
    /// map takes its control bits from there).
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
}

impl Hasher for U64Hasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not used by a `u64` or a `ConnId` (their `Hash` writes one `u64`);
        // correct anyway.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(Self::K);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use weir_core::ids::ConnId;

    use super::*;

    #[test]
    fn the_connection_hash_spreads_sequential_ids() {
        let hash = |n: u64| U64Hash.hash_one(ConnId(n));
        let ids = 1..=10_000u64;
        let hashes: HashSet<u64> = ids.clone().map(hash).collect();
        assert_eq!(hashes.len(), 10_000, "no two ids collide");
        // The map takes its 7 control bits from the top of the hash: sequential
        // ids must use all of them.
        let top: HashSet<u64> = ids.clone().map(|n| hash(n) >> 57).collect();
        assert_eq!(top.len(), 128);
        let mut map: HashMap<ConnId, u64, U64Hash> = HashMap::default();
        map.extend(ids.clone().map(|n| (ConnId(n), n)));
        assert!(ids.into_iter().all(|n| map.get(&ConnId(n)) == Some(&n)));
    }
}
