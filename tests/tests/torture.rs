//! Torture: worker processes x lock cycles on one lock, holders SIGKILLed
//! at random, on a local disk (ext4 and tmpfs where present) and on two
//! nfs-sim mounts of one directory (caches, lost replies, a server clock
//! minutes off for one of the clients). Every run checks that no two hold
//! intervals overlap and that every record was appended exactly once.
//! The naive lock runs on the same nfs-sim setup and must fail there.
//!
//! CI-sized by default. `SPOOLLOCK_SOAK=1` runs 100,000 cycles per
//! scenario instead (`SPOOLLOCK_SOAK=N`: N cycles), e.g.
//! `SPOOLLOCK_SOAK=1 cargo test --release -p spoollock-tests --test torture -- --nocapture`.
//!
//! The nfs-sim scenarios need root and /dev/fuse; without them they say
//! why and return. Workers pretend to be two hosts (UTS namespaces) when
//! root, so that half the stale locks can only be judged by their age.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nfs_sim::{Faults, Mount, SimConfig};
use spoollock_tests::torture::{self, LockKind, Place, Report, Scenario, WORKER_ENV};
use spoollock_tests::{fuse_unavailable, Scratch};

/// Runs only in the worker processes the scenarios start.
#[test]
fn torture_worker() {
    if let Ok(spec) = std::env::var(WORKER_ENV) {
        torture::worker_main(&spec);
    }
}

fn is_worker() -> bool {
    std::env::var_os(WORKER_ENV).is_some()
}

/// Total cycles per scenario: CI-sized unless soaking.
fn total_cycles(ci: usize) -> usize {
    match std::env::var("SPOOLLOCK_SOAK").ok().as_deref() {
        None | Some("") | Some("0") => ci,
        Some("1") => 100_000,
        Some(n) => n.parse().expect("SPOOLLOCK_SOAK: 1 or a cycle count"),
    }
}

fn worker_command() -> (PathBuf, Vec<String>) {
    (
        std::env::current_exe().unwrap(),
        [
            "torture_worker",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ]
        .map(String::from)
        .to_vec(),
    )
}

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn host(name: &str) -> Option<String> {
    root().then(|| name.to_string())
}

const WORKERS: usize = 6;
const STALE_AGE: Duration = Duration::from_secs(3);

fn scenario(
    name: &str,
    server_dir: &Path,
    places: Vec<Place>,
    lock: LockKind,
    ci: usize,
) -> Scenario {
    let total = total_cycles(ci);
    Scenario {
        name: name.into(),
        server_dir: server_dir.to_path_buf(),
        places,
        workers: WORKERS,
        cycles: total.div_ceil(WORKERS),
        lock,
        host_per_process: false,
        stale_age: STALE_AGE,
        wait_slice: None,
        self_kill: if total > 10_000 { 0.0005 } else { 0.01 },
        random_kills_per_sec: 1.0,
        max_pause: Duration::from_micros(300),
        log_dir: server_dir.parent().unwrap().join("logs"),
        worker: worker_command(),
        seed: std::process::id() as u64 * 7919,
    }
}

fn print(report: &Report) {
    eprintln!("TORTURE {}", report.line());
    for e in &report.error_samples {
        eprintln!("  error sample: {e}");
    }
    for o in &report.overlaps {
        eprintln!("  {o}");
    }
    if !report.leftover_samples.is_empty() {
        eprintln!("  leftover files: {:?}", report.leftover_samples);
    }
}

fn local_run(base: &Path, tag: &str) {
    let scratch = Scratch::under(base, tag);
    let dir = scratch.path().join("spool");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(scratch.path().join("logs")).unwrap();
    let places = vec![
        Place {
            dir: dir.clone(),
            host: host("client-a"),
        },
        Place {
            dir: dir.clone(),
            host: host("client-b"),
        },
    ];
    let report = torture::run(&scenario(tag, &dir, places, LockKind::Spoollock, 360));
    print(&report);
    report.assert_sound();
    assert_eq!(report.errors, 0, "{}", report.line());
    assert!(report.cycles >= 360.min(total_cycles(360)));
    assert!(report.self_kills + report.random_kills == 0 || report.recovered() > 0);
}

#[test]
fn torture_local_disk() {
    if is_worker() {
        return;
    }
    local_run(&std::env::temp_dir(), "local-disk");
}

