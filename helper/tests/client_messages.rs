//! The smaller findings of issue 12, item 5 (all but the release window),
//! end to end: the installed setgid helper and the `spoollock` command of
//! this build, run as the ordinary test user in the privileged harness
//! (`support/privileged_env.rs`); root only.
//!
//! - `check` reads with the caller's rights: the helper never raises its
//!   group for it (seen with `strace` on the setgid process);
//! - `unlock`/`touch` by name refuse a lock that a live `spoollock run
//!   --mailbox` holds through its helper, saying whose, unless `--force`;
//! - the client applies the helper's login rule before it builds
//!   `/var/mail/LOGIN`, and ignores `$MAIL` when it runs setgid;
//! - a helper setgid to another group, on a nosuid mount or without the
//!   bit says which; a spool whose group is not the helper's says so;
//! - a file over 512 bytes at the lock name is named for what it is, by the
//!   helper and by the command, for `lock` and `check` alike;
//! - standard error open read-only is reported as such, not as closed;
//! - when the helper refuses to start, the command shows its reason alone.
//!
//! Debian packages needed besides the harness's: strace, passwd (groupadd).

#[path = "support/privileged_env.rs"]
mod privileged_env;

use std::fs;
use std::os::unix::fs::{chown, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{Group, Pid, User};
use privileged_env::*;
use spoollock_protocol::limits::DEFAULT_STALE_AGE_SECS;
use spoollock_protocol::{exit, LockMode, LockStatus, Refusal, Reply, Request, Target, WaitSpec};

/// A group that is not `mail`, for helpers and spools installed wrong.
const OTHER_GROUP: &str = "sltest-other";

fn other_gid() -> u32 {
    if Group::from_name(OTHER_GROUP).unwrap().is_none() {
        run_ok(Command::new(which("groupadd", "passwd")).arg(OTHER_GROUP));
    }
    Group::from_name(OTHER_GROUP)
        .unwrap()
        .expect("group just created")
        .gid
        .as_raw()
}

/// The `spoollock` command of this build; it must have been built.
fn spoollock(env: &Env) -> PathBuf {
    spoollock_binary(env).expect("build the command first: cargo build -p spoollock")
}

/// Run a command to its end, killed if it takes longer than the harness's
/// patience.
fn output(cmd: &mut Command) -> Output {
    bounded_output(cmd)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Install a copy of the helper at `to`, owned by root and `gid`, `mode`.
fn install_helper(env: &Env, to: &Path, gid: u32, mode: u32) {
    fs::copy(&env.helper, to).unwrap();
    chown(to, Some(0), Some(gid)).unwrap();
    set_mode(to, mode);
}

/// The first `setresgid` calls of a traced process tree whose effective
/// gid is `gid`.
fn raises(trace: &Path, gid: u32) -> Vec<String> {
    fs::read_to_string(trace)
        .unwrap()
        .lines()
        .filter(|l| {
            l.split_once("setresgid(")
                .and_then(|(_, args)| args.split(',').nth(1))
                .is_some_and(|e| e.trim() == gid.to_string())
        })
        .map(str::to_owned)
        .collect()
}

/// Run one helper session under `strace -f -e trace=setresgid` as the
/// caller, sending `request` after the handshake; the reply and every
/// `setresgid` call in which the group became the effective gid.
fn traced_session(env: &Env, request: &Request, name: &str) -> (Reply, Vec<String>) {
    let trace = env.base.join(format!("strace.{name}"));
    let mut cmd = Command::new(which("strace", "strace"));
    cmd.args(["-f", "-qq", "-e", "trace=setresgid", "-o"])
        .arg(&trace)
        .arg(&env.tools.setpriv)
        .arg(format!("--reuid={}", env.caller.uid))
        .arg(format!("--regid={}", env.caller.gid))
        .arg("--init-groups")
        .arg("--")
        .arg(&env.helper)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A process group of its own: the bound below ends the tracer and the
    // helper it runs together.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().expect("strace");
    let _watchdog = Watchdog::group(child.id(), PATIENCE);
    let mut c = Client {
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        child,
    };
    let welcome = c.hello(&spoollock_protocol::Hello::current());
    assert!(welcome.accepted);
    assert!(matches!(c.read(), Reply::Ready(_)));
    let reply = c.call(request);
    let (status, err) = bye(c);
    assert!(status.success(), "{err}");
    (reply, raises(&trace, env.mail_gid))
}

fn check_reads_with_the_callers_rights(env: &Env) {
    env.reset();
    // A detached lock of the caller's to judge.
    let (mut c, _) = Client::open(env, &env.caller);
    let _watchdog = Watchdog::new(c.pid(), PATIENCE);
    let detached = lock(
        target(),
        WaitSpec::NoWait,
        LockMode::Detached { holder_pid: None },
    );
    assert!(matches!(c.call(&detached), Reply::Locked(_)));
    bye(c);
    let before = env.snapshot();

    let (reply, raised) = traced_session(env, &Request::Check(target()), "check");
    assert!(
        matches!(reply, Reply::Status(LockStatus::Held(_))),
        "{reply:?}"
    );
    assert!(raised.is_empty(), "check raised the mail group: {raised:?}");
    assert_eq!(env.snapshot(), before);

    // The trace sees a raise where there is one: a lock request.
    fs::remove_file(env.lock_path()).unwrap();
    let (reply, raised) = traced_session(env, &session_lock(), "lock");
    assert!(matches!(reply, Reply::Locked(_)), "{reply:?}");
    assert!(!raised.is_empty(), "no raise seen for a lock");
}

/// The pid of the only child of `pid` (`/proc/PID/task/PID/children`).
fn child_of(pid: u32) -> Option<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn by_name_requests_spare_a_live_session(env: &Env) {
    env.reset();
    let bin = spoollock(env);
    let mark = env.log_mark();
    let lock_path = env.lock_path();
    let mut run = start_run_holding(env, &bin, &env.base.join("run-started"));
    // setpriv execs spoollock: this pid is spoollock's, the helper's parent.
    let client = run.id();
    let helper: u32 = first_line(&lock_path)
        .parse()
        .expect("a session lock names its helper");
    let taken = fs::metadata(&lock_path).unwrap();

    let sl = |args: &[&str]| output(&mut spoollock_as(env, &env.caller, &bin, args));
    for what in ["unlock", "touch"] {
        let out = sl(&[what, "--mailbox"]);
        assert_eq!(out.status.code(), Some(3), "{what}: {out:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "live spoollock-helper session (helper pid {helper}, serving pid {client})"
            )),
            "{what}: {err}"
        );
        let now = fs::metadata(&lock_path).expect("the session's lock stays");
        assert_eq!(
            (now.ino(), now.mtime(), now.mtime_nsec()),
            (taken.ino(), taken.mtime(), taken.mtime_nsec()),
            "{what} changed the session's lock"
        );
    }
    env.wait_log(
        mark,
        &[
            "mail.warning",
            "op=unlock",
            "result=held-by-session",
            "mode=by-name",
        ],
    );

    // Forced: as asked.
    let out = sl(&["touch", "--mailbox", "--force"]);
    assert!(out.status.success(), "{out:?}");
    let out = sl(&["unlock", "--mailbox", "--force"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!lock_path.exists());
    env.wait_log(
        mark,
        &["op=release", "result=released", "mode=by-name-forced"],
    );

    // The run ends: SIGTERM is passed to its command.
    let sleeper = child_of(client);
    kill(Pid::from_raw(client as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while run.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = run.kill();
            if let Some(sleeper) = sleeper {
                let _ = kill(Pid::from_raw(sleeper as i32), Signal::SIGKILL);
            }
            panic!("spoollock run did not end on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    // Detached locks are still removed by name: one naming no process, and
    // one naming a live process that is no helper (`--parent-pid`).
    for args in [
        &["lock", "--mailbox"][..],
        &["lock", "--mailbox", "--parent-pid"],
    ] {
        assert!(sl(args).status.success());
        assert!(lock_path.exists());
        let out = sl(&["touch", "--mailbox"]);
        assert!(out.status.success(), "{out:?}");
        let out = sl(&["unlock", "--mailbox"]);
        assert!(out.status.success(), "{out:?}");
        assert!(!lock_path.exists());
    }
}

/// A uid with no password database entry.
fn free_uid() -> u32 {
    (64_000..65_000)
        .find(|&u| {
            User::from_uid(nix::unistd::Uid::from_raw(u))
                .unwrap()
                .is_none()
        })
        .expect("a free uid")
}

/// Puts things back when dropped, whatever happens in between.
struct Restore(Vec<Box<dyn FnMut()>>);

impl Drop for Restore {
    fn drop(&mut self) {
        for undo in self.0.iter_mut().rev() {
            undo();
        }
    }
}

fn login_rules_on_the_direct_path(env: &Env) {
    env.reset();
    let bin = spoollock(env);
    // A login that climbs out of the spool, in a passwd entry of this
    // namespace only (useradd refuses it; other NSS sources need not).
    let open = env.base.join("open");
    make_dir(&open, 0, 0, 0o777);
    let login = format!("../..{}/escaped", open.display());
    let escaped = open.join("escaped.lock");
    let uid = free_uid();
    let passwd = env.base.join("passwd");
    let mut text = fs::read_to_string("/etc/passwd").unwrap();
    text.push_str(&format!(
        "{login}:x:{uid}:{uid}:sltest:/:/usr/sbin/nologin\n"
    ));
    fs::write(&passwd, text).unwrap();
    set_mode(&passwd, 0o644);
    mount(
        Some(&passwd),
        "/etc/passwd",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    // A spool everyone may write (some distributions' /var/mail is 1777):
    // the direct path, no helper.
    set_mode(Path::new("/var/mail"), 0o1777);
    let _restore = Restore(vec![
        Box::new(|| {
            let _ = umount2("/etc/passwd", MntFlags::MNT_DETACH);
        }),
        Box::new(|| set_mode(Path::new("/var/mail"), 0o2775)),
    ]);
    assert_eq!(
        User::from_uid(nix::unistd::Uid::from_raw(uid))
            .unwrap()
            .map(|u| u.name),
        Some(login.clone())
    );
    for args in [
        &["lock", "--mailbox"][..],
        &["run", "--mailbox", "--", "true"],
        &["check", "--mailbox"],
    ] {
        let out = output(
            Command::new(&env.tools.setpriv)
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(&bin)
                .args(args)
                .env_clear(),
        );
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(
            stderr(&out).contains("cannot name a mailbox"),
            "{args:?}: {out:?}"
        );
        assert!(!escaped.exists(), "{args:?} locked {}", escaped.display());
    }
}

fn mail_is_ignored_when_setgid(env: &Env) {
    env.reset();
    let bin = spoollock(env);
    let other = other_gid();
    // The setgid command ignores $SPOOLLOCK_HELPER too: the helper must be
    // at its built-in path, here on a tmpfs of this namespace (the
    // directory is made on the machine if missing, empty).
    let libexec = Path::new(spoollock_protocol::paths::HELPER_PATH)
        .parent()
        .unwrap()
        .to_owned();
    if !libexec.exists() {
        fs::create_dir_all(&libexec).unwrap();
    }
    mount(
        Some("tmpfs"),
        &libexec,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .unwrap();
    let unmount = libexec.clone();
    let _restore = Restore(vec![Box::new(move || {
        let _ = umount2(&unmount, MntFlags::MNT_DETACH);
    })]);
    install_helper(
        env,
        Path::new(spoollock_protocol::paths::HELPER_PATH),
        env.mail_gid,
        0o2755,
    );
    let sgid = env.base.join("bin").join("spoollock-setgid");
    fs::copy(&bin, &sgid).unwrap();
    chown(&sgid, Some(0), Some(other)).unwrap();
    set_mode(&sgid, 0o2755);

    let evil = env.base.join("evil");
    make_dir(&evil, 0, 0, 0o777);
    let mail = evil.join(&env.caller.name);
    let check = |binary: &Path| {
        let out = output(
            spoollock_as(env, &env.caller, binary, &["check", "--mailbox", "-v"])
                .env("MAIL", &mail),
        );
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        stderr(&out)
    };
    // Not setgid: $MAIL names the mailbox (its file name is the login).
    let said = check(&bin);
    assert!(
        said.contains(&format!("{}.lock: not locked", mail.display())),
        "{said}"
    );
    // Setgid (secure mode): $MAIL is ignored, the spool mailbox is used.
    let said = check(&sgid);
    assert!(
        said.contains(&format!("/var/mail/{}.lock: not locked", env.caller.name)),
        "{said}"
    );
    assert!(!said.contains(&evil.display().to_string()), "{said}");
}

fn helper_installed_wrong_says_how(env: &Env) {
    env.reset();
    let other = other_gid();
    let bin = env.base.join("bin");
    // Setgid, but to another group.
    let wrong = bin.join("spoollock-helper-other");
    install_helper(env, &wrong, other, 0o2755);
    // Setgid mail, on a nosuid mount.
    let nosuid = env.base.join("nosuid");
    fs::create_dir_all(&nosuid).unwrap();
    mount(
        Some("tmpfs"),
        &nosuid,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )
    .unwrap();
    let ignored = nosuid.join("spoollock-helper");
    install_helper(env, &ignored, env.mail_gid, 0o2755);
    let cases = [
        (
            wrong.clone(),
            vec![
                format!("installed setgid to group \"{OTHER_GROUP}\" (gid {other})"),
                "built for group \"mail\"".into(),
                format!("SPOOLLOCK_HELPER_GROUP={OTHER_GROUP}"),
            ],
        ),
        (ignored.clone(), vec!["mounted nosuid".to_owned()]),
        (env.plain.clone(), vec!["has no setgid bit".to_owned()]),
    ];
    for (binary, needles) in cases {
        let mark = env.log_mark();
        let mut run = env.run(&env.caller);
        run.binary = binary.clone();
        let mut c = Client::start(env, &run);
        c.close_input();
        let pid = c.pid();
        let _watchdog = Watchdog::new(pid, PATIENCE);
        let (status, err) = c.finish();
        assert_eq!(status.code(), Some(exit::NOT_PRIVILEGED), "{err}");
        for needle in &needles {
            assert!(err.contains(needle.as_str()), "{}: {err}", binary.display());
        }
        assert!(
            !err.contains("missing or ignored"),
            "{}: {err}",
            binary.display()
        );
        env.wait_log(
            mark,
            &[
                "authpriv.warning",
                &format!("spoollock-helper[{pid}]:"),
                "op=start result=not-privileged",
            ],
        );
    }

    // Through the command: the helper's reason, alone.
    let sl = spoollock(env);
    let out = output(
        spoollock_as(env, &env.caller, &sl, &["run", "--mailbox", "--", "true"])
            .env("SPOOLLOCK_HELPER", &ignored),
    );
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.starts_with("spoollock: spoollock-helper: not running with group \"mail\"")
            && err.contains("mounted nosuid")
            && err.lines().count() == 1,
        "{err}"
    );
    let _ = umount2(&nosuid, MntFlags::MNT_DETACH);
}

fn spool_of_another_group_says_so(env: &Env) {
    env.reset();
    let other = other_gid();
    let bin = spoollock(env);
    let dir = env.spools().join("othergroup");
    make_dir(&dir, 0, other, 0o2775);
    let mailbox = dir.join(&env.caller.name);
    let out = output(&mut spoollock_as(
        env,
        &env.caller,
        &bin,
        &["lock", &mailbox.display().to_string()],
    ));
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("writable by group {OTHER_GROUP} (gid {other})"))
            && err.contains(&format!("is setgid to group mail (gid {})", env.mail_gid)),
        "{err}"
    );
    assert!(!err.contains("temporary file"), "{err}");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
}

fn no_syslog_reason_alone(env: &Env) {
    env.reset();
    let bin = spoollock(env);
    let before = env.snapshot();
    fs::rename("/dev/log", "/dev/log.away").unwrap();
    let out = {
        let _restore = Restore(vec![Box::new(|| {
            fs::rename("/dev/log.away", "/dev/log").unwrap();
        })]);
        output(&mut spoollock_as(
            env,
            &env.caller,
            &bin,
            &["run", "--mailbox", "--", "true"],
        ))
    };
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.starts_with("spoollock: spoollock-helper: cannot reach the local syslog socket")
            && err.contains("refusing to run without an audit trail")
            && err.lines().count() == 1,
        "{err}"
    );
    assert!(!err.contains("reading from the helper"), "{err}");
    assert_eq!(env.snapshot(), before);
}

fn oversized_file_at_the_lock_name(env: &Env) {
    env.reset();
    let bin = spoollock(env);
    let lock_path = env.lock_path();
    fs::write(&lock_path, vec![b'x'; 1000]).unwrap();
    chown(&lock_path, Some(env.caller.uid), Some(env.mail_gid)).unwrap();
    let old = SystemTime::now() - Duration::from_secs(2 * u64::from(DEFAULT_STALE_AGE_SECS));
    fs::File::options()
        .write(true)
        .open(&lock_path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let before = env.snapshot();
    let mark = env.log_mark();
    let expected = Refusal::LockTooLarge {
        size: 1000,
        owner: env.caller.uid,
        max: 512,
    };
    let (mut c, _) = Client::open(env, &env.caller);
    let _watchdog = Watchdog::new(c.pid(), PATIENCE);
    assert_eq!(c.call(&session_lock()), Reply::Error(expected.clone()));
    assert_eq!(
        c.call(&Request::Check(Target::default_spool())),
        Reply::Error(expected.clone())
    );
    bye(c);
    env.wait_log(
        mark,
        &["authpriv.warning", "op=lock", "result=lock-too-large"],
    );
    env.wait_log(
        mark,
        &["authpriv.warning", "op=check", "result=lock-too-large"],
    );

    let sl = |args: &[&str]| output(&mut spoollock_as(env, &env.caller, &bin, args));
    for args in [
        &["check", "--mailbox"][..],
        &["run", "--no-wait", "--mailbox", "--", "true"],
        &["lock", "--mailbox", "--no-wait"],
    ] {
        let out = sl(args);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {out:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "{}: a regular file of 1000 bytes owned by uid {}",
                lock_path.display(),
                env.caller.uid
            )) && err.contains("it is not a lock")
                && err.contains("administrator"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("symlink"), "{args:?}: {err}");
    }
    assert_eq!(env.snapshot(), before);

    // The same on a directory the caller writes (no helper).
    let dir = env.base.join("direct");
    make_dir(&dir, env.caller.uid, env.caller.gid, 0o755);
    let big = dir.join("inbox.lock");
    fs::write(&big, vec![b'x'; 2000]).unwrap();
    chown(&big, Some(env.caller.uid), Some(env.caller.gid)).unwrap();
    let out = sl(&["check", &dir.join("inbox").display().to_string()]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(
        stderr(&out).contains("a regular file of 2000 bytes"),
        "{out:?}"
    );
}

fn stderr_read_only_is_not_closed(env: &Env) {
    env.reset();
    for (redirect, keyword, said) in [
        ("2</dev/null", "result=fd-not-pipe", "open\\x20read-only"),
        ("2>&-", "result=fd-closed", "was\\x20closed"),
    ] {
        let mark = env.log_mark();
        let mut child = Command::new(&env.tools.setpriv)
            .arg(format!("--reuid={}", env.caller.uid))
            .arg(format!("--regid={}", env.caller.gid))
            .arg("--init-groups")
            .arg("--")
            .arg(&env.tools.sh)
            .arg("-c")
            .arg(format!("exec \"$0\" {redirect}"))
            .arg(&env.helper)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let _watchdog = Watchdog::new(pid, PATIENCE);
        drop(child.stdin.take());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(exit::ENVIRONMENT), "{redirect}");
        let line = env.wait_log(
            mark,
            &[
                "authpriv.warning",
                &format!("spoollock-helper[{pid}]:"),
                "op=start",
            ],
        );
        assert!(
            line.contains(keyword) && line.contains(said),
            "{redirect}: {line}"
        );
    }
}

const SCENARIOS: &[Scenario] = &[
    (
        "check_reads_with_the_callers_rights",
        check_reads_with_the_callers_rights,
    ),
    (
        "by_name_requests_spare_a_live_session",
        by_name_requests_spare_a_live_session,
    ),
    (
        "login_rules_on_the_direct_path",
        login_rules_on_the_direct_path,
    ),
    ("mail_is_ignored_when_setgid", mail_is_ignored_when_setgid),
    (
        "helper_installed_wrong_says_how",
        helper_installed_wrong_says_how,
    ),
    (
        "spool_of_another_group_says_so",
        spool_of_another_group_says_so,
    ),
    ("no_syslog_reason_alone", no_syslog_reason_alone),
    (
        "oversized_file_at_the_lock_name",
        oversized_file_at_the_lock_name,
    ),
    (
        "stderr_read_only_is_not_closed",
        stderr_read_only_is_not_closed,
    ),
];

fn main() {
    run_scenarios("client and message tests", SCENARIOS, Env::setup);
}
