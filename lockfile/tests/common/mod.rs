//! Shared test scaffolding: scratch directories (from the workspace's
//! test-support crate), listings, temporary-file checks and file ages.
#![allow(dead_code, unused_imports)]

use std::path::Path;

pub use spoollock_test_support::{child, dead_pid, listing, monotonic_ns, require, Scratch};

/// Panics if a temporary `.lk*` file was left in `dir`.
pub fn assert_no_temp_files(dir: &Path) {
    let leftovers: Vec<_> = listing(dir)
        .into_iter()
        .filter(|n| n.starts_with(".lk"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}

/// Set a file's mtime `secs_ago` seconds into the past (negative: future).
pub fn age_file(path: &Path, secs_ago: i64) {
    let now = std::time::SystemTime::now();
    let when = if secs_ago >= 0 {
        now - std::time::Duration::from_secs(secs_ago as u64)
    } else {
        now + std::time::Duration::from_secs(secs_ago.unsigned_abs())
    };
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}
