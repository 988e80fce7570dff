//! Stale locks: a holder killed with SIGKILL, locks from other hosts and
//! other tools, clock skew, and two breakers racing on one stale lock.

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{age_file, assert_no_temp_files, child, listing, Scratch};
use spoollock_lockfile::stale::{break_stale, break_stale_interleaved, inspect, Broke};
use spoollock_lockfile::{
    acquire, check, content_for, remove_by_name, touch_by_name, LockDir, LockError, LockState,
    Options, PidMode, StaleReason, Wait,
};

const LOCK: &str = "box.lock";

fn name() -> &'static OsStr {
    OsStr::new(LOCK)
}

fn no_wait() -> Options {
    Options {
        wait: Wait::NoWait,
        ..Options::default()
    }
}

/// The part of the child the SIGKILL test starts: take the lock, say so,
/// and hold it until killed.
fn holder_process(dir: &str) {
    let dir = LockDir::open(dir.as_ref()).unwrap();
    let lock = acquire(&dir, name(), &Options::default()).unwrap();
    println!("HELD");
    std::thread::sleep(std::time::Duration::from_secs(3600));
    drop(lock);
}

#[test]
fn lock_of_a_killed_holder_is_broken_at_once() {
    if let Some(dir) = child::role() {
        return holder_process(&dir);
    }
    let _deadline = spoollock_test_support::deadline(
        "a holder process, killed",
        std::time::Duration::from_secs(60),
    );
    let scratch = Scratch::new("killed");
    let mut child = child::command(&scratch.path().display().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("HELD") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "holder exited early");
    }
    let dir = LockDir::open(scratch.path()).unwrap();
    assert!(matches!(
        check(&dir, name(), &no_wait()).unwrap(),
        LockState::Held(_)
    ));
    assert!(acquire(&dir, name(), &no_wait()).unwrap_err().is_busy());

    child.kill().unwrap();
    child.wait().unwrap();
    match check(&dir, name(), &no_wait()).unwrap() {
        LockState::Stale(_, StaleReason::DeadProcess) => {}
        other => panic!("expected stale (dead process), got {other:?}"),
    }
    // Without waiting: the dead holder's lock is broken on the spot.
    let lock = acquire(&dir, name(), &no_wait()).unwrap();
    assert!(lock.is_held().unwrap());
    lock.release().unwrap();
    assert_eq!(listing(scratch.path()), Vec::<String>::new());
}

fn plant(scratch: &Scratch, content: &[u8], secs_ago: i64) {
    let path = scratch.path().join(LOCK);
    std::fs::write(&path, content).unwrap();
    age_file(&path, secs_ago);
}

#[test]
fn other_hosts_locks_go_stale_only_by_age() {
    let scratch = Scratch::new("otherhost");
    let dir = LockDir::open(scratch.path()).unwrap();
    let foreign = b"4242\nhost=elsewhere.example\nboot=abc\nstart=1\n";

    plant(&scratch, foreign, 10);
    assert!(matches!(
        check(&dir, name(), &no_wait()).unwrap(),
        LockState::Held(_)
    ));
    let err = acquire(&dir, name(), &no_wait()).unwrap_err();
    assert_eq!(
        err.holder().unwrap().content.host.as_deref(),
        Some("elsewhere.example")
    );
    assert_eq!(err.liblockfile_code(), 4);

    plant(&scratch, foreign, 301);
    assert!(matches!(
        check(&dir, name(), &no_wait()).unwrap(),
        LockState::Stale(_, StaleReason::Age)
    ));
    acquire(&dir, name(), &no_wait())
        .unwrap()
        .release()
        .unwrap();
    assert_no_temp_files(scratch.path());
}

#[test]
fn other_tools_locks_are_judged_by_age() {
    let scratch = Scratch::new("othertools");
    let dir = LockDir::open(scratch.path()).unwrap();
    for content in [
        &b""[..],
        b"0\n",
        b"12345\n",
        b"12345",
        b"12345:otherhost",
        b"\xff\xfe garbage",
    ] {
        plant(&scratch, content, 5);
        assert!(
            acquire(&dir, name(), &no_wait()).unwrap_err().is_busy(),
            "{content:?}"
        );
        plant(&scratch, content, 400);
        acquire(&dir, name(), &no_wait())
            .unwrap()
            .release()
            .unwrap();
    }
    // A custom stale age applies.
    plant(&scratch, b"1\n", 20);
    let short = Options {
        stale_age: std::time::Duration::from_secs(10),
        ..no_wait()
    };
    acquire(&dir, name(), &short).unwrap().release().unwrap();
}

