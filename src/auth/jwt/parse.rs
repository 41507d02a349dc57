//! Reading a compact JWS: its three segments in strict base64url, and the JSON of its header
//! and payload, read for the few members the checks need instead of into a map of every
//! member (which costs an allocation and a hash per member, on every token verified).
//!
//! Every member is still parsed exactly as a `serde_json::Value` would be (the same number,
//! string, escape and nesting rules: unknown members go through `deserialize_any` too), and a
//! name that occurs twice counts by its last occurrence, as a JSON map keeps it. So a payload
//! accepted here is one the lazily built map of [`super::Claims`] accepts as well, and the
//! checks judge the very values that map holds.

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{self, Deserialize, Deserializer as _, MapAccess, SeqAccess, Visitor};

use super::Rejection;

/// The parts of a compact JWS.
pub(super) struct Compact<'a> {
    /// `<header_b64>.<payload_b64>`: exactly the bytes the signature covers.
    pub(super) signing_input: &'a str,
    /// The decoded header, then the decoded signature: one allocation for both.
    header_and_signature: Vec<u8>,
    header_len: usize,
    /// The decoded payload, which becomes the claims' JSON text.
    pub(super) payload: Vec<u8>,
}

impl Compact<'_> {
    pub(super) fn header(&self) -> &[u8] {
        &self.header_and_signature[..self.header_len]
    }

    pub(super) fn signature(&self) -> &[u8] {
        &self.header_and_signature[self.header_len..]
    }
}

/// Splits a token into its three segments (found with `memchr`: a token is several hundred
/// bytes) and decodes them.
pub(super) fn split_compact(token: &str) -> Result<Compact<'_>, Rejection> {
    let three = || Rejection::Malformed("not three dot-separated segments (JWE is not accepted)");
    let bytes = token.as_bytes();
    let first = memchr::memchr(b'.', bytes).ok_or_else(three)?;
    let second = memchr::memchr(b'.', &bytes[first + 1..])
        .map(|at| first + 1 + at)
        .ok_or_else(three)?;
    if memchr::memchr(b'.', &bytes[second + 1..]).is_some() {
        return Err(three());
    }
    let (header, payload, signature) = (
        &token[..first],
        &token[first + 1..second],
        &token[second + 1..],
    );
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(Rejection::Malformed("empty segment"));
    }
    let mut header_and_signature = Vec::with_capacity(decoded_len(header) + decoded_len(signature));
    decode(header, &mut header_and_signature)?;
    let header_len = header_and_signature.len();
    let mut decoded_payload = Vec::with_capacity(decoded_len(payload));
    decode(payload, &mut decoded_payload)?;
    decode(signature, &mut header_and_signature)?;
    Ok(Compact {
        signing_input: &token[..second],
        header_and_signature,
        header_len,
        payload: decoded_payload,
    })
}

/// At least the decoded length of a segment of `segment.len()` characters.
fn decoded_len(segment: &str) -> usize {
    segment.len() / 4 * 3 + 3
}

/// Strict base64url, appended to `out`: only `[A-Za-z0-9_-]`, no padding, and canonical (the
/// unused low bits of the last character must be zero), so that each token has exactly one
/// spelling. The engine refuses all of that itself (`base64_engine_is_strict` pins it); the
/// alphabet is only looked at again to say which rule a refused segment broke.
fn decode(segment: &str, out: &mut Vec<u8>) -> Result<(), Rejection> {
    URL_SAFE_NO_PAD.decode_vec(segment, out).map_err(|_| {
        if segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            Rejection::Malformed("segment is not canonical base64url")
        } else {
            Rejection::Malformed("segment is not base64url")
        }
    })
}

/// A JSON value as the checks see it: a string (borrowed from the token when it has no
/// escapes), a non-negative integer (what `Value::as_u64` gives), or anything else.
#[derive(Debug, PartialEq)]
pub(super) enum Json<'a> {
    Str(Cow<'a, str>),
    Int(u64),
    Other,
}

impl<'a> Json<'a> {
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(text) => Some(text),
            _ => None,
        }
    }
}

