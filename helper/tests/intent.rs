//! Every privileged change the helper makes in the spool is preceded by its
//! record of intent in the audit trail (issue 12, item 2).
//!
//! The attack: the spool is world-readable, so the caller watches it with
//! inotify and kills their own helper right after a change and before the
//! record of it is sent; a lock taken, a lock broken or a file swept then
//! has no record at all. Here the watcher runs `SCHED_FIFO` on the helper's
//! CPU (see `support/kill_points.rs`), so the kill lands right after the
//! system call that made the change, deterministically. For each scenario
//! the helper is first run to the end to count its changes; then it is run
//! again once per change, killed at that change. After each kill, every
//! change inotify saw (and so every change on disk) must have its record of
//! intent, sent by that helper, in the syslog file:
//!
//! - the lock name created: `op=lock result=intent`;
//! - the lock name moved or removed: `op=break-stale result=intent` (a
//!   stale lock broken) or `op=release result=intent` (a lock released);
//! - a dead temporary file of the caller's removed: `op=cleanup
//!   result=intent name=THAT_FILE`.
//!
//! And with the syslog daemon gone after the helper started (so no record
//! of intent can be sent), the helper changes nothing: no stale lock is
//! broken, no lock taken, a held lock is not released.
//!
//! Run as root: `cargo test -p spoollock-helper --test intent`.

#[path = "support/kill_points.rs"]
mod kill_points;
#[path = "support/privileged_env.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use kill_points::{Change, KillAt, Killer};
use nix::sys::inotify::AddWatchFlags;
use spoollock_protocol::codec::encode;
use spoollock_protocol::{Hello, LockMode, Refusal, Request, WaitSpec};
use support::*;

/// A scenario: what is planted first (returns the names of planted dead
/// temporary files), and the requests sent in one write after the hello.
struct Case {
    name: &'static str,
    plant: fn(&Env) -> Vec<String>,
    requests: fn() -> Vec<Request>,
}

fn nothing(_: &Env) -> Vec<String> {
    Vec::new()
}

/// A dead helper's lock (stale: its process is gone), a named temporary
/// file it left (on NFS) and a lock it moved aside before it died.
fn dead_helpers_leftovers(env: &Env) -> Vec<String> {
    let dead = dead_pid();
    let day = Duration::from_secs(86_400);
    plant(
        env,
        &format!("{CALLER}.lock"),
        env.caller.uid,
        &lock_content(dead),
        0o644,
        Duration::ZERO,
    );
    let temps = vec![
        temp_name_of(dead, 0x0123_4567_89ab_cdef, ""),
        temp_name_of(dead, 0xfedc_ba98_7654_3210, ".stale"),
    ];
    for t in &temps {
        plant(env, t, env.caller.uid, &lock_content(dead), 0o644, day);
    }
    temps
}

fn detached_then_unlock_then_session() -> Vec<Request> {
    vec![
        lock(
            target(),
            WaitSpec::NoWait,
            LockMode::Detached { holder_pid: None },
        ),
        Request::Unlock(target()),
        session_lock(),
        Request::Bye,
    ]
}

fn session_then_release() -> Vec<Request> {
    vec![session_lock(), Request::Unlock(target()), Request::Bye]
}

const CASES: &[Case] = &[
    Case {
        name: "grant, release by name, grant, release at bye",
        plant: nothing,
        requests: detached_then_unlock_then_session,
    },
    Case {
        name: "sweep, break, grant, release",
        plant: dead_helpers_leftovers,
        requests: session_then_release,
    },
];

/// Run `case` once with the helper killed at `at`; the changes inotify
/// saw, whether the kill was sent, and the helper's pid.
fn run_once(
    env: &Env,
    killer: &Killer,
    case: &Case,
    at: KillAt,
) -> (Vec<Change>, bool, u32, usize) {
    env.reset();
    let temps = (case.plant)(env);
    let mark = env.log_mark();
    let mut c = Client::start(env, &env.run(&env.caller));
    let pid = c.pid();
    killer.arm(pid, at);
    let mut frames = encode(&Hello::current()).unwrap();
    for r in (case.requests)() {
        frames.extend(encode(&r).unwrap());
    }
    c.send_raw(&frames);
    wait_exit(&mut c.child);
    let (changes, killed) = killer.collect();
    check_intents(env, mark, pid, &changes, &temps);
    let _ = c.finish();
    (changes, killed, pid, temps.len())
}

