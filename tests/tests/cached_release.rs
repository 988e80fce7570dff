//! Regression test for finding F5 in spoollock-lockfile (fixed; it failed
//! before the fix).
//!
//! `Dotlock::release` checks that the lock name still refers to its own
//! inode with `fstatat`, then `unlink`s the name. On NFS that `stat` is
//! answered from the client's lookup and attribute caches, so when the
//! lock was broken (it went stale: its holder stalled past the stale age)
//! and another client took it, the old holder's release still "sees" its
//! own lock and unlinks the *new holder's* lock by name, returning Ok;
//! a third process then takes the lock while the second still holds it.
//! `Dotlock::is_held` and `touch` (which calls it) are fooled the same
//! way. The torture run on nfs-sim showed it as overlapping holds with no
//! release ever reporting NotOurs. Verifying through a fresh `open` +
//! `fstat` (close-to-open revalidates), or renaming the name aside and
//! checking what was moved, as `break_stale` does, would not be fooled.
//!
//! P holds on client A; P's lock goes stale and Q breaks it and takes the
//! lock on client B; P's release must leave Q's lock alone.
//! Needs root and /dev/fuse.

mod common;

use std::time::Duration;

use common::two_client_scratch;
use nfs_sim::{Mount, SimConfig};
use spoollock_lockfile::{acquire, LockDir, LockError, Options, Wait};

#[test]
fn releasing_a_broken_lock_never_removes_the_new_holders_lock() {
    let Some(scratch) = two_client_scratch("cached-release") else {
        return;
    };
    let backing = scratch.path().join("backing");
    // Client A caches lookups and attributes for 30 s (acdirmin's default).
    let cache = Duration::from_secs(30);
    let a_config = SimConfig {
        attr_ttl: cache,
        dir_attr_ttl: cache,
        entry_ttl: cache,
        ..SimConfig::default()
    };
    let a = Mount::new(&backing, &scratch.path().join("a"), a_config).unwrap();
    let b = Mount::new(&backing, &scratch.path().join("b"), SimConfig::default()).unwrap();
    let opts = Options {
        stale_age: Duration::from_secs(1),
        wait: Wait::timeout(Duration::from_secs(30)),
        ..Options::default()
    };

    // P takes the lock on A, then stalls without refreshing it.
    let dir_a = LockDir::open(a.path()).unwrap();
    let p = acquire(&dir_a, "box.lock".as_ref(), &opts).unwrap();
    // (It checks its lock once, as a keep-alive's touch does.)
    assert!(p.is_held().unwrap());
    // Q, on B, waits it out (stale after 1 s by the server's clock) and
    // breaks it: Q holds the lock now.
    let dir_b = LockDir::open(b.path()).unwrap();
    let q = acquire(&dir_b, "box.lock".as_ref(), &opts).unwrap();
    let q_inode = std::fs::metadata(backing.join("box.lock")).unwrap();

    // P wakes up and releases "its" lock (within A's cache lifetime).
    let p_release = p.release();

    let still_q = std::fs::metadata(backing.join("box.lock"))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .ok();
    let q_held = q.is_held();
    let _ = q.release();
    assert_eq!(
        still_q,
        Some(std::os::unix::fs::MetadataExt::ino(&q_inode)),
        "P's release (result {p_release:?}) removed Q's live lock"
    );
    assert!(matches!(p_release, Err(LockError::NotOurs)));
    assert!(q_held.unwrap());
}