/// liblockfile's `L_PID` promise (every lock here is made on this host):
/// a fresh bare-pid lock whose process is gone is stale at once; one whose
/// process lives is held; a lock naming another host, or no pid, is still
/// judged by its age alone. Without the promise, by age alone.
#[test]
fn bare_pids_are_judged_by_their_process_only_when_promised_local() {
    let scratch = Scratch::new("barepid");
    let dir = LockDir::open(scratch.path()).unwrap();
    let local = Options {
        bare_pids_are_local: true,
        ..no_wait()
    };
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();

    plant(&scratch, format!("{dead}\n").as_bytes(), 5);
    assert!(matches!(
        check(&dir, name(), &no_wait()).unwrap(),
        LockState::Held(_)
    ));
    assert!(acquire(&dir, name(), &no_wait()).unwrap_err().is_busy());
    assert!(matches!(
        check(&dir, name(), &local).unwrap(),
        LockState::Stale(_, StaleReason::DeadProcess)
    ));
    acquire(&dir, name(), &local).unwrap().release().unwrap();

    let me = std::process::id();
    for content in [
        format!("{me}\n"),
        format!("{dead}:elsewhere.example"),
        format!("{dead}\nhost=elsewhere.example\nboot=abc\n"),
        "0\n".to_string(),
    ] {
        plant(&scratch, content.as_bytes(), 5);
        assert!(
            matches!(check(&dir, name(), &local).unwrap(), LockState::Held(_)),
            "{content:?}"
        );
        assert!(
            acquire(&dir, name(), &local).unwrap_err().is_busy(),
            "{content:?}"
        );
    }
    assert_no_temp_files(scratch.path());
}

#[test]
fn a_lock_from_the_future_is_not_stale() {
    // The server's clock is ahead of ours, or it was touched by hand: the
    // lock is young, not ancient.
    let scratch = Scratch::new("future");
    let dir = LockDir::open(scratch.path()).unwrap();
    plant(&scratch, b"4242\nhost=elsewhere.example\n", -3600);
    assert!(matches!(
        check(&dir, name(), &no_wait()).unwrap(),
        LockState::Held(_)
    ));
    assert!(acquire(&dir, name(), &no_wait()).unwrap_err().is_busy());
}

#[test]
fn a_reused_pid_is_detected_by_its_start_time() {
    let scratch = Scratch::new("reused");
    let dir = LockDir::open(scratch.path()).unwrap();
    // Our own pid, this host and boot, but another start time: the process
    // that made the lock is gone and the pid now names us.
    let mut content = content_for(PidMode::Own);
    content.start = content.start.map(|s| s + 12345);
    plant(&scratch, &content.render(), 1);
    assert!(matches!(
        check(&dir, name(), &no_wait()).unwrap(),
        LockState::Stale(_, StaleReason::PidReused)
    ));
    acquire(&dir, name(), &no_wait())
        .unwrap()
        .release()
        .unwrap();
}

#[test]
fn racing_breakers_never_remove_the_winners_lock() {
    let scratch = Scratch::new("breakers");
    let dir = LockDir::open(scratch.path()).unwrap();
    plant(&scratch, b"4242\nhost=elsewhere.example\n", 1000);

    // A and B both judge the same lock stale.
    let seen_by_a = inspect(&dir, name()).unwrap().unwrap();
    let seen_by_b = inspect(&dir, name()).unwrap().unwrap();
    // A breaks it, and a new holder C takes the lock.
    assert_eq!(
        break_stale(&dir, name(), &seen_by_a, None).unwrap(),
        Broke::Removed
    );
    let c = acquire(&dir, name(), &no_wait()).unwrap();
    // B, late, acts on what it saw: it must leave C's lock alone.
    assert_eq!(
        break_stale(&dir, name(), &seen_by_b, None).unwrap(),
        Broke::Changed
    );
    assert!(c.is_held().unwrap());
    assert!(acquire(&dir, name(), &no_wait()).unwrap_err().is_busy());
    c.release().unwrap();
    assert_eq!(listing(scratch.path()), Vec::<String>::new());
}

#[test]
fn a_breaker_overtaken_after_its_check_puts_the_new_lock_back() {
    let scratch = Scratch::new("overtaken");
    let dir = LockDir::open(scratch.path()).unwrap();
    plant(&scratch, b"4242\nhost=elsewhere.example\n", 1000);
    let judged = inspect(&dir, name()).unwrap().unwrap();

    // Between B's re-check and its rename, the stale lock is removed by
    // someone else and C takes the lock.
    let mut c = None;
    let broke = break_stale_interleaved(&dir, name(), &judged, None, &mut || {
        std::fs::remove_file(scratch.path().join(LOCK)).unwrap();
        c = Some(acquire(&dir, name(), &no_wait()).unwrap());
    })
    .unwrap();
    let c = c.unwrap();
    assert_eq!(broke, Broke::Changed);
    // C's lock is back under its name, same inode: C still holds it.
    assert!(c.is_held().unwrap());
    assert_eq!(listing(scratch.path()), vec![LOCK.to_string()]);
    assert!(acquire(&dir, name(), &no_wait()).unwrap_err().is_busy());
    c.release().unwrap();
    assert_eq!(listing(scratch.path()), Vec::<String>::new());
}

