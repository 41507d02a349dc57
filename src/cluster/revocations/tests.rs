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
        sub: sub.map(Cow::Borrowed),
        iat,
    }
}

fn proven(jti: Option<&str>, token: &str, until: u64) -> Revocation {
    Revocation::token(jti, token, until, true)
}

#[test]
fn tokens_by_jti_or_hash_until_they_lapse() {
    let set = Revocations::new();
    set.saw_lifetime(10_000);
    assert!(set.is_empty());
    assert_eq!(
        set.check(&facts("a.b.c", Some("j1"), None, None), 100),
        None
    );
    assert_eq!(
        set.insert(&proven(Some("j1"), "a.b.c", 200), 100),
        Inserted::New
    );
    assert_eq!(
        set.insert(&proven(Some("j1"), "other", 200), 100),
        Inserted::Known,
        "same jti"
    );
    assert_eq!(
        set.check(&facts("x.y.z", Some("j1"), None, None), 150),
        Some(Revoked::Token { until: 200 })
    );
    assert_eq!(
        set.check(&facts("x.y.z", Some("j1"), None, None), 201),
        None
    );
    set.insert(&proven(None, "no-jti", 200), 100);
    assert!(set.check(&TokenFacts::opaque("no-jti"), 100).is_some());
    assert!(set.check(&TokenFacts::opaque("another"), 100).is_none());
    assert_eq!(
        set.insert(&proven(None, "old", 50), 100),
        Inserted::Known,
        "already lapsed"
    );
}

#[test]
fn subjects_refuse_tokens_issued_up_to_the_revocation() {
    let set = Revocations::new();
    set.insert(&Revocation::subject("alice", 1000, 5000), 1000);
    let alice = |iat| facts("t", None, Some("alice"), iat);
    assert_eq!(
        set.check(&alice(Some(999)), 1000),
        Some(Revoked::Subject { at: 1000 })
    );
    assert_eq!(
        set.check(&alice(Some(1000)), 1000),
        Some(Revoked::Subject { at: 1000 })
    );
    assert_eq!(
        set.check(&alice(None), 1000),
        Some(Revoked::Subject { at: 1000 })
    );
    assert_eq!(set.check(&alice(Some(1001)), 1001), None);
    assert_eq!(
        set.check(&facts("t", None, Some("bob"), Some(1)), 1000),
        None
    );
    assert_eq!(
        set.check(&alice(Some(1)), 5001),
        None,
        "kept until 5000 only"
    );
    assert_eq!(set.subject_revoked_at("alice", 2000), Some(1000));
    assert_eq!(set.subject_revoked_at("bob", 2000), None);
}

#[test]
fn records_round_trip_and_garbage_is_refused() {
    for r in [
        proven(Some("j"), "t", 9),
        Revocation::token(None, "refresh", 9, false),
        Revocation::subject("alice", 5, 9),
        Revocation::exempt("refresh", 9),
    ] {
        assert_eq!(Revocation::decode(&r.encode()), Some(r));
        assert!(!r.encode().contains("alice") && !r.encode().contains("refresh"));
    }
    for bad in [
        "",
        "t",
        "t:zz:1",
        "x:00:1",
        "u:00:1",
        &format!("t:{}:1:2", "0".repeat(64)),
        &format!("s:{}:1", "0".repeat(64)),
        &format!("q:{}:1", "0".repeat(64)),
    ] {
        assert_eq!(Revocation::decode(bad), None, "{bad}");
    }
}

#[test]
fn a_full_table_refuses_new_entries_and_keeps_those_in_force() {
    let set = Revocations::with_limits(100, 10, 10);
    set.saw_lifetime(1_000_000);
    // Short-lived real revocations first, then a flood of long-lived ones.
    for i in 0..50 {
        let jti = format!("real-{i}");
        assert_eq!(
            set.insert(&proven(Some(&jti), "", 1_010), 1_000),
            Inserted::New
        );
    }
    let mut refused = 0;
    for i in 0..200 {
        let jti = format!("flood-{i}");
        if set.insert(&proven(Some(&jti), "", 999_999), 1_000) == Inserted::Refused {
            refused += 1;
        }
    }
    assert_eq!(refused, 150);
    for i in 0..50 {
        let jti = format!("real-{i}");
        assert!(
            set.check(&facts("", Some(&jti), None, None), 1_005)
                .is_some(),
            "a revocation in force was dropped"
        );
    }
    // Once the real ones lapse, their room is free again.
    assert_eq!(
        set.insert(&proven(Some("late"), "", 999_999), 1_011),
        Inserted::New
    );
}

#[test]
fn unproven_revocations_have_a_small_pool_of_their_own() {
    let set = Revocations::with_limits(100, 5, 10);
    set.saw_lifetime(1_000_000);
    for i in 0..20 {
        let cookie = format!("random-{i}");
        let inserted = set.insert(&Revocation::token(None, &cookie, 999_999, false), 1_000);
        assert_eq!(inserted == Inserted::New, i < 5, "{i}");
    }
    assert_eq!(set.unproven(), 5);
    // A proven revocation still gets in, and proving an unproven one frees its room.
    assert_eq!(
        set.insert(&proven(Some("real"), "", 2_000), 1_000),
        Inserted::New
    );
    assert_eq!(
        set.insert(&proven(None, "random-0", 2_000), 1_000),
        Inserted::New
    );
    assert_eq!(set.unproven(), 4);
    assert_eq!(
        set.insert(&Revocation::token(None, "random-new", 2_000, false), 1_000),
        Inserted::New
    );
    // Lapsed unproven ones leave the pool.
    assert_eq!(
        set.insert(
            &Revocation::token(None, "after", 3_000_000, false),
            2_000_000
        ),
        Inserted::New
    );
    assert_eq!(set.unproven(), 1);
}

#[test]
fn until_is_clamped_to_the_longest_lifetime_known() {
    let set = Revocations::new();
    set.saw_lifetime(3_600);
    set.insert(&Revocation::token(None, "r", 9_999_999_999, false), 1_000);
    assert!(set.check(&TokenFacts::opaque("r"), 4_600).is_some());
    assert!(set.check(&TokenFacts::opaque("r"), 4_601).is_none());
    // Subjects are kept at least SUBJECT_FLOOR.
    assert_eq!(set.subject_retention(), SUBJECT_FLOOR);
    set.saw_lifetime(SUBJECT_FLOOR * 2);
    assert_eq!(set.subject_retention(), SUBJECT_FLOOR * 2);
}

#[test]
fn lapsed_entries_are_dropped_as_new_ones_come() {
    let set = Revocations::new();
    set.saw_lifetime(1_000);
    for i in 0..1000 {
        set.insert(&proven(Some(&i.to_string()), "", 1_100), 1_000);
    }
    assert_eq!(set.len(), 1000);
    set.insert(&proven(Some("new"), "", 1_500), 1_200);
    assert_eq!(set.len(), 1);
}

#[test]
fn exemptions_name_refresh_tokens_issued_after_a_revocation() {
    let set = Revocations::new();
    set.saw_lifetime(1_000);
    assert!(!set.is_exempt("opaque", 1_000));
    assert_eq!(
        set.insert(&Revocation::exempt("opaque", 1_500), 1_000),
        Inserted::New
    );
    assert!(set.is_exempt("opaque", 1_400));
    assert!(!set.is_exempt("other", 1_400));
    assert!(!set.is_exempt("opaque", 1_501));
    assert!(set.is_empty(), "an exemption is no revocation");
}
