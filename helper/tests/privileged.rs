//! Privileged end-to-end tests of `spoollock-helper` (the harness is in
//! `support/privileged_env.rs`, shared with the other privileged test
//! files).
//!
//! They need root (CI runs as root on Debian 12) and skip, saying why,
//! otherwise. Everything is set up here, inside a private mount namespace
//! so the machine's real spool, `/dev` and configuration stay untouched:
//!
//! - two users, `sltest-caller` and `sltest-victim` (`useradd`, idempotent);
//! - a tmpfs over `/var/mail`, `root:mail 2775`;
//! - a tmpfs over `/etc/spoollock` holding a `helper.conf` that names the
//!   extra (good and deliberately unsafe) spools under the scratch dir;
//! - a tmpfs scratch dir (`/run/spoollock-tests.PID`, mounted without
//!   `nosuid`) with the helper installed `root:mail 2755`, a copy without
//!   the setgid bit, and the extra spools;
//! - a tmpfs over `/dev` with the few device nodes needed and a private
//!   `/dev/log`, served by an `rsyslogd` started here with its own
//!   configuration that writes `mail` and `authpriv` to a file the tests
//!   read.
//!
//! The helper then runs as `sltest-caller` (through `setpriv`, with
//! `prlimit`, `sh` and `perl` for hostile rlimits, descriptors and argv)
//! and is driven over the real protocol. Every hostile case checks a clear
//! error, an audit line, and a spool listing (inode, mode, owner, size,
//! mtime) unchanged.
//!
//! Debian packages needed: rsyslog, util-linux (setpriv, prlimit), passwd
//! (useradd), perl-base, bsdutils (logger).

#[path = "support/privileged_env.rs"]
mod privileged_env;

