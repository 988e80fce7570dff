//! `DetachedLock`: a lock that outlives its handle, and never touches or
//! removes a successor's lock.

use std::os::unix::fs::MetadataExt;

use spoollock::{DetachedLock, LockError, LockOptions, LockTarget, PidMode};
use spoollock_test_support::Scratch;

fn opts(pid_mode: PidMode) -> LockOptions {
    LockOptions {
        pid_mode,
        keep_alive: None,
        ..LockOptions::no_wait()
    }
}

#[test]
fn dropping_leaves_the_lock_and_release_removes_it() {
    let s = Scratch::new("drop");
    let target = LockTarget::for_file(&s.0.join("box")).unwrap();
    let lock = DetachedLock::acquire(&target, &opts(PidMode::None)).unwrap();
    assert!(!lock.via_helper());
    assert!(lock.is_held().unwrap());
    drop(lock);
    let content = std::fs::read_to_string(target.path()).unwrap();
    assert!(content.starts_with("0\n"), "{content:?}");

    std::fs::remove_file(target.path()).unwrap();
    let lock = DetachedLock::acquire(&target, &opts(PidMode::Own)).unwrap();
    let content = std::fs::read_to_string(target.path()).unwrap();
    assert!(
        content.starts_with(&format!("{}\n", std::process::id())),
        "{content:?}"
    );
    lock.touch().unwrap();
    lock.release().unwrap();
    assert!(!target.path().exists());
}

#[test]
fn a_successor_s_lock_is_neither_touched_nor_removed() {
    let s = Scratch::new("successor");
    let target = LockTarget::for_file(&s.0.join("box")).unwrap();
    let lock = DetachedLock::acquire(&target, &opts(PidMode::None)).unwrap();
    // Broken as stale and taken again by someone else: a new file at the name.
    std::fs::remove_file(target.path()).unwrap();
    std::fs::write(target.path(), b"4242\n").unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    std::fs::File::options()
        .write(true)
        .open(target.path())
        .unwrap()
        .set_modified(old)
        .unwrap();
    let before = std::fs::metadata(target.path()).unwrap();

    assert!(!lock.is_held().unwrap());
    assert!(matches!(
        lock.touch(),
        Err(spoollock::Error::Lock(LockError::NotOurs))
    ));
    assert!(matches!(
        lock.release(),
        Err(spoollock::Error::Lock(LockError::NotOurs))
    ));
    let after = std::fs::metadata(target.path()).unwrap();
    assert_eq!((before.ino(), before.mtime()), (after.ino(), after.mtime()));
    assert_eq!(std::fs::read(target.path()).unwrap(), b"4242\n");
}

#[test]
fn a_forked_child_may_release_the_lock() {
    let s = Scratch::new("fork");
    let target = LockTarget::for_file(&s.0.join("box")).unwrap();
    let lock = DetachedLock::acquire(&target, &opts(PidMode::None)).unwrap();
    // SAFETY: the child only calls `release` (system calls on the lock;
    // no lock of std another test thread could hold at the fork, and
    // glibc's fork leaves its allocator usable in the child), then leaves
    // with `_exit` without running the parent's exit handlers.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let code = i32::from(lock.release().is_err());
            // SAFETY: ends the child without unwinding or running the
            // parent's exit handlers on copied state.
            unsafe { nix::libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            assert!(!target.path().exists());
            // The parent's handle now finds nothing of its own.
            assert!(!lock.is_held().unwrap());
        }
    }
}

/// A file too large to be a lock at the name (a mailbox of a user whose
/// login ends in `.lock`) is told apart with its size and owner, by the
/// detached lock (dotlockfile -l, the C API) as by `spoollock lock`, and
/// is left as it was.
#[test]
fn a_large_file_at_the_name_is_not_a_lock_for_either_way_of_locking() {
    let s = Scratch::new("notalock");
    let target = LockTarget::for_file(&s.0.join("box")).unwrap();
    std::fs::write(target.path(), vec![b'x'; 4096]).unwrap();
    // Old enough to be judged stale, were it a lock.
    std::fs::File::options()
        .write(true)
        .open(target.path())
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(86_400))
        .unwrap();
    let before = std::fs::metadata(target.path()).unwrap();
    for (how, result) in [
        (
            "DetachedLock::acquire",
            DetachedLock::acquire(&target, &opts(PidMode::Own)).map(drop),
        ),
        (
            "lock_detached",
            spoollock::lock_detached(&target, &opts(PidMode::Own)),
        ),
    ] {
        match result {
            Err(spoollock::Error::NotALock { size, owner, .. }) => {
                assert_eq!(size, 4096, "{how}");
                assert_eq!(owner, before.uid(), "{how}");
            }
            other => panic!("{how}: {other:?}"),
        }
        let after = std::fs::metadata(target.path()).unwrap();
        assert_eq!(
            (after.ino(), after.len()),
            (before.ino(), before.len()),
            "{how}"
        );
    }
}
