//! Finding F1 (fixed in 1b34fb0), kept as a regression test.
//!
//! A lock taken after a long wait was "born stale": `acquire` created its
//! temporary file (and so fixed the future lock's mtime) once, before it
//! started waiting, and kept retrying `link` with that same file. When
//! the lock came free after more than the stale age, the lock it made
//! carried the old mtime and every other process judged it stale by age
//! at once, and broke it while it was held. On a local disk the same
//! host's pid check does not save it (a live pid falls through to the
//! age test). nfs-sim's torture run found it: every waiter that waited
//! out a killed holder's stale age got a lock that the next waiter broke.

use std::time::Duration;

use spoollock_lockfile::{acquire, check, LockDir, LockState, Options};

#[test]
fn a_lock_taken_after_a_long_wait_is_not_born_stale() {
    let dir = std::env::temp_dir().join(format!("born-stale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let opts = Options {
        stale_age: Duration::from_secs(2),
        ..Options::default()
    };
    let d = LockDir::open(&dir).unwrap();
    let holder = acquire(&d, "box.lock".as_ref(), &opts).unwrap();
    let (d2, o2) = (d.clone(), opts.clone());
    // The waiter creates its temporary file now, then waits.
    let waiter = std::thread::spawn(move || acquire(&d2, "box.lock".as_ref(), &o2).unwrap());
    // The holder keeps its lock fresh for 4 s (twice the stale age).
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        holder.touch().unwrap();
    }
    holder.release().unwrap();
    let lock = waiter.join().unwrap();
    // Anybody looking at the brand-new lock right away:
    let state = check(&d, "box.lock".as_ref(), &opts).unwrap();
    let released = lock.release();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        matches!(state, LockState::Held(_)),
        "a lock acquired a moment ago is judged {state:?}"
    );
    released.unwrap();
}