use privileged_env::*;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{chown, symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use spoollock_protocol::codec::{encode, PREFIX_LEN};
use spoollock_protocol::{
    exit, read_frame, write_frame, FrameProblem, Hello, LockMode, LockRequest, LockStatus,
    MailboxProblem, Refusal, Reply, Request, SpoolProblem, SpoolSel, Target, WaitSpec, Welcome,
    MAGIC, MAX_FRAME, PROTOCOL_VERSION,
};

// ---------------------------------------------------------------------------
// Scenarios

fn own_mailbox_lock_and_release(env: &Env) {
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
fn assert_hardened(env: &Env, pid: u32) {
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

fn lock_lost_while_held(env: &Env) {
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

fn extra_configured_spool(env: &Env) {
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

fn end_of_file_releases(env: &Env) {
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

/// `--client HELPER UID GID`: spawn the helper, lock, report, then hang
/// until killed (the test SIGKILLs this process).
fn client_mode(args: &[String]) {
    let mut child = Command::new("/usr/bin/setpriv")
        .arg(format!("--reuid={}", args[1]))
        .arg(format!("--regid={}", args[2]))
        .arg("--init-groups")
        .arg("--")
        .arg(&args[0])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn helper");
    let mut input = child.stdin.take().unwrap();
    let mut output = child.stdout.take().unwrap();
    write_frame(&mut input, &Hello::current()).unwrap();
    let _: Welcome = read_frame(&mut output).unwrap();
    let _: Reply = read_frame(&mut output).unwrap();
    write_frame(&mut input, &session_lock()).unwrap();
    let reply: Reply = read_frame(&mut output).unwrap();
    println!("{} {:?}", child.id(), matches!(reply, Reply::Locked(_)));
    std::io::stdout().flush().unwrap();
    // Hold the pipes (and so the lock) until the test SIGKILLs us; the
    // helper keeps the session open as long as our end is.
    let _ = child.wait();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn client_sigkill_releases(env: &Env) {
    env.reset();
    let mark = env.log_mark();
    let mut client = Command::new(std::env::current_exe().unwrap())
        .arg("--client")
        .arg(&env.helper)
        .arg(env.caller.uid.to_string())
        .arg(env.caller.gid.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(client.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let (helper_pid, locked) = line.trim().split_once(' ').unwrap();
    assert_eq!(locked, "true", "client could not lock");
    assert!(env.lock_path().exists());
    client.kill().unwrap(); // SIGKILL
    client.wait().unwrap();
    wait_gone(&env.lock_path());
    env.wait_log(
        mark,
        &[
            &format!("[{helper_pid}]:"),
            "op=release",
            "result=released",
            "trigger=eof",
        ],
    );
}

fn helper_sigkill_leaves_a_lock_broken_at_once(env: &Env) {
    env.reset();
    let mark = env.log_mark();
    let (mut c, _) = Client::open(env, &env.caller);
    expect_locked(c.call(&session_lock()));
    let dead = c.pid();
    c.kill(Signal::SIGKILL);
    let (status, _) = c.finish();
    assert!(!status.success());
    assert!(env.lock_path().exists(), "a killed helper leaves its lock");
    assert_eq!(first_line(&env.lock_path()), dead.to_string());

    // The next locker breaks it at once: its holder is gone.
    let (mut c, _) = Client::open(env, &env.caller);
    match c.call(&Request::Check(target())) {
        Reply::Status(LockStatus::Stale(h, _)) => assert_eq!(h.pid, Some(dead)),
        other => panic!("{other:?}"),
    }
    let l = expect_locked(c.call(&session_lock()));
    assert_eq!(l.pid, Some(c.pid()));
    assert_eq!(first_line(&env.lock_path()), c.pid().to_string());
    env.wait_log(
        mark,
        &[
            "op=break-stale",
            "result=removed",
            &format!("holder_pid={dead}"),
        ],
    );
    bye(c);
    assert!(!env.lock_path().exists());
}

/// Requests sent together, hello included, are answered in order (the
/// replies leave together), each grant and release audited.
fn pipelined_requests(env: &Env) {
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

fn busy_timeout_cancel_and_handoff(env: &Env) {
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

fn detached_lock_for_scripts(env: &Env) {
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

fn bad_parameters(env: &Env) {
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

fn other_users_mailbox_names(env: &Env) {
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

fn unknown_spools(env: &Env) {
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

fn unsafe_spools(env: &Env) {
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

fn planted_files_at_lock_and_mailbox(env: &Env) {
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

fn victims_lock_is_untouchable(env: &Env) {
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

fn malformed_frames(env: &Env) {
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

/// A start-up refusal: exit status, message on stderr, audit line, spool
/// unchanged.
fn assert_start_refused(env: &Env, run: &Run, code: i32, message: &str, keyword: &str) {
    let before = env.snapshot();
    let mark = env.log_mark();
    let mut c = Client::start(env, run);
    let pid = c.pid();
    if let Some(out) = c.stdout.as_mut() {
        let mut junk = Vec::new();
        let _ = out.read_to_end(&mut junk);
        assert!(junk.is_empty(), "nothing written to the client: {junk:?}");
    }
    let (status, stderr) = c.finish();
    assert_eq!(status.code(), Some(code), "stderr: {stderr}");
    if !message.is_empty() {
        assert!(
            stderr.contains(message),
            "stderr lacks {message:?}: {stderr}"
        );
    }
    env.wait_log(
        mark,
        &[
            "authpriv.warning",
            &format!("[{pid}]:"),
            "op=start",
            &format!("result={keyword}"),
        ],
    );
    assert_eq!(env.snapshot(), before);
}

fn standard_descriptors(env: &Env) {
    env.reset();
    for fd in [0u8, 1] {
        let mut run = env.run(&env.caller);
        run.close = Some(fd);
        assert_start_refused(
            env,
            &run,
            exit::ENVIRONMENT,
            &format!("file descriptor {fd} was closed"),
            "fd-closed",
        );
    }
    // stderr closed: nothing to say it on, but refused and audited.
    let mut run = env.run(&env.caller);
    run.close = Some(2);
    assert_start_refused(env, &run, exit::ENVIRONMENT, "", "fd-closed");

    let mut run = env.run(&env.caller);
    run.stdin = Io::Null;
    assert_start_refused(
        env,
        &run,
        exit::ENVIRONMENT,
        "standard input must be",
        "fd-not-pipe",
    );

    let out = env.base.join("stdout-file");
    let mut run = env.run(&env.caller);
    run.stdout = Io::File(out.clone());
    assert_start_refused(
        env,
        &run,
        exit::ENVIRONMENT,
        "descriptor 1 must be",
        "fd-not-pipe",
    );
    assert_eq!(
        fs::read(&out).unwrap(),
        b"",
        "nothing written to a non-pipe stdout"
    );
}

fn argc_zero_and_arguments(env: &Env) {
    env.reset();
    let mut run = env.run(&env.caller);
    run.argc0 = true;
    assert_start_refused(env, &run, exit::USAGE, "empty argument list", "argc-zero");
    let mut run = env.run(&env.caller);
    run.args = vec!["/var/mail/sltest-victim".into()];
    assert_start_refused(
        env,
        &run,
        exit::USAGE,
        "takes no arguments",
        "bad-arguments",
    );
    let mut run = env.run(&env.caller);
    run.args = vec!["--help".into(), "x".into()];
    assert_start_refused(
        env,
        &run,
        exit::USAGE,
        "takes no arguments",
        "bad-arguments",
    );

    // --help: static text, nothing else.
    let before = env.snapshot();
    let mut run = env.run(&env.caller);
    run.args = vec!["--help".into()];
    let mut c = Client::start(env, &run);
    let mut text = String::new();
    c.stdout
        .as_mut()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let (status, _) = c.finish();
    assert!(status.success());
    assert!(
        text.contains("syslog") && text.contains("/dev/log"),
        "{text}"
    );
    assert!(
        text.contains("authpriv") && text.contains("<login>.lock"),
        "{text}"
    );
    assert_eq!(env.snapshot(), before);
}

fn hostile_environment(env: &Env) {
    env.reset();
    let before = env.snapshot();
    let mut run = env.run(&env.caller);
    let victim_mail = format!("/var/mail/{VICTIM}");
    for (k, v) in [
        ("LD_PRELOAD", "/nonexistent/evil.so"),
        ("LD_LIBRARY_PATH", "/nonexistent"),
        ("GLIBC_TUNABLES", "glibc.malloc.check=3"),
        ("MAIL", victim_mail.as_str()),
        ("LOGNAME", VICTIM),
        ("USER", VICTIM),
        ("HOME", "/var/mail"),
        ("TZ", ":/etc/shadow"),
        ("LANG", "xx_XX.UTF-8"),
        ("LC_ALL", "xx_XX.UTF-8"),
        ("TMPDIR", "/var/mail"),
        ("RUST_BACKTRACE", "full"),
        ("RUST_MIN_STACK", "1"),
        ("PATH", "/nonexistent"),
    ] {
        run.env.push((k.into(), v.into()));
    }
    let mut c = Client::start(env, &run);
    assert!(c.hello(&Hello::current()).accepted);
    match c.read() {
        Reply::Ready(info) => assert_eq!(info.login, CALLER),
        other => panic!("{other:?}"),
    }
    let l = expect_locked(c.call(&session_lock()));
    assert_eq!(l.name, format!("{CALLER}.lock"));
    assert!(env.lock_path().exists());
    assert!(!Path::new(SPOOL).join(format!("{VICTIM}.lock")).exists());
    assert_eq!(c.call(&Request::Unlock(target())), Reply::Unlocked);
    assert!(bye(c).0.success());
    assert_eq!(env.snapshot(), before);
}

fn resource_limits(env: &Env) {
    env.reset();
    // RLIMIT_FSIZE 0: the lock content cannot be written; no lock, no
    // temporary file left, a clear error.
    let before = env.snapshot();
    let mark = env.log_mark();
    let mut run = env.run(&env.caller);
    run.limits = vec!["--fsize=0:0".into()];
    let mut c = Client::start(env, &run);
    assert!(c.hello(&Hello::current()).accepted);
    assert!(matches!(c.read(), Reply::Ready(_)));
    assert_eq!(
        expect_error(c.call(&session_lock())),
        Refusal::TempWrite { errno: 27 } // EFBIG
    );
    let pid = c.pid();
    assert!(bye(c).0.success());
    env.wait_log(
        mark,
        &[
            "mail.warning",
            &format!("[{pid}]:"),
            "op=lock",
            "result=temp-write",
        ],
    );
    assert_eq!(env.snapshot(), before);

    // RLIMIT_NOFILE tiny: whatever fails, fails cleanly and changes nothing.
    for n in 3..=10u32 {
        let mark = env.log_mark();
        let mut run = env.run(&env.caller);
        run.limits = vec![format!("--nofile={n}:{n}")];
        let mut c = Client::start(env, &run);
        let pid = c.pid();
        let _ = write_frame(c.stdin.as_mut().unwrap(), &Hello::current());
        let mut outcome = Vec::new();
        if let Ok(w) = read_frame::<_, Welcome>(c.stdout.as_mut().unwrap()) {
            assert!(w.accepted);
            if let Ok(Reply::Ready(_)) = c.try_read() {
                c.send(&session_lock());
                outcome.push(c.read());
                c.send(&Request::Unlock(target()));
                outcome.push(c.read());
                c.send(&Request::Bye);
                let _ = c.try_read();
            }
        }
        let (status, stderr) = c.finish();
        let code = status.code().unwrap_or(-1);
        let failed = code != exit::OK || outcome.iter().any(|r| matches!(r, Reply::Error(_)));
        assert!(
            [
                exit::OK,
                exit::REFUSED,
                exit::ENVIRONMENT,
                exit::INTERNAL,
                127
            ]
            .contains(&code),
            "nofile={n}: exit {status:?}, {stderr}"
        );
        if code == 127 {
            // The dynamic loader itself ran out of descriptors: no code of
            // the helper ran at all.
            assert!(
                n <= 4 && stderr.contains("error while loading shared libraries"),
                "{stderr}"
            );
        } else if n == 3 {
            // Not even the syslog socket fits: refused, said on stderr.
            assert_eq!(code, exit::ENVIRONMENT, "{stderr}");
            assert!(stderr.contains("syslog"), "{stderr}");
        } else if failed {
            // Audited (the record names this helper's pid).
            env.wait_log(mark, &[&format!("spoollock-helper[{pid}]:")]);
        }
        assert_eq!(env.snapshot(), before, "nofile={n}: {outcome:?}");
    }
}

fn stopped_then_killed_mid_lock(env: &Env) {
    env.reset();
    let before = env.snapshot();
    for round in 0..12u64 {
        let (mut c, _) = Client::open(env, &env.caller);
        c.send(&session_lock());
        // Stop it somewhere in the middle of the lock, then kill it.
        std::thread::sleep(Duration::from_micros(round * 150));
        c.kill(Signal::SIGSTOP);
        c.kill(Signal::SIGKILL);
        let (status, _) = c.finish();
        assert!(!status.success());
        // Whatever it left, the next locker recovers at once: a lock of a
        // dead helper is stale, its temporary file is swept.
        let (mut next, _) = Client::open(env, &env.caller);
        expect_locked(next.call(&session_lock()));
        bye(next);
        assert_eq!(env.snapshot(), before, "after round {round}");
    }
}

fn sweeps_only_dead_temporaries_of_the_caller(env: &Env) {
    env.reset();
    let host = hostname32();
    let mut child = Command::new("/bin/true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let plant = |name: String, uid: u32| {
        let p = Path::new(SPOOL).join(&name);
        fs::write(&p, b"1\n").unwrap();
        chown(&p, Some(uid), Some(env.mail_gid)).unwrap();
        p
    };
    let dead_mine = plant(
        format!(".lk{dead:x}.0123456789abcdef.{host}"),
        env.caller.uid,
    );
    let dead_theirs = plant(
        format!(".lk{dead:x}.fedcba9876543210.{host}"),
        env.victim.uid,
    );
    let live_mine = plant(
        format!(".lk{:x}.0011223344556677.{host}", std::process::id()),
        env.caller.uid,
    );
    let other_host = plant(
        format!(".lk{dead:x}.8899aabbccddeeff.elsewhere"),
        env.caller.uid,
    );
    // A dead helper's lock, an hour old: broken by this lock, which also
    // sweeps (as every session's first lock in a spool does).
    let stale = plant(format!("{CALLER}.lock"), env.caller.uid);
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let mark = env.log_mark();
    let (mut c, _) = Client::open(env, &env.caller);
    expect_locked(c.call(&session_lock()));
    bye(c);
    assert!(
        !dead_mine.exists(),
        "the caller's dead temporary file is swept"
    );
    assert!(dead_theirs.exists() && live_mine.exists() && other_host.exists());
    env.wait_log(mark, &["mail.info", "op=break-stale", "result=removed"]);
    env.wait_log(mark, &["mail.info", "op=cleanup", "result=removed"]);
}

fn log_injection(env: &Env) {
    env.reset();
    let forged = "Jan  1 00:00:00 host sshd[1]: Accepted password for root";
    let mark = env.log_mark();
    assert_refused(
        env,
        &env.caller,
        &lock(
            named(&format!("{CALLER}\n{forged}")),
            WaitSpec::NoWait,
            LockMode::Session,
        ),
        Refusal::NotYourMailbox,
        "not-your-mailbox",
    );
    let t = Target {
        spool: SpoolSel::Path("/var/mail\r\nop=lock result=granted\u{1b}[2J".into()),
        mailbox: None,
    };
    assert_refused(
        env,
        &env.caller,
        &lock(t, WaitSpec::NoWait, LockMode::Session),
        Refusal::UnknownSpool,
        "unknown-spool",
    );
    let text = env.log_since(mark);
    for line in text.lines() {
        assert!(
            line.starts_with("mail.") || line.starts_with("authpriv."),
            "forged line: {line}"
        );
        assert!(!line.contains('\u{1b}'), "escape in log: {line}");
        assert_eq!(line.matches("result=").count(), 1, "forged field: {line}");
    }
    assert!(
        text.contains("requested=sltest-caller\\x0aJan\\x20\\x201"),
        "{text}"
    );
}

fn refuses_to_run_unprivileged(env: &Env) {
    env.reset();
    let mut run = env.run(&env.caller);
    run.binary = env.plain.clone();
    assert_start_refused(
        env,
        &run,
        exit::NOT_PRIVILEGED,
        "setgid bit",
        "not-privileged",
    );
    let mut run = env.run(&env.caller);
    run.nnp = true;
    assert_start_refused(
        env,
        &run,
        exit::NOT_PRIVILEGED,
        "no_new_privs",
        "not-privileged",
    );
}

// ---------------------------------------------------------------------------
// The spoollock library and command, going through the helper

fn spoollock_client_through_the_helper(env: &Env) {
    env.reset();
    let Some(bin) = spoollock_binary(env) else {
        return;
    };
    let mark = env.log_mark();
    let lock = env.lock_path();
    let lock_arg = lock.display().to_string();

    // `run --mailbox`: the lock exists while the command runs and names
    // the helper (a child of spoollock), not spoollock itself.
    let show = format!("test -f '{lock_arg}' && head -n 1 '{lock_arg}'");
    let out = spoollock_as(
        env,
        &env.caller,
        &bin,
        &["run", "--mailbox", "--", "sh", "-c", &show],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "run --mailbox: {out:?}");
    let holder: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(!lock.exists(), "released after the command");
    let tag = format!("spoollock-helper[{holder}]:");
    env.wait_log(
        mark,
        &[
            "mail.info",
            &tag,
            "op=lock",
            "result=granted",
            "login=sltest-caller",
        ],
    );
    env.wait_log(mark, &["mail.info", &tag, "op=release", "result=released"]);

    // `deliver --mailbox`: both locks (fcntl on the mailbox the caller
    // owns, the dotlock through the helper), and the message appended.
    let mut child = spoollock_as(
        env,
        &env.caller,
        &bin,
        &["deliver", "--mailbox", "--from", "x@example.org"],
    )
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: via helper\n\nFrom the helper\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let mailbox = fs::read_to_string(Path::new(SPOOL).join(CALLER)).unwrap();
    assert!(mailbox.contains("\n\nFrom x@example.org "), "{mailbox}");
    assert!(
        mailbox.ends_with("Subject: via helper\n\n>From the helper\n\n"),
        "{mailbox}"
    );
    assert!(!lock.exists());

    // `lock`/`check`/`unlock --mailbox` for scripts: a detached lock.
    let status = |args: &[&str]| spoollock_as(env, &env.caller, &bin, args).status().unwrap();
    assert!(status(&["lock", "--mailbox"]).success());
    assert!(lock.exists(), "detached lock stays");
    assert_eq!(status(&["check", "--mailbox"]).code(), Some(0));
    assert_eq!(
        status(&["run", "--no-wait", "--mailbox", "--", "true"]).code(),
        Some(3),
        "busy"
    );
    assert!(status(&["touch", "--mailbox"]).success());
    assert!(status(&["unlock", "--mailbox"]).success());
    assert!(!lock.exists());
    assert_eq!(status(&["check", "--mailbox"]).code(), Some(1));

    // Killing spoollock with SIGKILL: the helper sees end of file and
    // removes the lock.
    let marker = env.base.join("started");
    let _ = fs::remove_file(&marker);
    let script = format!("touch '{}'; exec sleep 600", marker.display());
    set_mode(&env.base, 0o777);
    let mut run = spoollock_as(
        env,
        &env.caller,
        &bin,
        &["run", "--mailbox", "--", "sh", "-c", &script],
    )
    .spawn()
    .unwrap();
    let start = Instant::now();
    while !marker.exists() {
        assert!(start.elapsed() < PATIENCE, "the command never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    set_mode(&env.base, 0o755);
    assert!(lock.exists());
    // setpriv execs spoollock: the child's pid is spoollock's.
    kill(Pid::from_raw(run.id() as i32), Signal::SIGKILL).unwrap();
    run.wait().unwrap();
    wait_gone(&lock);
    env.wait_log(mark, &["op=release", "result=released", "trigger=eof"]);
    let _ = Command::new("pkill")
        .args(["-KILL", "-f", "sleep 600"])
        .status();

    // Another user's mailbox: refused before anything is spawned or changed.
    let before = env.snapshot();
    let victim_box = Path::new(SPOOL).join(VICTIM);
    let out = spoollock_as(
        env,
        &env.caller,
        &bin,
        &["run", &victim_box.display().to_string(), "--", "true"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot open mailbox"),
        "{out:?}"
    );
    // Its dotlock alone: the library refuses before asking the helper.
    let out = spoollock_as(
        env,
        &env.caller,
        &bin,
        &[
            "run",
            "--dotlock-only",
            &victim_box.display().to_string(),
            "--",
            "true",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only your own mailbox"),
        "{out:?}"
    );
    assert_eq!(env.snapshot(), before);
}

// ---------------------------------------------------------------------------
// Figures for the issue (`-- --measure`): not a test, nothing asserted.
//
// Both sides run under the same conditions. `dotlockfile` is a copy
// installed exactly like the helper (`root:mail 2755`, same tmpfs), and the
// figures are taken by this test binary re-executed as the test user
// (`--measure-client`), which spawns both the way the spoollock library
// spawns the helper: `posix_spawn` as the caller, with no uid change in the
// child. (Root forking with a uid change would add the cost of a full
// `fork` of this process to every exec, twice per cycle for dotlockfile's
// two execs.) After a warm-up the contenders alternate round by round, so
// both see the same machine; medians are reported with p10 and p90. In one
// session the client is a tight loop: pre-encoded requests, replies read
// into one buffer and compared with the expected bytes.

fn install_like_helper(env: &Env, from: &Path, name: &str) -> PathBuf {
    let to = env.base.join("bin").join(name);
    fs::copy(from, &to).unwrap();
    chown(&to, Some(0), Some(env.mail_gid)).unwrap();
    set_mode(&to, 0o2755);
    to
}

fn measure(env: &Env) {
    env.reset();
    let dotlockfile =
        install_like_helper(env, &which("dotlockfile", "liblockfile-bin"), "dotlockfile");
    // The exec floor: a program that does nothing, installed the same way.
    let floor = install_like_helper(env, &which("true", "coreutils"), "true");
    let out = Command::new(&env.tools.setpriv)
        .arg(format!("--reuid={}", env.caller.uid))
        .arg(format!("--regid={}", env.caller.gid))
        .arg("--init-groups")
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .arg("--measure-client")
        .arg(&env.helper)
        .arg(&dotlockfile)
        .arg(&floor)
        .arg(env.lock_path())
        .env_clear()
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "measuring failed: {:?}", out.status);
    let size = fs::metadata(HELPER_BIN).unwrap().len();
    println!("helper binary ({HELPER_BIN}): {size} bytes");
    // Its shared libraries, when binutils is there to say.
    if let Ok(out) = Command::new("readelf").arg("-d").arg(HELPER_BIN).output() {
        let needed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .filter_map(|l| {
                l.split('[')
                    .nth(1)
                    .map(|n| n.trim_end_matches(']').to_owned())
            })
            .collect();
        println!("helper shared libraries:        {}", needed.join(", "));
    }
}

/// p10, median and p90.
fn spread(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[v.len() / 10], v[v.len() / 2], v[v.len() * 9 / 10])
}

fn micros(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

fn show(what: &str, v: Vec<Duration>) -> Duration {
    let (p10, med, p90) = spread(v);
    println!(
        "  {what:<56} {:>10}  ({} .. {})",
        micros(med),
        micros(p10),
        micros(p90)
    );
    med
}

/// Read one frame's bytes (prefix and payload) into `buf`.
fn read_raw(from: &mut impl Read, buf: &mut Vec<u8>) {
    let mut prefix = [0u8; PREFIX_LEN];
    from.read_exact(&mut prefix).expect("reply prefix");
    buf.resize(u32::from_be_bytes(prefix) as usize, 0);
    from.read_exact(buf).expect("reply payload");
}

fn run_quiet(cmd: &mut Command) {
    let status = cmd
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{cmd:?}: {status:?}");
}

fn spawn_piped(program: &str) -> (Child, ChildStdin, ChildStdout) {
    let mut child = Command::new(program)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input = child.stdin.take().unwrap();
    let output = child.stdout.take().unwrap();
    (child, input, output)
}

/// On-CPU time of a process so far (`/proc/PID/schedstat`), if readable.
fn cpu_time(pid: u32) -> Option<Duration> {
    let text = fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    Some(Duration::from_nanos(text.split(' ').next()?.parse().ok()?))
}

/// `--measure-client HELPER DOTLOCKFILE FLOOR LOCK`, run as the test user.
fn measure_client(args: &[String]) {
    let (helper, dotlockfile, floor, lock) = (&args[0], &args[1], &args[2], &args[3]);
    let (warmup, rounds) = (100, 1000);
    let frames = |requests: &[Request]| -> Vec<u8> {
        let mut out = encode(&Hello::current()).unwrap();
        for r in requests {
            out.extend(encode(r).unwrap());
        }
        out
    };
    let pipelined = frames(&[session_lock(), Request::Bye]);
    let hello_and_lock = frames(&[session_lock()]);
    let mut unlock_and_bye = encode(&Request::Unlock(target())).unwrap();
    unlock_and_bye.extend(encode(&Request::Bye).unwrap());

    // 1. Spawn + lock + release + exit.
    let (mut h, mut d, mut f, mut lib) = (vec![], vec![], vec![], vec![]);
    for round in 0..warmup + rounds {
        // The minimum exchange: hello, lock and bye in one write; the
        // helper answers all four frames and exits (bye releases).
        let t = Instant::now();
        let (mut child, mut input, mut output) = spawn_piped(helper);
        input.write_all(&pipelined).unwrap();
        let _: Welcome = read_frame(&mut output).unwrap();
        assert!(matches!(read_frame(&mut output).unwrap(), Reply::Ready(_)));
        assert!(matches!(read_frame(&mut output).unwrap(), Reply::Locked(_)));
        assert_eq!(read_frame::<_, Reply>(&mut output).unwrap(), Reply::Bye);
        assert!(child.wait().unwrap().success());
        let helper_time = t.elapsed();

        let t = Instant::now();
        run_quiet(Command::new(dotlockfile).arg("-l").arg(lock));
        run_quiet(Command::new(dotlockfile).arg("-u").arg(lock));
        let dotlockfile_time = t.elapsed();

        let t = Instant::now();
        run_quiet(&mut Command::new(floor));
        let floor_time = t.elapsed();

        // As the spoollock library drives it: hello and lock in one write,
        // their answers, then (the lock held) unlock and bye in one write.
        let t = Instant::now();
        let (mut child, mut input, mut output) = spawn_piped(helper);
        input.write_all(&hello_and_lock).unwrap();
        let _: Welcome = read_frame(&mut output).unwrap();
        assert!(matches!(read_frame(&mut output).unwrap(), Reply::Ready(_)));
        assert!(matches!(read_frame(&mut output).unwrap(), Reply::Locked(_)));
        input.write_all(&unlock_and_bye).unwrap();
        assert_eq!(
            read_frame::<_, Reply>(&mut output).unwrap(),
            Reply::Unlocked
        );
        assert_eq!(read_frame::<_, Reply>(&mut output).unwrap(), Reply::Bye);
        drop(input);
        assert!(child.wait().unwrap().success());
        let library_time = t.elapsed();

        if round >= warmup {
            h.push(helper_time);
            d.push(dotlockfile_time);
            f.push(floor_time);
            lib.push(library_time);
        }
    }
    println!("spawn + lock + release + exit, median of {rounds} alternating rounds (p10 .. p90):");
    let helper_med = show("helper: hello, lock, bye in one write", h);
    let dotlockfile_med = show("dotlockfile -l, then dotlockfile -u", d);
    println!(
        "  {:<56} {:>10.2}",
        "ratio helper/dotlockfile",
        helper_med.as_secs_f64() / dotlockfile_med.as_secs_f64()
    );
    show("exec floor: `true` installed the same way", f);
    show("helper as the library drives it (2 round trips)", lib);

    // 2. Repeated lock/release in one session. A session grants at most
    // MAX_GRANTED_PER_SESSION locks, so the cycles run in sessions of
    // that many; starting a session is not timed here (see 1.).
    let in_session = |label: &str| {
        let (cycles, warmup) = (5000, 500);
        let start = || {
            let (child, mut input, mut output) = spawn_piped(helper);
            write_frame(&mut input, &Hello::current()).unwrap();
            let _: Welcome = read_frame(&mut output).unwrap();
            assert!(matches!(read_frame(&mut output).unwrap(), Reply::Ready(_)));
            (child, input, output)
        };
        let (lock, unlock, touch) = (
            encode(&session_lock()).unwrap(),
            encode(&Request::Unlock(target())).unwrap(),
            encode(&Request::Touch(target())).unwrap(),
        );
        let (unlocked, touched) = (
            encode(&Reply::Unlocked).unwrap()[PREFIX_LEN..].to_vec(),
            encode(&Reply::Touched).unwrap()[PREFIX_LEN..].to_vec(),
        );
        let per_session = spoollock_protocol::limits::MAX_GRANTED_PER_SESSION as usize;
        let mut buf = Vec::with_capacity(MAX_FRAME);
        let mut times = Vec::with_capacity(cycles);
        let mut cpu_total = Some(Duration::ZERO);
        let mut done = 0;
        while done < warmup + cycles {
            let (mut child, mut input, mut output) = start();
            let before = cpu_time(child.id());
            let mut timed = 0u32;
            for _ in 0..per_session.min(warmup + cycles - done) {
                let t = Instant::now();
                input.write_all(&lock).unwrap();
                read_raw(&mut output, &mut buf);
                let ok = matches!(
                    spoollock_protocol::codec::decode::<Reply>(&buf),
                    Ok(Reply::Locked(_))
                );
                input.write_all(&unlock).unwrap();
                read_raw(&mut output, &mut buf);
                let elapsed = t.elapsed();
                assert!(ok && buf == unlocked, "unexpected reply");
                if done >= warmup {
                    times.push(elapsed);
                    timed += 1;
                }
                done += 1;
            }
            // Helper CPU per cycle, from the sessions' own counters (the
            // session start is in there too, spread over its cycles).
            cpu_total = match (cpu_total, before, cpu_time(child.id())) {
                (Some(total), Some(a), Some(b)) if timed > 0 => Some(total + (b - a)),
                (total, _, _) if timed == 0 => total,
                _ => None,
            };
            drop(input);
            assert!(child.wait().unwrap().success());
        }
        let cpu = cpu_total.map(|total| total / cycles as u32);

        let (mut child, mut input, mut output) = start();
        input.write_all(&lock).unwrap();
        read_raw(&mut output, &mut buf);
        let mut touches = Vec::with_capacity(cycles);
        for _ in 0..cycles {
            let t = Instant::now();
            input.write_all(&touch).unwrap();
            read_raw(&mut output, &mut buf);
            touches.push(t.elapsed());
            assert_eq!(buf, touched);
        }
        let hwm = fs::read_to_string(format!("/proc/{}/status", child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_owned()))
            })
            .unwrap_or_else(|| "?".into());
        drop(input);
        assert!(child.wait().unwrap().success());

        // The platform's floor: a byte to `cat` and back over two pipes.
        let (mut cat, mut to_cat, mut from_cat) = spawn_piped("/bin/cat");
        let mut pings = Vec::with_capacity(cycles);
        let mut byte = [0u8; 1];
        for i in 0..warmup + cycles {
            let t = Instant::now();
            to_cat.write_all(b"x").unwrap();
            from_cat.read_exact(&mut byte).unwrap();
            if i >= warmup {
                pings.push(t.elapsed());
            }
        }
        drop(to_cat);
        cat.wait().unwrap();

        println!("lock + release in one session{label}, median of {cycles} cycles (p10 .. p90):");
        show(
            "lock, then release (two round trips, four audit records)",
            times,
        );
        let cpu = cpu.map_or_else(|| "n/a".into(), micros);
        println!(
            "  {:<56} {cpu:>10}",
            "helper CPU time per cycle (schedstat)"
        );
        show("touch (one round trip, no audit record)", touches);
        show("platform floor: one byte to cat and back", pings);
        hwm
    };
    let hwm = in_session("");
    let mut one_cpu = nix::sched::CpuSet::new();
    one_cpu.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one_cpu).unwrap();
    in_session(", client and helper on one CPU");
    println!("helper peak RSS:                {hwm}");
}

// ---------------------------------------------------------------------------

const SCENARIOS: &[Scenario] = &[
    ("own_mailbox_lock_and_release", own_mailbox_lock_and_release),
    ("extra_configured_spool", extra_configured_spool),
    ("lock_lost_while_held", lock_lost_while_held),
    ("end_of_file_releases", end_of_file_releases),
    ("client_sigkill_releases", client_sigkill_releases),
    (
        "helper_sigkill_leaves_a_lock_broken_at_once",
        helper_sigkill_leaves_a_lock_broken_at_once,
    ),
    ("pipelined_requests", pipelined_requests),
    (
        "busy_timeout_cancel_and_handoff",
        busy_timeout_cancel_and_handoff,
    ),
    ("detached_lock_for_scripts", detached_lock_for_scripts),
    ("bad_parameters", bad_parameters),
    ("other_users_mailbox_names", other_users_mailbox_names),
    ("unknown_spools", unknown_spools),
    ("unsafe_spools", unsafe_spools),
    (
        "planted_files_at_lock_and_mailbox",
        planted_files_at_lock_and_mailbox,
    ),
    ("victims_lock_is_untouchable", victims_lock_is_untouchable),
    ("malformed_frames", malformed_frames),
    ("standard_descriptors", standard_descriptors),
    ("argc_zero_and_arguments", argc_zero_and_arguments),
    ("hostile_environment", hostile_environment),
    ("resource_limits", resource_limits),
    ("stopped_then_killed_mid_lock", stopped_then_killed_mid_lock),
    (
        "sweeps_only_dead_temporaries_of_the_caller",
        sweeps_only_dead_temporaries_of_the_caller,
    ),
    ("log_injection", log_injection),
    ("refuses_to_run_unprivileged", refuses_to_run_unprivileged),
    (
        "spoollock_client_through_the_helper",
        spoollock_client_through_the_helper,
    ),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--client") {
        client_mode(&args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("--measure-client") {
        measure_client(&args[2..]);
        return;
    }
    if args.iter().any(|a| a == "--measure") {
        if !nix::unistd::geteuid().is_root() {
            println!("measurement skipped: it must run as root");
            return;
        }
        let mut env = Env::setup();
        measure(&env);
        env.teardown();
        return;
    }
    run_scenarios("privileged helper tests", SCENARIOS, Env::setup);
}
