//! The revocation set: tokens ended by a logout (or by the backend's session check) and
//! subjects cut off by an operator. Checked on every request, so it is a local in-memory
//! lookup; with `[cluster]` it is filled from Redis and kept in step by pub/sub.
//!
//! Entries are ids (hashes), never token text, and each one is dropped once the token it
//! names would have expired anyway (an expiry heap makes that cost only the entries that
//! lapse). Memory is bounded, and an attacker cannot push real revocations out:
//! - every `until` is clamped to the horizon (the longest token lifetime this instance knows
//!   of), whoever asks for more;
//! - a revocation that nothing proves (a refresh cookie sent to logout without a genuine
//!   access token) is *unproven*: those have a small pool of their own, and a full pool
//!   refuses new ones;
//! - a full table refuses new entries (logged as an error) rather than evicting entries that
//!   are still in force.
//!
//! Besides revocations it keeps *exemptions*: refresh tokens without a readable issue time
//! that were issued after their subject's revocation (a login after an operator's revoke),
//! which that revocation must not refuse.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;

use super::seal::Id;

/// The most token revocations kept (proven and unproven together): about 64 MiB at worst.
pub const MAX_ENTRIES: usize = 1_000_000;
/// The most unproven token revocations kept.
pub const MAX_UNPROVEN: usize = 100_000;
/// The most subject revocations, and the most exemptions, kept.
pub const MAX_SUBJECTS: usize = 100_000;
/// A subject revocation is kept at least this long (an operator's revoke is rare and small,
/// and refresh tokens may outlive anything this instance has seen since it started).
pub const SUBJECT_FLOOR: u64 = 30 * 86_400;
/// No record is kept longer than this, whatever it asks for.
const CEILING: u64 = 400 * 86_400;

/// One revocation, as stored and as sent between instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// One token (by `jti`, else the hash of the token), refused until `until` (unix
    /// seconds). `proven`: a verified token (or the backend, or an operator) stands behind
    /// it; an unproven one is a refresh cookie someone sent, and has a small pool of its own.
    Token { id: Id, until: u64, proven: bool },
    /// Every token of a subject issued (`iat`) at or before `at`, kept until `until`.
    Subject { id: Id, at: u64, until: u64 },
    /// A refresh token issued after its subject's revocation, whose issue time cannot be
    /// read: that revocation does not refuse it.
    Exempt { id: Id, until: u64 },
}

impl Revocation {
    /// The revocation of a token: by its `jti` when it has one, else the whole token (an
    /// opaque refresh token is revoked with `jti = None`).
    pub fn token(jti: Option<&str>, token: &str, until: u64, proven: bool) -> Revocation {
        Revocation::Token {
            id: token_id(jti, token),
            until,
            proven,
        }
    }

    pub fn subject(sub: &str, at: u64, until: u64) -> Revocation {
        Revocation::Subject {
            id: subject_id(sub),
            at,
            until,
        }
    }

    pub fn exempt(refresh_token: &str, until: u64) -> Revocation {
        Revocation::Exempt {
            id: token_id(None, refresh_token),
            until,
        }
    }

    pub fn until(&self) -> u64 {
        match self {
            Revocation::Token { until, .. }
            | Revocation::Subject { until, .. }
            | Revocation::Exempt { until, .. } => *until,
        }
    }

    /// Whether nothing proves this revocation (see [`Revocation::Token`]).
    pub fn is_unproven(&self) -> bool {
        matches!(self, Revocation::Token { proven: false, .. })
    }

    /// `t:<id>:<until>` (proven), `u:<id>:<until>` (unproven), `s:<id>:<at>:<until>`,
    /// `x:<id>:<until>`.
    pub fn encode(&self) -> String {
        match self {
            Revocation::Token { id, until, proven } => {
                let kind = if *proven { 't' } else { 'u' };
                format!("{kind}:{}:{until}", id.hex())
            }
            Revocation::Subject { id, at, until } => format!("s:{}:{at}:{until}", id.hex()),
            Revocation::Exempt { id, until } => format!("x:{}:{until}", id.hex()),
        }
    }

