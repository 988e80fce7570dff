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

pub use spoollock_test_support::age_file;
