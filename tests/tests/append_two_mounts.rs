//! Peer-style appends on two nfs-sim mounts of one directory (issue 11,
//! part 2): writer processes on both mounts append numbered messages to
//! one mbox with `MailboxLock::append` (dotlock + fcntl), and every
//! delivered message must be there exactly once and whole, on a server
//! with lock support, on one without (`ENOLCK`: the dotlock alone), and on
//! `nolock` mounts (fcntl locks local to each mount). With the dotlock
//! switched off, the `nolock` mounts must lose or tear messages: the mode
//! bites.
//!
//! The mounts are those of the two-mount torture: 3 s attribute and
//! lookup caches, 1 s timestamps, 2% of every lost-reply fault, client B's
//! clock two minutes ahead of the server.
//!
//! Needs root and /dev/fuse; without them each test says why and returns.

mod common;

use common::two_client_scratch;
use nfs_sim::{Faults, LockMode, Mount, SimConfig};
use spoollock_tests::append::{self, AppendReport, AppendRun, WORKER_ENV};

const WRITERS: usize = 6;
const MESSAGES: usize = 25;

/// In a writer process a test started (the test run again, with
/// [`WORKER_ENV`]): play the writer's part and say so. Each test calls it
/// first, so no `#[test]` exists only to be a writer.
fn worker() -> bool {
    match std::env::var(WORKER_ENV) {
        Ok(spec) => {
            append::worker_main(&spec);
            true
        }
        Err(_) => false,
    }
}

/// Writers spread over two mounts whose server serves fcntl locks as
/// `locks` says; `None` where FUSE cannot be used.
fn run_on_two_mounts(tag: &str, locks: LockMode, dotlock: bool) -> Option<AppendReport> {
    let scratch = two_client_scratch(tag)?;
    let backing = scratch.path().join("backing");
    let config = |seed: u64, clock_offset_ms: i64| SimConfig {
        clock_offset_ms,
        faults: Faults::all(0.02),
        locks,
        seed,
        ..SimConfig::default()
    };
    let a = Mount::new(&backing, &scratch.path().join("a"), config(1, 0)).unwrap();
    let b = Mount::new(&backing, &scratch.path().join("b"), config(2, -120_000)).unwrap();
    let run = AppendRun {
        name: tag.to_string(),
        server_dir: backing,
        places: vec![a.path().to_path_buf(), b.path().to_path_buf()],
        writers: WRITERS,
        messages: MESSAGES,
        dotlock,
        log_dir: scratch.path().join("logs"),
        worker: spoollock_test_support::child::self_command(),
    };
    let report = append::run(&run);
    eprintln!("APPEND {}", report.line());
    for e in &report.error_samples {
        eprintln!("  error sample: {e}");
    }
    let faults = a.stats().faults() + b.stats().faults();
    eprintln!("APPEND {tag} faults injected: {faults}");
    drop((a, b));
    Some(report)
}

#[test]
fn append_on_two_mounts_with_server_locks() {
    if worker() {
        return;
    }
    let Some(report) = run_on_two_mounts("append-server-locks", LockMode::Server, true) else {
        return;
    };
    report.assert_sound(WRITERS * MESSAGES);
    assert_eq!(report.no_record_locks, 0, "{}", report.line());
}

#[test]
fn append_on_two_nolock_mounts() {
    if worker() {
        return;
    }
    let Some(report) = run_on_two_mounts("append-nolock", LockMode::Local, true) else {
        return;
    };
    report.assert_sound(WRITERS * MESSAGES);
    assert_eq!(report.no_record_locks, 0, "{}", report.line());
}

#[test]
fn append_on_two_mounts_of_a_server_without_locks() {
    if worker() {
        return;
    }
    let Some(report) = run_on_two_mounts("append-enolck", LockMode::Unsupported, true) else {
        return;
    };
    report.assert_sound(WRITERS * MESSAGES);
    // Every acquisition was told, and went on with the dotlock alone.
    assert!(
        report.no_record_locks >= WRITERS * MESSAGES,
        "{}",
        report.line()
    );
}

#[test]
fn append_on_two_nolock_mounts_without_dotlock_loses_mail() {
    if worker() {
        return;
    }
    let Some(report) = run_on_two_mounts("append-nolock-no-dotlock", LockMode::Local, false) else {
        return;
    };
    assert!(
        report.violations() > 0,
        "fcntl locks alone protected the mailbox across nolock mounts: {}",
        report.line()
    );
}
