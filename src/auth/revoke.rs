//! Revocation as authentication sees it: refusing revoked tokens (access, refresh, by
//! subject), revoking at logout and when the backend ends a session, an operator's revoke by
//! subject, and noting what the backend issues (lifetimes, and refresh tokens a subject
//! revocation must spare).
//!
//! A refresh cookie is only ever read unverified, so revoking one is bounded: it is
//! *proven* only beside a genuine access token of the same subject that was not revoked
//! before (each login proves one logout); any other is unproven, counted against the
//! client's budget, and kept in a small pool of its own (see `cluster/revocations.rs`).

use std::net::IpAddr;

use super::backend;
use super::jwt::Claims;
use super::session_check::Verdict;
use super::{now, Authenticator, Failure};
use crate::cluster::{client_key, Inserted, Revocation, Revoked, TokenFacts};

impl Authenticator {
    /// Refuses a revoked token: by its `jti` (else its hash), or by its subject and `iat`.
    /// A local lookup, and a single atomic load while nothing is revoked.
    pub(super) fn check_revoked(
        &self,
        token: &str,
        claims: &Claims,
        now: u64,
    ) -> Result<(), Failure> {
        let revocations = self.cluster.revocations();
        if revocations.is_empty() {
            return Ok(());
        }
        match revocations.check(&TokenFacts::of(token, claims.as_json()), now) {
            Some(revoked) => Err(Failure::Revoked(revoked)),
            None => Ok(()),
        }
    }

    /// Before a refresh: refuses a refresh token revoked by a logout, or whose (unverified)
    /// subject falls under a subject revocation and whose `iat` does not show it was issued
    /// after it. Refusing on unverified claims can only end a session.
    pub(super) fn check_refresh_revoked(
        &self,
        refresh_token: &str,
        now: u64,
    ) -> Result<(), Failure> {
        let revocations = self.cluster.revocations();
        if revocations.is_empty() {
            return Ok(());
        }
        let claims = backend::unverified_claims(refresh_token);
        let facts = match claims.as_ref().and_then(serde_json::Value::as_object) {
            // A refresh token is revoked by its hash, whatever `jti` it carries.
            Some(claims) => TokenFacts {
                jti: None,
                ..TokenFacts::of(refresh_token, claims)
            },
            None => TokenFacts::opaque(refresh_token),
        };
        match revocations.check(&facts, now) {
            Some(Revoked::Subject { .. })
                if facts.iat.is_none() && revocations.is_exempt(refresh_token, now) =>
            {
                Ok(())
            }
            Some(revoked) => Err(Failure::Revoked(revoked)),
            None => Ok(()),
        }
    }

    /// After a refresh: the renewed token names its subject for sure. If that subject is
    /// revoked, the refresh token must show it was issued after the revocation: by its `iat`,
    /// or, when it has none to read (an opaque token), by an exemption made when it was
    /// issued. Otherwise a stolen refresh token would outlive its subject's revocation.
    pub(super) fn check_renewed(
        &self,
        refresh_token: &str,
        renewed: &Claims,
        now: u64,
    ) -> Result<(), Failure> {
        let revocations = self.cluster.revocations();
        if revocations.is_empty() {
            return Ok(());
        }
        let Some(sub) = crate::cluster::revocations::subject(renewed.as_json()) else {
            return Ok(());
        };
        let Some(at) = revocations.subject_revoked_at(&sub, now) else {
            return Ok(());
        };
        let iat = backend::unverified_claims(refresh_token)
            .and_then(|claims| claims.get("iat")?.as_u64());
        let issued_after = match iat {
            Some(iat) => iat > at,
            None => revocations.is_exempt(refresh_token, now),
        };
        if issued_after {
            Ok(())
        } else {
            Err(Failure::Revoked(Revoked::Subject { at }))
        }
    }

    /// With `backend.session_check`: the backend's (cached) word on a verified token. A
    /// session it ended is revoked, with the refresh cookie that came with it.
    pub(super) async fn confirm_session(
        &self,
        token: &str,
        claims: &Claims,
        refresh: Option<&str>,
        client: IpAddr,
    ) -> Result<(), Failure> {
        let Some(check) = &self.session_check else {
            return Ok(());
        };
        let jti = claims.get("jti").and_then(serde_json::Value::as_str);
        let until = claims.exp().saturating_add(self.leeway());
        match check.confirm(token, jti, until).await {
            Verdict::Admit => Ok(()),
            Verdict::Ended => {
                if let Some(refresh) = refresh {
                    self.revoke_refresh(refresh, Some(claims), true, client)
                        .await;
                }
                Err(Failure::Revoked(Revoked::Token { until }))
            }
            Verdict::Unconfirmed(err) => Err(Failure::BackendDown(err)),
        }
    }

