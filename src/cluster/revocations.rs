//! The revocation set: tokens ended by a logout (or by the backend's session check) and
//! subjects cut off by an operator. Checked on every request, so it is a local in-memory
//! lookup; with `[cluster]` it is filled from Redis and kept in step by pub/sub.
//!
//! Entries are ids (hashes), never token text, and each one is dropped once the token it
//! names would have expired anyway. Memory is bounded: past [`MAX_ENTRIES`] per kind, expired
//! entries are dropped first, then the ones that lapse soonest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;

use super::seal::Id;

/// The most entries kept per kind (tokens, subjects): about 40 MiB of tokens at worst.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Above this many entries an insert first drops the expired ones (at most once a second).
const PRUNE_ABOVE: usize = 4096;

/// One revocation, as stored and as sent between instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// One token (by `jti`, else the hash of the token), refused until `until` (unix seconds).
    Token { id: Id, until: u64 },
    /// Every token of a subject issued (`iat`) at or before `at`, kept until `until`.
    Subject { id: Id, at: u64, until: u64 },
}

impl Revocation {
    /// The revocation of an access token: its `jti` when it has one, else the whole token.
    pub fn token(jti: Option<&str>, token: &str, until: u64) -> Revocation {
        Revocation::Token {
            id: token_id(jti, token),
            until,
        }
    }

    /// The revocation of an opaque secret, such as a refresh token.
    pub fn secret(secret: &str, until: u64) -> Revocation {
        Revocation::Token {
            id: token_id(None, secret),
            until,
        }
    }

    pub fn subject(sub: &str, at: u64, until: u64) -> Revocation {
        Revocation::Subject {
            id: subject_id(sub),
            at,
            until,
        }
    }

    pub fn until(&self) -> u64 {
        match self {
            Revocation::Token { until, .. } | Revocation::Subject { until, .. } => *until,
        }
    }

    /// `t:<id>:<until>` or `s:<id>:<at>:<until>`.
    pub fn encode(&self) -> String {
        match self {
            Revocation::Token { id, until } => format!("t:{}:{until}", id.hex()),
            Revocation::Subject { id, at, until } => format!("s:{}:{at}:{until}", id.hex()),
        }
    }

    pub fn decode(text: &str) -> Option<Revocation> {
        let mut fields = text.split(':');
        let kind = fields.next()?;
        let id = Id::from_hex(fields.next()?)?;
        let revocation = match kind {
            "t" => Revocation::Token {
                id,
                until: fields.next()?.parse().ok()?,
            },
            "s" => Revocation::Subject {
                id,
                at: fields.next()?.parse().ok()?,
                until: fields.next()?.parse().ok()?,
            },
            _ => return None,
        };
        fields.next().is_none().then_some(revocation)
    }
}

fn token_id(jti: Option<&str>, token: &str) -> Id {
    match jti {
        Some(jti) => Id::of("jti", jti.as_bytes()),
        None => Id::of("token", token.as_bytes()),
    }
}

fn subject_id(sub: &str) -> Id {
    Id::of("sub", sub.as_bytes())
}

/// Why a token is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// This very token was revoked (a logout, or the backend ended its session).
    Token { until: u64 },
    /// Its subject was revoked at `at`, and the token was issued then or before.
    Subject { at: u64 },
}

impl std::fmt::Display for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Revoked::Token { until } => write!(f, "token revoked (until {until})"),
            Revoked::Subject { at } => {
                write!(f, "every token of its subject issued up to {at} revoked")
            }
        }
    }
}

/// The facts about a token that the revocation check reads.
#[derive(Clone, Copy, Debug)]
pub struct TokenFacts<'a> {
    pub token: &'a str,
    pub jti: Option<&'a str>,
    pub sub: Option<&'a str>,
    pub iat: Option<u64>,
}

#[derive(Default)]
struct Table<V> {
    map: HashMap<u128, V>,
    pruned_at: u64,
}