#[test]
fn torture_tmpfs() {
    if is_worker() {
        return;
    }
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("skipping: no /dev/shm tmpfs");
        return;
    }
    local_run(shm, "tmpfs");
}

/// Two nfs-sim clients of one backing directory: 3 s attribute and lookup
/// caches, 1 s timestamps, 2% of every lost-reply fault, and client B's
/// clock two minutes ahead of the server.
struct TwoMounts {
    scratch: Scratch,
    a: Option<Mount>,
    b: Option<Mount>,
}

impl TwoMounts {
    fn new(tag: &str, b_offset_ms: i64, faults: Faults) -> Option<TwoMounts> {
        if let Some(reason) = fuse_unavailable() {
            eprintln!("skipping: {reason}");
            return None;
        }
        let scratch = Scratch::new(tag);
        for d in ["backing", "a", "b", "logs"] {
            std::fs::create_dir_all(scratch.path().join(d)).unwrap();
        }
        let config = |seed: u64, offset: i64| SimConfig {
            clock_offset_ms: offset,
            faults: faults.clone(),
            seed,
            ..SimConfig::default()
        };
        let backing = scratch.path().join("backing");
        let a = Mount::new(&backing, &scratch.path().join("a"), config(1, 0)).unwrap();
        let b = Mount::new(&backing, &scratch.path().join("b"), config(2, b_offset_ms)).unwrap();
        Some(TwoMounts {
            scratch,
            a: Some(a),
            b: Some(b),
        })
    }

    fn backing(&self) -> PathBuf {
        self.scratch.path().join("backing")
    }

    fn places(&self) -> Vec<Place> {
        vec![
            Place {
                dir: self.a.as_ref().unwrap().path().to_path_buf(),
                host: host("client-a"),
            },
            Place {
                dir: self.b.as_ref().unwrap().path().to_path_buf(),
                host: host("client-b"),
            },
        ]
    }

    fn faults_injected(&self) -> u64 {
        self.a.as_ref().unwrap().stats().faults() + self.b.as_ref().unwrap().stats().faults()
    }
}

impl Drop for TwoMounts {
    fn drop(&mut self) {
        drop(self.a.take());
        drop(self.b.take());
    }
}

#[test]
fn torture_nfs_sim_two_mounts() {
    if is_worker() {
        return;
    }
    let Some(m) = TwoMounts::new("nfs-sim", -120_000, Faults::all(0.02)) else {
        return;
    };
    let mut s = scenario(
        "nfs-sim-2-mounts",
        &m.backing(),
        m.places(),
        LockKind::Spoollock,
        300,
    );
    // Every process its own NFS client: killed holders' locks are
    // recovered by age (by the server's clock), not by pid.
    s.host_per_process = true;
    // SPOOLLOCK_TORTURE_WAIT_SLICE=1 gives up and calls acquire() again
    // every second instead of waiting as long as it takes (the workaround
    // for finding F1 before the library fixed it).
    if std::env::var_os("SPOOLLOCK_TORTURE_WAIT_SLICE").is_some() {
        s.wait_slice = Some(Duration::from_secs(1));
    }
    let report = torture::run(&s);
    print(&report);
    eprintln!("TORTURE nfs-sim faults injected: {}", m.faults_injected());
    report.assert_sound();
    assert_eq!(report.errors, 0, "{}", report.line());
    assert!(m.faults_injected() > 0, "no fault was injected");
}

#[test]
fn torture_nfs_sim_naive_lock_fails() {
    if is_worker() {
        return;
    }
    let Some(m) = TwoMounts::new("nfs-sim-naive", -120_000, Faults::all(0.02)) else {
        return;
    };
    let mut s = scenario(
        "nfs-sim-2-mounts-naive",
        &m.backing(),
        m.places(),
        LockKind::Naive,
        120,
    );
    // Not soaked: it fails within the first cycles, which is the point.
    s.cycles = 120 / WORKERS;
    s.self_kill = 0.0;
    s.random_kills_per_sec = 0.0;
    s.max_pause = Duration::from_millis(2);
    let report = torture::run(&s);
    print(&report);
    assert!(
        report.violations > 0,
        "the naive lock held on nfs-sim: {}",
        report.line()
    );
}