#[test]
fn release_and_touch_refuse_a_lock_that_is_no_longer_ours() {
    let scratch = Scratch::new("notours");
    let dir = LockDir::open(scratch.path()).unwrap();
    let lock = acquire(&dir, name(), &no_wait()).unwrap();
    // Someone removes our lock and takes it.
    std::fs::remove_file(scratch.path().join(LOCK)).unwrap();
    let other = acquire(&dir, name(), &no_wait()).unwrap();
    assert_eq!(lock.touch(), Err(LockError::NotOurs));
    assert_eq!(lock.release(), Err(LockError::NotOurs));
    assert!(other.is_held().unwrap(), "the other holder's lock survived");
    other.release().unwrap();
}

#[test]
fn a_lock_taken_after_waiting_longer_than_the_stale_age_is_born_fresh() {
    // The waiter's temporary file is made before it starts waiting; the
    // lock it finally links must not carry that old mtime (found by the
    // nfs-sim torture run: such locks were broken at once by the next
    // waiter).
    let scratch = Scratch::new("bornfresh");
    let dir = LockDir::open(scratch.path()).unwrap();
    let opts = Options {
        stale_age: std::time::Duration::from_secs(2),
        ..Options::default()
    };
    let holder = acquire(&dir, name(), &opts).unwrap();
    let (waiter_dir, waiter_opts) = (dir.clone(), opts.clone());
    let waiter = std::thread::spawn(move || acquire(&waiter_dir, name(), &waiter_opts).unwrap());
    for _ in 0..6 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        holder.touch().unwrap();
    }
    holder.release().unwrap();
    let lock = waiter.join().unwrap();
    assert!(
        matches!(check(&dir, name(), &opts).unwrap(), LockState::Held(_)),
        "a lock just taken must not be stale"
    );
    lock.release().unwrap();
}

#[test]
fn an_old_file_too_large_to_be_a_lock_is_never_removed() {
    // Say the mailbox of a user whose login ends in ".lock": old, and not
    // a lock at all.
    let scratch = Scratch::new("notalock");
    let dir = LockDir::open(scratch.path()).unwrap();
    let big = vec![b'x'; 4096];
    plant(&scratch, &big, 100_000);
    assert_eq!(
        acquire(&dir, name(), &no_wait()).unwrap_err(),
        LockError::NotRegularFile
    );
    assert_eq!(std::fs::read(scratch.path().join(LOCK)).unwrap(), big);
    assert_eq!(listing(scratch.path()), vec![LOCK.to_string()]);
    // Nor removed or kept alive by name, even by its owner (found by the
    // helper_session fuzz target's harness).
    let mtime = || {
        std::fs::metadata(scratch.path().join(LOCK))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = mtime();
    let anyone = |_: &_, _| true;
    assert_eq!(
        touch_by_name(&dir, name(), anyone).unwrap_err(),
        LockError::NotRegularFile
    );
    assert_eq!(
        remove_by_name(&dir, name(), &no_wait(), anyone).unwrap_err(),
        LockError::NotRegularFile
    );
    assert_eq!(mtime(), before);
    assert_eq!(std::fs::read(scratch.path().join(LOCK)).unwrap(), big);
    // And `check` says what `acquire` says: no lock, not a stale one.
    assert_eq!(
        check(&dir, name(), &no_wait()).unwrap_err(),
        LockError::NotRegularFile
    );
}

/// The part of the process the fork test starts (one test thread, so the
/// fork below copies no lock another thread holds): lock once, so this
/// process's identity is cached, then fork; the child locks another name
/// with its own pid, and that lock must not look like a reused pid.
fn forker_process(dir: &str) {
    let dir = LockDir::open(dir.as_ref()).unwrap();
    acquire(&dir, name(), &no_wait())
        .unwrap()
        .release()
        .unwrap();
    // Start times count clock ticks (10 ms): fork well after this
    // process's own start, so the child's start time differs from it.
    std::thread::sleep(std::time::Duration::from_millis(50));
    // SAFETY: the child only takes and checks a lock, then leaves with
    // `_exit`; this process runs one test thread and the harness's main
    // thread, which holds no lock while it waits for the test.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let child = OsStr::new("child.lock");
            let code = match acquire(&dir, child, &no_wait()) {
                Ok(lock) => {
                    let state = check(&dir, child, &no_wait());
                    let held = matches!(state, Ok(LockState::Held(_)));
                    if !held {
                        eprintln!("child's own lock judged {state:?}");
                    }
                    drop(lock);
                    i32::from(!held)
                }
                Err(e) => {
                    eprintln!("child cannot lock: {e}");
                    2
                }
            };
            // SAFETY: `_exit` ends the child without running the parent's
            // atexit handlers or unwinding a copy of its stack.
            unsafe { nix::libc::_exit(code) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).unwrap();
            println!("CHILD {status:?}");
        }
    }
}

#[test]
fn a_forked_child_s_lock_is_not_taken_for_a_reused_pid() {
    if let Some(dir) = child::role() {
        return forker_process(&dir);
    }
    let _deadline = spoollock_test_support::deadline(
        "a forking child process",
        std::time::Duration::from_secs(60),
    );
    let scratch = Scratch::new("forked");
    let out = child::command(&scratch.path().display().to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CHILD Exited(") && stdout.contains(", 0)"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_temp_files(scratch.path());
}
