//! Requests the helper must refuse, each with a clear error, an audit
//! line and an unchanged spool: bad parameters, other users' mailboxes,
//! unknown and unsafe spools, planted files, the victim's lock, malformed
//! frames.

use crate::privileged_env::*;

use std::fs;
use std::os::unix::fs::{chown, symlink};
use std::path::{Path, PathBuf};

use spoollock_protocol::codec::{encode, PREFIX_LEN};
use spoollock_protocol::{
    exit, read_frame, FrameProblem, Hello, LockMode, LockRequest, MailboxProblem, Refusal, Request,
    SpoolProblem, SpoolSel, Target, WaitSpec, Welcome, MAGIC, MAX_FRAME, PROTOCOL_VERSION,
};

pub(crate) fn bad_parameters(env: &Env) {
    env.reset();
    for secs in [0, 10, 299, 86_401, u32::MAX] {
        let r = Request::Lock(LockRequest {
            target: target(),
            wait: WaitSpec::NoWait,
            mode: LockMode::Session,
            stale_age_secs: Some(secs),
        });
        assert_refused(
            env,
            &env.caller,
            &r,
            Refusal::StaleAgeOutOfRange {
                min_secs: 300,
                max_secs: 86_400,
            },
            "stale-age-out-of-range",
        );
    }
    for pid in [0, 1, 4_000_000, u32::MAX] {
        let r = lock(
            target(),
            WaitSpec::NoWait,
            LockMode::Detached {
                holder_pid: Some(pid),
            },
        );
        assert_refused(
            env,
            &env.caller,
            &r,
            Refusal::BadHolderPid { pid },
            "bad-holder-pid",
        );
    }
}

pub(crate) fn other_users_mailbox_names(env: &Env) {
    env.reset();
    let names = [
        VICTIM.to_owned(),
        format!("../{VICTIM}"),
        format!("/var/mail/{VICTIM}"),
        format!("{CALLER}.lock"),
        format!("{CALLER}.lock.lock"),
        format!("./{CALLER}"),
        format!("{CALLER}/"),
        String::new(),
        "root".to_owned(),
    ];
    for name in &names {
        for request in [
            lock(named(name), WaitSpec::NoWait, LockMode::Session),
            Request::Unlock(named(name)),
            Request::Touch(named(name)),
            Request::Check(named(name)),
        ] {
            assert_refused(
                env,
                &env.caller,
                &request,
                Refusal::NotYourMailbox,
                "not-your-mailbox",
            );
        }
    }
}

pub(crate) fn unknown_spools(env: &Env) {
    env.reset();
    for spool in [
        SpoolSel::Path("/var/mail/".into()),
        SpoolSel::Path("/var/mail/.".into()),
        SpoolSel::Path("/var/mail/../mail".into()),
        SpoolSel::Path("//var/mail".into()),
        SpoolSel::Path("var/mail".into()),
        SpoolSel::Path("/tmp".into()),
        SpoolSel::Path("/etc".into()),
        SpoolSel::Path(env.spools().join("unlisted").to_str().unwrap().into()),
        SpoolSel::Path(String::new()),
        SpoolSel::Index(99),
        SpoolSel::Index(u32::MAX),
    ] {
        let t = Target {
            spool,
            mailbox: None,
        };
        assert_refused(
            env,
            &env.caller,
            &lock(t, WaitSpec::NoWait, LockMode::Session),
            Refusal::UnknownSpool,
            "unknown-spool",
        );
    }
}

pub(crate) fn unsafe_spools(env: &Env) {
    env.reset();
    let s = env.spools();
    let mut cases = vec![
        (s.join("world"), SpoolProblem::WorldWritable),
        (
            s.join("userowned"),
            SpoolProblem::NotRootOwned {
                uid: env.caller.uid,
            },
        ),
        (s.join("rootgroup"), SpoolProblem::WrongGroup { gid: 0 }),
        (s.join("readonly"), SpoolProblem::NotGroupWritable),
        (s.join("link"), SpoolProblem::Symlink),
        (s.join("userdir/spool"), SpoolProblem::UnsafeAncestor),
    ];
    if fs::symlink_metadata("/var/spool/mail").is_ok_and(|m| m.file_type().is_symlink()) {
        // Debian's /var/spool/mail -> ../mail: a built-in spool that is a
        // symlink is refused, not followed.
        cases.push((PathBuf::from("/var/spool/mail"), SpoolProblem::Symlink));
    }
    for (path, problem) in cases {
        for request in [
            lock(in_spool(&path), WaitSpec::NoWait, LockMode::Session),
            Request::Unlock(in_spool(&path)),
            Request::Check(in_spool(&path)),
        ] {
            assert_refused(
                env,
                &env.caller,
                &request,
                Refusal::Spool(problem),
                "unsafe-spool",
            );
        }
    }
}

