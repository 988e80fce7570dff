//! Clocks and caches between two nfs-sim clients of one server.
//!
//! - A live lock, refreshed by its holder on client A, is never broken
//!   early by a waiter on client B whose clock is minutes off the server's
//!   (either way), nor by one whose attribute cache is older than the
//!   stale age. spoollock judges age by the server's clock and reads the
//!   lock's mtime through a fresh open.
//! - The naive lock (local clock, plain `stat`) breaks that same live lock
//!   in both setups: the simulated file system bites.
//!
//! Needs root and /dev/fuse; without them each test says why and returns.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::two_client_scratch;
use nfs_sim::{Mount, SimConfig};
use spoollock_lockfile::{acquire, Event, LockDir, Options, Wait};
use spoollock_test_support::{monotonic_ns, Scratch};
use spoollock_tests::naive::{NaiveLock, NaiveStats};

const STALE_AGE: Duration = Duration::from_secs(2);
/// The holder keeps the lock this many refresh periods (well past the
/// stale age), refreshing every `REFRESH`.
const REFRESHES: u32 = 10;
const REFRESH: Duration = Duration::from_millis(400);

struct Clients {
    _scratch: Scratch,
    a: Mount,
    b: Mount,
}

fn clients(b_config: SimConfig) -> Option<Clients> {
    let scratch = two_client_scratch("nfs-clock")?;
    let backing = scratch.path().join("backing");
    let a = Mount::new(&backing, &scratch.path().join("a"), SimConfig::default()).unwrap();
    let b = Mount::new(&backing, &scratch.path().join("b"), b_config).unwrap();
    Some(Clients {
        _scratch: scratch,
        a,
        b,
    })
}

/// What the holder on A saw: when it started to release (monotonic ns).
struct Held {
    acquired: mpsc::Receiver<()>,
    done: std::thread::JoinHandle<u64>,
}

/// Hold the lock on `dir` (client A), refreshing it, then release it;
/// every refresh and the release must find the lock still ours.
fn hold_on_a(dir: PathBuf) -> Held {
    let (tx, rx) = mpsc::channel();
    let done = std::thread::spawn(move || {
        let d = LockDir::open(&dir).unwrap();
        let opts = Options {
            stale_age: STALE_AGE,
            ..Options::default()
        };
        let lock = acquire(&d, "mbox.lock".as_ref(), &opts).unwrap();
        tx.send(()).unwrap();
        for _ in 0..REFRESHES {
            std::thread::sleep(REFRESH);
            lock.touch().expect("the live lock was taken away");
        }
        let releasing = monotonic_ns();
        lock.release().expect("the live lock was taken away");
        releasing
    });
    Held { acquired: rx, done }
}

/// spoollock on B waits for A's live lock and gets it only after A let go.
fn spoollock_waits_out_a_live_lock(b_config: SimConfig) {
    let Some(c) = clients(b_config) else {
        return;
    };
    let held = hold_on_a(c.a.path().to_path_buf());
    held.acquired.recv().unwrap();
    let broke = Arc::new(AtomicUsize::new(0));
    let counter = broke.clone();
    let opts = Options {
        stale_age: STALE_AGE,
        wait: Wait::timeout(Duration::from_secs(120)),
        observer: Some(Arc::new(move |e: &Event| {
            if let Event::BrokeStale(..) = e {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })),
        ..Options::default()
    };
    let d = LockDir::open(c.b.path()).unwrap();
    let lock = acquire(&d, "mbox.lock".as_ref(), &opts).unwrap();
    let acquired = monotonic_ns();
    let released = held.done.join().expect("holder lost its lock");
    assert!(
        acquired > released,
        "B took the lock while A held it and refreshed it"
    );
    assert_eq!(broke.load(Ordering::SeqCst), 0, "B broke a live lock");
    lock.release().unwrap();
}

/// The naive lock on B takes A's live lock away (returns true if it did).
fn naive_breaks_a_live_lock(b_config: SimConfig) -> Option<bool> {
    let c = clients(b_config)?;
    let (tx, rx) = mpsc::channel();
    let dir = c.a.path().to_path_buf();
    let holder = std::thread::spawn(move || {
        let mut stats = NaiveStats::default();
        let lock = NaiveLock::acquire(&dir, "mbox.lock", STALE_AGE, &mut stats);
        tx.send(()).unwrap();
        for _ in 0..REFRESHES {
            std::thread::sleep(REFRESH);
            lock.touch();
        }
        let releasing = monotonic_ns();
        lock.release();
        releasing
    });
    rx.recv().unwrap();
    let mut stats = NaiveStats::default();
    let lock = NaiveLock::acquire(c.b.path(), "mbox.lock", STALE_AGE, &mut stats);
    let acquired = monotonic_ns();
    let released = holder.join().unwrap();
    lock.release();
    Some(acquired < released && stats.broke > 0)
}

fn skewed(offset_ms: i64) -> SimConfig {
    SimConfig {
        clock_offset_ms: offset_ms,
        ..SimConfig::default()
    }
}

/// B's attribute and lookup caches outlive the stale age.
fn long_cache() -> SimConfig {
    SimConfig {
        attr_ttl: Duration::from_secs(30),
        dir_attr_ttl: Duration::from_secs(30),
        entry_ttl: Duration::from_secs(30),
        ..SimConfig::default()
    }
}

#[test]
fn client_clock_five_minutes_ahead_of_the_server_breaks_nothing() {
    spoollock_waits_out_a_live_lock(skewed(-300_000));
}

#[test]
fn client_clock_five_minutes_behind_the_server_breaks_nothing() {
    spoollock_waits_out_a_live_lock(skewed(300_000));
}

#[test]
fn stale_attribute_cache_breaks_nothing() {
    spoollock_waits_out_a_live_lock(long_cache());
}

#[test]
fn naive_lock_breaks_a_live_lock_under_clock_skew() {
    if let Some(broke) = naive_breaks_a_live_lock(skewed(-300_000)) {
        assert!(broke, "the naive lock survived a 5 minute skew");
    }
}

#[test]
fn naive_lock_breaks_a_live_lock_through_a_stale_attribute_cache() {
    if let Some(broke) = naive_breaks_a_live_lock(long_cache()) {
        assert!(broke, "the naive lock survived a stale attribute cache");
    }
}
