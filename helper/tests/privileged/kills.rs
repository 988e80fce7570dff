//! Processes killed or stopped: the client SIGKILLed (this binary's
//! `--client` mode holds a lock until killed), the helper SIGKILLed, the
//! helper stopped then killed mid-lock, and the sweep of dead
//! temporaries.

use crate::privileged_env::*;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::chown;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use spoollock_protocol::{read_frame, write_frame, Hello, LockStatus, Reply, Request, Welcome};

/// `--client HELPER UID GID`: spawn the helper, lock, report, then hang
/// until killed (the test SIGKILLs this process).
pub(crate) fn client_mode(args: &[String]) {
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

pub(crate) fn client_sigkill_releases(env: &Env) {
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

pub(crate) fn helper_sigkill_leaves_a_lock_broken_at_once(env: &Env) {
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

pub(crate) fn stopped_then_killed_mid_lock(env: &Env) {
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

pub(crate) fn sweeps_only_dead_temporaries_of_the_caller(env: &Env) {
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
