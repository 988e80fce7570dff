//! Properties of the helper's request handling on the stable toolchain:
//! arbitrary stages and request sequences, run through the helper's own
//! session code in-process (see `support/session_case.rs` for what is
//! checked). The cargo-fuzz target `helper_session` drives the same code
//! with coverage guidance.

#[path = "support/session_case.rs"]
mod session_case;

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use session_case::{run_case, Spool};
use spoollock_protocol::{LockStatus, Reply};

#[test]
fn sessions_keep_their_promises() {
    let Some(spool) = Spool::create_or_skip() else {
        return;
    };
    let config = ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let granted = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    // Mostly stages with a usable login and an encoded request stream (the
    // first byte's two high bits clear), so most cases reach the lock
    // state machine; the rest with any stage.
    let stage = prop_oneof![4 => 0u8..0x40, 1 => any::<u8>()];
    let rest = prop::collection::vec(any::<u8>(), 0..160);
    proptest!(config, |(stage in stage, rest in rest)| {
        let mut data = vec![stage];
        data.extend_from_slice(&rest);
        for reply in run_case(&spool, &data) {
            match reply {
                Reply::Locked(_) => granted.fetch_add(1, Ordering::Relaxed),
                Reply::Error(_) => refused.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
    });
    // The cases reached the lock state machine, not only the refusals.
    let (granted, refused) = (granted.into_inner(), refused.into_inner());
    println!("{granted} locks granted, {refused} requests refused");
    assert!(granted > 50 && refused > 50);
}

/// Each stage with a fixed script that locks, touches, checks, unlocks
/// and locks again detached: every branch of the stage is reached on
/// every run, whatever proptest draws.
#[test]
fn every_stage_with_a_full_script() {
    let Some(spool) = Spool::create_or_skip() else {
        return;
    };
    // Lock (default spool, no wait, session), touch, check, unlock, lock
    // detached with a timeout, check, bye.
    let script = [0u8, 0, 0, 0, 6, 0, 10, 0, 8, 0, 0, 0, 0x0a, 2, 10, 0, 12];
    for stage in 0..=255u8 {
        let mut data = vec![stage];
        data.extend_from_slice(&script);
        let replies = run_case(&spool, &data);
        if stage == 0 {
            // Nothing planted: the whole script succeeds.
            let kinds: Vec<&str> = replies.iter().map(kind).collect();
            assert_eq!(
                kinds,
                ["locked", "touched", "held", "unlocked", "locked", "held", "bye"],
                "{replies:?}"
            );
        }
    }
}

fn kind(reply: &Reply) -> &'static str {
    match reply {
        Reply::Ready(_) => "ready",
        Reply::Locked(_) => "locked",
        Reply::Touched => "touched",
        Reply::Unlocked => "unlocked",
        Reply::Status(LockStatus::Held(_)) => "held",
        Reply::Status(_) => "status",
        Reply::Bye => "bye",
        Reply::Error(_) => "error",
    }
}

/// A session cannot flood the audit trail: refused requests past the
/// limit, and lock requests past the grant limit, end it with
/// `SessionLimit` (the checks in `run_case` hold the counts to the
/// replies; here, exactly where it ends).
#[test]
fn floods_end_at_the_session_limits() {
    use spoollock_protocol::limits::{MAX_GRANTED_PER_SESSION, MAX_REFUSED_PER_SESSION};
    use spoollock_protocol::Refusal;
    let Some(spool) = Spool::create_or_skip() else {
        return;
    };
    // Stage 0 (nothing planted), then 40 by-name unlocks with no lock:
    // each refused (not-locked).
    let mut data = vec![0u8];
    for _ in 0..40 {
        data.extend_from_slice(&[8, 0]);
    }
    let replies = run_case(&spool, &data);
    let max = MAX_REFUSED_PER_SESSION as usize;
    assert_eq!(replies.len(), max + 1, "{replies:?}");
    assert!(replies[..max]
        .iter()
        .all(|r| matches!(r, Reply::Error(Refusal::NotLocked))));
    assert_eq!(
        replies[max],
        Reply::Error(Refusal::SessionLimit {
            refused: MAX_REFUSED_PER_SESSION,
            granted: 0
        })
    );

    // 20 rounds of lock and unlock: the lock request after the last grant
    // allowed ends the session.
    let mut data = vec![0u8];
    for _ in 0..20 {
        data.extend_from_slice(&[0, 0, 0, 0, 8, 0]);
    }
    let replies = run_case(&spool, &data);
    let max = MAX_GRANTED_PER_SESSION as usize;
    let kinds: Vec<&str> = replies.iter().map(kind).collect();
    assert_eq!(kinds.len(), 2 * max + 1, "{replies:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "locked").count(), max);
    assert_eq!(
        replies.last(),
        Some(&Reply::Error(Refusal::SessionLimit {
            refused: 0,
            granted: MAX_GRANTED_PER_SESSION
        }))
    );
}
