//! The spoollock library and command, going through the helper.

use crate::privileged_env::*;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub(crate) fn spoollock_client_through_the_helper(env: &Env) {
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
    let mut run = start_run_holding(env, &bin, &env.base.join("started"));
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
