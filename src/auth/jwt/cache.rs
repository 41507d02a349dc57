//! The verified-token cache: a hit costs a hash and a lookup, no JSON and no signature.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::*;

/// The verified-token cache: full token text -> verified claims.
///
/// Keyed by the whole token, so a hit proves the very same bytes were verified before; only
/// the time claims are judged again. Sharded so that worker threads rarely meet on one lock;
/// each lock is held for a lookup or an insert only.
pub(super) struct Cache {
    pub(super) shards: Box<[Mutex<Shard>]>,
    pub(super) max_entries: usize,
    pub(super) max_bytes: usize,
}

#[derive(Default)]
pub(super) struct Shard {
    pub(super) map: HashMap<Box<str>, Cached, TailHash>,
    pub(super) bytes: usize,
    /// Bumped by every clear, so a verification that began before a key change cannot insert
    /// its result afterwards.
    pub(super) generation: u64,
}

/// Hashes a token by its last 32 bytes (its signature, close to uniform for genuine tokens)
/// and its length, with foldhash under a random seed, instead of SipHash over several hundred
/// bytes on every lookup (SipHash over the 32 bytes alone cost about 300 instructions per
/// lookup, foldhash a tenth of it). Only verified tokens are ever inserted, so a forger who
/// aims many tokens at one bucket only slows their own lookups, which still compare whole
/// tokens.
#[derive(Clone, Default)]
pub(super) struct TailHash(foldhash::fast::RandomState);

impl BuildHasher for TailHash {
    type Hasher = Tail;

    fn build_hasher(&self) -> Tail {
        Tail(self.0.build_hasher())
    }
}

pub(super) struct Tail(foldhash::fast::FoldHasher<'static>);

impl Hasher for Tail {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(&bytes[bytes.len().saturating_sub(32)..]);
        self.0.write_usize(bytes.len());
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

pub(super) struct Cached {
    pub(super) claims: Arc<Claims>,
    pub(super) cost: usize,
}

impl Cache {
    pub(super) fn new(entries: usize) -> Option<Cache> {
        if entries == 0 {
            return None;
        }
        // Small caches keep one shard so the entry bound stays exact; large ones spread over
        // up to 16 locks. The count is a power of two so a mask picks the shard.
        let shard_count = (entries / 1024).clamp(1, 16).next_power_of_two().min(16);
        Some(Cache {
            shards: (0..shard_count)
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            max_entries: entries.div_ceil(shard_count),
            max_bytes: CACHE_MAX_BYTES / shard_count,
        })
    }

    fn shard(&self, token: &str) -> MutexGuard<'_, Shard> {
        // A token ends with its signature, which is close to uniform for genuine tokens, so
        // mixing its last bytes picks a shard without a pass over the whole token. A forger can
        // aim at one shard, but each attempt costs them a full signature check that fails.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &byte in token.as_bytes().iter().rev().take(8) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        let index = ((hash >> 32) as usize) & (self.shards.len() - 1);
        // A panic while holding the lock cannot leave a shard inconsistent in a harmful way
        // (at worst a stale byte count), so a poisoned lock is simply taken over.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached claims, if any, and the shard generation to pass back to `insert`.
    pub(super) fn get(&self, token: &str) -> (Option<Arc<Claims>>, u64) {
        let shard = self.shard(token);
        let hit = shard.map.get(token).map(|c| Arc::clone(&c.claims));
        (hit, shard.generation)
    }

    pub(super) fn remove(&self, token: &str) {
        let mut shard = self.shard(token);
        if let Some(old) = shard.map.remove(token) {
            shard.bytes = shard.bytes.saturating_sub(old.cost);
        }
    }

    pub(super) fn insert(
        &self,
        token: &str,
        claims: &Arc<Claims>,
        generation: u64,
        now: u64,
        leeway: u64,
    ) {
        let cost = 2 * token.len() + 3 * claims.size() + CACHE_ENTRY_OVERHEAD;
        if cost > self.max_bytes / 8 {
            return;
        }
        let mut shard = self.shard(token);
        if shard.generation != generation {
            return;
        }
        if let Some(old) = shard.map.remove(token) {
            shard.bytes = shard.bytes.saturating_sub(old.cost);
        }
        shard.make_room(cost, self.max_entries, self.max_bytes, now, leeway);
        shard.bytes += cost;
        shard.map.insert(
            token.into(),
            Cached {
                claims: Arc::clone(claims),
                cost,
            },
        );
    }

    pub(super) fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.map.clear();
            shard.bytes = 0;
            shard.generation = shard.generation.wrapping_add(1);
        }
    }
}

impl Shard {
    fn make_room(
        &mut self,
        need: usize,
        max_entries: usize,
        max_bytes: usize,
        now: u64,
        leeway: u64,
    ) {
        let full = |shard: &Shard| shard.map.len() >= max_entries || shard.bytes + need > max_bytes;
        if !full(self) {
            return;
        }
        // Expired entries go first: they can never be served again.
        let mut freed = 0;
        self.map.retain(|_, cached| {
            let keep = !cached.claims.expired_at(now, leeway);
            if !keep {
                freed += cached.cost;
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
        if !full(self) {
            return;
        }
        // Then arbitrary entries (HashMap order is effectively random). An eighth of the shard
        // goes at once, so this O(n) pass is paid once per many inserts, not on every insert.
        let len_target = max_entries - (max_entries / 8).max(1);
        let bytes_target = (max_bytes - max_bytes / 8).saturating_sub(need);
        let (mut len, mut bytes) = (self.map.len(), self.bytes);
        self.map.retain(|_, cached| {
            if len > len_target || bytes > bytes_target {
                len -= 1;
                bytes = bytes.saturating_sub(cached.cost);
                false
            } else {
                true
            }
        });
        self.bytes = bytes;
    }
}
