//! A file at the caller's lock name that is not the caller's lock is never
//! renamed, removed, refreshed or waited for (issue 12, item 1).
//!
//! The attack: Debian's `useradd` accepts a login such as `alice.lock`, and
//! that user's mailbox `/var/mail/alice.lock` is alice's lock name. When
//! alice locked, the helper took the mailbox for a lock it could not read,
//! judged it by age, and (small and untouched for the stale age) renamed it
//! aside and unlinked it with the mail group raised; fresh, it made alice
//! wait forever. Here, as the setgid helper and through the `spoollock`
//! command:
//!
//! - a login `L` for which a user `L.lock` exists is refused, typed and
//!   audited at authpriv, and that user's mailbox stays as it was;
//! - a file at the lock name owned by another user (not the caller, not
//!   root) is refused, at once, whatever its age, content or mode, and the
//!   refusal says whose it is; the command prints it;
//! - stale locks the caller or root own (root-run delivery agents) are
//!   still broken;
//! - without the helper, in a directory other users share, a lock file of
//!   another user that the caller cannot read is never judged stale.
//!
//! Run as root: `cargo test -p spoollock-helper --test collision`.

#[path = "support/privileged_env.rs"]
mod support;

use std::fs;
use std::os::unix::fs::{chown, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::unistd::User;
use spoollock_protocol::{LockMode, LockStatus, Refusal, Reply, Request, WaitSpec};
use support::*;

/// A user whose login ends in `.lock`, removed again when dropped (even
/// when the scenario fails): while it exists, the helper refuses its
/// namesake's locks.
struct LockNamedUser(Ids);

impl LockNamedUser {
    fn create(name: &str) -> LockNamedUser {
        LockNamedUser(ensure_user(name))
    }
}

impl Drop for LockNamedUser {
    fn drop(&mut self) {
        let _ = Command::new(which("userdel", "passwd"))
            .arg(&self.0.name)
            .status();
    }
}

/// A file's identity and every attribute a break or a refresh would
/// change.
fn identity(p: &Path) -> (u64, u32, u32, u64, i64, i64, u64) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (
        m.ino(),
        m.mode(),
        m.uid(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.nlink(),
    )
}

/// `who` asks for `request`: it must be refused with `expected` (checked
/// by `check`), audited at authpriv with `keyword`, within the patience
/// bound (never a wait), and nothing in any spool may change.
fn refused_at_once(
    env: &Env,
    who: &Ids,
    request: &Request,
    check: &dyn Fn(&Refusal),
    keyword: &str,
) {
    let before = env.snapshot();
    let mark = env.log_mark();
    let (mut c, _) = Client::open(env, who);
    c.send(request);
    let reply = read_within(&mut c);
    match reply {
        Reply::Error(r) => check(&r),
        other => panic!(
            "{request:?} by {}: expected a refusal, got {other:?}",
            who.name
        ),
    }
    let pid = c.pid();
    let (status, _) = bye(c);
    assert!(status.success());
    env.wait_log(
        mark,
        &[
            "authpriv.warning",
            &format!("spoollock-helper[{pid}]:"),
            &format!("result={keyword}"),
        ],
    );
    assert_eq!(env.snapshot(), before, "spool changed by {request:?}");
}

fn every_request(wait: WaitSpec) -> Vec<Request> {
    vec![
        lock(target(), wait, LockMode::Session),
        lock(target(), wait, LockMode::Detached { holder_pid: None }),
        Request::Touch(target()),
        Request::Unlock(target()),
        Request::Check(target()),
    ]
}

fn a_login_named_after_a_lock_keeps_its_mailbox(env: &Env) {
    env.reset();
    let alice = ensure_user("sltest-coll");
    let alice_lock = LockNamedUser::create("sltest-coll.lock");
    let mailbox = Path::new(SPOOL).join("sltest-coll.lock");
    // The namesake's mailbox: empty, unreadable to alice, untouched for an
    // hour (old enough to be judged a stale lock).
    for age in [Duration::from_secs(3600), Duration::ZERO] {
        env.reset();
        plant(env, "sltest-coll.lock", alice_lock.0.uid, b"", 0o660, age);
        let before = identity(&mailbox);
        for wait in [WaitSpec::NoWait, WaitSpec::Forever] {
            for request in every_request(wait) {
                refused_at_once(
                    env,
                    &alice,
                    &request,
                    &|r: &Refusal| check_login_collision(r, "sltest-coll.lock"),
                    LOGIN_COLLISION,
                );
                assert_eq!(identity(&mailbox), before, "mailbox changed by {request:?}");
            }
        }
    }
    // Even with no mailbox yet: alice's lock would become it.
    env.reset();
    refused_at_once(
        env,
        &alice,
        &session_lock(),
        &|r: &Refusal| check_login_collision(r, "sltest-coll.lock"),
        LOGIN_COLLISION,
    );
    // The command says why.
    if let Some(bin) = spoollock_binary(env) {
        env.reset();
        plant(
            env,
            "sltest-coll.lock",
            alice_lock.0.uid,
            b"",
            0o660,
            Duration::from_secs(3600),
        );
        let before = identity(&mailbox);
        let out = bounded_output(&mut spoollock_as(
            env,
            &alice,
            &bin,
            &["run", "--mailbox", "--", "true"],
        ));
        let err = String::from_utf8_lossy(&out.stderr);
        println!("  spoollock run --mailbox as sltest-coll: {}", err.trim());
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(err.contains("sltest-coll.lock"), "{err}");
        assert_eq!(identity(&mailbox), before);
    }
}

fn anothers_file_at_the_lock_name_is_never_touched(env: &Env) {
    let lock_name = format!("{CALLER}.lock");
    let dead = dead_pid();
    let hour = Duration::from_secs(3600);
    let live = std::process::id();
    let cases: Vec<(&str, Vec<u8>, u32, Duration)> = vec![
        ("empty, unreadable, an hour old", Vec::new(), 0o660, hour),
        (
            "a lock of a dead process",
            lock_content(dead),
            0o644,
            Duration::ZERO,
        ),
        (
            "an old lock naming no process",
            b"0\n".to_vec(),
            0o644,
            hour,
        ),
        (
            "a valid lock of a live process",
            lock_content(live),
            0o644,
            Duration::ZERO,
        ),
    ];
    let victim = env.victim.clone();
    for (what, content, mode, age) in &cases {
        env.reset();
        let p = plant(env, &lock_name, victim.uid, content, *mode, *age);
        let before = identity(&p);
        for wait in [WaitSpec::NoWait, WaitSpec::Forever] {
            for request in every_request(wait) {
                refused_at_once(
                    env,
                    &env.caller,
                    &request,
                    &|r: &Refusal| check_foreign(r, victim.uid, Some(VICTIM)),
                    FOREIGN,
                );
                assert_eq!(identity(&p), before, "{what}: changed by {request:?}");
            }
        }
    }
    // A file of a uid without a password entry: the refusal names the uid.
    env.reset();
    let orphan = 64_999;
    assert!(User::from_uid(orphan.into()).unwrap().is_none());
    let p = plant(env, &lock_name, orphan, b"", 0o600, hour);
    refused_at_once(
        env,
        &env.caller,
        &session_lock(),
        &|r: &Refusal| check_foreign(r, orphan, None),
        FOREIGN,
    );
    assert!(p.exists());
    // The command says whose it is.
    if let Some(bin) = spoollock_binary(env) {
        env.reset();
        let p = plant(env, &lock_name, victim.uid, b"", 0o660, hour);
        let before = identity(&p);
        let out = bounded_output(&mut spoollock_as(
            env,
            &env.caller,
            &bin,
            &["run", "--mailbox", "--", "true"],
        ));
        let err = String::from_utf8_lossy(&out.stderr);
        println!("  spoollock run --mailbox as {CALLER}: {}", err.trim());
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(
            err.contains(VICTIM) && err.contains(&victim.uid.to_string()),
            "{err}"
        );
        assert_eq!(identity(&p), before);
    }
}

/// What a root-run delivery agent or the caller's own tools leave is
/// still a lock: broken when stale, waited for when held.
fn root_and_callers_stale_locks_are_still_broken(env: &Env) {
    let lock_name = format!("{CALLER}.lock");
    let dead = dead_pid();
    let hour = Duration::from_secs(3600);
    for (who, uid) in [("root", 0), (CALLER, env.caller.uid)] {
        for (content, mode, age) in [
            (lock_content(dead), 0o644, Duration::ZERO),
            (b"0\n".to_vec(), 0o644, hour),
            (Vec::new(), 0o600, hour),
        ] {
            env.reset();
            plant(env, &lock_name, uid, &content, mode, age);
            let mark = env.log_mark();
            let (mut c, _) = Client::open(env, &env.caller);
            let locked = expect_locked(c.call(&session_lock()));
            assert_eq!(locked.pid, Some(c.pid()), "{who}'s stale lock");
            assert_eq!(first_line(&env.lock_path()), c.pid().to_string());
            bye(c);
            env.wait_log(mark, &["op=break-stale", "result=removed"]);
        }
        // Held by a live process: busy, as any lock.
        env.reset();
        plant(
            env,
            &lock_name,
            uid,
            &lock_content(std::process::id()),
            0o644,
            Duration::ZERO,
        );
        let (mut c, _) = Client::open(env, &env.caller);
        assert!(matches!(
            expect_error(c.call(&session_lock())),
            Refusal::Busy { .. }
        ));
        match c.call(&Request::Check(target())) {
            Reply::Status(LockStatus::Held(h)) => assert_eq!(h.pid, Some(std::process::id())),
            other => panic!("{who}: {other:?}"),
        }
        bye(c);
    }
}

/// The direct path, without the helper: a directory the caller shares with
/// other users (group-writable by all, no sticky bit). Another user's
/// unreadable, old file at the lock name is not judged stale: the command
/// refuses and the file stays.
fn shared_directory_unreadable_foreign_file(env: &Env) {
    let Some(bin) = spoollock_binary(env) else {
        return;
    };
    let shared: PathBuf = env.base.join("shared");
    make_dir(&shared, 0, 0, 0o777);
    let mailbox = shared.join("box");
    fs::write(&mailbox, b"").unwrap();
    chown(&mailbox, Some(env.caller.uid), None).unwrap();
    let lock = shared.join("box.lock");
    let stale = |uid: u32, mode: u32, content: &[u8]| {
        fs::write(&lock, content).unwrap();
        chown(&lock, Some(uid), Some(0)).unwrap();
        set_mode(&lock, mode);
        fs::File::options()
            .write(true)
            .open(&lock)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        identity(&lock)
    };
    let run = || {
        bounded_output(&mut spoollock_as(
            env,
            &env.caller,
            &bin,
            &["run", "--no-wait", mailbox.to_str().unwrap(), "--", "true"],
        ))
    };
    // Another user's, unreadable: refused, untouched.
    let before = stale(env.victim.uid, 0o600, b"");
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    println!(
        "  direct path, another user's unreadable old file: {}",
        err.trim()
    );
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&env.victim.uid.to_string()), "{err}");
    assert_eq!(identity(&lock), before);
    // Another user's, readable (a lock of a dotlock tool): judged and broken.
    stale(env.victim.uid, 0o644, b"0\n");
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!lock.exists());
    // The caller's own unreadable file: judged by age, broken.
    stale(env.caller.uid, 0o000, b"");
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!lock.exists());
    fs::remove_dir_all(&shared).unwrap();
}

fn main() {
    run_scenarios(
        "lock-name collision tests",
        &[
            (
                "a_login_named_after_a_lock_keeps_its_mailbox",
                a_login_named_after_a_lock_keeps_its_mailbox,
            ),
            (
                "anothers_file_at_the_lock_name_is_never_touched",
                anothers_file_at_the_lock_name_is_never_touched,
            ),
            (
                "root_and_callers_stale_locks_are_still_broken",
                root_and_callers_stale_locks_are_still_broken,
            ),
            (
                "shared_directory_unreadable_foreign_file",
                shared_directory_unreadable_foreign_file,
            ),
        ],
        Env::setup,
    );
}

const LOGIN_COLLISION: &str = "lock-name-is-a-login";
const FOREIGN: &str = "foreign-lock-file";

fn check_login_collision(r: &Refusal, user: &str) {
    assert_eq!(
        r,
        &Refusal::LockNameIsLogin {
            login: user.to_owned()
        }
    );
}

fn check_foreign(r: &Refusal, uid: u32, login: Option<&str>) {
    assert_eq!(
        r,
        &Refusal::ForeignLockFile {
            owner_uid: uid,
            owner_login: login.map(str::to_owned),
        }
    );
}