    /// Logout: revokes the access token (when genuine, expired or not) until it would lapse,
    /// and the refresh token until its `exp` (else the refresh cookie's lifetime).
    pub(crate) async fn revoke_session(
        &self,
        access: Option<&str>,
        refresh: Option<&str>,
        client: IpAddr,
    ) {
        let now = now();
        let genuine = access.and_then(|token| {
            let claims = self.verifier.verify_ignoring_exp(token, now).ok()?;
            Some((token, claims))
        });
        // Only an access token revoked now, for the first time, proves its refresh cookie.
        let mut fresh = false;
        if let Some((token, claims)) = &genuine {
            let jti = claims.get("jti").and_then(serde_json::Value::as_str);
            let until = claims.exp().saturating_add(self.leeway());
            if until >= now {
                fresh = self
                    .cluster
                    .revoke(Revocation::token(jti, token, until, true))
                    == Inserted::New;
            }
        }
        if let Some(refresh) = refresh {
            let claims = genuine.as_ref().map(|(_, claims)| &**claims);
            self.revoke_refresh(refresh, claims, fresh, client).await;
        }
    }

    /// Revokes a refresh cookie sent beside `access` (verified claims, if any), until its
    /// unverified `exp`, clamped to the refresh cookie's lifetime. It is proven when
    /// `vouched` and its readable subject, if any, is the access token's; otherwise it
    /// counts against the client's budget and goes to the unproven pool.
    async fn revoke_refresh(
        &self,
        refresh: &str,
        access: Option<&Claims>,
        vouched: bool,
        client: IpAddr,
    ) {
        let now = now();
        let refresh_claims = backend::unverified_claims(refresh);
        let refresh_subject = refresh_claims
            .as_ref()
            .and_then(serde_json::Value::as_object)
            .and_then(crate::cluster::revocations::subject);
        let access_subject =
            access.and_then(|claims| crate::cluster::revocations::subject(claims.as_json()));
        let same_subject = match (&refresh_subject, &access_subject) {
            (Some(refresh), Some(access)) => refresh == access,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        let proven = vouched && same_subject;
        let per_minute = self.session.refreshes_per_minute;
        if !proven && per_minute > 0 {
            let count = self.cluster.hit("revoke", &client_key(client)).await;
            if count.events > per_minute {
                tracing::warn!(%client, "logout: the refresh cookie is not revoked: the client's budget is spent");
                return;
            }
        }
        let longest = now.saturating_add(self.session.refresh_max_age.as_secs());
        let until = backend::unverified_exp(refresh).map_or(longest, |exp| exp.min(longest));
        self.cluster
            .revoke(Revocation::token(None, refresh, until, proven));
    }

    /// Notes tokens the backend has just issued (a login or a refresh): they need no session
    /// check, their lifetimes tell how long a revocation may need to last, and a refresh
    /// token issued after its subject's revocation that cannot show it (no readable `iat`)
    /// is exempted from that revocation.
    pub(super) fn issued(&self, access: &str, claims: &Claims, refresh: Option<&str>, now: u64) {
        let revocations = self.cluster.revocations();
        revocations.saw_lifetime(claims.exp().saturating_sub(now));
        let refresh_exp = refresh.and_then(backend::unverified_exp);
        if let Some(exp) = refresh_exp {
            revocations.saw_lifetime(exp.saturating_sub(now));
        }
        if let Some(check) = &self.session_check {
            check.vouch(access, claims.exp().saturating_add(self.leeway()));
        }
        let Some(refresh) = refresh else { return };
        let Some(sub) = crate::cluster::revocations::subject(claims.as_json()) else {
            return;
        };
        let Some(at) = revocations.subject_revoked_at(&sub, now) else {
            return;
        };
        let readable_iat = backend::unverified_claims(refresh)
            .and_then(|claims| claims.get("iat")?.as_u64())
            .is_some();
        if !readable_iat && claims.iat().is_some_and(|iat| iat > at) {
            let until = refresh_exp
                .unwrap_or_else(|| now.saturating_add(self.session.refresh_max_age.as_secs()));
            self.cluster.revoke(Revocation::exempt(refresh, until));
        }
    }

    /// `POST /sessions/revoke` on the admin listener: every token of `sub` issued up to now
    /// (plus `jwt.leeway`, for a backend whose clock runs ahead) is refused, on every
    /// instance. Returns the revocation time (unix seconds) and, with `[cluster]`, whether
    /// every instance heard of it already.
    pub async fn revoke_subject(&self, sub: &str) -> (u64, Option<bool>) {
        let at = now().saturating_add(self.leeway());
        let until = at
            .saturating_add(self.cluster.revocations().subject_retention())
            .saturating_add(self.leeway());
        let shared = self
            .cluster
            .revoke_everywhere(Revocation::subject(sub, at, until))
            .await;
        tracing::info!(
            sub,
            at,
            until,
            shared = ?shared,
            "subject revoked: its tokens issued up to `at` are refused"
        );
        (at, shared)
    }

    /// `jwt.leeway` in seconds.
    pub(super) fn leeway(&self) -> u64 {
        self.verifier.policy().leeway_secs
    }
}
