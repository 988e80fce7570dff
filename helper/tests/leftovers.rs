//! What killed helpers leave in the spool is bounded (issue 12, item 3).
//!
//! The attack: a helper killed after moving a stale lock aside leaves that
//! file, and one killed before its sweep never removes the files of those
//! killed before it; a caller who kills every helper at the right moment
//! fills the spool with files they cannot remove themselves (60,000 starts
//! left 28,297 files), and every other user's sweep then pays for them.
//!
//! Here 2,000 helpers of the caller are killed in turn: at exact points
//! (right after a stale lock is moved aside, right after the lock is
//! linked, at a random change; see `support/kill_points.rs`) and after
//! random delays. After each, the files in the spool other than the two
//! mailboxes are counted: never more than [`BOUND`], the caller's lock
//! name and the last killed session's aside name. The figures (largest count, what is left
//! at the end, a later lock and release of the caller and of another user)
//! are printed.
//!
//! The same loop runs on a spool where temporary files are named (ramfs,
//! as on NFS): there each helper first sweeps the caller's dead ones, so a
//! caller killing one helper after another leaves a few files at most.
//!
//! A last scenario fills the spool with 20,000 dead temporary files of the
//! caller (as a version without the bound could leave) and shows another
//! user's lock and release stay cheap (their sweep reads the directory
//! and looks at the owner of each temporary-form name, nothing costlier:
//! the caller's files are not theirs), and that the caller's next session
//! sweeps them. Its figures are printed, not asserted.
//!
//! Run as root: `cargo test -p spoollock-helper --test leftovers`.

#[path = "support/kill_points.rs"]
mod kill_points;
#[path = "support/privileged_env.rs"]
mod support;

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use kill_points::{KillAt, Killer};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::AddWatchFlags;
use nix::sys::signal::Signal;
use spoollock_protocol::codec::encode;
use spoollock_protocol::{Hello, LockMode, Target, WaitSpec};
use support::*;

/// Killed helpers started.
const HELPERS: usize = 2000;
/// The most files the caller's killed helpers may leave: the lock (stale,
/// its holder is dead: the next locker breaks it) and the aside name of
/// the last killed session (each session has its own; the next session's
/// sweep removes a dead one's).
const BOUND: usize = 2;

/// A small pseudo-random sequence (xorshift), seeded from the clock; the
/// seed is printed so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Read what the helper answers until it has answered `frames` frames or
/// is gone; each wait bounded.
fn drain(c: &mut Client, frames: usize) {
    let out = c.stdout.as_mut().unwrap();
    for _ in 0..frames {
        let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(20_000u16)).unwrap();
        assert!(ready > 0, "the helper neither answered nor died");
        let mut prefix = [0u8; 4];
        if out.read_exact(&mut prefix).is_err() {
            return;
        }
        let mut payload = vec![0u8; u32::from_be_bytes(prefix) as usize];
        if out.read_exact(&mut payload).is_err() {
            return;
        }
    }
}

/// One lock and release of `who`, timed (hello, lock, bye in one write).
fn timed_session(env: &Env, who: &Ids) -> Duration {
    let t = Instant::now();
    let (mut c, _) = Client::open(env, who);
    expect_locked(c.call(&session_lock()));
    let (status, _) = bye(c);
    assert!(status.success());
    t.elapsed()
}

/// Start [`HELPERS`] helpers of the caller in turn, each asking for the
/// caller's lock in `spool` (`target`), and kill each; the largest number
/// of files left in `spool` at once (and which), after each kill.
fn kill_loop(env: &Env, spool: &Path, target: Target) -> (usize, Vec<String>) {
    env.reset();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("  {}: seed {seed:#x}", spool.display());
    let mut rng = Rng(seed);
    let mut frames = encode(&Hello::current()).unwrap();
    frames.extend(encode(&lock(target, WaitSpec::NoWait, LockMode::Session)).unwrap());
    let killer = Killer::start(spool);
    let (mut largest, mut worst) = (0, Vec::new());
    let mut kills_sent = 0;
    let started = Instant::now();
    for i in 0..HELPERS {
        // First the attack (no helper lives to sweep: each dies right
        // after moving the stale lock aside, or right after linking its
        // own, which the next one breaks), then kills at a random change,
        // then after random delays.
        let at = match i * 10 / HELPERS {
            0..=3 if i % 2 == 0 => KillAt::First(AddWatchFlags::IN_MOVED_TO),
            0..=3 => KillAt::First(AddWatchFlags::IN_CREATE),
            4..=6 => KillAt::Nth(1 + (rng.next() % 8) as usize),
            _ => KillAt::Never,
        };
        let mut c = Client::start(env, &env.run(&env.caller));
        killer.arm(c.pid(), at);
        c.send_raw(&frames);
        if at == KillAt::Never {
            std::thread::sleep(Duration::from_micros(rng.next() % 2000));
        } else {
            // Welcome, Ready and the lock's answer, unless killed first.
            drain(&mut c, 3);
        }
        c.kill(Signal::SIGKILL);
        wait_exit(&mut c.child);
        let (_, killed) = killer.collect();
        kills_sent += usize::from(killed);
        drop(c);
        let extras = extras_in(spool);
        if extras.len() > largest {
            largest = extras.len();
            worst = extras;
        }
    }
    killer.stop();
    let left = extras_in(spool);
    println!(
        "  {HELPERS} helpers killed ({kills_sent} at an exact change) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "  most files left at once: {largest} {:?}; left at the end: {} {left:?}",
        &worst[..worst.len().min(6)],
        left.len()
    );
    (largest, worst)
}

