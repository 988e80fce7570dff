//! The compliance suite: one C driver (`tests/c/driver.c`), built against
//! Debian's liblockfile and against spoollock's, runs the same scenario on
//! the same on-disk state; return codes, `errno` and what is on disk after
//! are compared with what each library must give. Where spoollock differs
//! on purpose, the case says so and asserts both outcomes; every such
//! difference is listed in the manual page (`capi/man/spoollock-liblockfile.3`,
//! "DIFFERENCES FROM LIBLOCKFILE").
//!
//! Each scenario runs in a fresh directory under /tmp. Cases marked
//! `as_nobody` run the driver as `nobody` when the suite runs as root (CI),
//! so that a directory root owns is unwritable and a lock root made is
//! another user's.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

/// What a library must do in one scenario: the driver's lines after its
/// `pid` line (`*` matches any one word), and the state of paths after it
/// (see [`state`]). `{d}` is the scenario's directory, `{pid}`/`{ppid}`
/// the driver's, other `{...}` the case's own.
#[derive(Debug, Clone)]
struct Outcome {
    lines: &'static [&'static str],
    states: &'static [(&'static str, &'static str)],
}

const fn outcome(
    lines: &'static [&'static str],
    states: &'static [(&'static str, &'static str)],
) -> Outcome {
    Outcome { lines, states }
}

#[derive(Debug, Clone)]
enum Expect {
    /// Both libraries do this.
    Same(Outcome),
    /// spoollock differs on purpose, for the reason given.
    Differs {
        liblockfile: Outcome,
        spoollock: Outcome,
        why: &'static str,
    },
}