/// Every change in `changes` has its record of intent from helper `pid`
/// in the log written after `mark` (waiting, bounded, for the daemon to
/// write what was sent before the change).
fn check_intents(env: &Env, mark: usize, pid: u32, changes: &[Change], temps: &[String]) {
    let lock = format!("{CALLER}.lock");
    let tag = format!("spoollock-helper[{pid}]:");
    let created = changes
        .iter()
        .filter(|c| c.name == lock && c.is(AddWatchFlags::IN_CREATE))
        .count();
    let removed = changes
        .iter()
        .filter(|c| {
            c.name == lock && (c.is(AddWatchFlags::IN_MOVED_FROM) || c.is(AddWatchFlags::IN_DELETE))
        })
        .count();
    let swept: Vec<&String> = temps
        .iter()
        .filter(|t| {
            changes.iter().any(|c| {
                &&c.name == t
                    && (c.is(AddWatchFlags::IN_DELETE) || c.is(AddWatchFlags::IN_MOVED_FROM))
            })
        })
        .collect();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = env.log_since(mark);
        let mine: Vec<&str> = text.lines().filter(|l| l.contains(&tag)).collect();
        let count = |op: &str| {
            mine.iter()
                .filter(|l| l.contains(&format!("op={op} result=intent")))
                .count()
        };
        let lock_intents = count("lock");
        let removal_intents = count("break-stale") + count("release");
        let unrecorded: Vec<&&String> = swept
            .iter()
            .filter(|t| {
                !mine.iter().any(|l| {
                    l.contains("op=cleanup result=intent") && l.contains(&format!("name={t}"))
                })
            })
            .collect();
        if lock_intents >= created && removal_intents >= removed && unrecorded.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "changes without their record of intent: lock created {created} time(s), \
                 {lock_intents} lock intent(s); lock moved or removed {removed} time(s), \
                 {removal_intents} break/release intent(s); swept without intent: \
                 {unrecorded:?}\nchanges: {changes:?}\nrecords of the helper:\n{}",
                mine.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill_at_every_change(env: &Env) {
    let killer = Killer::start(Path::new(SPOOL));
    for case in CASES {
        let (changes, killed, _, _) = run_once(env, &killer, case, KillAt::Never);
        assert!(!killed);
        assert!(
            changes.len() >= 2,
            "{}: the helper changed nothing? {changes:?}",
            case.name
        );
        println!("  {}: {} changes", case.name, changes.len());
        for k in 1..=changes.len() {
            let (seen, killed, pid, _) = run_once(env, &killer, case, KillAt::Nth(k));
            assert!(
                killed,
                "{}: helper {pid} made only {} of {} changes before dying: {seen:?}",
                case.name,
                seen.len(),
                changes.len()
            );
        }
    }
    killer.stop();
}

/// With the syslog daemon gone after the helper started, no record of
/// intent can be sent: the helper changes nothing (no stale lock broken,
/// no lock taken, a held lock not released) and says why.
fn no_change_without_its_record(env: &Env) {
    env.reset();
    plant(
        env,
        &format!("{CALLER}.lock"),
        env.caller.uid,
        &lock_content(dead_pid()),
        0o644,
        Duration::ZERO,
    );
    let before = env.snapshot();
    let (mut c, _) = Client::open(env, &env.caller);
    env.stop_syslog();
    let refused = expect_error(c.call(&session_lock()));
    env.start_syslog();
    assert_eq!(refused, Refusal::AuditUnavailable);
    assert_eq!(
        env.snapshot(),
        before,
        "the stale lock was broken or replaced"
    );
    let (status, _) = bye(c);
    assert!(status.success());

    env.reset();
    let (mut c, _) = Client::open(env, &env.caller);
    expect_locked(c.call(&session_lock()));
    let held = env.snapshot();
    env.stop_syslog();
    let refused = expect_error(c.call(&Request::Unlock(target())));
    // The session ends without its audit trail: the lock stays, naming the
    // helper, which is gone once the session is over.
    let pid = c.pid();
    let (status, _) = bye(c);
    env.start_syslog();
    assert_eq!(refused, Refusal::AuditUnavailable);
    assert!(status.success());
    assert_eq!(
        env.snapshot(),
        held,
        "the lock was released without a record"
    );
    assert_eq!(first_line(&env.lock_path()), pid.to_string());
    // The next locker breaks it, announced.
    let mark = env.log_mark();
    let (mut next, _) = Client::open(env, &env.caller);
    expect_locked(next.call(&session_lock()));
    bye(next);
    env.wait_log(
        mark,
        &[
            "op=break-stale",
            "result=intent",
            &format!("holder_pid={pid}"),
        ],
    );
}

fn main() {
    run_scenarios(
        "intent record tests",
        &[
            ("kill_at_every_change", kill_at_every_change),
            ("no_change_without_its_record", no_change_without_its_record),
        ],
        Env::setup,
    );
}
