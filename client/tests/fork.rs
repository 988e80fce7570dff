//! A process that forks while it holds a lock: the child's copy of the
//! guard must leave the lock to the parent when it is dropped. Releasing it
//! there would remove the parent's dotlock, unlock the parent's fcntl lock
//! (an OFD lock belongs to the open file both share), or wait forever to
//! join a keep-alive thread that exists only in the parent.
//!
//! Each scenario runs in a fresh process (this test binary started again
//! with one test thread), which forks once; the child reports by its exit
//! status only, since it may not allocate (another thread of the parent may
//! have held the allocator's lock at the fork).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use spoollock::{LockGuard, LockOptions, MailboxLock, MailboxOptions};
use spoollock_test_support::{child, Scratch};

/// Child exit statuses.
const CHILD_OK: i32 = 0;
const CHILD_RELEASED: i32 = 3;

/// Fork; run `child` in the child and leave with its status; in the parent,
/// wait for it (at most 20 s: a child that hangs joining a thread it does
/// not have is killed and reported as `None`).
fn fork_and_wait(child: impl FnOnce() -> i32) -> Option<i32> {
    // SAFETY: the child runs `child`, which only drops or releases a guard
    // (no allocation), then leaves with `_exit`.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = child();
            // SAFETY: ends the child without unwinding or running the
            // parent's exit handlers on copied state.
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => wait_at_most(child, Duration::from_secs(20)),
    }
}

fn wait_at_most(child: Pid, patience: Duration) -> Option<i32> {
    let deadline = Instant::now() + patience;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
            WaitStatus::Exited(_, code) => return Some(code),
            WaitStatus::StillAlive if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(child, None);
                return None;
            }
        }
    }
}

/// Whether another open file description sees a conflicting fcntl lock.
fn fcntl_locked(path: &Path) -> bool {
    let probe = File::open(path).unwrap();
    // SAFETY: `flock` is plain old data; all-zero is a valid value.
    let mut fl: nix::libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = nix::libc::F_WRLCK as _;
    fl.l_whence = nix::libc::SEEK_SET as _;
    fcntl(probe.as_fd(), FcntlArg::F_OFD_GETLK(&mut fl)).unwrap();
    fl.l_type != nix::libc::F_UNLCK as _
}

/// The scenarios, run in the re-started process.
fn scenario(name: &str, dir: &Path) -> String {
    let mailbox = dir.join("inbox");
    let lock = dir.join("inbox.lock");
    match name {
        "guard-dropped" => {
            let opts = LockOptions {
                keep_alive: Some(Duration::from_millis(50)),
                ..LockOptions::no_wait()
            };
            let guard = LockGuard::acquire(&mailbox, &opts).unwrap();
            let status = fork_and_wait(|| {
                drop(unsafe_copy(&guard));
                CHILD_OK
            });
            let left = lock.exists();
            let released = guard.release().is_ok();
            format!("child={status:?} lock_left={left} parent_released={released}")
        }
        "guard-released" => {
            let guard = LockGuard::acquire(&mailbox, &LockOptions::no_wait()).unwrap();
            let status = fork_and_wait(|| match LockGuard::release(unsafe_copy(&guard)) {
                Ok(()) => CHILD_RELEASED,
                Err(_) => CHILD_OK,
            });
            let left = lock.exists();
            let released = guard.release().is_ok();
            format!("child={status:?} lock_left={left} parent_released={released}")
        }
        "mailbox-dropped" => {
            std::fs::write(&mailbox, b"").unwrap();
            let opts = MailboxOptions::default();
            let locked = MailboxLock::open(&mailbox, &opts).unwrap();
            let status = fork_and_wait(|| {
                drop(unsafe_copy(&locked));
                CHILD_OK
            });
            let fcntl = fcntl_locked(&mailbox);
            let left = lock.exists();
            let released = locked.release().is_ok();
            format!(
                "child={status:?} lock_left={left} fcntl_held={fcntl} parent_released={released}"
            )
        }
        other => panic!("no scenario {other}"),
    }
}

/// The child's own copy of a value the parent keeps: after `fork` the
/// child's memory is a copy, so reading the value out there duplicates
/// nothing the parent sees.
fn unsafe_copy<T>(value: &T) -> T {
    // SAFETY: called only in a forked child, whose address space is a copy
    // of the parent's; the parent's value is never touched through it, and
    // the child leaves with `_exit` without dropping `value` itself.
    unsafe { std::ptr::read(value) }
}

/// The child process's part (`name|dir`): run the scenario and print its
/// result.
fn fork_scenario(spec: &str) {
    let (name, dir) = spec.split_once('|').unwrap();
    println!("RESULT {}", scenario(name, Path::new(dir)));
}

fn run(name: &str) -> String {
    let _deadline = spoollock_test_support::deadline(
        format!("the fork scenario {name}"),
        Duration::from_secs(60),
    );
    let dir = Scratch::new(&format!("fork-{name}"));
    let out = child::command(&format!("{name}|{}", dir.path().display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    drop(dir);
    stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, result)| result))
        .unwrap_or_else(|| {
            panic!(
                "{name}: no result\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_owned()
}

#[test]
fn a_guard_dropped_in_a_forked_child_leaves_the_lock_and_does_not_hang() {
    if let Some(spec) = child::role() {
        return fork_scenario(&spec);
    }
    // The child must exit (not hang joining the keep-alive thread), and
    // the lock stays the parent's.
    assert_eq!(
        run("guard-dropped"),
        "child=Some(0) lock_left=true parent_released=true"
    );
}

#[test]
fn a_forked_child_cannot_release_its_parent_s_guard() {
    if let Some(spec) = child::role() {
        return fork_scenario(&spec);
    }
    assert_eq!(
        run("guard-released"),
        "child=Some(0) lock_left=true parent_released=true"
    );
}

#[test]
fn a_mailbox_lock_dropped_in_a_forked_child_keeps_both_locks() {
    if let Some(spec) = child::role() {
        return fork_scenario(&spec);
    }
    assert_eq!(
        run("mailbox-dropped"),
        "child=Some(0) lock_left=true fcntl_held=true parent_released=true"
    );
}