/// The JOSE header parameters the checks read.
pub(super) struct Header<'a> {
    pub(super) alg: Option<Json<'a>>,
    pub(super) kid: Option<Cow<'a, str>>,
    pub(super) typ: Option<Cow<'a, str>>,
    /// Whether `crit` is present, whatever its value.
    pub(super) crit: bool,
}

/// Parses the header: a JSON object, no `cty` (nested JWTs are refused), `kid` and `typ`
/// strings when present.
pub(super) fn header(bytes: &[u8]) -> Result<Header<'_>, Rejection> {
    #[derive(Default)]
    struct Raw<'a> {
        alg: Option<Json<'a>>,
        kid: Option<Json<'a>>,
        typ: Option<Json<'a>>,
        crit: bool,
        cty: bool,
    }

    struct HeaderVisitor;

    impl<'de> Visitor<'de> for HeaderVisitor {
        type Value = Raw<'de>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JOSE header")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
            let mut raw = Raw::default();
            while let Some(Name(name)) = map.next_key()? {
                match &*name {
                    "alg" => raw.alg = Some(map.next_value()?),
                    "kid" => raw.kid = Some(map.next_value()?),
                    "typ" => raw.typ = Some(map.next_value()?),
                    "crit" => {
                        map.next_value::<Skip>()?;
                        raw.crit = true;
                    }
                    "cty" => {
                        map.next_value::<Skip>()?;
                        raw.cty = true;
                    }
                    _ => {
                        map.next_value::<Skip>()?;
                    }
                }
            }
            Ok(raw)
        }
    }

    let raw = object(bytes, HeaderVisitor)
        .map_err(|()| Rejection::Malformed("header is not a JSON object"))?;
    if raw.cty {
        return Err(Rejection::Malformed("nested JWT (cty) is not accepted"));
    }
    fn string<'a>(
        param: Option<Json<'a>>,
        error: &'static str,
    ) -> Result<Option<Cow<'a, str>>, Rejection> {
        match param {
            None => Ok(None),
            Some(Json::Str(text)) => Ok(Some(text)),
            Some(_) => Err(Rejection::Malformed(error)),
        }
    }
    Ok(Header {
        kid: string(raw.kid, "kid is not a string")?,
        typ: string(raw.typ, "typ is not a string")?,
        alg: raw.alg,
        crit: raw.crit,
    })
}

/// The claims the checks read.
#[derive(Default)]
pub(super) struct Payload<'a> {
    pub(super) exp: Option<Json<'a>>,
    pub(super) nbf: Option<Json<'a>>,
    pub(super) iat: Option<Json<'a>>,
    pub(super) iss: Option<Json<'a>>,
    pub(super) aud: Option<Audience<'a>>,
    pub(super) typ: Option<Json<'a>>,
    pub(super) token_type: Option<Json<'a>>,
}

/// `aud`: a string, an array of strings, or anything else (which holds no audience).
#[derive(Debug, PartialEq)]
pub(super) enum Audience<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
    Invalid,
}

/// Parses the payload, a JSON object.
pub(super) fn payload(bytes: &[u8]) -> Result<Payload<'_>, Rejection> {
    struct PayloadVisitor;

    impl<'de> Visitor<'de> for PayloadVisitor {
        type Value = Payload<'de>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JWT claims set")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Payload<'de>, A::Error> {
            let mut payload = Payload::default();
            while let Some(Name(name)) = map.next_key()? {
                match &*name {
                    "exp" => payload.exp = Some(map.next_value()?),
                    "nbf" => payload.nbf = Some(map.next_value()?),
                    "iat" => payload.iat = Some(map.next_value()?),
                    "iss" => payload.iss = Some(map.next_value()?),
                    "aud" => payload.aud = Some(map.next_value()?),
                    "typ" => payload.typ = Some(map.next_value()?),
                    "token_type" => payload.token_type = Some(map.next_value()?),
                    _ => {
                        map.next_value::<Skip>()?;
                    }
                }
            }
            Ok(payload)
        }
    }

    object(bytes, PayloadVisitor).map_err(|()| Rejection::Malformed("payload is not a JSON object"))
}

