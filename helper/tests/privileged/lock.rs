//! Locking one's own mailbox through the helper: the grant and the
//! helper's hardening, a lock lost while held, an extra configured spool,
//! release at end of file, pipelined requests, busy, timeout, cancel and
//! hand-off, detached locks for scripts.

use crate::privileged_env::*;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use spoollock_protocol::codec::encode;
use spoollock_protocol::{
    exit, read_frame, Hello, LockMode, LockStatus, Refusal, Reply, Request, SpoolSel, Target,
    WaitSpec, Welcome,
};

pub(crate) fn own_mailbox_lock_and_release(env: &Env) {
    env.reset();
    let before = env.snapshot();
    let mark = env.log_mark();
    let (mut c, info) = Client::open(env, &env.caller);
    assert_eq!(info.login, CALLER);
    assert_eq!(info.uid, env.caller.uid);
    assert_eq!(info.helper_pid, c.pid());
    assert_eq!(info.spools[0], SPOOL);

    let locked = expect_locked(c.call(&session_lock()));
    assert_eq!(locked.name, format!("{CALLER}.lock"));
    assert_eq!(locked.spool, SPOOL);
    assert_eq!(locked.pid, Some(c.pid()));
    assert!(!locked.detached);
    assert_hardened(env, c.pid());
    let m = fs::symlink_metadata(env.lock_path()).unwrap();
    assert!(m.is_file());
    assert_eq!(m.uid(), env.caller.uid, "lock owned by the caller");
    assert_eq!(m.mode() & 0o777, 0o644);
    assert_eq!(first_line(&env.lock_path()), c.pid().to_string());
    match c.call(&Request::Check(target())) {
        Reply::Status(LockStatus::Held(h)) => assert_eq!(h.pid, Some(c.pid())),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.call(&Request::Touch(target())), Reply::Touched);
    assert_eq!(c.call(&Request::Unlock(target())), Reply::Unlocked);
    assert!(!env.lock_path().exists());
    assert_eq!(
        c.call(&Request::Check(target())),
        Reply::Status(LockStatus::Free)
    );

    // Again, naming the spool and the mailbox explicitly; Bye releases.
    let explicit = Target {
        spool: SpoolSel::Path(SPOOL.into()),
        mailbox: Some(CALLER.into()),
    };
    expect_locked(c.call(&lock(explicit, WaitSpec::NoWait, LockMode::Session)));
    assert!(env.lock_path().exists());
    let pid = c.pid();
    let (status, _) = bye(c);
    assert_eq!(status.code(), Some(exit::OK));
    assert!(!env.lock_path().exists());

    let tag = format!("spoollock-helper[{pid}]:");
    let uid = format!("uid={}", env.caller.uid);
    let grant = env.wait_log(
        mark,
        &[
            "mail.info",
            &tag,
            "op=lock",
            "result=granted",
            &uid,
            "login=sltest-caller",
            "spool=/var/mail",
        ],
    );
    assert!(grant.contains(&format!("lock={CALLER}.lock")), "{grant}");
    assert!(grant.contains("client_pid="), "{grant}");
    env.wait_log(
        mark,
        &[
            "mail.info",
            &tag,
            "op=release",
            "result=released",
            "trigger=request",
        ],
    );
    env.wait_log(
        mark,
        &[
            "mail.info",
            &tag,
            "op=release",
            "result=released",
            "trigger=bye",
        ],
    );
    assert_eq!(env.snapshot(), before);
}

/// What /proc says about a helper in the middle of a session: the mail
/// group only in the saved set-gid, no capabilities, no_new_privs, not
/// dumpable, no core dumps, umask 022, no signal blocked, only SIGPIPE and
/// SIGXFSZ ignored.
pub(crate) fn assert_hardened(env: &Env, pid: u32) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} missing in {status}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (u, g, m) = (env.caller.uid, env.caller.gid, env.mail_gid);
    assert_eq!(field("Uid:"), format!("{u} {u} {u} {u}"));
    assert_eq!(
        field("Gid:"),
        format!("{g} {g} {m} {g}"),
        "mail only in the saved gid"
    );
    assert_eq!(
        field("Groups:"),
        g.to_string(),
        "the caller's own groups only"
    );
    for caps in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
        assert_eq!(field(caps), "0000000000000000", "{caps}");
    }
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("Umask:"), "0022");
    assert_eq!(field("SigBlk:"), "0000000000000000");
    // Of the standard signals (1-31), only SIGPIPE and SIGXFSZ are ignored
    // (glibc reserves 32 and 33; real-time signals are left as inherited).
    let ignored = u64::from_str_radix(&field("SigIgn:"), 16).unwrap() & 0x7fff_ffff;
    assert_eq!(
        ignored,
        (1 << (13 - 1)) | (1 << (25 - 1)),
        "SigIgn {ignored:x}"
    );
    // Not dumpable: its /proc entries belong to root, not to the caller.
    assert_eq!(
        fs::metadata(format!("/proc/{pid}/status")).unwrap().uid(),
        0
    );
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "{core}"
    );
}

