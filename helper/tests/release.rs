//! The helper's release never removes a lock that is no longer the one it
//! took (issue 12, item 5, first point).
//!
//! The attack: release used to check that the lock name still named the
//! session's file and then unlink the name. The caller controls its
//! helper's scheduling (`SIGSTOP`, `SCHED_IDLE`): a helper held between the
//! check and the unlink, past the stale age, while another program breaks
//! the lock and takes it again, then deletes that program's lock.
//!
//! Here the test holds the helper exactly there, deterministically: it
//! traces the helper (`ptrace`, as root) after the lock is taken, asks for
//! the release, and stops the helper at the entry of the first system call
//! of the release that changes the spool. While it is stopped the lock is
//! broken and taken again (by a root-run delivery agent, say), then the
//! helper goes on. The new lock must still be at the name afterwards, the
//! same file with the same content, and the helper must report the
//! session's lock as lost. Both ways a session lock is released are
//! covered: an `Unlock` request and the end of the session (`Bye`).
//!
//! x86-64 only (system call numbers and registers); it says so and passes
//! elsewhere. Run as root: `cargo test -p spoollock-helper --test release`.

#[path = "support/privileged_env.rs"]
mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use spoollock_protocol::{Refusal, Reply, Request};
use support::*;

/// Wait (bounded) for the traced helper's next stop.
fn next_stop(pid: Pid) -> WaitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => return status,
            Err(e) => panic!("waitpid: {e}"),
        }
        assert!(Instant::now() < deadline, "the traced helper did not stop");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// System calls that change a directory (x86-64 numbers): `rename`,
/// `link`, `unlink`, `renameat`, `linkat`, `unlinkat`, `renameat2`.
#[cfg(target_arch = "x86_64")]
const DIRECTORY_CHANGES: [u64; 7] = [82, 86, 87, 264, 265, 263, 316];

/// Run the traced helper until it enters a system call that changes a
/// directory; it stays stopped there. The system call's number.
#[cfg(target_arch = "x86_64")]
fn stop_before_directory_change(pid: Pid) -> u64 {
    let enosys = (-(Errno::ENOSYS as i64)) as u64;
    let mut signal = None;
    loop {
        ptrace::syscall(pid, signal).unwrap();
        signal = None;
        match next_stop(pid) {
            WaitStatus::PtraceSyscall(_) => {
                let regs = ptrace::getregs(pid).unwrap();
                // At a system call's entry the kernel has set rax to
                // -ENOSYS; at its exit rax is the result.
                if regs.rax == enosys && DIRECTORY_CHANGES.contains(&regs.orig_rax) {
                    return regs.orig_rax;
                }
            }
            // The stop of the attach itself is suppressed; any other
            // signal is passed on.
            WaitStatus::Stopped(_, Signal::SIGSTOP) => {}
            WaitStatus::Stopped(_, sig) => signal = Some(sig),
            other => panic!("the traced helper: {other:?}"),
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn release_after_the_lock_was_broken_and_taken_again(env: &Env) {
    for trigger in ["unlock", "bye"] {
        env.reset();
        let mark = env.log_mark();
        let (mut c, _) = Client::open(env, &env.caller);
        expect_locked(c.call(&session_lock()));
        let helper = Pid::from_raw(c.pid() as i32);
        ptrace::attach(helper).unwrap();
        assert!(matches!(
            next_stop(helper),
            WaitStatus::Stopped(_, Signal::SIGSTOP)
        ));
        ptrace::setoptions(helper, ptrace::Options::PTRACE_O_TRACESYSGOOD).unwrap();
        let request = if trigger == "unlock" {
            Request::Unlock(target())
        } else {
            Request::Bye
        };
        c.send(&request);
        let call = stop_before_directory_change(helper);

        // Held right before its first change of the release. Meanwhile its
        // lock, past the stale age, is broken and taken again by another
        // program (root's, as a delivery agent's).
        let lock = env.lock_path();
        fs::rename(&lock, Path::new(SPOOL).join(".broken-by-someone")).unwrap();
        let theirs = lock_content(std::process::id());
        let tmp = Path::new(SPOOL).join(".theirs");
        fs::write(&tmp, &theirs).unwrap();
        fs::hard_link(&tmp, &lock).unwrap();
        fs::remove_file(&tmp).unwrap();
        let ino = fs::metadata(&lock).unwrap().ino();

        ptrace::detach(helper, None).unwrap();
        let reply = read_within(&mut c);
        let pid = c.pid();
        let (status, _) = c.finish();
        assert!(status.success() || trigger == "unlock", "{status:?}");
        let now = fs::symlink_metadata(&lock).unwrap_or_else(|_| {
            panic!("{trigger}: the other program's lock was removed (system call {call})")
        });
        assert_eq!(
            now.ino(),
            ino,
            "{trigger}: the other program's lock was replaced"
        );
        assert_eq!(fs::read(&lock).unwrap(), theirs);
        if trigger == "unlock" {
            assert_eq!(reply, Reply::Error(Refusal::LockLost));
            env.wait_log(
                mark,
                &[&format!("[{pid}]:"), "op=unlock", "result=lock-lost"],
            );
        } else {
            assert_eq!(reply, Reply::Bye);
            env.wait_log(
                mark,
                &[
                    &format!("[{pid}]:"),
                    "op=release",
                    "result=failed",
                    "trigger=bye",
                ],
            );
        }
        // Nothing but the two locks (the broken one, the new one) and what
        // the helper moved aside and put back leaves a trace.
        let extras = spool_extras();
        assert!(extras.len() <= 3, "{trigger}: left {extras:?}");
        println!("  {trigger}: stopped at system call {call}; the other lock survived");
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn release_after_the_lock_was_broken_and_taken_again(_: &Env) {
    spoollock_test_support::skip_named(
        "release_after_the_lock_was_broken_and_taken_again",
        "the tracing is written for x86-64",
    );
}

fn main() {
    run_scenarios(
        "release window tests",
        &[(
            "release_after_the_lock_was_broken_and_taken_again",
            release_after_the_lock_was_broken_and_taken_again,
        )],
        Env::setup,
    );
}
