//! Mutual exclusion under contention: 8 processes x 200 cycles of
//! lock -> append a record -> release, starting from a stale lock left by
//! a dead process. Every record must be present exactly once and the hold
//! intervals (monotonic clock, shared by all processes) must never overlap.
//!
//! The append is deliberately not atomic (read the size, yield, write at
//! that offset), so two holders at once lose records.
//!
//! Half the workers use anonymous temporary files (`O_TMPFILE`, the
//! default on a local file system) and half the classic named ones (what
//! NFS and FUSE get), so the two ways of making a lock contend here.

mod common;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{assert_no_temp_files, child, dead_pid, monotonic_ns, Scratch};
use spoollock_lockfile::{acquire, content_for, LockDir, Options, PidMode};

const WORKERS: usize = 8;
const CYCLES: usize = 200;

/// The part of each child process the test starts.
fn exclusion_worker(spec: &str) {
    let (dir, id) = spec.split_once('|').unwrap();
    let dir = Path::new(dir);
    let lock_dir = LockDir::open(dir).unwrap();
    if id.parse::<usize>().unwrap() % 2 == 1 {
        lock_dir.use_named_temps();
    }
    let data = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("data"))
        .unwrap();
    let mut intervals = String::new();
    for seq in 0..CYCLES {
        let lock = acquire(&lock_dir, "data.lock".as_ref(), &Options::default()).unwrap();
        let start = monotonic_ns();
        let end_of_file = data.metadata().unwrap().len();
        std::thread::yield_now();
        data.write_at(format!("{id} {seq}\n").as_bytes(), end_of_file)
            .unwrap();
        let end = monotonic_ns();
        lock.release().unwrap();
        intervals.push_str(&format!("{start} {end}\n"));
    }
    std::fs::write(dir.join(format!("intervals.{id}")), intervals).unwrap();
}

#[test]
fn eight_processes_never_hold_the_lock_together() {
    if let Some(spec) = child::role() {
        return exclusion_worker(&spec);
    }
    let _deadline = spoollock_test_support::deadline(
        "eight locking processes",
        std::time::Duration::from_secs(300),
    );
    let scratch = Scratch::new("exclusion");
    let dir = scratch.path();
    std::fs::write(dir.join("data"), b"").unwrap();
    // Start from a stale lock of a dead process on this host: the workers
    // race to break it.
    std::fs::write(
        dir.join("data.lock"),
        content_for(PidMode::Pid(dead_pid())).render(),
    )
    .unwrap();

    let children: Vec<_> = (0..WORKERS)
        .map(|id| {
            child::command(&format!("{}|{id}", dir.display()))
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a worker failed");
    }

    let data = std::fs::read_to_string(dir.join("data")).unwrap();
    let mut seen: HashMap<(usize, usize), usize> = HashMap::new();
    for line in data.lines() {
        let (w, s) = line.split_once(' ').expect("whole record");
        *seen
            .entry((w.parse().unwrap(), s.parse().unwrap()))
            .or_default() += 1;
    }
    for w in 0..WORKERS {
        for s in 0..CYCLES {
            assert_eq!(seen.get(&(w, s)), Some(&1), "record ({w}, {s})");
        }
    }
    assert_eq!(seen.len(), WORKERS * CYCLES);

    let mut intervals: Vec<(u128, u128)> = (0..WORKERS)
        .flat_map(|id| {
            std::fs::read_to_string(dir.join(format!("intervals.{id}")))
                .unwrap()
                .lines()
                .map(|l| {
                    let (a, b) = l.split_once(' ').unwrap();
                    (a.parse().unwrap(), b.parse().unwrap())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(intervals.len(), WORKERS * CYCLES);
    intervals.sort();
    for pair in intervals.windows(2) {
        assert!(
            pair[0].1 < pair[1].0,
            "hold intervals overlap: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
    assert!(!dir.join("data.lock").exists());
    assert_no_temp_files(dir);
}
