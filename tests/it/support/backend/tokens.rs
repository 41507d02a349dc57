//! Issuing and checking the backend's tokens.

use serde_json::{json, Map, Value};

use super::{lock, Fault, Grant, Issued, Shape, State};
use crate::support::keys::{self, TestKey};

impl State {
    pub(super) fn issue(&self, login: &str, with_refresh: bool) -> Issued {
        let key = match &self.foreign_key {
            Some(foreign) => foreign.clone(),
            None => lock(&self.signing_key).clone(),
        };
        let mut claims = self.access_claims(login, self.settings.access_ttl);
        if self.settings.fault == Some(Fault::LongToken) {
            claims.insert("padding".into(), json!("p".repeat(6 * 1024)));
        }
        let mut access = key.sign(Value::Object(claims));
        if self.settings.fault == Some(Fault::WeirdToken) {
            access.push_str("; Path=/ evil");
        }
        let refresh = (with_refresh && self.settings.shape != Shape::Token)
            .then(|| self.issue_refresh(&key, login));
        Issued {
            login: login.to_owned(),
            access,
            refresh,
        }
    }

    pub(super) fn access_claims(&self, login: &str, ttl_secs: i64) -> Map<String, Value> {
        let mut claims = self.base_claims(login, ttl_secs);
        claims.insert("email".into(), json!(login));
        if self.settings.shape == Shape::SimpleJwt {
            claims.insert("token_type".into(), json!("access"));
        }
        if let Some(user) = self.settings.users.iter().find(|u| u.login == login) {
            claims.extend(user.claims.clone());
        }
        claims
    }

    /// Signs (or, with `opaque_refresh`, draws) and registers a refresh token.
    pub(super) fn issue_refresh(&self, key: &TestKey, login: &str) -> String {
        let mut claims = self.base_claims(login, self.settings.refresh_ttl);
        claims.insert("typ".into(), json!("refresh"));
        claims.insert("token_type".into(), json!("refresh"));
        let exp = claims["exp"]
            .as_i64()
            .expect("base claims set an integer exp");
        let token = if self.settings.opaque_refresh {
            keys::b64(josekit::util::random_bytes(32))
        } else {
            key.sign(Value::Object(claims))
        };
        lock(&self.grants).insert(
            token.clone(),
            Grant {
                login: login.to_owned(),
                exp,
                revoked: false,
            },
        );
        token
    }

    fn base_claims(&self, login: &str, ttl_secs: i64) -> Map<String, Value> {
        let now = keys::now() + self.settings.clock_ahead;
        let jti = keys::b64(josekit::util::random_bytes(12));
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(login));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + ttl_secs));
        claims.insert("jti".into(), json!(jti));
        if let Some(issuer) = &self.settings.issuer {
            claims.insert("iss".into(), json!(issuer));
        }
        if let Some(audience) = &self.settings.audience {
            claims.insert("aud".into(), json!(audience));
        }
        claims
    }

    pub(super) fn verify_access(&self, token: &str) -> Result<Map<String, Value>, String> {
        let keys = lock(&self.known_keys).clone();
        let mut failure = String::from("no keys");
        let claims = keys
            .iter()
            .find_map(|key| match key.verify(token) {
                Ok(claims) => Some(claims),
                Err(why) => {
                    failure = why;
                    None
                }
            })
            .ok_or(failure)?;
        let Value::Object(claims) = claims else {
            return Err("claims are not an object".to_owned());
        };
        let is_refresh = |name: &str| claims.get(name) == Some(&json!("refresh"));
        if is_refresh("typ") || is_refresh("token_type") {
            return Err("a refresh token is not an access token".to_owned());
        }
        if let Some(issuer) = &self.settings.issuer {
            if claims.get("iss") != Some(&json!(issuer)) {
                return Err("wrong issuer".to_owned());
            }
        }
        if let Some(audience) = &self.settings.audience {
            let ours = match claims.get("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => auds.contains(&json!(audience)),
                _ => false,
            };
            if !ours {
                return Err("wrong audience".to_owned());
            }
        }
        Ok(claims)
    }
}
