//! The two kinds of temporary file: anonymous (`O_TMPFILE`, linked through
//! `/proc/self/fd`) on local file systems, named (`.lk<pid>.<random>.<host>`)
//! elsewhere or on request. Both make the same lock; only the anonymous one
//! survives a `SIGKILL` at any point without leaving a file behind.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{child, listing, Scratch};
use spoollock_lockfile::{acquire, check, LockDir, LockState, Options, Wait};

fn name() -> &'static OsStr {
    OsStr::new("box.lock")
}

/// The child's part: wait forever for `box.lock` in the directory
/// given (named temporary files when asked), printing "waiting" once the
/// temporary file exists.
fn waiter_process(spec: &str) {
    let (mode, dir) = spec.split_once('|').unwrap();
    let dir = LockDir::open(Path::new(dir)).unwrap();
    if mode == "named" {
        dir.use_named_temps();
    }
    let opts = Options {
        wait: Wait::Forever,
        observer: Some(std::sync::Arc::new(|_: &spoollock_lockfile::Event| {
            println!("waiting");
        })),
        ..Options::default()
    };
    let _ = acquire(&dir, name(), &opts);
}

/// Hold `box.lock`, start a waiter, kill it with SIGKILL while it waits
/// with its temporary file open; the names left in the directory.
fn kill_a_waiter(mode: &str) -> Vec<String> {
    let _deadline = spoollock_test_support::deadline(
        "a waiter that waits, then is killed",
        Duration::from_secs(60),
    );
    let scratch = Scratch::new(&format!("temp-{mode}"));
    let dir = LockDir::open(scratch.path()).unwrap();
    let held = acquire(&dir, name(), &Options::default()).unwrap();
    let mut child = child::command(&format!("{mode}|{}", scratch.path().display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The observer prints once the waiter has its temporary file and has
    // seen our lock.
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&seen).contains("waiting") {
        assert!(Instant::now() < deadline, "the waiter never waited");
        let mut byte = [0u8; 64];
        let n = std::io::Read::read(&mut out, &mut byte).unwrap();
        assert!(n > 0, "the waiter exited");
        seen.extend_from_slice(&byte[..n]);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let left = listing(scratch.path());
    held.release().unwrap();
    left
}

#[test]
fn a_local_directory_uses_anonymous_temporary_files() {
    let scratch = Scratch::new("temp-kind");
    let dir = LockDir::open(scratch.path()).unwrap();
    // The test directories are on the machine's local disk (ext4 in CI)
    // or tmpfs, both of which have O_TMPFILE.
    assert!(dir.anonymous_temps(), "{}", scratch.path().display());
    let lock = acquire(&dir, name(), &Options::default()).unwrap();
    assert_eq!(listing(scratch.path()), vec!["box.lock".to_string()]);
    assert!(matches!(
        check(&dir, name(), &Options::default()).unwrap(),
        LockState::Held(_)
    ));
    lock.release().unwrap();
    assert!(listing(scratch.path()).is_empty());

    dir.use_named_temps();
    assert!(!dir.anonymous_temps());
    let lock = acquire(&dir, name(), &Options::default()).unwrap();
    assert_eq!(listing(scratch.path()), vec!["box.lock".to_string()]);
    lock.release().unwrap();
    assert!(listing(scratch.path()).is_empty());
}

#[test]
fn a_waiter_killed_with_an_anonymous_temporary_file_leaves_nothing() {
    if let Some(spec) = child::role() {
        return waiter_process(&spec);
    }
    assert_eq!(kill_a_waiter("anonymous"), vec!["box.lock".to_string()]);
}

#[test]
fn a_waiter_killed_with_a_named_temporary_file_leaves_it() {
    if let Some(spec) = child::role() {
        return waiter_process(&spec);
    }
    // What the anonymous file avoids, and what the helper's sweep is for
    // on NFS: the named file stays until someone removes it.
    let left = kill_a_waiter("named");
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left[0].starts_with(".lk"), "{left:?}");
    assert_eq!(left[1], "box.lock");
}
