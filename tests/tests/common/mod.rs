//! What the end-to-end tests share beyond the workspace's test-support
//! crate: the scratch tree of two simulated NFS clients.
#![allow(dead_code)]

use spoollock_test_support::{require_none, Scratch};

/// A scratch tree for two simulated NFS clients of one server: `backing/`
/// (the server's directory) and the mount points `a/` and `b/`. `None`
/// where FUSE cannot be used: a skip, a failure in CI.
pub fn two_client_scratch(tag: &str) -> Option<Scratch> {
    if !require_none(spoollock_tests::fuse_unavailable()) {
        return None;
    }
    Some(Scratch::with_dirs(tag, &["backing", "a", "b"]))
}
