//! The `spoollock` command end to end: exit status pass-through, `check`
//! on held, free and stale locks, `--no-wait` and `--timeout` on a held
//! lock, `lock`/`unlock`/`touch` for scripts, and clear errors.

use std::path::Path;
use std::process::{Command, Output};

use spoollock_lockfile::{content_for, PidMode};
use spoollock_test_support::{require, Scratch};

fn spoollock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spoollock"))
        .args(args)
        .output()
        .unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("spoollock itself exited normally")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn run_passes_the_exit_status_through_and_holds_the_lock_meanwhile() {
    let s = Scratch::new("run");
    let mbox = s.join("mbox");
    let lock = s.join("mbox.lock");
    let script = format!("test -f '{}' && exit 7", p(&lock));
    assert_eq!(
        code(&spoollock(&["run", p(&mbox), "--", "sh", "-c", &script])),
        7
    );
    assert_eq!(code(&spoollock(&["run", p(&mbox), "--", "true"])), 0);
    assert_eq!(
        code(&spoollock(&[
            "run",
            p(&mbox),
            "--",
            "sh",
            "-c",
            "kill -KILL $$"
        ])),
        137
    );
    assert_eq!(
        code(&spoollock(&[
            "run",
            p(&mbox),
            "--",
            "sh",
            "-c",
            "kill -TERM $$"
        ])),
        143
    );
    assert_eq!(
        s.names(),
        Vec::<String>::new(),
        "lock released, nothing left"
    );

    let missing = spoollock(&["run", p(&mbox), "--", "/nonexistent/program"]);
    assert_eq!(code(&missing), 5);
    assert!(
        stderr(&missing).contains("cannot run"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(s.names(), Vec::<String>::new());
}

#[test]
fn check_says_held_free_and_stale() {
    let s = Scratch::new("check");
    let mbox = s.join("mbox");
    let free = spoollock(&["check", "-v", p(&mbox)]);
    assert_eq!(code(&free), 1);
    assert!(stderr(&free).contains("not locked"));

    assert_eq!(code(&spoollock(&["lock", p(&mbox)])), 0);
    let held = spoollock(&["check", "-v", p(&mbox)]);
    assert_eq!(code(&held), 0, "{}", stderr(&held));
    assert!(stderr(&held).contains("held by"));
    assert_eq!(code(&spoollock(&["unlock", p(&mbox)])), 0);

    // A lock left by a process of this host that no longer exists.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(
        s.join("mbox.lock"),
        content_for(PidMode::Pid(dead)).render(),
    )
    .unwrap();
    let stale = spoollock(&["check", "-v", p(&mbox)]);
    assert_eq!(code(&stale), 1);
    assert!(stderr(&stale).contains("stale"), "{}", stderr(&stale));
    // The next locker breaks it without waiting.
    assert_eq!(
        code(&spoollock(&["run", "--no-wait", p(&mbox), "--", "true"])),
        0
    );
    assert_eq!(s.names(), Vec::<String>::new());
}

#[test]
fn a_held_lock_makes_no_wait_and_timeout_fail_with_busy() {
    let s = Scratch::new("busy");
    let mbox = s.join("mbox");
    assert_eq!(code(&spoollock(&["lock", p(&mbox)])), 0);

    let marker = s.join("ran");
    let touch_marker = format!("touch '{}'", p(&marker));
    let out = spoollock(&[
        "run",
        "--no-wait",
        p(&mbox),
        "--",
        "sh",
        "-c",
        &touch_marker,
    ]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("lock is held"), "{}", stderr(&out));
    let out = spoollock(&[
        "run",
        "-v",
        "--timeout",
        "150ms",
        p(&mbox),
        "--",
        "sh",
        "-c",
        &touch_marker,
    ]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("waiting for"),
        "-v names the holder: {}",
        stderr(&out)
    );
    let out = spoollock(&[
        "run",
        "--retries",
        "2",
        p(&mbox),
        "--",
        "sh",
        "-c",
        &touch_marker,
    ]);
    assert_eq!(code(&out), 3);
    assert!(!marker.exists(), "the command never ran without the lock");

    assert_eq!(code(&spoollock(&["touch", p(&mbox)])), 0);
    assert_eq!(code(&spoollock(&["unlock", p(&mbox)])), 0);
    assert_eq!(code(&spoollock(&["unlock", p(&mbox)])), 6, "already gone");
    assert_eq!(code(&spoollock(&["touch", p(&mbox)])), 6);
}

#[test]
fn explicit_lock_file_and_usage_errors() {
    let s = Scratch::new("usage");
    let lock = s.join("custom.lck");
    assert_eq!(code(&spoollock(&["lock", "--lock-file", p(&lock)])), 0);
    assert!(lock.exists());
    assert_eq!(code(&spoollock(&["unlock", "--lock-file", p(&lock)])), 0);
    assert!(!lock.exists());

    assert_eq!(code(&spoollock(&["run", "--", "true"])), 2, "no PATH");
    assert_eq!(
        code(&spoollock(&["run", "x", "--timeout", "soon", "--", "true"])),
        2
    );
    assert_eq!(code(&spoollock(&["frobnicate"])), 2);
    let help = spoollock(&["run", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("Exit status"));
}

#[test]
fn clear_errors_and_no_leftovers() {
    let s = Scratch::new("errors");
    // A symlink where the lock should be.
    std::os::unix::fs::symlink("/etc/passwd", s.join("mbox.lock")).unwrap();
    let out = spoollock(&["run", p(&s.join("mbox")), "--", "true"]);
    assert_eq!(code(&out), 5);
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    // A missing directory.
    let out = spoollock(&["run", p(&s.join("no/such/dir/mbox")), "--", "true"]);
    assert_eq!(code(&out), 5);
    assert!(stderr(&out).contains("No such file"), "{}", stderr(&out));
    // A name too long for the file system.
    let long = s.join(&"n".repeat(252));
    let out = spoollock(&["run", p(&long), "--", "true"]);
    assert_eq!(code(&out), 5);
    assert!(stderr(&out).contains("too long"), "{}", stderr(&out));
    // RLIMIT_FSIZE 0: the lock content cannot be written.
    let out = Command::new("prlimit")
        .args(["--fsize=0", "--", env!("CARGO_BIN_EXE_spoollock"), "run"])
        .arg(s.join("mbox2"))
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("File too large"), "{}", stderr(&out));
    assert_eq!(
        s.names(),
        vec!["mbox.lock".to_string()],
        "only the planted symlink"
    );
}

#[test]
fn a_termination_signal_reaches_the_command_and_the_lock_is_released() {
    let s = Scratch::new("signal");
    let mbox = s.join("mbox");
    let started = s.join("started");
    let script = format!("touch '{}'; exec sleep 30", p(&started));
    let mut child = Command::new(env!("CARGO_BIN_EXE_spoollock"))
        .args(["run", p(&mbox), "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    while !started.exists() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(s.join("mbox.lock").exists());
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(143),
        "sleep was terminated, spoollock reported it"
    );
    assert!(
        !s.join("mbox.lock").exists(),
        "lock released after the command ended"
    );
}

#[test]
fn locks_are_readable_by_other_tools_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new("umask");
    let mbox = s.join("mbox");
    let script = format!(
        "umask 077 && exec '{}' lock '{}'",
        env!("CARGO_BIN_EXE_spoollock"),
        p(&mbox)
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = std::fs::metadata(s.join("mbox.lock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
}

#[test]
fn a_planted_append_mark_never_truncates_someone_elses_mailbox() {
    use std::os::unix::fs::MetadataExt;
    if !require(
        nix::unistd::geteuid().is_root(),
        "needs root to give the planted lock another owner",
    ) {
        return;
    }
    // In a shared directory, `nobody` plants an old lock on our mailbox
    // whose append mark claims the whole mailbox is a partial message.
    let s = Scratch::new("planted");
    let mbox = s.join("mbox");
    std::fs::write(&mbox, "From a@b Thu Jan  1 00:00:00 1970\n\nkeep me\n\n").unwrap();
    let meta = std::fs::metadata(&mbox).unwrap();
    let lock = s.join("mbox.lock");
    let content = format!("1\nappend={}:{}:0:999999\n", meta.dev(), meta.ino());
    std::fs::write(&lock, content).unwrap();
    std::os::unix::fs::chown(&lock, Some(65534), Some(65534)).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&lock)
        .unwrap()
        .set_modified(old)
        .unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_spoollock"))
        .args(["deliver", "--no-wait", "-v", "--from", "c@d", p(&mbox)])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"new\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("removed stale lock"),
        "{}",
        stderr(&out)
    );
    let text = std::fs::read_to_string(&mbox).unwrap();
    assert!(
        text.starts_with("From a@b Thu Jan  1 00:00:00 1970\n\nkeep me\n\n"),
        "{text}"
    );
    assert!(text.ends_with("\nnew\n\n"), "{text}");
}

/// `-v` says who holds the lock once per holder, not on every round of
/// the two-lock loop (each round is a new dotlock attempt), and `deliver`
/// on a held lock that times out changes nothing.
#[test]
fn verbose_waiting_is_reported_once_per_holder() {
    let s = Scratch::new("verbose-once");
    let mbox = s.join("mbox");
    std::fs::write(&mbox, b"").unwrap();
    let lock = spoollock(&["lock", p(&mbox)]);
    assert_eq!(code(&lock), 0, "{}", stderr(&lock));
    for order in ["fcntl,dotlock", "dotlock,fcntl"] {
        let out = Command::new(env!("CARGO_BIN_EXE_spoollock"))
            .args(["deliver", "-v", "--timeout", "700ms", "--order", order])
            .arg(&mbox)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(code(&out), 75, "{order}: {}", stderr(&out));
        let waiting = stderr(&out).matches("spoollock: waiting for").count();
        assert_eq!(waiting, 1, "{order}: {}", stderr(&out));
        assert_eq!(std::fs::read(&mbox).unwrap(), b"", "{order}");
    }
    assert_eq!(code(&spoollock(&["unlock", p(&mbox)])), 0);
}