fn killed_helpers_leave_a_bounded_number_of_files(env: &Env) {
    let (largest, worst) = kill_loop(env, Path::new(SPOOL), target());
    let victim = timed_session(env, &env.victim);
    let caller = timed_session(env, &env.caller);
    println!(
        "  then: the victim's lock and release {:.2} ms, the caller's {:.2} ms; left: {:?}",
        victim.as_secs_f64() * 1e3,
        caller.as_secs_f64() * 1e3,
        spool_extras()
    );
    assert!(
        largest <= BOUND,
        "killed helpers left {largest} files at once (bound {BOUND}): {:?}...",
        &worst[..worst.len().min(4)]
    );
    assert!(spool_extras().len() < BOUND, "{:?}", spool_extras());
}

/// The same where temporary files are named (ramfs here, NFS in life).
/// Each helper first sweeps the caller's dead temporary files, but a dead
/// helper's temporary file is still a name of its lock until that lock is
/// broken, and of the broken lock while that sits at the aside name: one
/// killed helper after another leaves at most the lock and the aside name
/// (each still also named by a dead temporary file) and one unlinked dead
/// temporary file (that of the last helper, or one the last break freed).
const NAMED_BOUND: usize = BOUND + 3;

fn killed_helpers_leave_a_bounded_number_of_named_files(env: &Env) {
    let ramfs = env.spools().join("ramfs");
    let (largest, worst) = kill_loop(env, &ramfs, in_spool(&ramfs));
    assert!(
        largest <= NAMED_BOUND,
        "killed helpers left {largest} files at once (bound {NAMED_BOUND}): {:?}...",
        &worst[..worst.len().min(6)]
    );
}

fn another_users_sweep_skips_the_callers_files(env: &Env) {
    env.reset();
    let baseline: Vec<Duration> = (0..5).map(|_| timed_session(env, &env.victim)).collect();
    let dead = dead_pid();
    let content = lock_content(dead);
    let day = Duration::from_secs(86_400);
    for i in 0..20_000u64 {
        plant(
            env,
            &temp_name_of(dead, i, ".stale"),
            env.caller.uid,
            &content,
            0o644,
            day,
        );
    }
    let before = spool_extras().len();
    let crowded: Vec<Duration> = (0..5).map(|_| timed_session(env, &env.victim)).collect();
    assert_eq!(
        spool_extras().len(),
        before,
        "another user's sweep removed the caller's files"
    );
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    println!(
        "  another user's lock and release: {:.2} ms in a clean spool, {:.2} ms beside 20,000 \
         dead files of the caller (median of 5)",
        median(baseline),
        median(crowded)
    );
    // The caller's next lock that breaks a stale lock (here a dead
    // helper's) sweeps them: they are dead and the caller's.
    plant(
        env,
        &format!("{CALLER}.lock"),
        env.caller.uid,
        &content,
        0o644,
        Duration::ZERO,
    );
    let t = timed_session(env, &env.caller);
    println!(
        "  the caller's next lock (breaking a dead helper's) sweeps them: {:.1} ms, left {}",
        t.as_secs_f64() * 1e3,
        spool_extras().len()
    );
    assert!(spool_extras().is_empty(), "{:?}", spool_extras().len());
}

fn main() {
    run_scenarios(
        "leftover bound tests",
        &[
            (
                "killed_helpers_leave_a_bounded_number_of_files",
                killed_helpers_leave_a_bounded_number_of_files,
            ),
            (
                "killed_helpers_leave_a_bounded_number_of_named_files",
                killed_helpers_leave_a_bounded_number_of_named_files,
            ),
            (
                "another_users_sweep_skips_the_callers_files",
                another_users_sweep_skips_the_callers_files,
            ),
        ],
        Env::setup,
    );
}