/// What a setup made: the inode of a planted lock (for `planted:` states)
/// and extra placeholders.
type Setup = (Option<u64>, Vec<(&'static str, String)>);

struct Case {
    name: &'static str,
    /// Prepares the directory; returns the inode of a planted lock (for
    /// `planted:` states) and extra placeholders.
    setup: fn(&Scratch) -> Setup,
    ops: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    as_nobody: bool,
    expect: Expect,
}

fn nothing(_: &Scratch) -> Setup {
    (None, vec![])
}

fn fresh_lock(s: &Scratch) -> Setup {
    (Some(plant(&s.join("x.lock"), "0\n", 5)), vec![])
}

fn old_lock(s: &Scratch) -> Setup {
    (Some(plant(&s.join("x.lock"), "0\n", 400)), vec![])
}

fn dead_pid_lock(s: &Scratch) -> Setup {
    let dead = dead_pid();
    let ino = plant(&s.join("x.lock"), &format!("{dead}\n"), 5);
    (Some(ino), vec![("dead", dead.to_string())])
}

fn live_pid_lock(s: &Scratch) -> Setup {
    let me = std::process::id();
    let ino = plant(&s.join("x.lock"), &format!("{me}\n"), 5);
    (Some(ino), vec![("live", me.to_string())])
}

/// A lock in spoollock's own format, made on this host in this boot by a
/// process that is gone.
fn dead_spoollock_lock(s: &Scratch) -> Setup {
    let dead = dead_pid();
    let host = nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let ino = plant(
        &s.join("x.lock"),
        &format!("{dead}\nhost={host}\nboot={}\nstart=1\n", boot.trim()),
        5,
    );
    (Some(ino), vec![("dead", dead.to_string())])
}

fn lock_dir(s: &Scratch) -> Setup {
    std::fs::create_dir(s.join("x.lock")).unwrap();
    (None, vec![])
}

fn dangling_symlink(s: &Scratch) -> Setup {
    std::os::unix::fs::symlink(s.join("nowhere"), s.join("x.lock")).unwrap();
    (None, vec![])
}

fn symlink_to_old_file(s: &Scratch) -> Setup {
    let ino = plant(&s.join("target"), "precious\n", 200);
    std::os::unix::fs::symlink(s.join("target"), s.join("x.lock")).unwrap();
    (Some(ino), vec![])
}

/// A directory everyone may write (not sticky), holding a lock root made.
fn others_lock(s: &Scratch) -> Setup {
    set_mode(&s.0, 0o777);
    (Some(plant(&s.join("x.lock"), "0\n", 5)), vec![])
}

/// The caller's own lock, not refreshed for 200 s (not stale yet).
fn own_aging_lock(s: &Scratch) -> Setup {
    (Some(plant(&s.join("x.lock"), "0\n", 200)), vec![])
}

fn unwritable(s: &Scratch) -> Setup {
    set_mode(&s.0, 0o555);
    (None, vec![])
}

fn long_name(_: &Scratch) -> Setup {
    (None, vec![("long", "n".repeat(300))])
}

fn long_path(_: &Scratch) -> Setup {
    (None, vec![("deep", "d/".repeat(2100))])
}

const CASES: &[Case] = &[
    Case {
        name: "free lock, no pid",
        setup: nothing,
        ops: &["create {d}/x.lock 0 0"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(&["create 0 -"], &[("{d}/x.lock", "file:0:fresh")])),
    },
    Case {
        name: "free lock, L_PID",
        setup: nothing,
        ops: &["create {d}/x.lock 0 16"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(
            &["create 0 -"],
            &[("{d}/x.lock", "file:{pid}:fresh")],
        )),
    },
    Case {
        name: "free lock, L_PPID",
        setup: nothing,
        ops: &["create {d}/x.lock 0 32"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(
            &["create 0 -"],
            &[("{d}/x.lock", "file:{ppid}:fresh")],
        )),
    },
    Case {
        name: "L_PPID when the parent is gone",
        setup: nothing,
        ops: &["orphan", "create {d}/x.lock 0 32"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(
            &["orphan ok", "create 7 *"],
            &[("{d}/x.lock", "absent")],
        )),
    },
    Case {
        name: "busy, 0 retries",
        setup: fresh_lock,
        ops: &["create {d}/x.lock 0 0"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(
            &["create 4 EAGAIN"],
            &[("{d}/x.lock", "planted:0:fresh")],
        )),
    },
    Case {
        name: "busy, 1 retry (liblockfile sleeps 5 s)",
        setup: fresh_lock,
        ops: &["create {d}/x.lock 1 16"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(
            &["create 4 EAGAIN"],
            &[("{d}/x.lock", "planted:0:fresh")],
        )),
    },
    Case {
        name: "a negative retry count makes no attempt",
        setup: nothing,
        ops: &["create {d}/x.lock -1 0"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(&["create 4 EAGAIN"], &[("{d}/x.lock", "absent")])),
    },
    Case {
        name: "unknown flags",
        setup: nothing,
        ops: &["create {d}/x.lock 0 1", "create {d}/x.lock 0 64"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(
            &["create 5 EINVAL", "create 5 EINVAL"],
            &[("{d}/x.lock", "absent")],
        )),
    },
    Case {
        name: "stale by age",
        setup: old_lock,
        ops: &["create {d}/x.lock 0 0"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(&["create 0 -"], &[("{d}/x.lock", "file:0:fresh")])),
    },
    Case {
        name: "stale by dead pid, L_PID",
        setup: dead_pid_lock,
        ops: &["create {d}/x.lock 0 16"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(
            &["create 0 -"],
            &[("{d}/x.lock", "file:{pid}:fresh")],
        )),
    },
    Case {
        name: "dead pid without L_PID: judged by age only",
        setup: dead_pid_lock,
        ops: &["create {d}/x.lock 0 0"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(
            &["create 4 EAGAIN"],
            &[("{d}/x.lock", "planted:{dead}:fresh")],
        )),
    },
    Case {
        name: "live pid, L_PID",
        setup: live_pid_lock,
        ops: &["create {d}/x.lock 0 16"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(
            &["create 4 EAGAIN"],
            &[("{d}/x.lock", "planted:{live}:fresh")],
        )),
    },
    Case {
        name: "lock name longer than a file name",
        setup: long_name,
        ops: &["create {d}/{long}.lock 0 0"],
        env: &[],
        as_nobody: false,
        expect: Expect::Differs {
            liblockfile: outcome(&["create 4 EAGAIN"], &[]),
            spoollock: outcome(&["create 1 ENAMETOOLONG"], &[]),
            why: "a name that can never be created is L_NAMELEN at once, not \
                  L_MAXTRYS after every retry's sleep",
        },
    },
    Case {
        name: "lock path longer than PATH_MAX allows",
        setup: long_path,
        ops: &["create {d}/{deep}x.lock 0 0"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(&["create 5 ENAMETOOLONG"], &[])),
    },
    Case {
        name: "unwritable directory",
        setup: unwritable,
        ops: &["create {d}/x.lock 0 0"],
        env: &[],
        as_nobody: true,
        expect: Expect::Differs {
            liblockfile: outcome(&["create 2 ENOENT"], &[("{d}/x.lock", "absent")]),
            spoollock: outcome(&["create 2 EACCES"], &[("{d}/x.lock", "absent")]),
            why: "errno is the refused creation's EACCES; liblockfile's is what its \
                  mailbox probe left (ENOENT here: no mailbox x)",
        },
    },
    Case {
        name: "missing directory",
        setup: nothing,
        ops: &["create {d}/nodir/x.lock 0 0"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(&["create 2 ENOENT"], &[("{d}/nodir", "absent")])),
    },
    Case {
        name: "content not writable (RLIMIT_FSIZE 0)",
        setup: nothing,
        ops: &["fsize0", "create {d}/x.lock 0 16"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(
            &["fsize0", "create 3 EFBIG"],
            &[("{d}/x.lock", "absent")],
        )),
    },
    Case {
        name: "dangling symlink at the lock name",
        setup: dangling_symlink,
        ops: &["create {d}/x.lock 0 0"],
        env: &[],
        as_nobody: false,
        expect: Expect::Differs {
            liblockfile: outcome(&["create 0 -"], &[("{d}/x.lock", "file:0:fresh")]),
            spoollock: outcome(&["create 5 EEXIST"], &[("{d}/x.lock", "symlink")]),
            why: "a symlink at the lock name is never followed, replaced or removed",
        },
    },
    Case {
        name: "directory at the lock name",
        setup: lock_dir,
        ops: &["create {d}/x.lock 0 0"],
        env: &[],
        as_nobody: false,
        expect: Expect::Differs {
            liblockfile: outcome(&["create 4 EAGAIN"], &[("{d}/x.lock", "dir")]),
            spoollock: outcome(&["create 5 EEXIST"], &[("{d}/x.lock", "dir")]),
            why: "something that is not a lock at the name is an error at once, not a \
                  busy lock to wait for (and, once old, never L_RMSTALE's unlink attempt)",
        },
    },
    Case {
        name: "remove a missing lock",
        setup: nothing,
        ops: &["remove {d}/x.lock", "remove {d}/nodir/x.lock"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(
            &["remove 0 -", "remove 0 -"],
            &[("{d}/x.lock", "absent")],
        )),
    },
    Case {
        name: "create, check, touch, remove",
        setup: nothing,
        ops: &[
            "create {d}/x.lock 0 16",
            "check {d}/x.lock 16",
            "touch {d}/x.lock",
            "remove {d}/x.lock",
            "check {d}/x.lock 0",
        ],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(
            &[
                "create 0 -",
                "check 0",
                "touch 0 -",
                "remove 0 -",
                "check -1",
            ],
            &[("{d}/x.lock", "absent")],
        )),
    },
    Case {
        name: "a forked child removes the lock its parent made",
        setup: nothing,
        ops: &[
            "create {d}/x.lock 0 0",
            "forkremove {d}/x.lock",
            "remove {d}/x.lock",
        ],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(
            &["create 0 -", "forkremove 0", "remove 0 -"],
            &[("{d}/x.lock", "absent")],
        )),
    },
    Case {
        name: "remove a lock of another user",
        setup: others_lock,
        ops: &["remove {d}/x.lock"],
        env: &[],
        as_nobody: true,
        expect: Expect::Differs {
            liblockfile: outcome(&["remove 0 -"], &[("{d}/x.lock", "absent")]),
            spoollock: outcome(&["remove -1 EPERM"], &[("{d}/x.lock", "planted:0:fresh")]),
            why: "only the caller's own locks are removed by name (root: any)",
        },
    },
    Case {
        name: "remove after our lock was broken and taken by a successor",
        setup: nothing,
        ops: &[
            "create {d}/x.lock 0 0",
            "successor {d}/x.lock",
            "remove {d}/x.lock",
        ],
        env: &[],
        as_nobody: false,
        expect: Expect::Differs {
            liblockfile: outcome(
                &["create 0 -", "successor", "remove 0 -"],
                &[("{d}/x.lock", "absent")],
            ),
            spoollock: outcome(
                &["create 0 -", "successor", "remove -1 EPERM"],
                &[("{d}/x.lock", "file:99999:old")],
            ),
            why: "a process removes the lock it made, never a successor's",
        },
    },
    Case {
        name: "touch our own lock made by another process",
        setup: own_aging_lock,
        ops: &["touch {d}/x.lock"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(
            &["touch 0 -"],
            &[("{d}/x.lock", "planted:0:fresh")],
        )),
    },
    Case {
        name: "touch a missing lock",
        setup: nothing,
        ops: &["touch {d}/x.lock"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(&["touch -1 ENOENT"], &[("{d}/x.lock", "absent")])),
    },
    Case {
        name: "touch after our lock was broken and taken by a successor",
        setup: nothing,
        ops: &[
            "create {d}/x.lock 0 0",
            "successor {d}/x.lock",
            "touch {d}/x.lock",
        ],
        env: &[],
        as_nobody: false,
        expect: Expect::Differs {
            liblockfile: outcome(
                &["create 0 -", "successor", "touch 0 -"],
                &[("{d}/x.lock", "file:99999:fresh")],
            ),
            spoollock: outcome(
                &["create 0 -", "successor", "touch -1 EPERM"],
                &[("{d}/x.lock", "file:99999:old")],
            ),
            why: "a process refreshes the lock it made, never a successor's",
        },
    },
    Case {
        name: "touch a symlink at the lock name",
        setup: symlink_to_old_file,
        ops: &["touch {d}/x.lock"],
        env: &[],
        as_nobody: false,
        expect: Expect::Differs {
            liblockfile: outcome(
                &["touch 0 -"],
                &[
                    ("{d}/x.lock", "symlink"),
                    ("{d}/target", "planted:precious:fresh"),
                ],
            ),
            spoollock: outcome(
                &["touch -1 EPERM"],
                &[
                    ("{d}/x.lock", "symlink"),
                    ("{d}/target", "planted:precious:old"),
                ],
            ),
            why: "a symlink at the lock name is never followed",
        },
    },
    Case {
        name: "check: free, held, stale by age",
        setup: nothing,
        ops: &[
            "check {d}/x.lock 0",
            "check {d}/held.lock 0",
            "check {d}/old.lock 0",
        ],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(&["check -1", "check 0", "check -1"], &[])),
    },
    Case {
        name: "check a dead pid: with L_PID stale, without by age",
        setup: dead_pid_lock,
        ops: &["check {d}/x.lock 16", "check {d}/x.lock 0"],
        env: &[],
        as_nobody: false,
        expect: Expect::Same(outcome(
            &["check -1", "check 0"],
            &[("{d}/x.lock", "planted:{dead}:fresh")],
        )),
    },
    Case {
        name: "check a spoollock lock whose holder died on this host",
        setup: dead_spoollock_lock,
        ops: &["check {d}/x.lock 0"],
        env: &[],
        as_nobody: false,
        expect: Expect::Differs {
            liblockfile: outcome(&["check 0"], &[]),
            spoollock: outcome(&["check -1"], &[]),
            why: "a lock whose holder is known to be gone (this host, this boot) is \
                  never valid, with or without L_PID",
        },
    },
    Case {
        name: "maillock with $MAIL naming the user's mailbox",
        setup: nothing,
        ops: &[
            "maillock alice 0",
            "maillock alice 0",
            "touchlock",
            "mailunlock",
        ],
        env: &[("MAIL", "{d}/alice")],
        as_nobody: false,
        expect: Expect::Same(outcome(
            &["maillock 0 -", "maillock 0 -", "touchlock", "mailunlock"],
            &[("{d}/alice.lock", "absent")],
        )),
    },
    Case {
        name: "maillock holds until mailunlock",
        setup: nothing,
        ops: &["maillock alice 0"],
        env: &[("MAIL", "{d}/alice")],
        as_nobody: false,
        expect: Expect::Same(outcome(
            &["maillock 0 -"],
            &[("{d}/alice.lock", "file:0:fresh")],
        )),
    },
    Case {
        name: "maillock of a name with a slash",
        setup: nothing,
        ops: &["maillock no/such 0"],
        env: &[],
        as_nobody: false,
        expect: Expect::Differs {
            liblockfile: outcome(&["maillock 2 ENOENT"], &[]),
            spoollock: outcome(&["maillock 5 EINVAL"], &[]),
            why: "maillock's name is one file name in the spool, never a path",
        },
    },
    Case {
        name: "lockfile_create2 with L_INTERVAL 0 (liblockfile spins)",
        setup: fresh_lock,
        ops: &["create2 {d}/x.lock 3 0 0"],
        env: &[],
        as_nobody: false,
        expect: Expect::Differs {
            liblockfile: outcome(&["create2 absent"], &[("{d}/x.lock", "planted:0:fresh")]),
            spoollock: outcome(&["create2 4 EAGAIN"], &[("{d}/x.lock", "planted:0:fresh")]),
            why: "an interval of 0 is that many retries with spoollock's millisecond \
                  backoff, not a busy loop",
        },
    },
    Case {
        name: "lockfile_create2 with L_INTERVAL",
        setup: fresh_lock,
        ops: &["create2 {d}/x.lock 2 0 1"],
        env: &[],
        as_nobody: false,
        expect: Expect::Differs {
            liblockfile: outcome(&["create2 absent"], &[("{d}/x.lock", "planted:0:fresh")]),
            spoollock: outcome(&["create2 4 EAGAIN"], &[("{d}/x.lock", "planted:0:fresh")]),
            why: "lockfile_create2 is exported from the shared library too \
                  (Debian's has it in liblockfile.a only)",
        },
    },
];

