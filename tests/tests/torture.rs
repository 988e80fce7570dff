//! Torture: worker processes x lock cycles on one lock, holders SIGKILLed
//! at random, on a local disk (ext4 and tmpfs where present) and on two
//! nfs-sim mounts of one directory (caches, lost replies, a server clock
//! minutes off for one of the clients). Every run checks that no two hold
//! intervals overlap and that every record was appended exactly once.
//! The naive lock runs on the same nfs-sim setup and must fail there.
//!
//! `MailboxLock` (dotlock + fcntl, writing through the locked descriptor)
//! runs on the two mounts with the server's two lock-less modes (issue 11):
//! no lock support (`ENOLCK`: the dotlock alone) and `nolock` mounts
//! (fcntl locks local to each mount). Both must stay sound; with the
//! dotlock switched off, the `nolock` mode must break exclusion (and the
//! same fcntl-only lock on a server with locking stays sound: the control).
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

use nfs_sim::{Faults, LockMode, Mount, SimConfig};
use spoollock_test_support::{child, require, require_none, Scratch};
use spoollock_tests::fuse_unavailable;
use spoollock_tests::torture::{self, LockKind, Place, Report, Scenario, WORKER_ENV};

/// In a worker process a scenario started (its own test run again, with
/// [`WORKER_ENV`]): play the worker's part and say so. Each test calls it
/// first, so no `#[test]` exists only to be a worker.
fn worker() -> bool {
    match std::env::var(WORKER_ENV) {
        Ok(spec) => {
            torture::worker_main(&spec);
            true
        }
        Err(_) => false,
    }
}

/// Total cycles per scenario: CI-sized unless soaking.
fn total_cycles(ci: usize) -> usize {
    match std::env::var("SPOOLLOCK_SOAK").ok().as_deref() {
        None | Some("") | Some("0") => ci,
        Some("1") => 100_000,
        Some(n) => n.parse().expect("SPOOLLOCK_SOAK: 1 or a cycle count"),
    }
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
        worker: child::self_command(),
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
    if worker() {
        return;
    }
    local_run(&std::env::temp_dir(), "local-disk");
}

#[test]
fn torture_tmpfs() {
    if worker() {
        return;
    }
    let shm = Path::new("/dev/shm");
    if !require(shm.is_dir(), "no /dev/shm tmpfs") {
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
        TwoMounts::with_locks(tag, b_offset_ms, faults, LockMode::Server)
    }

    /// Two mounts whose server serves fcntl locks as `locks` says.
    fn with_locks(
        tag: &str,
        b_offset_ms: i64,
        faults: Faults,
        locks: LockMode,
    ) -> Option<TwoMounts> {
        if !require_none(fuse_unavailable()) {
            return None;
        }
        let scratch = Scratch::new(tag);
        for d in ["backing", "a", "b", "logs"] {
            std::fs::create_dir_all(scratch.path().join(d)).unwrap();
        }
        let config = |seed: u64, offset: i64| SimConfig {
            clock_offset_ms: offset,
            faults: faults.clone(),
            locks,
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
    if worker() {
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
    if worker() {
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

/// [`LockKind::Mailbox`] on the two-mount setup of
/// `torture_nfs_sim_two_mounts` with the server's fcntl locks in `locks`.
fn mailbox_run(tag: &str, locks: LockMode, lock: LockKind, ci: usize) -> Option<(Report, u64)> {
    let m = TwoMounts::with_locks(tag, -120_000, Faults::all(0.02), locks)?;
    let mut s = scenario(tag, &m.backing(), m.places(), lock, ci);
    s.host_per_process = true;
    let report = torture::run(&s);
    print(&report);
    let faults = m.faults_injected();
    eprintln!("TORTURE {tag} faults injected: {faults}");
    Some((report, faults))
}

#[test]
fn torture_nfs_sim_mailbox_lock_nolock_mounts() {
    if worker() {
        return;
    }
    let Some((report, faults)) = mailbox_run(
        "nfs-sim-mailbox-nolock",
        LockMode::Local,
        LockKind::Mailbox,
        180,
    ) else {
        return;
    };
    report.assert_sound();
    assert_eq!(report.errors, 0, "{}", report.line());
    // nolock mounts take fcntl locks (locally): no fallback.
    assert_eq!(report.no_record_locks, 0, "{}", report.line());
    assert!(faults > 0, "no fault was injected");
}

#[test]
fn torture_nfs_sim_mailbox_lock_server_without_locks() {
    if worker() {
        return;
    }
    let Some((report, faults)) = mailbox_run(
        "nfs-sim-mailbox-enolck",
        LockMode::Unsupported,
        LockKind::Mailbox,
        180,
    ) else {
        return;
    };
    report.assert_sound();
    assert_eq!(report.errors, 0, "{}", report.line());
    // Every worker that locked was told, and went on with the dotlock.
    assert!(report.no_record_locks > 0, "{}", report.line());
    assert!(faults > 0, "no fault was injected");
}

#[test]
fn torture_nfs_sim_nolock_mounts_without_dotlock_fail() {
    if worker() {
        return;
    }
    let Some(m) = TwoMounts::with_locks(
        "nfs-sim-fcntl-only-nolock",
        -120_000,
        Faults::all(0.02),
        LockMode::Local,
    ) else {
        return;
    };
    let mut s = scenario(
        "nfs-sim-fcntl-only-nolock",
        &m.backing(),
        m.places(),
        LockKind::FcntlOnly,
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
        "fcntl locks alone held across nolock mounts: {}",
        report.line()
    );
}

#[test]
fn torture_nfs_sim_fcntl_only_with_server_locks() {
    if worker() {
        return;
    }
    // The control for the test above: the same lock, the same load, on a
    // server that has locking, is sound.
    let Some(m) = TwoMounts::with_locks(
        "nfs-sim-fcntl-only-server",
        -120_000,
        Faults::all(0.02),
        LockMode::Server,
    ) else {
        return;
    };
    let mut s = scenario(
        "nfs-sim-fcntl-only-server",
        &m.backing(),
        m.places(),
        LockKind::FcntlOnly,
        120,
    );
    s.cycles = 120 / WORKERS;
    s.self_kill = 0.0;
    s.random_kills_per_sec = 0.0;
    s.max_pause = Duration::from_millis(2);
    let report = torture::run(&s);
    print(&report);
    report.assert_sound();
    assert_eq!(report.errors, 0, "{}", report.line());
}