pub(crate) fn planted_files_at_lock_and_mailbox(env: &Env) {
    let spool = Path::new(SPOOL);
    let mine = spool.join(CALLER);
    let theirs = spool.join(VICTIM);
    let lock_req = session_lock();

    // A symlink at the lock name.
    env.reset();
    symlink(VICTIM, env.lock_path()).unwrap();
    for r in [
        &lock_req,
        &Request::Unlock(target()),
        &Request::Touch(target()),
    ] {
        assert_refused(
            env,
            &env.caller,
            r,
            Refusal::LockNotRegular,
            "lock-not-regular",
        );
    }

    // A hard link to the victim's mailbox at the lock name: another user's
    // file, never touched (see also collision.rs).
    env.reset();
    fs::hard_link(&theirs, env.lock_path()).unwrap();
    let before = env.snapshot();
    let foreign = Refusal::ForeignLockFile {
        owner_uid: env.victim.uid,
        owner_login: Some(VICTIM.into()),
    };
    for r in [
        &lock_req,
        &Request::Unlock(target()),
        &Request::Touch(target()),
    ] {
        assert_refused(env, &env.caller, r, foreign.clone(), "foreign-lock-file");
    }
    assert_eq!(env.snapshot(), before);

    // The mailbox is a symlink to the victim's.
    env.reset();
    fs::remove_file(&mine).unwrap();
    symlink(VICTIM, &mine).unwrap();
    assert_refused(
        env,
        &env.caller,
        &lock_req,
        Refusal::Mailbox(MailboxProblem::Symlink),
        "bad-mailbox",
    );

    // The mailbox is a hard link to the victim's.
    env.reset();
    fs::remove_file(&mine).unwrap();
    fs::hard_link(&theirs, &mine).unwrap();
    assert_refused(
        env,
        &env.caller,
        &lock_req,
        Refusal::Mailbox(MailboxProblem::NotOwned {
            uid: env.victim.uid,
        }),
        "bad-mailbox",
    );

    // The mailbox belongs to someone else.
    env.reset();
    chown(&mine, Some(env.victim.uid), None).unwrap();
    assert_refused(
        env,
        &env.caller,
        &lock_req,
        Refusal::Mailbox(MailboxProblem::NotOwned {
            uid: env.victim.uid,
        }),
        "bad-mailbox",
    );

    // The mailbox is a directory.
    env.reset();
    fs::remove_file(&mine).unwrap();
    make_dir(&mine, env.caller.uid, env.mail_gid, 0o700);
    assert_refused(
        env,
        &env.caller,
        &lock_req,
        Refusal::Mailbox(MailboxProblem::NotRegular),
        "bad-mailbox",
    );

    // The caller's own mailbox, with a second hard link.
    env.reset();
    fs::hard_link(&mine, spool.join(".extra-link")).unwrap();
    assert_refused(
        env,
        &env.caller,
        &lock_req,
        Refusal::Mailbox(MailboxProblem::HardLinked { nlink: 2 }),
        "bad-mailbox",
    );
}

pub(crate) fn victims_lock_is_untouchable(env: &Env) {
    env.reset();
    // The victim takes a detached lock of their own.
    let (mut v, _) = Client::open(env, &env.victim);
    expect_locked(v.call(&lock(
        target(),
        WaitSpec::NoWait,
        LockMode::Detached { holder_pid: None },
    )));
    bye(v);
    let victim_lock = Path::new(SPOOL).join(format!("{VICTIM}.lock"));
    assert!(victim_lock.exists());
    // A lock at the caller's name that another user owns.
    fs::copy(&victim_lock, env.lock_path()).unwrap();
    chown(env.lock_path(), Some(env.victim.uid), Some(env.mail_gid)).unwrap();
    set_mode(&env.lock_path(), 0o644);

    for r in [
        Request::Unlock(named(VICTIM)),
        Request::Touch(named(VICTIM)),
        lock(named(VICTIM), WaitSpec::NoWait, LockMode::Session),
    ] {
        assert_refused(
            env,
            &env.caller,
            &r,
            Refusal::NotYourMailbox,
            "not-your-mailbox",
        );
    }
    // Not the caller's lock, nor root's: refused, saying whose it is.
    let foreign = Refusal::ForeignLockFile {
        owner_uid: env.victim.uid,
        owner_login: Some(VICTIM.into()),
    };
    for r in [
        Request::Unlock(target()),
        Request::Touch(target()),
        session_lock(),
        Request::Check(target()),
    ] {
        assert_refused(env, &env.caller, &r, foreign.clone(), "foreign-lock-file");
    }
    // Owned by root (a root-run delivery agent's lock): a lock, waited for
    // and broken when stale, but not the caller's to unlock or touch by
    // name.
    chown(env.lock_path(), Some(0), Some(env.mail_gid)).unwrap();
    for r in [Request::Unlock(target()), Request::Touch(target())] {
        assert_refused(env, &env.caller, &r, Refusal::NotOurs, "not-ours");
    }
}