pub(crate) fn lock_lost_while_held(env: &Env) {
    env.reset();
    let mark = env.log_mark();
    let (mut c, _) = Client::open(env, &env.caller);
    expect_locked(c.call(&session_lock()));
    // Someone (root, or a breaker that judged it stale) removes it.
    fs::remove_file(env.lock_path()).unwrap();
    assert_eq!(
        expect_error(c.call(&Request::Touch(target()))),
        Refusal::LockLost
    );
    assert_eq!(
        expect_error(c.call(&Request::Unlock(target()))),
        Refusal::LockLost
    );
    // A new lock taken by someone else is never released by the old session.
    let (mut other, _) = Client::open(env, &env.caller);
    expect_locked(other.call(&session_lock()));
    let pid = c.pid();
    bye(c);
    assert_eq!(first_line(&env.lock_path()), other.pid().to_string());
    env.wait_log(
        mark,
        &[
            "mail.warning",
            &format!("[{pid}]:"),
            "op=touch",
            "result=lock-lost",
        ],
    );
    bye(other);
    assert!(!env.lock_path().exists());
}

pub(crate) fn extra_configured_spool(env: &Env) {
    env.reset();
    let good = env.spools().join("good");
    let (mut c, info) = Client::open(env, &env.caller);
    let index = info
        .spools
        .iter()
        .position(|s| Path::new(s) == good)
        .expect("configured spool listed") as u32;
    let by_index = Target {
        spool: SpoolSel::Index(index),
        mailbox: None,
    };
    let l = expect_locked(c.call(&lock(by_index.clone(), WaitSpec::NoWait, LockMode::Session)));
    assert_eq!(Path::new(&l.spool), good);
    assert!(good.join(format!("{CALLER}.lock")).exists());
    assert!(!env.lock_path().exists());
    // A second lock in the same session is refused.
    assert_eq!(
        expect_error(c.call(&lock(in_spool(&good), WaitSpec::NoWait, LockMode::Session))),
        Refusal::AlreadyLocked
    );
    assert_eq!(c.call(&Request::Unlock(in_spool(&good))), Reply::Unlocked);
    assert!(!good.join(format!("{CALLER}.lock")).exists());
    bye(c);
}

pub(crate) fn end_of_file_releases(env: &Env) {
    env.reset();
    let mark = env.log_mark();
    let (mut c, _) = Client::open(env, &env.caller);
    expect_locked(c.call(&session_lock()));
    assert!(env.lock_path().exists());
    c.close_input();
    let pid = c.pid();
    let (status, _) = c.finish();
    assert_eq!(status.code(), Some(exit::OK));
    assert!(!env.lock_path().exists());
    env.wait_log(
        mark,
        &[
            &format!("[{pid}]:"),
            "op=release",
            "result=released",
            "trigger=eof",
        ],
    );
}

/// Requests sent together, hello included, are answered in order (the
/// replies leave together), each grant and release audited.
pub(crate) fn pipelined_requests(env: &Env) {
    env.reset();
    let mark = env.log_mark();
    let mut c = Client::start(env, &env.run(&env.caller));
    let mut all = encode(&Hello::current()).unwrap();
    for request in [
        session_lock(),
        Request::Check(target()),
        Request::Unlock(target()),
        Request::Bye,
    ] {
        all.extend(encode(&request).unwrap());
    }
    c.send_raw(&all);
    let welcome: Welcome = read_frame(c.stdout.as_mut().unwrap()).unwrap();
    assert!(welcome.accepted);
    assert!(matches!(c.read(), Reply::Ready(_)));
    let locked = expect_locked(c.read());
    assert_eq!(locked.pid, Some(c.pid()));
    match c.read() {
        Reply::Status(LockStatus::Held(h)) => assert_eq!(h.pid, Some(c.pid())),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.read(), Reply::Unlocked);
    assert_eq!(c.read(), Reply::Bye);
    let pid = c.pid();
    assert!(c.finish().0.success());
    assert!(!env.lock_path().exists());
    env.wait_log(mark, &[&format!("[{pid}]:"), "op=lock", "result=granted"]);
    env.wait_log(
        mark,
        &[&format!("[{pid}]:"), "op=release", "trigger=request"],
    );
}