/// The in-memory revocation set. Reads take a shared lock only when there is something to
/// look up: with no revocation at all, a check is one atomic load.
#[derive(Default)]
pub struct Revocations {
    tokens: RwLock<Table<u64>>,
    /// Subject id → (revoked at, kept until).
    subjects: RwLock<Table<(u64, u64)>>,
    token_count: AtomicUsize,
    subject_count: AtomicUsize,
    /// The longest token lifetime seen at a login or refresh, in seconds: how long a subject
    /// revocation must be kept for every token it covers to have expired.
    longest_lifetime: AtomicU64,
}

impl Revocations {
    pub fn new() -> Revocations {
        Revocations::default()
    }

    pub fn is_empty(&self) -> bool {
        self.token_count.load(Ordering::Relaxed) == 0
            && self.subject_count.load(Ordering::Relaxed) == 0
    }

    pub fn len(&self) -> usize {
        self.token_count.load(Ordering::Relaxed) + self.subject_count.load(Ordering::Relaxed)
    }

    /// Whether `token` is revoked at `now`.
    pub fn check(&self, facts: TokenFacts<'_>, now: u64) -> Option<Revoked> {
        if self.token_count.load(Ordering::Relaxed) > 0 {
            let id = token_id(facts.jti, facts.token).short();
            let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
            if let Some(&until) = tokens.map.get(&id) {
                if until >= now {
                    return Some(Revoked::Token { until });
                }
            }
        }
        if self.subject_count.load(Ordering::Relaxed) > 0 {
            if let Some(sub) = facts.sub {
                let id = subject_id(sub).short();
                let subjects = self.subjects.read().unwrap_or_else(|p| p.into_inner());
                if let Some(&(at, until)) = subjects.map.get(&id) {
                    // A token without `iat` cannot show it was issued after the revocation.
                    if until >= now && facts.iat.is_none_or(|iat| iat <= at) {
                        return Some(Revoked::Subject { at });
                    }
                }
            }
        }
        None
    }

    /// Whether an opaque secret (a refresh token) was revoked.
    pub fn secret_revoked(&self, secret: &str, now: u64) -> bool {
        self.check(
            TokenFacts {
                token: secret,
                jti: None,
                sub: None,
                iat: None,
            },
            now,
        )
        .is_some()
    }

    /// Adds `revocation`; `false` when it was known already or has lapsed.
    pub fn insert(&self, revocation: &Revocation, now: u64) -> bool {
        if revocation.until() < now {
            return false;
        }
        let new = self.insert_unlapsed(revocation, now);
        if new {
            crate::telemetry::revocations(self.len());
        }
        new
    }

    fn insert_unlapsed(&self, revocation: &Revocation, now: u64) -> bool {
        match *revocation {
            Revocation::Token { id, until } => {
                let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
                make_room(&mut tokens, now, |until| *until);
                let slot = tokens.map.entry(id.short()).or_insert(0);
                let new = *slot < until;
                *slot = (*slot).max(until);
                self.token_count.store(tokens.map.len(), Ordering::Relaxed);
                new
            }
            Revocation::Subject { id, at, until } => {
                let mut subjects = self.subjects.write().unwrap_or_else(|p| p.into_inner());
                make_room(&mut subjects, now, |(_, until)| *until);
                let slot = subjects.map.entry(id.short()).or_insert((0, 0));
                let new = at > slot.0 || until > slot.1;
                *slot = (slot.0.max(at), slot.1.max(until));
                self.subject_count
                    .store(subjects.map.len(), Ordering::Relaxed);
                new
            }
        }
    }

    /// Notes a token lifetime seen at a login or refresh (see `subject_retention`).
    pub fn saw_lifetime(&self, seconds: u64) {
        self.longest_lifetime.fetch_max(seconds, Ordering::Relaxed);
    }

    /// How long a subject revocation is kept: the longest token lifetime seen, and at least
    /// `floor` (the refresh cookie's lifetime when tokens carry no readable `exp`).
    pub fn subject_retention(&self, floor: u64) -> u64 {
        self.longest_lifetime.load(Ordering::Relaxed).max(floor)
    }
}