pub(crate) fn malformed_frames(env: &Env) {
    env.reset();
    let hello = encode(&Hello::current()).unwrap();
    let mut oversize = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    oversize.extend_from_slice(&[0; 16]);
    let huge = u32::MAX.to_be_bytes().to_vec();
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[1; 10]);
    let garbage = {
        // A known message kind (Lock) followed by bytes that are no request.
        let mut payload = 0u32.to_le_bytes().to_vec();
        payload.extend((0..50u32).map(|i| (i * 73 + 11) as u8));
        let mut f = (payload.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&payload);
        f
    };
    let unknown = {
        let mut f = 4u32.to_be_bytes().to_vec();
        f.extend_from_slice(&9u32.to_le_bytes());
        f
    };
    let trailing = {
        let mut payload = encode(&Request::Bye).unwrap()[PREFIX_LEN..].to_vec();
        payload.push(0);
        let mut f = (payload.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&payload);
        f
    };
    let empty = 0u32.to_be_bytes().to_vec();
    let short = vec![0u8, 0];

    // After the handshake: answered with BadFrame, session ended, a held
    // lock released.
    let after: [(&str, &[u8], bool, FrameProblem); 8] = [
        ("oversize", &oversize, false, FrameProblem::Oversize),
        ("huge", &huge, false, FrameProblem::Oversize),
        ("truncated", &truncated, true, FrameProblem::Truncated),
        ("garbage", &garbage, false, FrameProblem::Garbage),
        ("unknown", &unknown, false, FrameProblem::UnknownVariant),
        ("trailing", &trailing, false, FrameProblem::TrailingBytes),
        ("empty", &empty, false, FrameProblem::Empty),
        ("short", &short, true, FrameProblem::Truncated),
    ];
    for (what, bytes, close, problem) in after {
        let before = env.snapshot();
        let mark = env.log_mark();
        let (mut c, _) = Client::open(env, &env.caller);
        expect_locked(c.call(&session_lock()));
        c.send_raw(bytes);
        if close {
            c.close_input();
        }
        // Nothing more is sent: an oversize frame is refused from its
        // prefix alone.
        assert_eq!(expect_error(c.read()), Refusal::BadFrame(problem), "{what}");
        let pid = c.pid();
        let (status, _) = c.finish();
        assert_eq!(status.code(), Some(exit::REFUSED), "{what}");
        let tag = format!("[{pid}]:");
        env.wait_log(
            mark,
            &["authpriv.warning", &tag, "op=request", "result=bad-frame"],
        );
        env.wait_log(
            mark,
            &["mail.info", &tag, "op=release", "trigger=bad-frame"],
        );
        assert_eq!(env.snapshot(), before, "{what}");
    }

    // Instead of the hello: refused with a Welcome that does not accept.
    let wrong_version = encode(&Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION + 98,
    })
    .unwrap();
    let wrong_magic = encode(&Hello {
        magic: *b"GET / HT",
        version: PROTOCOL_VERSION,
    })
    .unwrap();
    let mut hello_trailing = hello[PREFIX_LEN..].to_vec();
    hello_trailing.push(b'\n');
    let mut hello_trailing_frame = (hello_trailing.len() as u32).to_be_bytes().to_vec();
    hello_trailing_frame.extend_from_slice(&hello_trailing);
    let first: [(&str, &[u8], bool, &str); 7] = [
        (
            "wrong version",
            &wrong_version,
            false,
            "result=version-mismatch",
        ),
        ("wrong magic", &wrong_magic, false, "result=bad-frame"),
        (
            "hello trailing",
            &hello_trailing_frame,
            false,
            "result=bad-frame",
        ),
        ("oversize hello", &oversize, false, "result=bad-frame"),
        ("truncated hello", &hello[..7], true, "result=bad-frame"),
        ("short hello", &short, true, "result=bad-frame"),
        ("empty hello", &empty, false, "result=bad-frame"),
    ];
    for (what, bytes, close, result) in first {
        let before = env.snapshot();
        let mark = env.log_mark();
        let mut c = Client::start(env, &env.run(&env.caller));
        c.send_raw(bytes);
        if close {
            c.close_input();
        }
        let welcome: Welcome = read_frame(c.stdout.as_mut().unwrap()).expect(what);
        assert!(!welcome.accepted, "{what}");
        assert_eq!(welcome.version, PROTOCOL_VERSION);
        assert!(
            c.try_read().is_err(),
            "{what}: nothing after a refused hello"
        );
        let pid = c.pid();
        let (status, _) = c.finish();
        assert_eq!(status.code(), Some(exit::REFUSED), "{what}");
        env.wait_log(
            mark,
            &["authpriv.warning", &format!("[{pid}]:"), "op=hello", result],
        );
        assert_eq!(env.snapshot(), before, "{what}");
    }
}