pub(crate) fn busy_timeout_cancel_and_handoff(env: &Env) {
    env.reset();
    let mark = env.log_mark();
    let (mut a, _) = Client::open(env, &env.caller);
    expect_locked(a.call(&session_lock()));

    let (mut b, _) = Client::open(env, &env.caller);
    match expect_error(b.call(&session_lock())) {
        Refusal::Busy { holder: Some(h) } => assert_eq!(h.pid, Some(a.pid())),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        expect_error(b.call(&lock(target(), WaitSpec::Retries(2), LockMode::Session))),
        Refusal::Busy { .. }
    ));
    assert!(matches!(
        expect_error(b.call(&lock(target(), WaitSpec::TimeoutMs(200), LockMode::Session))),
        Refusal::Timeout { .. }
    ));
    env.wait_log(
        mark,
        &["mail.warning", &format!("[{}]:", b.pid()), "result=busy"],
    );
    env.wait_log(
        mark,
        &["mail.warning", &format!("[{}]:", b.pid()), "result=timeout"],
    );

    // A waiting request is cancelled by the client's next frame.
    b.send(&lock(target(), WaitSpec::Forever, LockMode::Session));
    b.send(&Request::Bye);
    assert_eq!(expect_error(b.read()), Refusal::Cancelled);
    assert_eq!(b.read(), Reply::Bye);
    assert!(b.finish().0.success());

    // ... also when that frame came in the same write, so that the helper
    // has already read it ahead when the wait begins.
    let (mut c, _) = Client::open(env, &env.caller);
    let mut both = encode(&lock(target(), WaitSpec::Forever, LockMode::Session)).unwrap();
    both.extend(encode(&Request::Bye).unwrap());
    c.send_raw(&both);
    assert_eq!(expect_error(c.read()), Refusal::Cancelled);
    assert_eq!(c.read(), Reply::Bye);
    assert!(c.finish().0.success());

    // ... and ends at once when the client goes away.
    let (mut d, _) = Client::open(env, &env.caller);
    d.send(&lock(target(), WaitSpec::Forever, LockMode::Session));
    d.close_input();
    assert_eq!(expect_error(d.read()), Refusal::Cancelled);
    assert!(d.finish().0.success());

    // Hand-off: a waiter gets the lock when the holder releases it.
    let (mut w, _) = Client::open(env, &env.caller);
    w.send(&lock(target(), WaitSpec::Forever, LockMode::Session));
    assert_eq!(a.call(&Request::Unlock(target())), Reply::Unlocked);
    let l = expect_locked(w.read());
    assert_eq!(l.pid, Some(w.pid()));
    assert_eq!(first_line(&env.lock_path()), w.pid().to_string());
    bye(w);
    bye(a);
    assert!(!env.lock_path().exists());
}

pub(crate) fn detached_lock_for_scripts(env: &Env) {
    env.reset();
    let (mut c, _) = Client::open(env, &env.caller);
    let l = expect_locked(c.call(&lock(
        target(),
        WaitSpec::NoWait,
        LockMode::Detached { holder_pid: None },
    )));
    assert!(l.detached);
    assert_eq!(l.pid, None);
    bye(c);
    assert!(
        env.lock_path().exists(),
        "a detached lock outlives its helper"
    );
    assert_eq!(first_line(&env.lock_path()), "0");
    assert_eq!(fs::metadata(env.lock_path()).unwrap().uid(), env.caller.uid);

    let (mut c, _) = Client::open(env, &env.caller);
    assert!(matches!(
        c.call(&Request::Check(target())),
        Reply::Status(LockStatus::Held(_))
    ));
    assert!(matches!(
        expect_error(c.call(&session_lock())),
        Refusal::Busy { .. }
    ));
    assert_eq!(c.call(&Request::Touch(target())), Reply::Touched);
    assert_eq!(c.call(&Request::Unlock(target())), Reply::Unlocked);
    assert!(!env.lock_path().exists());
    assert_eq!(
        expect_error(c.call(&Request::Unlock(target()))),
        Refusal::NotLocked
    );
    assert_eq!(
        expect_error(c.call(&Request::Touch(target()))),
        Refusal::NotLocked
    );
    // A holder pid must be a live process; ours is.
    let me = std::process::id();
    let l = expect_locked(c.call(&lock(
        target(),
        WaitSpec::NoWait,
        LockMode::Detached {
            holder_pid: Some(me),
        },
    )));
    assert_eq!(l.pid, Some(me));
    assert_eq!(first_line(&env.lock_path()), me.to_string());
    assert_eq!(c.call(&Request::Unlock(target())), Reply::Unlocked);
    bye(c);
}