/// Runs `visitor` over `bytes`, which must hold one JSON object and nothing else.
fn object<'a, V: Visitor<'a>>(bytes: &'a [u8], visitor: V) -> Result<V::Value, ()> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = deserializer.deserialize_map(visitor).map_err(|_| ())?;
    deserializer.end().map_err(|_| ())?;
    Ok(value)
}

/// A member name: borrowed from the token when it has no escapes (an escaped name is
/// compared unescaped, as a JSON map keys it).
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;

        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(text)))
            }

            fn visit_str<E>(self, text: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(text.to_owned())))
            }
        }

        deserializer.deserialize_str(NameVisitor)
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct JsonVisitor;

        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Json<'de>, E> {
                Ok(Json::Str(Cow::Borrowed(text)))
            }

            fn visit_str<E>(self, text: &str) -> Result<Json<'de>, E> {
                Ok(Json::Str(Cow::Owned(text.to_owned())))
            }

            fn visit_u64<E>(self, number: u64) -> Result<Json<'de>, E> {
                Ok(Json::Int(number))
            }

            fn visit_i64<E>(self, number: i64) -> Result<Json<'de>, E> {
                Ok(u64::try_from(number).map_or(Json::Other, Json::Int))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Json<'de>, E> {
                Ok(Json::Other)
            }

            fn visit_bool<E>(self, _: bool) -> Result<Json<'de>, E> {
                Ok(Json::Other)
            }

            fn visit_unit<E>(self) -> Result<Json<'de>, E> {
                Ok(Json::Other)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Json<'de>, A::Error> {
                Skip::seq(seq).map(|Skip| Json::Other)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Json<'de>, A::Error> {
                Skip::map(map).map(|Skip| Json::Other)
            }
        }

        deserializer.deserialize_any(JsonVisitor)
    }
}

impl<'de> Deserialize<'de> for Audience<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AudienceVisitor;

        impl<'de> Visitor<'de> for AudienceVisitor {
            type Value = Audience<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Audience<'de>, E> {
                Ok(Audience::One(Cow::Borrowed(text)))
            }

            fn visit_str<E>(self, text: &str) -> Result<Audience<'de>, E> {
                Ok(Audience::One(Cow::Owned(text.to_owned())))
            }

            fn visit_u64<E>(self, _: u64) -> Result<Audience<'de>, E> {
                Ok(Audience::Invalid)
            }

            fn visit_i64<E>(self, _: i64) -> Result<Audience<'de>, E> {
                Ok(Audience::Invalid)
            }

            fn visit_f64<E>(self, _: f64) -> Result<Audience<'de>, E> {
                Ok(Audience::Invalid)
            }

            fn visit_bool<E>(self, _: bool) -> Result<Audience<'de>, E> {
                Ok(Audience::Invalid)
            }

            fn visit_unit<E>(self) -> Result<Audience<'de>, E> {
                Ok(Audience::Invalid)
            }

            /// An array of strings; one member that is not a string makes the whole invalid
            /// (every member is still parsed).
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Audience<'de>, A::Error> {
                let mut all = Some(Vec::new());
                while let Some(member) = seq.next_element::<Json<'de>>()? {
                    match (member, &mut all) {
                        (Json::Str(text), Some(all)) => all.push(text),
                        _ => all = None,
                    }
                }
                Ok(all.map_or(Audience::Invalid, Audience::Many))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Audience<'de>, A::Error> {
                Skip::map(map).map(|Skip| Audience::Invalid)
            }
        }

        deserializer.deserialize_any(AudienceVisitor)
    }
}

/// Any JSON value, parsed in full (as `serde_json::Value` would parse it: numbers in range,
/// strings valid, nesting bounded) and thrown away.
struct Skip;

impl Skip {
    fn seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SkipVisitor;

        impl<'de> Visitor<'de> for SkipVisitor {
            type Value = Skip;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }

            fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_unit<E>(self) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skip, A::Error> {
                Skip::seq(seq)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skip, A::Error> {
                Skip::map(map)
            }
        }

        deserializer.deserialize_any(SkipVisitor)
    }
}
