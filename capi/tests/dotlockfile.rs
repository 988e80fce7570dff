//! `spoollock dotlockfile` (and `spoollock` run as `dotlockfile`) against
//! Debian's `dotlockfile`: the same command lines on the same on-disk
//! state; exit status and what is on disk after compared with what each
//! must give, deliberate differences listed with their reason.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    /// Debian's /usr/bin/dotlockfile.
    Debian,
    /// spoollock, started under the name `dotlockfile`.
    AsDotlockfile,
    /// `spoollock dotlockfile ...`.
    Subcommand,
}

type Setup = (Option<u64>, Vec<(&'static str, String)>);

struct Case {
    name: &'static str,
    setup: fn(&Scratch) -> Setup,
    args: &'static str,
    as_nobody: bool,
    /// Exit status and states (see `support::state`), for Debian's
    /// dotlockfile and for spoollock's.
    debian: (i32, &'static [(&'static str, &'static str)]),
    spoollock: (i32, &'static [(&'static str, &'static str)]),
    /// Why they differ, when they do.
    why: &'static str,
}

fn nothing(_: &Scratch) -> Setup {
    (None, vec![])
}
fn fresh(s: &Scratch) -> Setup {
    (Some(plant(&s.join("x.lock"), "0\n", 5)), vec![])
}
fn old(s: &Scratch) -> Setup {
    (Some(plant(&s.join("x.lock"), "0\n", 400)), vec![])
}
fn aging(s: &Scratch) -> Setup {
    (Some(plant(&s.join("x.lock"), "0\n", 200)), vec![])
}
fn dead(s: &Scratch) -> Setup {
    let pid = dead_pid();
    (
        Some(plant(&s.join("x.lock"), &format!("{pid}\n"), 5)),
        vec![],
    )
}
fn others(s: &Scratch) -> Setup {
    set_mode(&s.0, 0o777);
    (Some(plant(&s.join("x.lock"), "0\n", 5)), vec![])
}
fn unwritable(s: &Scratch) -> Setup {
    set_mode(&s.0, 0o555);
    (None, vec![])
}
fn dangling(s: &Scratch) -> Setup {
    std::os::unix::fs::symlink(s.join("nowhere"), s.join("x.lock")).unwrap();
    (None, vec![])
}
fn long(_: &Scratch) -> Setup {
    (None, vec![("long", "n".repeat(300))])
}

const SAME: &str = "";

const CASES: &[Case] = &[
    Case {
        name: "lock a free name",
        setup: nothing,
        args: "-l {d}/x.lock",
        as_nobody: false,
        debian: (0, &[("{d}/x.lock", "file:0:fresh")]),
        spoollock: (0, &[("{d}/x.lock", "file:0:fresh")]),
        why: SAME,
    },
    Case {
        name: "lock with -p names the caller",
        setup: nothing,
        args: "-p {d}/x.lock",
        as_nobody: false,
        debian: (0, &[("{d}/x.lock", "file:{me}:fresh")]),
        spoollock: (0, &[("{d}/x.lock", "file:{me}:fresh")]),
        why: SAME,
    },
    Case {
        name: "busy, -r 0",
        setup: fresh,
        args: "-r 0 {d}/x.lock",
        as_nobody: false,
        debian: (4, &[("{d}/x.lock", "planted:0:fresh")]),
        spoollock: (4, &[("{d}/x.lock", "planted:0:fresh")]),
        why: SAME,
    },
    Case {
        name: "busy, -r 1 -i 1",
        setup: fresh,
        args: "-r1 -i1 {d}/x.lock",
        as_nobody: false,
        debian: (4, &[("{d}/x.lock", "planted:0:fresh")]),
        spoollock: (4, &[("{d}/x.lock", "planted:0:fresh")]),
        why: SAME,
    },
    Case {
        name: "stale by age",
        setup: old,
        args: "-r 0 {d}/x.lock",
        as_nobody: false,
        debian: (0, &[("{d}/x.lock", "file:0:fresh")]),
        spoollock: (0, &[("{d}/x.lock", "file:0:fresh")]),
        why: SAME,
    },
    Case {
        name: "dead pid with -p",
        setup: dead,
        args: "-p -r 0 {d}/x.lock",
        as_nobody: false,
        debian: (0, &[("{d}/x.lock", "file:{me}:fresh")]),
        spoollock: (0, &[("{d}/x.lock", "file:{me}:fresh")]),
        why: SAME,
    },
    Case {
        name: "-r -1 (forever) on a free name",
        setup: nothing,
        args: "-r -1 {d}/x.lock",
        as_nobody: false,
        debian: (0, &[("{d}/x.lock", "file:0:fresh")]),
        spoollock: (0, &[("{d}/x.lock", "file:0:fresh")]),
        why: SAME,
    },
    Case {
        name: "missing directory",
        setup: nothing,
        args: "-r 0 {d}/nodir/x.lock",
        as_nobody: false,
        debian: (5, &[("{d}/nodir", "absent")]),
        spoollock: (5, &[("{d}/nodir", "absent")]),
        why: SAME,
    },
    Case {
        name: "unlock in a missing directory",
        setup: nothing,
        args: "-u {d}/nodir/x.lock",
        as_nobody: false,
        debian: (5, &[]),
        spoollock: (5, &[]),
        why: SAME,
    },
    Case {
        name: "unwritable directory",
        setup: unwritable,
        args: "-r 0 {d}/x.lock",
        as_nobody: true,
        debian: (2, &[("{d}/x.lock", "absent")]),
        spoollock: (2, &[("{d}/x.lock", "absent")]),
        why: SAME,
    },
    Case {
        name: "lock name longer than a file name",
        setup: long,
        args: "-r 0 {d}/{long}.lock",
        as_nobody: false,
        debian: (4, &[]),
        spoollock: (1, &[]),
        why: "a name that can never be created is L_NAMELEN at once",
    },
    Case {
        name: "dangling symlink at the name",
        setup: dangling,
        args: "-r 0 {d}/x.lock",
        as_nobody: false,
        debian: (0, &[("{d}/x.lock", "file:0:fresh")]),
        spoollock: (5, &[("{d}/x.lock", "symlink")]),
        why: "a symlink at the lock name is never followed, replaced or removed",
    },
    Case {
        name: "check a held lock",
        setup: fresh,
        args: "-c {d}/x.lock",
        as_nobody: false,
        debian: (0, &[]),
        spoollock: (0, &[]),
        why: SAME,
    },
    Case {
        name: "check a free name",
        setup: nothing,
        args: "-c {d}/x.lock",
        as_nobody: false,
        debian: (1, &[]),
        spoollock: (1, &[]),
        why: SAME,
    },
    Case {
        name: "check a stale lock",
        setup: old,
        args: "-c {d}/x.lock",
        as_nobody: false,
        debian: (1, &[("{d}/x.lock", "planted:0:old")]),
        spoollock: (1, &[("{d}/x.lock", "planted:0:old")]),
        why: SAME,
    },
    Case {
        name: "check a dead pid, with and without -p",
        setup: dead,
        args: "-c -p {d}/x.lock",
        as_nobody: false,
        debian: (1, &[]),
        spoollock: (1, &[]),
        why: SAME,
    },
    Case {
        name: "check a dead pid without -p: by age",
        setup: dead,
        args: "-c {d}/x.lock",
        as_nobody: false,
        debian: (0, &[]),
        spoollock: (0, &[]),
        why: SAME,
    },
    Case {
        name: "touch our lock",
        setup: aging,
        args: "-t {d}/x.lock",
        as_nobody: false,
        debian: (0, &[("{d}/x.lock", "planted:0:fresh")]),
        spoollock: (0, &[("{d}/x.lock", "planted:0:fresh")]),
        why: SAME,
    },
    Case {
        name: "touch a missing lock",
        setup: nothing,
        args: "-t {d}/x.lock",
        as_nobody: false,
        debian: (1, &[("{d}/x.lock", "absent")]),
        spoollock: (1, &[("{d}/x.lock", "absent")]),
        why: SAME,
    },
    Case {
        name: "unlock our lock",
        setup: fresh,
        args: "-u {d}/x.lock",
        as_nobody: false,
        debian: (0, &[("{d}/x.lock", "absent")]),
        spoollock: (0, &[("{d}/x.lock", "absent")]),
        why: SAME,
    },
    Case {
        name: "unlock a missing lock",
        setup: nothing,
        args: "-u {d}/x.lock",
        as_nobody: false,
        debian: (0, &[]),
        spoollock: (0, &[]),
        why: SAME,
    },
    Case {
        name: "unlock another user's lock",
        setup: others,
        args: "-u {d}/x.lock",
        as_nobody: true,
        debian: (0, &[("{d}/x.lock", "absent")]),
        spoollock: (1, &[("{d}/x.lock", "planted:0:fresh")]),
        why: "only the caller's own locks are removed (root: any)",
    },
    Case {
        name: "command: runs with the lock held, which is removed after",
        setup: nothing,
        args: "{d}/x.lock sh -c test\\x20-e\\x20{d}/x.lock",
        as_nobody: false,
        debian: (0, &[("{d}/x.lock", "absent")]),
        spoollock: (0, &[("{d}/x.lock", "absent")]),
        why: SAME,
    },
    Case {
        name: "command: -P passes its status through",
        setup: nothing,
        args: "-P {d}/x.lock sh -c exit\\x203",
        as_nobody: false,
        debian: (3, &[("{d}/x.lock", "absent")]),
        spoollock: (3, &[("{d}/x.lock", "absent")]),
        why: SAME,
    },
    Case {
        name: "command: without -P, 0",
        setup: nothing,
        args: "{d}/x.lock sh -c exit\\x203",
        as_nobody: false,
        debian: (0, &[("{d}/x.lock", "absent")]),
        spoollock: (0, &[("{d}/x.lock", "absent")]),
        why: SAME,
    },
    Case {
        name: "command: cannot be run",
        setup: nothing,
        args: "-P {d}/x.lock {d}/no-such-program",
        as_nobody: false,
        debian: (127, &[("{d}/x.lock", "absent")]),
        spoollock: (127, &[("{d}/x.lock", "absent")]),
        why: SAME,
    },
    Case {
        name: "usage: no lock file",
        setup: nothing,
        args: "-l",
        as_nobody: false,
        debian: (1, &[]),
        spoollock: (1, &[]),
        why: SAME,
    },
    Case {
        name: "usage: unlock with a command",
        setup: nothing,
        args: "-u {d}/x.lock true",
        as_nobody: false,
        debian: (1, &[]),
        spoollock: (1, &[]),
        why: SAME,
    },
    Case {
        name: "usage: unknown option",
        setup: nothing,
        args: "-z {d}/x.lock",
        as_nobody: false,
        debian: (1, &[("{d}/x.lock", "absent")]),
        spoollock: (1, &[("{d}/x.lock", "absent")]),
        why: SAME,
    },
    Case {
        name: "bad -r",
        setup: nothing,
        args: "-r abc {d}/x.lock",
        as_nobody: false,
        debian: (5, &[("{d}/x.lock", "absent")]),
        spoollock: (5, &[("{d}/x.lock", "absent")]),
        why: SAME,
    },
    Case {
        name: "bad -i",
        setup: nothing,
        args: "-i -2 {d}/x.lock",
        as_nobody: false,
        debian: (5, &[("{d}/x.lock", "absent")]),
        spoollock: (5, &[("{d}/x.lock", "absent")]),
        why: SAME,
    },
];

fn subst(text: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = text.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// `spoollock` under the name `dotlockfile`.
fn as_dotlockfile(spoollock: &Path) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("as-dotlockfile");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("dotlockfile");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(spoollock, &link).unwrap();
    link
}

#[test]
fn spoollock_dotlockfile_agrees_with_debian_s_except_where_it_differs_on_purpose() {
    const T: &str = "spoollock_dotlockfile_agrees_with_debian_s_except_where_it_differs_on_purpose";
    if !have_programs(T, &["dotlockfile", "setpriv"]) {
        return;
    }
    let spoollock = workspace_binary("spoollock", "spoollock");
    let renamed = as_dotlockfile(&spoollock);
    let root = nix::unistd::geteuid().is_root();
    let mut wrong = Vec::new();
    for case in CASES {
        if case.as_nobody && !root && case.name.contains("another user") {
            skip_named(
                &format!("{T} case {:?}", case.name),
                "another user's lock needs root",
            );
            continue;
        }
        for tool in [Tool::Debian, Tool::AsDotlockfile, Tool::Subcommand] {
            let dir = Scratch::new("dotlockfile");
            let (planted, extra) = (case.setup)(&dir);
            let mut vars: BTreeMap<&str, String> = extra.into_iter().collect();
            vars.insert("d", dir.0.display().to_string());
            vars.insert("me", std::process::id().to_string());
            let program: PathBuf = match tool {
                Tool::Debian => "/usr/bin/dotlockfile".into(),
                Tool::AsDotlockfile => renamed.clone(),
                Tool::Subcommand => spoollock.clone(),
            };
            let mut cmd = if case.as_nobody {
                as_nobody(&program)
            } else {
                Command::new(&program)
            };
            if tool == Tool::Subcommand {
                cmd.arg("dotlockfile");
            }
            // Words are split on spaces; `\x20` is a space inside a word.
            for word in subst(case.args, &vars).split(' ') {
                cmd.arg(word.replace("\\x20", " "));
            }
            let (out, _) = run(&mut cmd);
            let (want_code, want_states) = if tool == Tool::Debian {
                case.debian
            } else {
                case.spoollock
            };
            let code = out.status.code().unwrap_or(-1);
            if code != want_code {
                wrong.push(format!(
                    "{} ({tool:?}): exit {code}, expected {want_code}: {}",
                    case.name,
                    describe(&out)
                ));
            }
            for (path, want) in want_states {
                let path = subst(path, &vars);
                let found = state(Path::new(&path), planted);
                let want = subst(want, &vars);
                if found != want {
                    wrong.push(format!(
                        "{} ({tool:?}): {path} is {found}, expected {want}",
                        case.name
                    ));
                }
            }
            let left = leftovers(&dir.0);
            if !left.is_empty() {
                wrong.push(format!(
                    "{} ({tool:?}): temporary files left: {left:?}",
                    case.name
                ));
            }
        }
        if !case.why.is_empty() {
            eprintln!("differs on purpose: {}: {}", case.name, case.why);
        }
    }
    assert!(
        wrong.is_empty(),
        "dotlockfile compliance failures:\n{}",
        wrong.join("\n")
    );
}
