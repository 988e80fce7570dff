//! `spoollock status`: each kind of lock in a directory reported with its
//! holder, age, owner and what the next locker would do; `--json`; run by
//! an unprivileged user on a directory it may not write (as on /var/mail),
//! changing nothing.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use spoollock_lockfile::{content_for, PidMode};
use spoollock_test_support::{dead_pid, listing, Scratch};

/// Run `cmd` within a minute (a hang is a failure).
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{cmd:?} still running after a minute");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

fn plant(path: &Path, content: &[u8], secs_ago: u64) {
    std::fs::write(path, content).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(secs_ago))
        .unwrap();
}

#[test]
fn every_kind_of_lock_is_reported_with_what_the_next_locker_would_do() {
    let s = Scratch::new("kinds");
    let me = std::process::id();
    let dead = dead_pid();
    plant(
        &s.0.join("held.lock"),
        &content_for(PidMode::Own).render(),
        5,
    );
    plant(&s.0.join("old.lock"), b"0\n", 400);
    let mut gone = content_for(PidMode::Own);
    gone.pid = Some(dead);
    plant(&s.0.join("dead.lock"), &gone.render(), 5);
    plant(&s.0.join("bare.lock"), format!("{dead}\n").as_bytes(), 100);
    // Ours, but from before a reboot: its pid is some other process now.
    let mut rebooted = content_for(PidMode::Own);
    rebooted.boot = Some("00000000-0000-4000-8000-000000000000".into());
    plant(&s.0.join("reboot.lock"), &rebooted.render(), 5);
    std::fs::create_dir(s.0.join("dir.lock")).unwrap();
    plant(&s.0.join("inbox"), b"not a lock\n", 5);
    let before = listing(&s.0);

    let mut runs = vec![(
        "root or the owner",
        Command::new(env!("CARGO_BIN_EXE_spoollock")),
    )];
    if nix::unistd::geteuid().is_root() {
        // Reading is enough: an unprivileged user who may not write the
        // directory (as /var/mail for everyone but root and group mail).
        let c = spoollock_test_support::as_nobody(Path::new(env!("CARGO_BIN_EXE_spoollock")));
        runs.push(("nobody", c));
    }
    for (who, mut cmd) in runs {
        let out = run(cmd.arg("status").arg(&s.0).arg(s.0.join("nobox")));
        assert!(out.status.success(), "{who}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{}/{name} ", s.0.display())))
                .unwrap_or_else(|| panic!("{who}: no line for {name}:\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let held = line("held.lock");
        assert!(
            held.contains(&format!(" {me} "))
                && held.ends_with(&format!("held kept: its process {me} is alive")),
            "{who}: {held}"
        );
        assert!(
            line("old.lock").ends_with("stale would be broken: not refreshed within the stale age"),
            "{who}: {text}"
        );
        assert!(
            line("dead.lock").ends_with("stale would be broken: holder process is gone"),
            "{who}: {text}"
        );
        // The pid of another boot names no program of ours, and does not
        // keep the lock: its age does.
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let reboot = line("reboot.lock");
        assert!(
            !reboot.contains(&format!(" {} ", comm.trim_end()))
                && reboot.contains(" held kept: stale in "),
            "{who}: {reboot}"
        );
        // A bare pid may be another host's: kept until it is old.
        let bare = line("bare.lock");
        assert!(
            bare.contains(&format!(" {dead} ")) && bare.contains(" held kept: stale in "),
            "{who}: {bare}"
        );
        assert!(
            line("dir.lock").ends_with("not-a-lock never broken: not a lock file"),
            "{who}: {text}"
        );
        assert!(line("nobox.lock").contains(" free "), "{who}: {text}");
        assert!(
            !text.contains("inbox "),
            "{who}: a mailbox listed as a lock:\n{text}"
        );
        assert_eq!(listing(&s.0), before, "{who}: status changed the directory");
    }

    let out = run(Command::new(env!("CARGO_BIN_EXE_spoollock"))
        .args(["status", "--json"])
        .arg(&s.0));
    assert!(out.status.success(), "{out:?}");
    let json = String::from_utf8(out.stdout).unwrap();
    assert!(
        json.starts_with('[') && json.trim_end().ends_with(']'),
        "{json}"
    );
    let d = s.0.display();
    for expected in [
        format!("{{\"lock\":\"{d}/old.lock\",\"state\":\"stale\",\"would_break\":true,\"reason\":\"not refreshed within the stale age\",\"pid\":null,"),
        format!("{{\"lock\":\"{d}/held.lock\",\"state\":\"held\",\"would_break\":false,\"reason\":null,\"pid\":{me},"),
        format!("{{\"lock\":\"{d}/dead.lock\",\"state\":\"stale\",\"would_break\":true,\"reason\":\"holder process is gone\",\"pid\":{dead},"),
        format!("{{\"lock\":\"{d}/dir.lock\",\"state\":\"not-a-lock\",\"would_break\":false,"),
    ] {
        assert!(json.contains(&expected), "{expected}\nnot in\n{json}");
    }
    assert_eq!(json.matches("{\"lock\":").count(), 6, "{json}");
}