/// Setup for the check case, which needs three locks.
fn check_setup(s: &Scratch) {
    plant(&s.join("held.lock"), "0\n", 5);
    plant(&s.join("old.lock"), "0\n", 400);
}

struct Ran {
    lines: Vec<String>,
    vars: BTreeMap<String, String>,
    dir: Scratch,
    planted: Option<u64>,
    elapsed: Duration,
}

fn subst(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

fn run_case(case: &Case, lib: Lib) -> Ran {
    let dir = Scratch::new("compliance");
    let (planted, extra) = (case.setup)(&dir);
    if case.name.starts_with("check: free") {
        check_setup(&dir);
    }
    let mut vars: BTreeMap<String, String> =
        extra.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    vars.insert("d".into(), dir.0.display().to_string());
    let mut cmd = if case.as_nobody {
        as_nobody(&driver(lib))
    } else {
        Command::new(driver(lib))
    };
    cmd.env_remove("MAIL");
    for (k, v) in case.env {
        cmd.env(k, subst(v, &vars));
    }
    for op in case.ops {
        cmd.args(subst(op, &vars).split(' '));
    }
    let (out, elapsed) = run(&mut cmd);
    assert!(
        out.status.success(),
        "{} ({}): driver failed: {}",
        case.name,
        lib.name(),
        describe(&out)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let first: Vec<&str> = lines.next().unwrap().split(' ').collect();
    assert_eq!(first[0], "pid", "{text}");
    vars.insert("pid".into(), first[1].to_owned());
    vars.insert("ppid".into(), first[3].to_owned());
    Ran {
        lines: lines.map(str::to_owned).collect(),
        vars,
        dir,
        planted,
        elapsed,
    }
}

fn matches(expected: &str, found: &str) -> bool {
    let (e, f): (Vec<&str>, Vec<&str>) =
        (expected.split(' ').collect(), found.split(' ').collect());
    e.len() == f.len() && e.iter().zip(&f).all(|(e, f)| *e == "*" || e == f)
}

/// Compare one run with what its library must do; a description of every
/// mismatch.
fn verify(case: &Case, lib: Lib, ran: &Ran, want: &Outcome) -> Vec<String> {
    let mut wrong = Vec::new();
    let expected: Vec<String> = want.lines.iter().map(|l| subst(l, &ran.vars)).collect();
    let lines_ok = expected.len() == ran.lines.len()
        && expected.iter().zip(&ran.lines).all(|(e, f)| matches(e, f));
    if !lines_ok {
        wrong.push(format!(
            "{} ({}): calls gave {:?}, expected {:?}",
            case.name,
            lib.name(),
            ran.lines,
            expected
        ));
    }
    for (path, want_state) in want.states {
        let path = subst(path, &ran.vars);
        let found = state(Path::new(&path), ran.planted);
        let want_state = subst(want_state, &ran.vars);
        if found != want_state {
            wrong.push(format!(
                "{} ({}): {path} is {found}, expected {want_state}",
                case.name,
                lib.name()
            ));
        }
    }
    let left = leftovers(&ran.dir.0);
    if !left.is_empty() {
        wrong.push(format!(
            "{} ({}): temporary files left: {left:?}",
            case.name,
            lib.name()
        ));
    }
    wrong
}

#[test]
fn both_libraries_agree_except_where_spoollock_differs_on_purpose() {
    const T: &str = "both_libraries_agree_except_where_spoollock_differs_on_purpose";
    if !have_c_and_liblockfile(T) {
        return;
    }
    let root = nix::unistd::geteuid().is_root();
    let mut wrong = Vec::new();
    let mut report = Vec::new();
    for case in CASES {
        if case.as_nobody && !root && case.name.contains("another user") {
            skip_named(
                &format!("{T} case {:?}", case.name),
                "a lock of another user needs root to make",
            );
            continue;
        }
        let mut times = Vec::new();
        for lib in Lib::BOTH {
            let ran = run_case(case, lib);
            if ran.lines.first().map(String::as_str) == Some("orphan not-init") {
                skip_named(
                    &format!("{T} case {:?}", case.name),
                    "orphans are adopted by a subreaper here, not init",
                );
                break;
            }
            let (want, note) = match &case.expect {
                Expect::Same(o) => (o, ""),
                Expect::Differs {
                    liblockfile,
                    spoollock,
                    why,
                } => (
                    if lib == Lib::Liblockfile {
                        liblockfile
                    } else {
                        spoollock
                    },
                    *why,
                ),
            };
            wrong.extend(verify(case, lib, &ran, want));
            times.push(ran.elapsed);
            if lib == Lib::Spoollock && !note.is_empty() {
                report.push(format!("differs on purpose: {}: {note}", case.name));
            }
        }
        if let [liblockfile, spoollock] = times[..] {
            eprintln!(
                "{:<60} liblockfile {liblockfile:>8.3?}  spoollock {spoollock:>8.3?}",
                case.name
            );
        }
        // spoollock never waits longer than liblockfile would have (where
        // both made the same calls).
        assert!(
            times.len() < 2
                || !matches!(case.expect, Expect::Same(_))
                || times[1] <= times[0] + Duration::from_secs(2),
            "{}: spoollock took {:?}, liblockfile {:?}",
            case.name,
            times[1],
            times[0]
        );
    }
    for line in &report {
        eprintln!("{line}");
    }
    assert!(
        wrong.is_empty(),
        "compliance failures:\n{}",
        wrong.join("\n")
    );
}

/// Each driver loads the library it was built for.
#[test]
fn each_driver_loads_its_own_library() {
    const T: &str = "each_driver_loads_its_own_library";
    if !have_c_and_liblockfile(T) {
        return;
    }
    for lib in Lib::BOTH {
        let (out, _) = run(Command::new(driver(lib)).arg("which"));
        let text = String::from_utf8_lossy(&out.stdout);
        let loaded = text
            .lines()
            .find_map(|l| l.strip_prefix("which "))
            .unwrap_or("none")
            .to_owned();
        let loaded_id = std::fs::metadata(&loaded).map(|m| (m.dev(), m.ino()));
        let ours = std::fs::metadata(our_library()).map(|m| (m.dev(), m.ino()));
        match lib {
            Lib::Spoollock => assert_eq!(loaded_id.ok(), ours.ok(), "loaded {loaded}"),
            Lib::Liblockfile => {
                assert!(loaded.contains("liblockfile.so"), "loaded {loaded}");
                assert_ne!(loaded_id.ok(), ours.ok(), "loaded {loaded}");
            }
        }
    }
}

/// A lock released while the caller waits (a second after its first try)
/// is taken at once by spoollock (inotify, millisecond backoff);
/// liblockfile sees it at its first retry, 5 s after its first try.
#[test]
fn a_lock_released_while_waiting_is_taken_without_liblockfile_s_sleep() {
    const T: &str = "a_lock_released_while_waiting_is_taken_without_liblockfile_s_sleep";
    if !have_c_and_liblockfile(T) {
        return;
    }
    let mut took = BTreeMap::new();
    for lib in Lib::BOTH {
        let dir = Scratch::new("release");
        let lock = dir.join("x.lock");
        plant(&lock, "0\n", 5);
        // Removed a second after the driver started (it prints its pid
        // line just before its first try), so the lock is busy at the
        // first try of both libraries.
        let start = std::time::Instant::now();
        let mut child = Command::new(driver(lib))
            .args(["create", lock.to_str().unwrap(), "3", "16"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut first = String::new();
            let _ = std::io::BufRead::read_line(&mut stdout, &mut first);
            tx.send(()).unwrap();
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
            rest
        });
        rx.recv_timeout(DEADLINE).expect("the driver says nothing");
        std::thread::sleep(Duration::from_secs(1));
        std::fs::remove_file(&lock).unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < DEADLINE, "{}: still waiting", lib.name());
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = start.elapsed();
        assert!(status.success(), "{}: {status}", lib.name());
        let out_text = reader.join().unwrap();
        assert!(
            out_text.contains("create 0 -"),
            "{}: {out_text}",
            lib.name()
        );
        assert!(state(&lock, None).starts_with("file:"), "{}", lib.name());
        took.insert(lib, elapsed);
    }
    eprintln!("{took:?}");
    assert!(took[&Lib::Liblockfile] >= Duration::from_secs(5));
    assert!(
        took[&Lib::Spoollock] < Duration::from_secs(5),
        "spoollock waited {:?} for a lock released after 0.3 s",
        took[&Lib::Spoollock]
    );
}

/// A lock either library made holds against the other while its process
/// lives (`L_PID`: judged by pid; no pid: by age), and once an `L_PID`
/// holder is gone the other library breaks it. spoollock's lock content
/// (pid, then host, boot and start lines) is read by liblockfile as the
/// pid it starts with.
#[test]
fn locks_made_by_either_library_hold_against_the_other() {
    const T: &str = "locks_made_by_either_library_hold_against_the_other";
    if !have_c_and_liblockfile(T) {
        return;
    }
    for (holder, other) in [
        (Lib::Spoollock, Lib::Liblockfile),
        (Lib::Liblockfile, Lib::Spoollock),
    ] {
        for flags in ["16", "0"] {
            let what = format!(
                "{} holds (flags {flags}), {} tries",
                holder.name(),
                other.name()
            );
            let dir = Scratch::new("interop");
            let lock = dir.join("x.lock");
            let l = lock.to_str().unwrap();
            let mut holding = Command::new(driver(holder))
                .args(["create", l, "0", flags, "sleepms", "1500"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let start = std::time::Instant::now();
            while !lock.exists() {
                assert!(start.elapsed() < DEADLINE, "{what}: no lock made");
                std::thread::sleep(Duration::from_millis(5));
            }
            let (out, _) =
                run(Command::new(driver(other)).args(["create", l, "0", flags, "check", l, flags]));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{what}: {}", describe(&out));
            assert!(text.contains("create 4 EAGAIN"), "{what}: {text}");
            assert!(text.contains("check 0"), "{what}: {text}");
            let waited = holding.wait().unwrap();
            assert!(waited.success(), "{what}: holder {waited}");
            // The holder exited without removing its lock.
            let (out, _) = run(Command::new(driver(other))
                .args(["check", l, flags, "create", l, "0", flags, "remove", l]));
            let text = String::from_utf8_lossy(&out.stdout);
            let expected: &[&str] = if flags == "16" {
                &["check -1", "create 0 -", "remove 0 -"]
            } else {
                // No pid: valid until removed or five minutes old.
                &["check 0", "create 4 EAGAIN", "remove 0 -"]
            };
            let found: Vec<&str> = text.lines().skip(1).collect();
            assert_eq!(found, expected, "{what}");
            assert_eq!(state(&lock, None), "absent", "{what}");
            assert!(leftovers(&dir.0).is_empty(), "{what}");
        }
    }
}

/// A NULL name is `EINVAL` (liblockfile dereferences it and crashes, so
/// only spoollock's library is run).
#[test]
fn null_names_are_einval_not_a_crash() {
    const T: &str = "null_names_are_einval_not_a_crash";
    if !have_c_and_liblockfile(T) {
        return;
    }
    let (out, _) = run(Command::new(driver(Lib::Spoollock)).arg("null"));
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "create-null 5 EINVAL",
            "remove-null -1 EINVAL",
            "touch-null -1 EINVAL",
            "check-null -1 EINVAL",
            "maillock-null 5 EINVAL"
        ]
    );
}