/// Drops expired entries when the table is large, and the soonest-lapsing ones when it is full.
fn make_room<V>(table: &mut Table<V>, now: u64, until: impl Fn(&V) -> u64) {
    let len = table.map.len();
    if len < PRUNE_ABOVE || (len < MAX_ENTRIES && table.pruned_at == now) {
        return;
    }
    table.pruned_at = now;
    table.map.retain(|_, value| until(value) >= now);
    if table.map.len() >= MAX_ENTRIES {
        let mut lapses: Vec<u64> = table.map.values().map(&until).collect();
        let cut = lapses.len() / 8;
        let (_, &mut threshold, _) = lapses.select_nth_unstable(cut);
        tracing::warn!(
            entries = table.map.len(),
            "the revocation set is full: the revocations that lapse soonest are dropped"
        );
        table.map.retain(|_, value| until(value) > threshold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(
        token: &'a str,
        jti: Option<&'a str>,
        sub: Option<&'a str>,
        iat: Option<u64>,
    ) -> TokenFacts<'a> {
        TokenFacts {
            token,
            jti,
            sub,
            iat,
        }
    }

    #[test]
    fn tokens_by_jti_or_hash_until_they_lapse() {
        let set = Revocations::new();
        assert!(set.is_empty());
        assert_eq!(set.check(facts("a.b.c", Some("j1"), None, None), 100), None);
        assert!(set.insert(&Revocation::token(Some("j1"), "a.b.c", 200), 100));
        assert!(
            !set.insert(&Revocation::token(Some("j1"), "other", 200), 100),
            "same jti"
        );
        assert_eq!(
            set.check(facts("x.y.z", Some("j1"), None, None), 150),
            Some(Revoked::Token { until: 200 })
        );
        assert_eq!(set.check(facts("x.y.z", Some("j1"), None, None), 201), None);
        assert!(set.insert(&Revocation::token(None, "no-jti", 200), 100));
        assert!(set.check(facts("no-jti", None, None, None), 100).is_some());
        assert!(set.secret_revoked("no-jti", 100));
        assert!(!set.secret_revoked("another", 100));
        assert!(
            !set.insert(&Revocation::secret("old", 50), 100),
            "already lapsed"
        );
    }

    #[test]
    fn subjects_refuse_tokens_issued_up_to_the_revocation() {
        let set = Revocations::new();
        set.insert(&Revocation::subject("alice", 1000, 5000), 1000);
        let alice = |iat| facts("t", None, Some("alice"), iat);
        assert_eq!(
            set.check(alice(Some(999)), 1000),
            Some(Revoked::Subject { at: 1000 })
        );
        assert_eq!(
            set.check(alice(Some(1000)), 1000),
            Some(Revoked::Subject { at: 1000 })
        );
        assert_eq!(
            set.check(alice(None), 1000),
            Some(Revoked::Subject { at: 1000 })
        );
        assert_eq!(set.check(alice(Some(1001)), 1001), None);
        assert_eq!(
            set.check(facts("t", None, Some("bob"), Some(1)), 1000),
            None
        );
        assert_eq!(
            set.check(alice(Some(1)), 5001),
            None,
            "kept until 5000 only"
        );
    }

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        for r in [
            Revocation::token(Some("j"), "t", 9),
            Revocation::subject("alice", 5, 9),
        ] {
            assert_eq!(Revocation::decode(&r.encode()), Some(r));
            assert!(!r.encode().contains("alice"));
        }
        for bad in [
            "",
            "t",
            "t:zz:1",
            "x:00:1",
            &format!("t:{}:1:2", "0".repeat(64)),
        ] {
            assert_eq!(Revocation::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_full_table_drops_what_lapses_soonest() {
        let mut table = Table::<u64>::default();
        for i in 0..MAX_ENTRIES as u128 {
            table.map.insert(i, 1000 + i as u64);
        }
        make_room(&mut table, 10, |u| *u);
        assert!(table.map.len() < MAX_ENTRIES);
        assert!(!table.map.contains_key(&0));
        assert!(table.map.contains_key(&(MAX_ENTRIES as u128 - 1)));
    }
}
