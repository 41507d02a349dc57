//! What makes shared state safe to hand to Redis: names derived from secrets by hashing,
//! and values sealed (AEAD) under a key derived from the secret they answer.
//!
//! A refresh token never leaves the process: Redis sees `SHA-256("refresh" ‖ token)` as a
//! key name and a ChaCha20-Poly1305 box whose key is HKDF-SHA256 of the token, so a reader
//! of Redis learns neither the token nor the tokens that answered it, and cannot forge an
//! answer that any instance would accept.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::digest::{digest, SHA256};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

/// A 256-bit name derived from a secret (a token, a `jti`, a subject).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// `SHA-256(label ‖ 0x00 ‖ secret)`: the label keeps ids of different kinds apart.
    pub fn of(label: &str, secret: &[u8]) -> Id {
        let mut input = Vec::with_capacity(label.len() + 1 + secret.len());
        input.extend_from_slice(label.as_bytes());
        input.push(0);
        input.extend_from_slice(secret);
        let hash = digest(&SHA256, &input);
        let mut out = [0u8; 32];
        out.copy_from_slice(hash.as_ref());
        Id(out)
    }

    /// The first 128 bits, as the key of the in-memory maps.
    pub fn short(&self) -> u128 {
        let mut first = [0u8; 16];
        first.copy_from_slice(&self.0[..16]);
        u128::from_be_bytes(first)
    }

    pub fn hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from(DIGITS[usize::from(byte >> 4)]));
            out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        out
    }

    pub fn from_hex(text: &str) -> Option<Id> {
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Id(out))
    }
}

/// An AEAD key derived from one secret; seals and opens values stored under that secret's id.
pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    /// HKDF-SHA256 of `secret` with a fixed salt and `purpose` as the info string.
    pub fn new(purpose: &str, secret: &[u8]) -> Sealer {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"portcullis cluster seal v1");
        let prk = salt.extract(secret);
        let info = [purpose.as_bytes()];
        let okm = prk
            .expand(&info, &CHACHA20_POLY1305)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let mut bytes = [0u8; 32];
        okm.fill(&mut bytes)
            .expect("the output length was fixed by the key type");
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .expect("32 bytes is a ChaCha20-Poly1305 key");
        Sealer {
            key: LessSafeKey::new(key),
        }
    }

    /// `nonce ‖ ciphertext ‖ tag`, bound to `context` (the id it is stored under).
    pub fn seal(&self, plaintext: &[u8], context: &Id) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut buffer = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.0),
                &mut buffer,
            )
            .ok()?;
        let mut out = Vec::with_capacity(NONCE_LEN + buffer.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buffer);
        Some(out)
    }

    /// The plaintext, or `None` for anything not sealed by this key for `context`.
    pub fn open(&self, sealed: &[u8], context: &Id) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + aead::MAX_TAG_LEN {
            return None;
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.0), &mut buffer)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_kinds_apart() {
        let a = Id::of("refresh", b"token");
        assert_eq!(a, Id::of("refresh", b"token"));
        assert_ne!(a, Id::of("check", b"token"));
        assert_eq!(Id::from_hex(&a.hex()), Some(a));
        assert_eq!(Id::from_hex("zz"), None);
        assert!(!a.hex().contains("token"));
    }

    #[test]
    fn only_the_same_secret_opens_a_seal() {
        let context = Id::of("refresh", b"secret-token");
        let sealed = Sealer::new("refresh", b"secret-token")
            .seal(b"{\"access\":\"x\"}", &context)
            .expect("seal");
        assert!(!sealed.windows(6).any(|w| w == b"access"));
        let open = Sealer::new("refresh", b"secret-token").open(&sealed, &context);
        assert_eq!(open.as_deref(), Some(&b"{\"access\":\"x\"}"[..]));
        assert_eq!(
            Sealer::new("refresh", b"other").open(&sealed, &context),
            None
        );
        let elsewhere = Id::of("refresh", b"other");
        assert_eq!(
            Sealer::new("refresh", b"secret-token").open(&sealed, &elsewhere),
            None
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            Sealer::new("refresh", b"secret-token").open(&tampered, &context),
            None
        );
    }
}
