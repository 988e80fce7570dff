//! Regression test for finding F4 in spoollock-lockfile (fixed; it failed
//! before the fix).
//!
//! `break_stale` re-checks the lock it judged with `fstatat` before it
//! renames the lock aside. On NFS that `stat` is answered from the
//! client's lookup and attribute caches (acregmin/acdirmin: seconds), so
//! when the stale lock was meanwhile broken by another client and a new,
//! live lock took its name, the re-check still sees the judged version
//! and the breaker renames the *live* lock away. It notices and links it
//! back, but while it is away the name is free: a third locker can take
//! it, the link back fails, and two processes hold the lock (the soak run
//! on nfs-sim hit this once in 100,000 cycles: a holder's release found
//! its lock gone). The documented residual window ("a release, a new
//! acquisition and a third locker, all inside the few microseconds
//! between the re-check and the link back") is, on NFS, as wide as the
//! attribute cache lifetime for the first two. Re-checking through a
//! fresh `open` + `fstat` (close-to-open revalidates) would close that.
//!
//! Client B judges a stale lock; client A breaks it and takes the lock;
//! B then breaks "its" stale lock: the live lock must never leave its
//! name. Needs root and /dev/fuse.

mod common;

use std::time::{Duration, SystemTime};

use common::two_client_scratch;
use nfs_sim::{Mount, SimConfig};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use spoollock_lockfile::stale::{break_stale, inspect};
use spoollock_lockfile::{acquire, LockDir, Options, Wait};

#[test]
fn a_breaker_with_a_stale_cache_never_moves_a_live_lock() {
    let Some(scratch) = two_client_scratch("cached-recheck") else {
        return;
    };
    let backing = scratch.path().join("backing");
    let long_cache = SimConfig {
        attr_ttl: Duration::from_secs(60),
        dir_attr_ttl: Duration::from_secs(60),
        entry_ttl: Duration::from_secs(60),
        ..SimConfig::default()
    };
    let a = Mount::new(&backing, &scratch.path().join("a"), SimConfig::default()).unwrap();
    let b = Mount::new(&backing, &scratch.path().join("b"), long_cache).unwrap();

    // A stale lock of some other host's tool: a bare pid, an hour old.
    let stale = backing.join("box.lock");
    std::fs::write(&stale, b"4242\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();

    // B looks at it (and judges it stale, as acquire would).
    let dir_b = LockDir::open(b.path()).unwrap();
    let judged = inspect(&dir_b, "box.lock".as_ref()).unwrap().unwrap();

    // A breaks it first and takes the lock: a live lock now.
    let dir_a = LockDir::open(a.path()).unwrap();
    let opts = Options {
        wait: Wait::timeout(Duration::from_secs(30)),
        ..Options::default()
    };
    let live = acquire(&dir_a, "box.lock".as_ref(), &opts).unwrap();

    // Watch the server's directory for the lock name leaving.
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
    inotify
        .add_watch(
            &backing,
            AddWatchFlags::IN_MOVED_FROM | AddWatchFlags::IN_DELETE,
        )
        .unwrap();

    // B now breaks the lock it judged.
    let _ = break_stale(&dir_b, "box.lock".as_ref(), &judged, None);

    let moved: Vec<String> = inotify
        .read_events()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.name.map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| n == "box.lock")
        .collect();
    assert!(live.is_held().unwrap());
    live.release().unwrap();
    assert!(
        moved.is_empty(),
        "the live lock left its name ({} events): B's re-check was served from its cache",
        moved.len()
    );
}
