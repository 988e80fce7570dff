//! Finding F2 (fixed in 1b34fb0), kept as a regression test.
//!
//! On NFS, opening a file by name is a lookup and then an open of the
//! inode found; when another client deletes the file in between (twice:
//! the kernel retries once with revalidation), open(2) fails with ESTALE.
//! `stale::open_lock` mapped that errno to `Io { op: ReadLock, errno:
//! ESTALE }`, so `check()` and `acquire()` failed ("cannot read lock file:
//! Stale file handle") where they must treat the lock as vanished and
//! look again, as they do for ENOENT. Client A churns the lock; client B
//! looks at it in a loop. Needs root and /dev/fuse.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::two_client_scratch;
use nfs_sim::{Mount, SimConfig};
use spoollock_lockfile::{acquire, check, LockDir, Options};

#[test]
fn looking_at_a_lock_another_client_churns_never_fails_with_estale() {
    let Some(scratch) = two_client_scratch("estale") else {
        return;
    };
    let backing = scratch.path().join("backing");
    let a = Mount::new(&backing, &scratch.path().join("a"), SimConfig::default()).unwrap();
    // B revalidates every lookup, so it opens what is there right now.
    let b = Mount::new(&backing, &scratch.path().join("b"), SimConfig::coherent()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..2)
        .map(|_| {
            let (a_dir, stop2) = (a.path().to_path_buf(), stop.clone());
            std::thread::spawn(move || {
                let d = LockDir::open(&a_dir).unwrap();
                while !stop2.load(Ordering::Relaxed) {
                    let lock = acquire(&d, "box.lock".as_ref(), &Options::default()).unwrap();
                    lock.release().unwrap();
                }
            })
        })
        .collect();
    let d = LockDir::open(b.path()).unwrap();
    let mut failures = Vec::new();
    for _ in 0..50_000 {
        if let Err(e) = check(&d, "box.lock".as_ref(), &Options::default()) {
            failures.push(e.to_string());
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in churners {
        c.join().unwrap();
    }
    assert!(failures.is_empty(), "check() failed: {failures:?}");
}