    pub fn decode(text: &str) -> Option<Revocation> {
        let mut fields = text.split(':');
        let kind = fields.next()?;
        let id = Id::from_hex(fields.next()?)?;
        let mut number = || fields.next()?.parse::<u64>().ok();
        let revocation = match kind {
            "t" | "u" => Revocation::Token {
                id,
                until: number()?,
                proven: kind == "t",
            },
            "s" => Revocation::Subject {
                id,
                at: number()?,
                until: number()?,
            },
            "x" => Revocation::Exempt {
                id,
                until: number()?,
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

/// Whose token it is, for subject revocations: `sub`, else SimpleJWT's `user_id` (a number
/// or a string), the claim Django REST framework backends name the user with.
pub fn subject(claims: &serde_json::Map<String, serde_json::Value>) -> Option<Cow<'_, str>> {
    match claims.get("sub").or_else(|| claims.get("user_id"))? {
        serde_json::Value::String(s) => Some(Cow::Borrowed(s)),
        serde_json::Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// Why a token is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// This very token was revoked (a logout, or the backend ended its session).
    Token { until: u64 },
    /// Its subject was revoked at `at`, and the token was issued then or before (or cannot
    /// show when it was issued).
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
#[derive(Clone, Debug)]
pub struct TokenFacts<'a> {
    pub token: &'a str,
    pub jti: Option<&'a str>,
    pub sub: Option<Cow<'a, str>>,
    pub iat: Option<u64>,
}

impl<'a> TokenFacts<'a> {
    /// The facts of `token` from its claims (verified, or for a refresh token read unverified).
    pub fn of(token: &'a str, claims: &'a serde_json::Map<String, serde_json::Value>) -> Self {
        TokenFacts {
            token,
            jti: claims.get("jti").and_then(serde_json::Value::as_str),
            sub: subject(claims),
            iat: claims.get("iat").and_then(serde_json::Value::as_u64),
        }
    }

    /// An opaque secret: only its hash is known.
    pub fn opaque(token: &'a str) -> Self {
        TokenFacts {
            token,
            jti: None,
            sub: None,
            iat: None,
        }
    }
}

/// What became of an insert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// New, or it extends what was known: worth telling other instances.
    New,
    /// Known already (or lapsed): nothing to tell.
    Known,
    /// Refused: the table (or the unproven pool) is full.
    Refused,
}

/// A map of ids to values that lapse, with a heap of expiry times so that dropping what
/// lapsed costs only the lapsed entries.
struct Table<V> {
    map: HashMap<u128, V>,
    expiry: BinaryHeap<Reverse<(u64, u128)>>,
    cap: usize,
}

impl<V> Table<V> {
    fn new(cap: usize) -> Table<V> {
        Table {
            map: HashMap::new(),
            expiry: BinaryHeap::new(),
            cap,
        }
    }

    /// Sets `id` to `value`, which lapses at `until`.
    fn set(&mut self, id: u128, value: V, until: u64) {
        self.map.insert(id, value);
        self.expiry.push(Reverse((until, id)));
    }

    /// Drops the entries that lapsed before `now` (an entry extended since it was queued
    /// stays: its later expiry is queued too).
    fn prune(&mut self, now: u64, until: impl Fn(&V) -> u64, mut dropped: impl FnMut(&V)) {
        while let Some(&Reverse((at, id))) = self.expiry.peek() {
            if at >= now {
                break;
            }
            self.expiry.pop();
            if self.map.get(&id).is_some_and(|v| until(v) < now) {
                if let Some(value) = self.map.remove(&id) {
                    dropped(&value);
                }
            }
        }
        // The heap holds one item per extension; rebuild it if it has grown well past the map.
        if self.expiry.len() > 2 * self.map.len() + 1024 {
            self.expiry = self
                .map
                .iter()
                .map(|(&id, v)| Reverse((until(v), id)))
                .collect();
        }
    }
}

/// The in-memory revocation set. Reads take a shared lock only when there is something to
/// look up: with no revocation at all, a check is one atomic load.
pub struct Revocations {
    /// Token id → (until, proven).
    tokens: RwLock<Table<(u64, bool)>>,
    /// Subject id → (revoked at, kept until).
    subjects: RwLock<Table<(u64, u64)>>,
    /// Refresh token id → until.
    exempt: RwLock<Table<u64>>,
    token_count: AtomicUsize,
    unproven_count: AtomicUsize,
    subject_count: AtomicUsize,
    exempt_count: AtomicUsize,
    max_unproven: usize,
    /// The longest token lifetime seen at a login or refresh, and the configured floor
    /// (refresh cookie lifetime plus leeway), in seconds: how long a token can live.
    longest_lifetime: AtomicU64,
    /// Unix second of the last "full" error, so a flood logs once a minute.
    full_logged: AtomicU64,
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations::with_limits(MAX_ENTRIES, MAX_UNPROVEN, MAX_SUBJECTS)
    }
}

impl Revocations {
    pub fn new() -> Revocations {
        Revocations::default()
    }

    /// A set with other bounds (tests).
    pub fn with_limits(entries: usize, unproven: usize, subjects: usize) -> Revocations {
        Revocations {
            tokens: RwLock::new(Table::new(entries)),
            subjects: RwLock::new(Table::new(subjects)),
            exempt: RwLock::new(Table::new(subjects)),
            token_count: AtomicUsize::new(0),
            unproven_count: AtomicUsize::new(0),
            subject_count: AtomicUsize::new(0),
            exempt_count: AtomicUsize::new(0),
            max_unproven: unproven,
            longest_lifetime: AtomicU64::new(0),
            full_logged: AtomicU64::new(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.token_count.load(Ordering::Relaxed) == 0
            && self.subject_count.load(Ordering::Relaxed) == 0
    }

    /// Revocations in force (tokens and subjects; exemptions are not counted).
    pub fn len(&self) -> usize {
        self.token_count.load(Ordering::Relaxed) + self.subject_count.load(Ordering::Relaxed)
    }

    /// Unproven token revocations kept.
    pub fn unproven(&self) -> usize {
        self.unproven_count.load(Ordering::Relaxed)
    }

    /// Whether the token is revoked at `now`.
    pub fn check(&self, facts: &TokenFacts<'_>, now: u64) -> Option<Revoked> {
        if self.token_count.load(Ordering::Relaxed) > 0 {
            let id = token_id(facts.jti, facts.token).short();
            let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
            if let Some(&(until, _)) = tokens.map.get(&id) {
                if until >= now {
                    return Some(Revoked::Token { until });
                }
            }
        }
        let at = self.subject_revoked_at(facts.sub.as_deref()?, now)?;
        // A token without `iat` cannot show it was issued after the revocation.
        facts
            .iat
            .is_none_or(|iat| iat <= at)
            .then_some(Revoked::Subject { at })
    }

    /// When `sub` was revoked, if a revocation of it is in force.
    pub fn subject_revoked_at(&self, sub: &str, now: u64) -> Option<u64> {
        if self.subject_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let id = subject_id(sub).short();
        let subjects = self.subjects.read().unwrap_or_else(|p| p.into_inner());
        let &(at, until) = subjects.map.get(&id)?;
        (until >= now).then_some(at)
    }

    /// Whether `refresh_token` was issued after its subject's revocation (see
    /// [`Revocation::Exempt`]).
    pub fn is_exempt(&self, refresh_token: &str, now: u64) -> bool {
        if self.exempt_count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let id = token_id(None, refresh_token).short();
        let exempt = self.exempt.read().unwrap_or_else(|p| p.into_inner());
        exempt.map.get(&id).is_some_and(|&until| until >= now)
    }

    /// Adds `revocation`, its `until` clamped to the horizon.
    pub fn insert(&self, revocation: &Revocation, now: u64) -> Inserted {
        if revocation.until() < now {
            return Inserted::Known;
        }
        let inserted = match *revocation {
            Revocation::Token { id, until, proven } => {
                let until = until.min(now.saturating_add(self.horizon()));
                let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
                let mut unproven = self.unproven_count.load(Ordering::Relaxed);
                tokens.prune(
                    now,
                    |&(until, _)| until,
                    |&(_, proven)| {
                        if !proven {
                            unproven = unproven.saturating_sub(1);
                        }
                    },
                );
                let known = tokens.map.get(&id.short()).copied();
                let unproven_full = !proven && unproven >= self.max_unproven;
                let inserted = match known {
                    Some((was, was_proven)) if was >= until && (was_proven || !proven) => {
                        Inserted::Known
                    }
                    None if tokens.map.len() >= tokens.cap || unproven_full => Inserted::Refused,
                    _ => {
                        match known {
                            None if !proven => unproven += 1,
                            Some((_, false)) if proven => unproven = unproven.saturating_sub(1),
                            _ => {}
                        }
                        let (was, was_proven) = known.unwrap_or((0, false));
                        let until = was.max(until);
                        tokens.set(id.short(), (until, was_proven || proven), until);
                        Inserted::New
                    }
                };
                self.unproven_count.store(unproven, Ordering::Relaxed);
                self.token_count.store(tokens.map.len(), Ordering::Relaxed);
                inserted
            }
            Revocation::Subject { id, at, until } => {
                let until = until.min(now.saturating_add(CEILING));
                let mut subjects = self.subjects.write().unwrap_or_else(|p| p.into_inner());
                subjects.prune(now, |&(_, until)| until, |_| {});
                let inserted = match subjects.map.get(&id.short()).copied() {
                    Some((was_at, was_until)) if was_at >= at && was_until >= until => {
                        Inserted::Known
                    }
                    None if subjects.map.len() >= subjects.cap => Inserted::Refused,
                    _ => {
                        let (was_at, was_until) =
                            subjects.map.get(&id.short()).copied().unwrap_or((0, 0));
                        let until = was_until.max(until);
                        subjects.set(id.short(), (was_at.max(at), until), until);
                        Inserted::New
                    }
                };
                self.subject_count
                    .store(subjects.map.len(), Ordering::Relaxed);
                inserted
            }
            Revocation::Exempt { id, until } => {
                let until = until.min(now.saturating_add(self.horizon()));
                let mut exempt = self.exempt.write().unwrap_or_else(|p| p.into_inner());
                exempt.prune(now, |&until| until, |_| {});
                let inserted = match exempt.map.get(&id.short()).copied() {
                    Some(was) if was >= until => Inserted::Known,
                    None if exempt.map.len() >= exempt.cap => Inserted::Refused,
                    _ => {
                        let until = exempt.map.get(&id.short()).copied().unwrap_or(0).max(until);
                        exempt.set(id.short(), until, until);
                        Inserted::New
                    }
                };
                self.exempt_count.store(exempt.map.len(), Ordering::Relaxed);
                inserted
            }
        };
        match inserted {
            Inserted::New => crate::telemetry::revocations(self.len()),
            Inserted::Refused => self.refused(revocation, now),
            Inserted::Known => {}
        }
        inserted
    }

    fn refused(&self, revocation: &Revocation, now: u64) {
        crate::telemetry::revocations_refused(if revocation.is_unproven() {
            "unproven_full"
        } else {
            "full"
        });
        let last = self.full_logged.load(Ordering::Relaxed);
        if now >= last.saturating_add(60)
            && self
                .full_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            if revocation.is_unproven() {
                tracing::warn!(
                    pool = self.max_unproven,
                    "the pool of unproven revocations (refresh cookies sent to logout without their access token) is full: new ones are refused until some lapse"
                );
            } else {
                tracing::error!(
                    entries = self.len(),
                    "the revocation set is full: new revocations are refused (entries in force are never dropped)"
                );
            }
        }
    }

    /// Notes a token lifetime (seconds) seen at a login or refresh, or configured as the
    /// floor (the refresh cookie's lifetime plus leeway).
    pub fn saw_lifetime(&self, seconds: u64) {
        self.longest_lifetime
            .fetch_max(seconds.min(CEILING), Ordering::Relaxed);
    }

    /// How long from now a token revocation may need to last: the longest lifetime known.
    pub fn horizon(&self) -> u64 {
        self.longest_lifetime.load(Ordering::Relaxed).max(60)
    }

    /// How long a subject revocation is kept: every token it covers must have expired.
    pub fn subject_retention(&self) -> u64 {
        self.horizon().max(SUBJECT_FLOOR)
    }
}

#[cfg(test)]
mod tests;
